"""Validating a census in chunks of whole families gives what validating it whole gives.

The oracle is the unchunked path as the validate stage ran it before chunks (``read_census(coded=True)``,
``validate_census_coded``, ``apply_policy``, ``accepted_table``): the same report (every finding, count
and warning, and the CSV and HTML bytes), the same policy outcome, the same accepted rows (by row
number, cell for cell), for chunks from one family up, read in blocks of a few rows up. The accepted
file's chunks are whole families in order of first appearance, rows in census order.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carrierfeeds.census.accepted import (
    AcceptedWriter,
    accepted_table,
    family_chunks,
    low_cardinality,
    read_accepted,
    read_accepted_chunks,
)
from carrierfeeds.census.chunks import census_chunks, plan_chunks
from carrierfeeds.census.columns import ROW_NUMBER
from carrierfeeds.census.generate import generate_census, write_census_csv
from carrierfeeds.census.readers import read_census
from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.config import CensusSchema, PlanCatalogue, ValidationPolicy, load_mapping, load_schema
from carrierfeeds.validation import CarrierRules, apply_policy, validate_census_coded
from carrierfeeds.validation.chunked import validate_chunks
from carrierfeeds.x12.sanitize import fold_column

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = load_schema(ROOT / "schemas" / "census-v1.yaml")
SUITE = ROOT / "schemas" / SCHEMA.suite
DAY = date(2026, 11, 20)
TOKENIZER = MemberTokenizer(b"t" * 32)
MAPPING = load_mapping(ROOT / "mappings" / "sunrise-health.yaml")
PLANS = ("MED-PPO", "MED-HDHP", "DEN-STD")  # VIS-STD known, not authorised: excluded rows
CARRIER = CarrierRules.for_feed(MAPPING, PLANS)


def _catalogue() -> PlanCatalogue:
    return PlanCatalogue(authorised=frozenset(PLANS), known=frozenset(MAPPING.plans))


POLICIES = {name: ValidationPolicy(policy=name, threshold_pct=50.0)  # type: ignore[arg-type]
            for name in ("reject", "quarantine", "threshold")}


def _whole(path: Path, schema: CensusSchema, policy: ValidationPolicy, tmp: Path, suite: Path = SUITE
           ) -> dict[str, object]:
    """The unchunked path (the oracle)."""
    census = read_census(path, schema, display_name="census.csv", private=True, coded=True)
    report, codes = validate_census_coded(census, suite, schema, TOKENIZER, as_of=DAY, source_name="census.csv",
                                          plans=_catalogue(), carrier=CARRIER)
    outcome = apply_policy(census, report, policy)
    table = None if outcome.rejected else accepted_table(outcome.accepted, low_cardinality(codes, len(census)),
                                                         outcome.rows)
    return _result(report, outcome.rejected, outcome.held_back_families, outcome.held_back_members,
                   outcome.held_back_member_ids if not outcome.rejected else frozenset(),
                   None if table is None else table.to_pandas(), tmp / "whole")


def _chunked(path: Path, schema: CensusSchema, policy: ValidationPolicy, tmp: Path, families: int | None,
             block_bytes: int, suite: Path = SUITE) -> tuple[dict[str, object], list[pd.DataFrame]]:
    census = census_chunks(path, schema, display_name="census.csv", spill_dir=tmp / "spill",
                           families_per_chunk=families, block_bytes=block_bytes)
    tmp.mkdir(parents=True, exist_ok=True)
    accepted = tmp / "accepted.arrow"
    try:
        with AcceptedWriter(accepted) as writer:
            outcome = validate_chunks(census.chunks(), suite, schema, TOKENIZER, as_of=DAY, source_name="census.csv",
                                      rows=census.rows, reader_warnings=census.warnings,
                                      code_texts=census.code_texts, policy=policy, on_accepted=writer.add_accepted,
                                      plans=_catalogue(), carrier=CARRIER)
    finally:
        census.close()
    assert not (tmp / "spill").exists()
    chunks = [] if outcome.rejected else list(read_accepted_chunks(accepted))
    frame = None if outcome.rejected else read_accepted(accepted)
    return _result(outcome.report, outcome.rejected, outcome.held_back_families, outcome.held_back_members,
                   outcome.held_back_member_ids, frame, tmp / "chunked"), chunks


def _result(report: object, rejected: bool, families: int, members: int, ids: frozenset[str],
            accepted: pd.DataFrame | None, folder: Path) -> dict[str, object]:
    folder.mkdir(parents=True)
    report.write_csv(folder / "v.csv")  # type: ignore[attr-defined]
    report.write_html(folder / "v.html")  # type: ignore[attr-defined]
    return {"report": report, "csv": (folder / "v.csv").read_bytes(), "html": (folder / "v.html").read_bytes(),
            "rejected": rejected, "held_back_families": families, "held_back_members": members,
            "held_back_member_ids": ids, "accepted": None if accepted is None else _cells(accepted)}


def _cells(frame: pd.DataFrame) -> list[tuple[str, ...]]:
    """The rows as text, by row number: what a row holds, whatever the column's type in the file."""
    text = pd.DataFrame({c: frame[c].astype("str") for c in frame.columns})
    return sorted(map(tuple, text[[ROW_NUMBER, *[c for c in text.columns if c != ROW_NUMBER]]].to_numpy().tolist()),
                  key=lambda r: int(r[0]))


def _check_chunks(chunks: list[pd.DataFrame]) -> None:
    """Each chunk whole families, chunks in the order of their families' first appearance, rows in order."""
    seen: dict[str, int] = {}
    last_first = -1
    for i, chunk in enumerate(chunks):
        rows = chunk[ROW_NUMBER].to_numpy()
        assert (np.diff(rows) > 0).all()
        families = fold_column(chunk["subscriber_id"], 50).values
        for family in families.unique():
            assert seen.setdefault(family, i) == i, "a family in two chunks"
        assert int(rows[0]) > last_first
        last_first = int(rows[0])


def _assert_same(path: Path, tmp: Path, *, schema: CensusSchema = SCHEMA,
                 policies: tuple[str, ...] = ("quarantine",), families: tuple[int | None, ...] = (1, 2, 3, 7, None),
                 blocks: tuple[int, ...] = (4 << 20, 2048), suite: Path = SUITE) -> None:
    for name in policies:
        expected = _whole(path, schema, POLICIES[name], tmp / f"{name}-oracle", suite)
        for n in families:
            for block in blocks:
                where = tmp / f"{name}-{n}-{block}"
                got, chunks = _chunked(path, schema, POLICIES[name], where, n, block, suite)
                for key, value in expected.items():
                    assert got[key] == value, (name, n, block, key)
                _check_chunks(chunks)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    write_census_csv(frame.drop(columns=[ROW_NUMBER], errors="ignore"), path)
    return path


def _dirty(members: int, seed: int) -> pd.DataFrame:
    """A generated census with faults across families: a member id and an SSN on two families, a
    subscriber id naming another family's employee, same-person fields differing, a bad code, a plan typo."""
    frame = generate_census(members, seed, as_of=DAY)
    ee = frame.index[frame["relationship"] == "EE"].to_numpy()
    deps = frame.index[frame["relationship"] != "EE"].to_numpy()
    rng = np.random.default_rng(seed)
    a, b, c, d, e = rng.choice(len(ee), 5, replace=False)
    frame.loc[deps[0], "member_id"] = frame.loc[deps[-1], "member_id"]  # one member id, two families
    frame.loc[deps[1], "ssn"] = frame.loc[ee[a], "ssn"]  # one SSN, two people, two families
    frame.loc[ee[b], "subscriber_id"] = frame.loc[ee[c], "member_id"]  # an employee under another's id
    frame.loc[ee[d], "dob"] = "1971-01-01"
    frame.loc[ee[e], "relationship"] = "XX"
    frame.loc[deps[2], "plan_code"] = "NOPE"
    frame.loc[deps[3], "coverage_level"] = "XYZ"
    return frame


def test_plan_cuts_only_where_no_link_crosses() -> None:
    family = np.array([1, 1, 2, 3, 3, 4, 5], dtype=np.uint64)
    none = np.zeros(7, dtype=np.uint64)
    assert plan_chunks(family, none, none, none, families_per_chunk=1).tolist() == [0, 0, 1, 2, 2, 3, 4]
    member = np.array([0, 9, 0, 0, 0, 0, 9], dtype=np.uint64)  # families 0 and 4 share a member id
    assert plan_chunks(family, member, none, none, families_per_chunk=1).tolist() == [0] * 7
    ssn = np.array([0, 0, 7, 7, 0, 0, 0], dtype=np.uint64)  # families 1 and 2 share an SSN
    assert plan_chunks(family, none, ssn, none, families_per_chunk=1).tolist() == [0, 0, 1, 1, 1, 2, 3]
    member = np.array([11, 0, 12, 0, 0, 14, 0], dtype=np.uint64)
    subscriber = np.array([0, 0, 0, 14, 0, 0, 0], dtype=np.uint64)  # family 2 names family 3's member
    assert plan_chunks(family, member, none, subscriber, families_per_chunk=2).tolist() == [0, 0, 0, 1, 1, 1, 2]


def test_generated_census_matches_whole(tmp_path: Path) -> None:
    _assert_same(_write(generate_census(60, 5, as_of=DAY), tmp_path / "c.csv"), tmp_path,
                 policies=("quarantine", "reject"))


def test_dirty_census_matches_whole_under_every_policy(tmp_path: Path) -> None:
    _assert_same(_write(_dirty(80, 7), tmp_path / "c.csv"), tmp_path, policies=("quarantine", "reject", "threshold"))


def test_interleaved_families_match_whole(tmp_path: Path) -> None:
    frame = _dirty(70, 11)
    order = np.random.default_rng(3).permutation(len(frame))
    path = _write(frame.iloc[order].reset_index(drop=True), tmp_path / "c.csv")
    _assert_same(path, tmp_path)


def test_code_shown_unless_it_is_a_personal_text_in_another_chunk(tmp_path: Path) -> None:
    frame = generate_census(40, 2, as_of=DAY)
    ee = frame.index[frame["relationship"] == "EE"].to_numpy()
    frame.loc[ee[0], "coverage_level"] = "MORGAN"  # a code-shaped text in a code column...
    frame.loc[ee[-1], "last_name"] = "Morgan"  # ...that is a surname in the last family
    frame.loc[ee[1], "coverage_level"] = "ZZZ"
    path = _write(frame, tmp_path / "c.csv")
    _assert_same(path, tmp_path, families=(1, 5), blocks=(4 << 20,))
    got, _ = _chunked(path, SCHEMA, POLICIES["quarantine"], tmp_path / "look", 1, 4 << 20)
    shown = {f.value for f in got["report"].findings if f.column == "coverage_level"}  # type: ignore[attr-defined]
    assert shown == {None, "ZZZ"}


def test_header_row_finding_and_day_first_dates(tmp_path: Path) -> None:
    """A finding on the header row (from every chunk, counted once) and the reader's date warnings
    (every date reads both ways), from the whole file."""
    import json

    suite = tmp_path / "suite.json"
    data = json.loads(SUITE.read_text())
    data["expectations"].append({"type": "expect_column_to_exist", "kwargs": {"column": "badge_number"}})
    suite.write_text(json.dumps(data))
    schema = SCHEMA.model_copy(update={"date_format": "%d/%m/%Y"})
    frame = generate_census(30, 4, as_of=DAY)
    for column in ("dob", "hire_date", "coverage_start", "coverage_end"):
        parsed = pd.to_datetime(frame[column], format="%Y-%m-%d", errors="coerce")
        frame[column] = parsed.dt.strftime("05/%m/%Y").where(parsed.notna(), frame[column])
    path = _write(frame, tmp_path / "c.csv")
    _assert_same(path, tmp_path, schema=schema, families=(1, None), blocks=(1500,), suite=suite,
                 policies=("quarantine", "reject"))
    got, _ = _chunked(path, schema, POLICIES["quarantine"], tmp_path / "look", 1, 1500, suite)
    assert got["report"].warnings and got["rejected"]  # type: ignore[attr-defined]
    assert [f.row for f in got["report"].findings].count(1) == 1  # type: ignore[attr-defined]


def test_reader_errors_name_the_first_row_of_the_whole_file(tmp_path: Path) -> None:
    from carrierfeeds.errors import DataError

    frame = generate_census(50, 6, as_of=DAY)
    frame.loc[len(frame) - 3, "city"] = "=HYPERLINK(1)"
    frame.loc[40, "department"] = "@SUM(1)"
    path = _write(frame, tmp_path / "c.csv")
    with pytest.raises(DataError) as whole:
        read_census(path, SCHEMA, display_name="census.csv", private=True, coded=True)
    with pytest.raises(DataError) as chunked:
        census_chunks(path, SCHEMA, display_name="census.csv", spill_dir=tmp_path / "s", families_per_chunk=1,
                      block_bytes=1024)
    assert str(chunked.value) == str(whole.value) and chunked.value.details == whole.value.details
    assert not (tmp_path / "s").exists()


def test_a_file_from_an_older_version_reads_as_one_chunk(tmp_path: Path) -> None:
    import pyarrow.feather as feather

    table = pa.table({"subscriber_id": ["A", "A", "B"], "member_id": ["A", "A1", "B"], ROW_NUMBER: [2, 3, 4]})
    feather.write_feather(table, str(tmp_path / "old.arrow"), compression="uncompressed")
    chunks = list(read_accepted_chunks(tmp_path / "old.arrow"))
    assert len(chunks) == 1 and chunks[0].equals(read_accepted(tmp_path / "old.arrow"))


def test_family_chunks_keep_families_whole_in_first_appearance_order() -> None:
    frame = pd.DataFrame({"subscriber_id": ["b", "a", "B", "c", "a", "d"], ROW_NUMBER: range(2, 8)})
    chunks = list(family_chunks(frame, 2))
    assert [c[ROW_NUMBER].tolist() for c in chunks] == [[2, 3, 4, 6], [5, 7]]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=st.integers(3, 15), seed=st.integers(0, 10_000), families=st.integers(1, 4),
       shuffle=st.booleans(), links=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000),
                                                          st.sampled_from(["member_id", "ssn", "subscriber_id"])),
                                                max_size=4))
def test_hypothesis_censuses_match_whole(tmp_path_factory: pytest.TempPathFactory, members: int, seed: int,
                                         families: int, shuffle: bool, links: list[tuple[int, int, str]]) -> None:
    frame = generate_census(members, seed, as_of=DAY)
    for source, target, column in links:
        frame.loc[target % len(frame), column] = frame.loc[source % len(frame),
                                                           "member_id" if column == "subscriber_id" else column]
    if shuffle:
        frame = frame.iloc[np.random.default_rng(seed).permutation(len(frame))].reset_index(drop=True)
    tmp = tmp_path_factory.mktemp("h")
    _assert_same(_write(frame, tmp / "c.csv"), tmp, families=(families,), blocks=(1024,))


@pytest.mark.parametrize("content", [
    "a,b\n" + "é,x\n" * 40, "a,b\n" + "x,y\n" * 30 + "\x00,z\n" + "x,y\n" * 5, "a,b\n" + "x,y\n" * 30 + "\n" + "x,y\n",
    "a,b\n" + "\u20ac\u20ac,x\n" * 20, "a,b\n" + "x" * 50 + "\n",
])
def test_window_checks_of_the_map_match_the_whole_file_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               content: str) -> None:
    """The block reader's byte checks, window by window over the map (windows of 7 bytes here, so a
    character or a blank line falls across them), say what the whole-file checks say."""
    import mmap

    from carrierfeeds.census import readers

    path = tmp_path / "c.csv"
    data = content.encode("utf-8")
    path.write_bytes(data.replace(b"\xe2\x82\xac,", b"\xe2\x82,") if "\u20ac" in content else data)
    monkeypatch.setattr(readers, "_WINDOW", 7)
    whole = readers._plain_utf8(path.read_bytes(), "utf-8")
    with path.open("rb") as fh:
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        windowed = readers._plain_utf8_releasing(mapped, "utf-8")
        assert (windowed is None) == (whole is None)
        if windowed is not None:
            assert bytes(windowed) == bytes(whole)  # type: ignore[arg-type]
            end = len(windowed)
            assert readers._has_blank_line_releasing(windowed, end) == readers._has_blank_line(whole, end)  # type: ignore[arg-type]
            del windowed
        mapped.close()
