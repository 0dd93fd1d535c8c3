"""One interchange for several employers (a carrier aggregator's file): one ST per employer, each with its
own BGN, sponsor N1*P5 and header totals, under one ISA/GS; golden bytes, pyx12 accepts them, and one
employer alone is render_834 byte for byte.

Regenerate after an intended change (then review the diff like code):

    CARRIERFEEDS_REGENERATE_GOLDEN=1 .venv/bin/pytest tests/x12/test_x12_employers.py
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import x12_helpers as h

from carrierfeeds.config import Party
from carrierfeeds.config.mapping import FileHeader
from carrierfeeds.x12.check import check_834, validate_with_pyx12
from carrierfeeds.x12.read import read_834
from carrierfeeds.x12.render import render_834_bytes, render_834_employers

GOLDEN = h.FIXTURES / "aggregate-two-employers.834"


def _parts() -> list[tuple[object, object]]:
    mapping = h.validated(file_header=FileHeader(control_totals=("TO", "DT", "ET")))
    first = h.enrollment(h.family_census(), mapping)
    solo = [r for r in h.family_rows() if r["subscriber_id"] == "E2002"]
    second = h.enrollment(h.census([{**r, "member_id": "K7001", "subscriber_id": "K7001"} for r in solo]), mapping)
    base = h.header(mapping)
    other = dataclasses.replace(base, reference="CF000000042-E2",
                                sponsor=Party(name="PINECREST AUTO GLASS", id_qualifier="FI", id="990000014"))
    return [(first, dataclasses.replace(base, reference="CF000000042-E1")), (second, other)]


def test_two_employers_golden_file_passes_both_checks(tmp_path: Path) -> None:
    data = b"".join(render_834_employers(_parts(), h.CONTROL))  # type: ignore[arg-type]
    h.write_golden_if_asked(GOLDEN, data)
    assert data == GOLDEN.read_bytes()
    report = check_834(data)
    assert report.ok, report.problems
    assert report.transaction_sets == 2
    assert data.count(b"ISA*") == 1 and data.count(b"GS*") == 1 and b"GE*2*42~" in data
    assert b"ST*834*0001*" in data and b"ST*834*0002*" in data
    sponsors = [line for line in data.split(b"\n") if line.startswith(b"N1*P5*")]
    assert [s.split(b"*")[2] for s in sponsors] == [b"ACME WIDGETS INC", b"PINECREST AUTO GLASS"]
    assert b"QTY*TO*1~" in data  # the second employer's own totals
    path = tmp_path / "aggregate.834"
    path.write_bytes(data)
    assert validate_with_pyx12(path).ok
    members = read_834(data).drop_duplicates("member_id")["member_id"].tolist()
    assert members[-1] == "K7001"


def test_one_employer_is_render_834_itself() -> None:
    enrollment, header = _parts()[0]
    assert b"".join(render_834_employers([(enrollment, header)], h.CONTROL)) == render_834_bytes(  # type: ignore[list-item]
        enrollment, header, h.CONTROL)  # type: ignore[arg-type]


def test_employers_must_share_the_envelope() -> None:
    (a, ha), (b, hb) = _parts()
    other = dataclasses.replace(hb, ids=ha.ids.model_copy(update={"receiver_id": "SOMEONEELSE"}))  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="envelope ids"):
        b"".join(render_834_employers([(a, ha), (b, other)], h.CONTROL))  # type: ignore[list-item]
    with pytest.raises(ValueError, match="at least one"):
        b"".join(render_834_employers([], h.CONTROL))
