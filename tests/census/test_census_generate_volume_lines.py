"""generate-census --volumes: life, STD and LTD lines for active employees, amounts from their salary, a
few LTD lines waiting on EOI, and every other row exactly as without the option."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from carrierfeeds.census.generate import VOLUME_PLANS, generate_census

AS_OF = date(2026, 11, 20)


def test_volume_lines_are_added_and_nothing_else_moves() -> None:
    plain = generate_census(400, 11, as_of=AS_OF)
    full = generate_census(400, 11, as_of=AS_OF, volumes=True)
    pd.testing.assert_frame_equal(full, generate_census(400, 11, as_of=AS_OF, volumes=True))
    lines = full["plan_code"].isin(VOLUME_PLANS)
    pd.testing.assert_frame_equal(full[~lines].reset_index(drop=True), plain)
    added = full[lines]
    assert set(added["plan_code"]) == set(VOLUME_PLANS)
    assert (added["relationship"] == "EE").all() and (added["coverage_level"] == "EMP").all()
    assert set(added["employment_status"]) <= {"FT", "PT"} and (added["coverage_end"] == "").all()
    assert added["coverage_amount"].str.fullmatch(r"[1-9][0-9]*").all()
    assert added["premium_amount"].str.fullmatch(r"[0-9]+\.[0-9]{2}").all()
    life = added[added["plan_code"] == "LIFE-BASIC"]["coverage_amount"].astype(int)
    assert (life % 1000 == 0).all() and life.max() <= 300_000
    std = added[added["plan_code"] == "STD-CORE"]["coverage_amount"].astype(int)
    ltd = added[added["plan_code"] == "LTD-CORE"]["coverage_amount"].astype(int)
    assert std.max() <= 1500 and ltd.max() <= 10000
    assert set(added["eoi_pending"]) == {"", "Y"}
    assert (added.loc[added["eoi_pending"] == "Y", "plan_code"] == "LTD-CORE").all()
    # a member's rows stay together: each disability line follows its employee's other elections
    firsts = full.drop_duplicates("member_id", keep="first").index
    lasts = full.drop_duplicates("member_id", keep="last").index
    spans = dict(zip(full.loc[firsts, "member_id"], zip(firsts, lasts, strict=True), strict=True))
    assert all(spans[m][1] - spans[m][0] + 1 == n for m, n in full.groupby("member_id", sort=False).size().items())


def test_an_employee_with_a_line_starts_it_with_medical() -> None:
    full = generate_census(200, 4, as_of=AS_OF, volumes=True)
    medical = full[full["plan_code"].str.startswith("MED")].drop_duplicates("member_id").set_index("member_id")
    added = full[full["plan_code"].isin(VOLUME_PLANS)]
    assert len(added)
    assert (added["coverage_start"].to_numpy() == medical.loc[added["member_id"], "coverage_start"].to_numpy()).all()


def test_an_id_prefix_separates_employers_and_changes_nothing_else() -> None:
    plain = generate_census(80, 6, as_of=AS_OF)
    other = generate_census(80, 6, as_of=AS_OF, id_prefix="k")
    assert other["member_id"].str.startswith("K").all() and other["subscriber_id"].str.startswith("K").all()
    assert (other["member_id"].str[1:] == plain["member_id"].str[1:]).all()
    pd.testing.assert_frame_equal(other.drop(columns=["member_id", "subscriber_id"]),
                                  plain.drop(columns=["member_id", "subscriber_id"]))
    for bad in ("", "E1", "ABCD", "É"):
        with pytest.raises(ValueError, match="id_prefix"):
            generate_census(5, 1, as_of=AS_OF, id_prefix=bad)
