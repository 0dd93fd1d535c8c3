"""Flat files and return files spell every canonical relationship (EE, SP, CH, DP, SC, ...), not only
EE/SP/CH: a domestic partner or stepchild is written as DP or SC and read back to its INS02."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from carrierfeeds.census.columns import CANONICAL_COLUMNS, RELATIONSHIP_CODES, RELATIONSHIP_INS02
from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.config.mapping import Ins02Code
from carrierfeeds.enrollment import Enrollment
from carrierfeeds.outputs.flatfile import render_flatfile_bytes
from carrierfeeds.outputs.layouts import CsvFlatLayout
from carrierfeeds.reconcile.readers import read_return_bytes
from carrierfeeds.reconcile.roster import roster_from_view

LAYOUT = CsvFlatLayout(columns=tuple({"header": f.upper(), "field": f}  # type: ignore[arg-type]
                                     for f in ("subscriber_id", "member_id", "relationship", "hd03")))
TOKENS = MemberTokenizer(b"q" * 32)


def _view(codes: list[str]) -> Enrollment:
    table = pd.DataFrame({"subscriber_id": "E1", "member_id": [f"E1-{k:02d}" for k in range(len(codes))],
                          "ins01": ["Y" if c == "18" else "N" for c in codes], "ins02": codes, "hd03": "HLT"},
                         dtype=object)
    return Enrollment(table=table, member_count=len(codes), subscriber_count=1, coverage_count=len(codes),
                      allowlist=tuple(CANONICAL_COLUMNS))


def test_the_table_covers_every_canonical_relationship_but_hd_with_a_tr3_code() -> None:
    assert set(RELATIONSHIP_INS02) == set(RELATIONSHIP_CODES) - {"HD"}
    assert set(RELATIONSHIP_INS02.values()) <= set(Ins02Code.__args__)  # type: ignore[attr-defined]
    assert len(set(RELATIONSHIP_INS02.values())) == len(RELATIONSHIP_INS02)


def test_every_relationship_is_written_by_name_and_read_back(tmp_path: Path) -> None:
    codes = [*RELATIONSHIP_INS02.values(), "07"]  # 07 (nephew or niece) has no canonical name
    view = _view(codes)
    data = render_flatfile_bytes(view, LAYOUT)
    written = [line.split(",")[2] for line in data.decode("ascii").splitlines()[1:]]
    assert written == [*RELATIONSHIP_INS02, "07"]  # never an empty cell
    back = read_return_bytes(data, fmt="csv", tokenizer=TOKENS, layout=LAYOUT, file_name="back.csv")
    assert back.table.equals(roster_from_view(view.table, TOKENS, source="view").table)
    assert sorted(back.table["relationship"]) == sorted(codes)
