"""A coded read (``read_census(coded=True)``: low-cardinality columns as Categoricals parsed into Arrow
dictionaries) is the plain read's census: the same texts cell for cell, or the same DataError. And the
validate stage's work on it (findings, report, policy, the accepted file) is the same, byte for byte, on a
census with many rule violations."""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from carrierfeeds.census.accepted import accepted_table, low_cardinality, write_accepted
from carrierfeeds.census.generate import generate_census, write_census_csv
from carrierfeeds.census.readers import READ_PLAIN, read_census
from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.config import CensusSchema, ValidationPolicy, load_schema
from carrierfeeds.errors import DataError
from carrierfeeds.settings import Settings, load_bundle, plan_catalogue
from carrierfeeds.validation import CarrierRules, apply_policy, validate_census_coded

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = load_schema(ROOT / "schemas" / "census-v1.yaml")
#: Code tables and a date format whose mapping merges distinct texts into one (" spouse", "W" and "SP").
TABLES = SCHEMA.model_copy(update={
    "relationship_codes": {"EE": "EE", "SP": "SP", "CH": "CH", "Spouse": "SP", "W": "SP", "Child": "CH"},
    "gender_codes": {"M": "M", "F": "F", "U": "U", "Male": "M", "female": "F"},
    "plan_codes": {"Medical PPO": "MED-PPO", "MED": "MED-PPO"},
    "date_format": "%m/%d/%Y"})
HEADER = ("member_id,subscriber_id,relationship,last_name,first_name,dob,gender,plan_code,coverage_level,"
          "coverage_start,coverage_end")
DAY = date(2026, 11, 20)


def _decoded(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype({c: "str" for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)})


def _outcome(path: Path, schema: CensusSchema, **kwargs: Any) -> tuple[str, Any]:
    try:
        return "frame", read_census(path, schema, **kwargs)
    except DataError as exc:
        return "error", (str(exc), exc.file, exc.row, exc.column, exc.rule, exc.details)


def _assert_coded_is_plain(path: Path, schema: CensusSchema) -> tuple[str, Any]:
    plain = _outcome(path, schema, private=True)
    coded = _outcome(path, schema, private=True, coded=True)
    assert coded[0] == plain[0], (coded[0], plain[0])
    if plain[0] != "frame":
        assert coded[1] == plain[1]
        return plain
    pd.testing.assert_frame_equal(_decoded(coded[1]), plain[1], check_exact=True)
    assert coded[1].attrs == plain[1].attrs  # the date-order warnings
    for column in coded[1].columns:
        series = coded[1][column]
        if isinstance(series.dtype, pd.CategoricalDtype):
            # distinct texts, every one on a row, in order of first appearance (what validation takes as codes)
            assert series.cat.categories.dtype == "str"
            assert series.cat.categories.is_unique
            seen = pd.unique(series.cat.codes.to_numpy())
            assert (seen == np.arange(len(series.cat.categories))).all(), column
    return "frame", coded[1]


CELL = st.one_of(
    st.sampled_from(["", " ", "Spouse", " Spouse ", "spouse", "SP", "W", "w", "EE", "Child", "CH ", "Male", "FEMALE",
                     "Medical PPO", "MED", "med", "01/31/1990", "1/2/2020", "13/01/2020", "2020-01-31", " 02/03/2021",
                     "=1+1", "-5", "+1 (609) 555-0100", "\u2003x", "x\u00a0", "Núñez", '"a,b"', '"two\nlines"',
                     "é", "\ufeff"]),
    st.text(alphabet="aSW ,\"é=+-\u2003", max_size=5),
)


@st.composite
def census_text(draw: st.DrawFn) -> str:
    rows = [HEADER]
    for _ in range(draw(st.integers(1, 8))):
        rows.append(",".join(draw(st.lists(CELL, min_size=11, max_size=11))))
    return "\n".join(rows) + "\n"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(census_text(), st.sampled_from([SCHEMA, TABLES]))
@example(HEADER + "\n1,1,Spouse,a,b,01/02/1990,Male,MED,EMP,01/01/2026,\n2,1, spouse ,a,b,01/02/1990,M,Medical PPO,"
         "EMP,1/1/2026,\n3,1,W,a,b,01/02/1990,F,MED,EMP,01/01/2026,\n", TABLES)
@example(HEADER + "\n1,1,EE,=1+1,b,1990-01-01,M,P,EMP,2026-01-01,\n", SCHEMA)
def test_a_coded_read_is_the_plain_read(text: str, schema: CensusSchema) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "census.csv"
        path.write_text(text, encoding="utf-8")
        _assert_coded_is_plain(path, schema)


def test_a_merged_code_keeps_first_appearance_order(tmp_path: Path) -> None:
    path = tmp_path / "census.csv"
    path.write_text(HEADER + "\n" + "\n".join([
        "1,1,W,a,b,01/02/1990,M,MED,EMP,01/01/2026,",
        "2,1,Child,a,b,01/02/1990,M,MED,EMP,01/01/2026,",
        "3,1,SP,a,b,01/02/1990,M,MED,EMP,01/01/2026,",
        "4,1,EE,a,b,01/02/1990,M,MED,EMP,01/01/2026,"]) + "\n", encoding="utf-8")
    kind, frame = _assert_coded_is_plain(path, TABLES)
    assert kind == "frame"
    assert frame["relationship"].cat.categories.tolist() == ["SP", "CH", "EE"]
    assert frame["relationship"].cat.codes.tolist() == [0, 1, 0, 2]
    assert frame["dob"].cat.categories.tolist() == ["1990-01-02"]


def test_a_large_census_reads_coded_over_several_blocks(tmp_path: Path) -> None:
    path = tmp_path / "census.csv"
    write_census_csv(generate_census(20000, 11, as_of=DAY), path)
    assert path.stat().st_size > 8 << 20  # several of the parser's 4 MiB blocks, each with its dictionary
    kind, frame = _assert_coded_is_plain(path, SCHEMA)
    assert kind == "frame"
    coded = [c for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)]
    assert set(frame.columns) - set(coded) == {*READ_PLAIN, "row_number"}
    assert frame["plan_code"].cat.codes.dtype == np.int8  # a few plans: one byte a row, no offsets


@pytest.mark.parametrize("fault", ["formula", "long_cell"])
def test_a_fault_in_a_coded_column_is_the_same_error(tmp_path: Path, fault: str) -> None:
    path = tmp_path / "census.csv"
    frame = generate_census(3000, 4, as_of=DAY)
    frame.loc[frame.index[2500], "last_name"] = "=HYPERLINK(1)" if fault == "formula" else "x" * 300
    frame.loc[frame.index[2700], "city"] = "@SUM(1)" if fault == "formula" else "y" * 300
    write_census_csv(frame, path)
    kind, error = _assert_coded_is_plain(path, SCHEMA.model_copy(update={"max_cell_length": 200}))
    assert kind == "error"
    assert error[4] == ("formula_like_cell" if fault == "formula" else "cell_too_long")
    assert error[5]["cells"] == 2


# ------------------------------------------------------------------------ the validate stage's work
NASTY = ["", " ", "x", "EE", "ee", "SP", "FAM", "FAMILY", "ZZ", "000123456", "666123457", "123-45-6789", "2020-13-01",
         "2020-02-30", "2031-01-01", "01/02/2020", "2020-01-01 ", "12345", "FT", "XX", "ü", "DEN-BASIC"]


def _dirty(members: int, seed: int, share: float = 0.05) -> pd.DataFrame:
    frame = generate_census(members, seed, as_of=DAY)
    rng = np.random.default_rng(seed)
    for column in [c for c in frame.columns if c != "row_number"]:
        hit = rng.random(len(frame)) < share
        frame.loc[hit, column] = rng.choice(NASTY, size=int(hit.sum()))
    return frame


def _validated(path: Path, tmp: Path, *, coded: bool) -> tuple[Any, Any, bytes]:
    """The validate stage's steps (run.stages.validate) on ``path``: report, policy outcome, accepted bytes."""
    settings = Settings(feeds_dir=ROOT / "feeds", mappings_dir=ROOT / "mappings", schemas_dir=ROOT / "schemas",
                        data_dir=tmp)
    bundle = load_bundle(settings, "acme-sunrise-medical")
    census = read_census(path, bundle.schema, private=True, coded=coded)
    carrier = CarrierRules.for_feed(bundle.mapping, bundle.feed.authorization.plans,
                                    output_format=bundle.feed.output.format)
    report, all_codes = validate_census_coded(census, bundle.suite_path, bundle.schema, MemberTokenizer(b"k" * 32),
                                              as_of=DAY, source_name="census.csv",
                                              plans=plan_catalogue(settings, bundle), carrier=carrier)
    codes = low_cardinality(all_codes, len(census))
    outcome = apply_policy(census, report, ValidationPolicy(policy="quarantine"))
    out = tmp / f"accepted-{coded}.arrow"
    write_accepted(out, accepted_table(outcome.accepted, codes, outcome.rows))
    policy = (outcome.rejected, outcome.held_back_families, outcome.held_back_members,
              sorted(outcome.held_back_member_ids), outcome.rows.tolist())
    return report, policy, out.read_bytes()


def test_a_dirty_census_validates_the_same_coded(tmp_path: Path) -> None:
    path = tmp_path / "census.csv"
    write_census_csv(_dirty(4000, 7), path)
    plain_report, plain_policy, plain_file = _validated(path, tmp_path, coded=False)
    coded_report, coded_policy, coded_file = _validated(path, tmp_path, coded=True)
    assert len(plain_report.findings) > 2000 and len(plain_report.rule_counts) > 10  # many rules broken
    assert 0 < len(plain_policy[4]) < plain_report.rows  # quarantine: some families held back, some accepted
    assert coded_report == plain_report  # every finding (row, column, rule, member token, shown code), counts
    assert coded_policy == plain_policy
    assert coded_file == plain_file  # the accepted file, byte for byte
