"""The synthetic census generator: exact member counts, consistent families, deterministic per seed."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from carrierfeeds.census.columns import CANONICAL_COLUMNS
from carrierfeeds.census.generate import generate_census, generate_census_csv, write_census_csv
from carrierfeeds.census.readers import read_census
from carrierfeeds.config import load_schema

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2026, 11, 20)
SSN = re.compile(r"^(?!000|666|9\d\d)\d{3}(?!00)\d{2}(?!0000)\d{4}$")


@pytest.fixture(scope="module")
def census() -> pd.DataFrame:
    return generate_census(3000, 11, as_of=DAY)


@pytest.mark.parametrize("members", [1, 2, 3, 7, 100, 1234])
def test_member_count_is_exact(members: int) -> None:
    frame = generate_census(members, members, as_of=DAY)
    assert frame["member_id"].nunique() == members
    assert list(frame.columns) == list(CANONICAL_COLUMNS)


def test_same_seed_same_census_other_seed_other_census() -> None:
    a, b = generate_census(200, 5, as_of=DAY), generate_census(200, 5, as_of=DAY)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(generate_census(200, 6, as_of=DAY))


def test_ids_and_relationships_are_consistent(census: pd.DataFrame) -> None:
    ee = census[census["relationship"] == "EE"]
    assert (ee["member_id"] == ee["subscriber_id"]).all()
    assert ee["member_id"].str.fullmatch(r"E\d{7}").all()
    deps = census[census["relationship"] != "EE"]
    assert (deps["member_id"].str.slice(0, 8) == deps["subscriber_id"]).all()
    assert deps["member_id"].str.fullmatch(r"E\d{7}-\d{2}").all()
    assert set(deps["subscriber_id"]) <= set(ee["member_id"])


def test_coverage_levels_match_who_is_in_the_family(census: pd.DataFrame) -> None:
    people = census.drop_duplicates("member_id")
    for sid, fam in people.groupby("subscriber_id"):
        has_sp, has_ch = (fam["relationship"] == "SP").any(), (fam["relationship"] == "CH").any()
        expected = "FAM" if has_sp and has_ch else "ESP" if has_sp else "ECH" if has_ch else "EMP"
        assert set(census.loc[census["subscriber_id"] == sid, "coverage_level"]) == {expected}, sid


def test_every_member_carries_the_family_elections(census: pd.DataFrame) -> None:
    plans = census.groupby("member_id")["plan_code"].apply(frozenset)
    family = census.drop_duplicates("member_id").set_index("member_id")["subscriber_id"]
    for member, elected in plans.items():
        assert elected == plans[family[member]]
        assert len({"MED-PPO", "MED-HDHP"} & elected) == 1


def test_family_mix_and_values_look_like_a_real_census(census: pd.DataFrame) -> None:
    families = census.drop_duplicates("subscriber_id")
    share = families["coverage_level"].value_counts(normalize=True)
    assert 0.4 < share["EMP"] < 0.6 and 0.12 < share["ESP"] < 0.28
    assert 0.2 < share["ECH"] + share["FAM"] < 0.4
    people = census.drop_duplicates("member_id")
    ssns = people.loc[people["ssn"] != "", "ssn"]
    assert ssns.map(lambda s: bool(SSN.match(s)) and len(set(s)) > 1).all() and ssns.is_unique
    assert census["zip"].str.startswith("0").any()
    assert census["last_name"].str.contains("'").any() and census["last_name"].str.contains("-").any()
    assert census["first_name"].map(lambda s: not s.isascii()).any()
    subs = people[people["relationship"] == "EE"]
    termed = subs[subs["employment_status"] == "TE"]
    assert 0 < len(termed) < 0.1 * len(subs)
    assert (termed["coverage_end"] > termed["coverage_start"]).all()
    assert (subs.loc[subs["employment_status"] != "TE", "coverage_end"] == "").all()
    assert (pd.to_datetime(subs["hire_date"]) > pd.Timestamp(DAY) - pd.Timedelta(days=120)).any()
    kids = people[people["relationship"] == "CH"]
    assert (pd.to_datetime(kids["dob"]) > pd.Timestamp(date(DAY.year - 26, DAY.month, DAY.day))).all()


def test_write_then_read_round_trip_keeps_leading_zeros(tmp_path: Path, census: pd.DataFrame) -> None:
    path = tmp_path / "census.csv"
    write_census_csv(census, path)
    back = read_census(path, load_schema(ROOT / "schemas" / "census-v1.yaml"))
    pd.testing.assert_frame_equal(back.drop(columns="row_number"), census, check_dtype=False)
    assert back["zip"].str.startswith("0").any()
    assert back["row_number"].tolist() == list(range(2, len(census) + 2))


@pytest.mark.parametrize("members", [1, 7, 1234])
def test_census_in_one_block_is_the_census_written(tmp_path: Path, members: int) -> None:
    write_census_csv(generate_census(members, 3, as_of=DAY), tmp_path / "whole.csv")
    rows = generate_census_csv(members, 3, tmp_path / "blocks.csv", as_of=DAY)
    assert (tmp_path / "blocks.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert rows == len(pd.read_csv(tmp_path / "whole.csv", dtype=str))


def test_census_in_blocks_repeats_no_id_or_ssn_and_validates(tmp_path: Path) -> None:
    path = tmp_path / "blocks.csv"
    rows = generate_census_csv(2500, 4, path, as_of=DAY, block_members=600)
    frame = read_census(path, load_schema(ROOT / "schemas" / "census-v1.yaml"))
    assert len(frame) == rows
    people = frame.drop_duplicates("member_id")
    assert len(people) == 2500
    ssns = people["ssn"][people["ssn"] != ""]
    assert ssns.is_unique and ssns.str.match(SSN).all()
    # every family is whole and led by its subscriber, and no subscriber id is reused by another block
    firsts = people.groupby("subscriber_id", sort=False)["relationship"].first()
    assert (firsts == "EE").all()
    assert (people["relationship"] == "EE").sum() == people["subscriber_id"].nunique()
    assert (people["member_id"].str.split("-").str[0] == people["subscriber_id"]).all()
    # the blocks differ (each its own seed), the first is the census of that size
    first = generate_census(600, 4, as_of=DAY)
    assert people["member_id"].iloc[:600].tolist() == first["member_id"].drop_duplicates().tolist()
    assert people["dob"].iloc[600:1200].tolist() != people["dob"].iloc[:600].tolist()
