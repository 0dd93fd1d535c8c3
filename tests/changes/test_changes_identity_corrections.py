"""Identity corrections: the same member (its ids) with a new SSN, name, birth date or gender is sent
with Loop 2100B holding what the carrier holds, taken from the snapshot; a new id is a new member."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.x12 import x12_helpers as h

from carrierfeeds.changes import PRIOR, diff_against_snapshot
from carrierfeeds.x12.check import check_834, validate_with_pyx12
from carrierfeeds.x12.read import read_834
from carrierfeeds.x12.render import render_834_bytes, render_834_naive

_ON = h.status_mapping(identity_corrections=True)


def _edit(member: str, **values: str) -> list[dict[str, str]]:
    return [{**r, **values} if r["member_id"] == member else dict(r) for r in h.family_rows()]


def _diff(after: list[dict[str, str]], m=_ON, before: list[dict[str, str]] | None = None):  # type: ignore[no-untyped-def]
    base = diff_against_snapshot(h.enrollment(h.census(before or h.family_rows()), m), None, as_of=h.AS_OF).snapshot
    return diff_against_snapshot(h.enrollment(h.census(after), m), base, as_of=h.AS_OF)


def test_a_new_member_id_is_a_new_member_not_a_correction() -> None:
    rows = [{**r, "member_id": "E1001-09", "coverage_start": "2026-11-01"} if r["member_id"] == "E1001-02" else r
            for r in h.family_rows()]
    change = _diff(rows)
    assert change.members_by_type == {"021": 1, "024": 1}
    assert (change.enrollment.table[list(PRIOR)] == "").all().all()


def test_an_address_change_is_no_correction() -> None:
    change = _diff(_edit("E1001", address1="77 Birch Road"))
    assert (change.enrollment.table[list(PRIOR)] == "").all().all()


def test_off_the_correction_is_a_plain_change_as_before() -> None:
    change = _diff(_edit("E1001", ssn="900112223"), m=h.mapping())
    assert not set(PRIOR) & set(change.enrollment.table.columns)
    data = render_834_bytes(change.enrollment, h.header(), h.CONTROL)
    assert b"NM1*70" not in data and b"INS*Y*18*001*25*" in data


def test_the_snapshot_keeps_the_corrected_identity_and_never_the_prior_one(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fixed = _edit("E1001", ssn="900112223", last_name="Rivera-Cruz")
    change = _diff(fixed)
    assert not set(PRIOR) & set(change.snapshot.columns)
    held = change.snapshot[change.snapshot["member_id"] == "E1001"]
    assert set(held["ssn"]) == {"900112223"} and set(held["last_name"]) == {"RIVERA-CRUZ"}
    sent = change.enrollment.table
    assert sent[["prior_last_name", "prior_ssn", "prior_dob"]].values.tolist() == [["RIVERA", "900112222", ""]]
    assert "900112222" not in caplog.text and "RIVERA" not in caplog.text
    # the next run diffs against the corrected identity: nothing more to send
    again = diff_against_snapshot(h.enrollment(h.census(fixed), _ON), change.snapshot, as_of=h.AS_OF)
    assert again.empty


_FIELDS = st.fixed_dictionaries({}, optional={
    "ssn": st.sampled_from(["900112299", ""]), "last_name": st.sampled_from(["Rivers", "Ri Vera"]),
    "first_name": st.sampled_from(["Anna", "Ann"]), "middle_initial": st.sampled_from(["", "Q"]),
    "dob": st.sampled_from(["1984-03-10", "1985-01-01"]), "gender": st.sampled_from(["M", "U"])})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(member=st.sampled_from(["E1001", "E1001-01", "E1001-02", "E2002"]), values=_FIELDS)
def test_any_correction_renders_the_carriers_identity_both_writers_agree(member: str,
                                                                          values: dict[str, str]) -> None:
    before = h.family_rows()
    change = _diff(_edit(member, **values), before=before)
    data = render_834_bytes(change.enrollment, h.header(_ON), h.CONTROL)
    assert data == render_834_naive(change.enrollment, h.header(_ON), h.CONTROL)
    assert check_834(data).ok
    back = read_834(data)
    if change.empty:
        return
    old = next(r for r in before if r["member_id"] == member)
    got = back.iloc[0]
    assert got["member_id"] == member and got["ins04"] == "25"
    assert got["prior_last_name"] == old["last_name"].upper()
    assert got["prior_ssn"] == old["ssn"]
    demographic = {"dob", "gender"} & set(values) and any(values[k] != old[k] for k in {"dob", "gender"} & set(values))
    assert got["prior_dob"] == (old["dob"].replace("-", "") if demographic else "")


@pytest.mark.parametrize("off", ["ssn", "middle_initial", "gender"])
def test_a_correction_sends_only_what_the_allowlist_holds_of_the_carriers_identity(off: str, tmp_path: Path) -> None:
    """identity_corrections needs no field of its own: a carrier whose allowlist leaves out the SSN (or
    the middle initial or gender) still gets Loop 2100B, without that field, and the file renders."""
    m = h.validated(**{**_ON.model_dump(), "allowlist": [c for c in _ON.allowlist if c != off]})
    base = diff_against_snapshot(h.enrollment(h.family_census(), m), None, as_of=h.AS_OF).snapshot
    fixed = _edit("E1001", last_name="Rivera-Cruz", dob="1984-03-10", gender="M")
    change = diff_against_snapshot(h.enrollment(h.census(fixed), m), base, as_of=h.AS_OF)
    assert f"prior_{off}" not in change.enrollment.table.columns
    data = render_834_bytes(change.enrollment, h.header(m), h.CONTROL)
    assert data == render_834_naive(change.enrollment, h.header(m), h.CONTROL)
    assert check_834(data).ok
    assert b"NM1*70*1*RIVERA" in data
    (tmp_path / "correction.834").write_bytes(data)
    assert validate_with_pyx12(tmp_path / "correction.834").ok
