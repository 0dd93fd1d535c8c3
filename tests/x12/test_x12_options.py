"""A companion guide's 834 options, as mapping data: REF and DTP choices, names, character set and
transaction-set splits; refused at load when inconsistent, never leaking a field off the allowlist."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import x12_helpers as h

from carrierfeeds.changes import diff_against_snapshot
from carrierfeeds.config import ClientReporting, MemberReferences, load_mapping
from carrierfeeds.errors import ConfigError, ConformanceFailed
from carrierfeeds.x12.check import check_834, sample_834, validate_with_pyx12
from carrierfeeds.x12.read import read_834, split_segments
from carrierfeeds.x12.render import render_834, render_834_bytes, render_834_naive

MAPPING = h.ROOT / "mappings" / "sunrise-health.yaml"


def _yaml_variant(tmp_path: Path, extra: str, old: str = "", new: str = "") -> Path:
    text = MAPPING.read_text()
    if old:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "sunrise-health.yaml"
    path.write_text(text + extra)
    return path


# ------------------------------------------------------------------------------------ load-time checks
@pytest.mark.parametrize(("extra", "field", "says"), [
    ("member_references: {department: true}\n", "(top level)", "needs 'department' on the allowlist"),
    ("member_references: {client_reporting_category: {field: department}}\n", "(top level)",
     "'department' is not on the allowlist"),
    ("member_references: {client_reporting_category: {field: departmnet}}\n",
     "member_references.client_reporting_category.field", "did you mean 'department'"),
    ("member_references: {client_reporting_category: {value: EAST, field: department}}\n",
     "member_references.client_reporting_category", "exactly one of value and field"),
    ("member_dates: [hire]\n", "(top level)", "['hire_date'] on the allowlist"),
    ("member_dates: [hired]\n", "member_dates.0", "must be one of 'hire'"),
    ("name_case: as_is\n", "(top level)", "needs charset extended"),
    ("charset: unicode\n", "charset", "must be one of 'basic' or 'extended'"),
    ("max_members_per_transaction: 0\n", "max_members_per_transaction", "must be at least 1"),
    ("member_refs: {department: true}\n", "member_refs", "did you mean 'member_references'"),
])
def test_inconsistent_options_are_refused_at_load_naming_the_field(tmp_path: Path, extra: str, field: str,
                                                                    says: str) -> None:
    path = _yaml_variant(tmp_path, extra)
    with pytest.raises(ConfigError) as info:
        load_mapping(path)
    message = str(info.value)
    assert str(path) in message and says in message
    assert f"{field}:" in message


def test_group_policy_number_needs_a_group_number(tmp_path: Path) -> None:
    path = _yaml_variant(tmp_path, "member_references: {group_policy_number: true}\n",
                         "group_number: SHP-0042\n", "")
    with pytest.raises(ConfigError, match="needs group_number"):
        load_mapping(path)


def test_every_option_loads_from_yaml(tmp_path: Path) -> None:
    path = _yaml_variant(tmp_path, (
        "member_references:\n  group_policy_number: true\n  department: true\n"
        "  client_reporting_category: {value: EAST}\n"
        "member_dates: [hire, eligibility_begin, eligibility_end]\n"
        "charset: extended\nname_case: as_is\nlast_name_max_length: 20\nmax_members_per_transaction: 1000\n"),
        "  - employment_status\n", "  - employment_status\n  - department\n  - hire_date\n")
    m = load_mapping(path)
    assert m.member_references == MemberReferences(
        group_policy_number=True, department=True, client_reporting_category=ClientReporting(value="EAST"))
    assert (m.charset, m.name_case, m.last_name_max_length, m.max_members_per_transaction) == (
        "extended", "as_is", 20, 1000)


# -------------------------------------------------------------------------------- minimum necessary
def test_department_is_never_sent_when_not_allowlisted_even_if_the_census_has_it() -> None:
    # model_copy skips the load-time refusal on purpose: the view and the writer must hold on their own.
    leaky = h.mapping(member_references=MemberReferences(department=True, client_reporting_category=ClientReporting(
        field="department")))
    assert "department" not in leaky.allowlist
    census = h.family_census()
    assert (census["department"] != "").any()
    enrollment = h.enrollment(census, leaky)
    assert not {"department", "reporting_category"} & set(enrollment.table.columns)
    data = render_834_bytes(enrollment, h.header(leaky), h.CONTROL)
    assert b"REF*DX" not in data and b"REF*17" not in data
    for value in census["department"]:
        if value:
            assert value.upper().encode() not in data
    assert check_834(data).ok


def test_hire_date_is_sent_only_when_member_dates_asks() -> None:
    allow = (*h.mapping().allowlist, "hire_date")
    without = h.validated(allowlist=allow, member_dates=())
    enrollment = h.enrollment(m=without)
    assert "hire_date" not in enrollment.table.columns
    assert b"DTP*336" not in render_834_bytes(enrollment, h.header(without), h.CONTROL)
    with_hire = h.validated(allowlist=allow, member_dates=("hire",))
    assert render_834_bytes(h.enrollment(m=with_hire), h.header(with_hire), h.CONTROL).count(b"DTP*336*D8*") == 2


# ---------------------------------------------------------------------------------- character sets
def test_normalisation_is_counted_by_rule_never_by_value() -> None:
    rows = h.family_rows()
    for r in rows:
        if r["member_id"] == "E2002":
            r.update(last_name="O'Neil\tJr", city="Peoria~")
    enrollment = h.enrollment(h.census(rows))
    # Lucía (2 coverage rows) transliterated; O'Neil<TAB>Jr and Peoria~ (2 rows each) replaced.
    assert enrollment.normalised == {"transliterate": 2, "outside_set": 4}
    assert all(isinstance(k, str) and isinstance(v, int) for k, v in enrollment.normalised.items())


def test_writer_refuses_a_value_outside_the_carriers_character_set() -> None:
    enrollment = h.enrollment()
    enrollment.table.loc[0, "last_name"] = "Rivera"
    for writer in (render_834_bytes, render_834_naive):
        with pytest.raises(ConformanceFailed) as info:
            writer(enrollment, h.header(), h.CONTROL)
        assert info.value.details["rule"] == "character_set"
        assert "Rivera" not in str(info.value)


def test_name_lengths_per_element() -> None:
    m = h.validated(last_name_max_length=3, first_name_max_length=2)
    table = h.enrollment(m=m).table
    assert set(table["last_name"]) == {"RIV", "O'N"}
    assert table["first_name"].str.len().max() == 2


# ------------------------------------------------------------------------------- transaction sets
def _many_families(n: int) -> pd.DataFrame:
    rows = []
    for i in range(n):
        for r in h.family_rows():
            sid = f"F{i:03d}" if r["subscriber_id"] == "E1001" else f"S{i:03d}"
            rows.append({**r, "subscriber_id": sid, "member_id": r["member_id"].replace(r["subscriber_id"], sid)})
    return h.census(rows)


@pytest.mark.parametrize("cap", [4, 5, 9, 13])
def test_split_keeps_families_whole_and_counts_right(cap: int, tmp_path: Path) -> None:
    m = h.validated(max_members_per_transaction=cap)
    enrollment = h.enrollment(_many_families(6), m)  # 6 x (family of 4 + single) = 30 members
    data = render_834_bytes(enrollment, h.header(m), h.CONTROL)
    for chunk_members in (1, 3, 50):
        assert b"".join(render_834(enrollment, h.header(m), h.CONTROL, chunk_members=chunk_members)) == data
    assert data == render_834_naive(enrollment, h.header(m), h.CONTROL)
    assert data == render_834_bytes(enrollment, h.header(m), h.CONTROL)  # a retry: the same numbers

    report = check_834(data)
    assert report.ok, report.problems
    back = read_834(data)
    members = back.drop_duplicates(["subscriber_id", "member_id"])
    per_set = members.groupby("st02").size()
    assert per_set.max() <= cap and per_set.sum() == enrollment.member_count == 30
    assert (members.groupby("subscriber_id")["st02"].nunique() == 1).all(), "a family was split"
    # Greedy packing of whole families in order: a set closes only when the next family would overflow.
    sizes = [4, 1] * 6
    expected_sets, count = 1, 0
    for size in sizes:
        if count and count + size > cap:
            expected_sets, count = expected_sets + 1, 0
        count += size
    assert report.transaction_sets == len(per_set) == expected_sets
    segments, _ = split_segments(data)
    st02s = [s[2] for s in segments if s[0] == "ST"]
    assert st02s == [f"{k:04d}" for k in range(1, expected_sets + 1)]
    assert [s[1] for s in segments if s[0] == "GE"] == [str(expected_sets)]
    path = tmp_path / "split.834"
    path.write_bytes(data)
    verdict = validate_with_pyx12(path)
    assert verdict.ok, verdict.errors


def test_a_family_larger_than_the_cap_is_refused_not_split() -> None:
    m = h.validated(max_members_per_transaction=3)
    enrollment = h.enrollment(m=m)
    for writer in (render_834_bytes, render_834_naive):
        with pytest.raises(ConformanceFailed) as info:
            writer(enrollment, h.header(m), h.CONTROL)
        assert info.value.details == {"rule": "family_exceeds_transaction_cap", "family_members": 4, "cap": 3}


def test_the_pyx12_sample_of_a_split_file_is_one_conformant_set(tmp_path: Path) -> None:
    m = h.validated(max_members_per_transaction=5)
    enrollment = h.enrollment(_many_families(8), m)
    data = render_834_bytes(enrollment, h.header(m), h.CONTROL)
    assert check_834(data).transaction_sets == 8
    sample, sampled = sample_834(data, max_members=10)
    assert sampled
    report = check_834(sample)
    assert report.ok, report.problems
    assert report.transaction_sets == 1 and 0 < report.member_count < 40
    path = tmp_path / "sample.834"
    path.write_bytes(sample)
    verdict = validate_with_pyx12(path)
    assert verdict.ok, verdict.errors


def test_a_change_file_keeps_the_mappings_options() -> None:
    m = h.validated(max_members_per_transaction=4, allowlist=(*h.mapping().allowlist, "department"),
                    member_references=MemberReferences(department=True))
    rows = h.family_rows()
    before = diff_against_snapshot(h.enrollment(h.census(rows), m), None, as_of=h.AS_OF).snapshot
    moved = [{**r, "address1": "77 Birch Road"} if r["subscriber_id"] in ("E1001", "E2002") else r for r in rows]
    change_set = diff_against_snapshot(h.enrollment(h.census(moved), m), before, as_of=h.AS_OF)
    assert change_set.enrollment.options.max_members_per_transaction == 4
    data = render_834_bytes(change_set.enrollment, h.header(m), h.CONTROL)
    report = check_834(data)
    assert report.ok, report.problems
    assert report.transaction_sets == 2 and b"REF*DX*PLANT 2~" in data


# --------------------------------------------------------------------------------------------- ISA14
def test_ta1_requested_is_rendered_in_isa14_and_pyx12_accepts_it(tmp_path: Path) -> None:
    """``envelope.ta1_requested: true`` asks the carrier for a TA1 (ISA14 1); the default stays 0, so
    every golden file is unchanged."""
    path = _yaml_variant(tmp_path, "", "  usage: T ", "  ta1_requested: true\n  usage: T ")
    m = load_mapping(path)
    assert m.envelope.ta1_requested and not h.mapping().envelope.ta1_requested
    enrollment = h.enrollment(m=m)
    asked = render_834_bytes(enrollment, h.header(m), h.CONTROL)
    plain = render_834_bytes(enrollment, h.header(), h.CONTROL)
    isa, _ = split_segments(asked)
    assert isa[0][0] == "ISA" and isa[0][14] == "1"
    assert split_segments(plain)[0][0][14] == "0"
    assert b"".join(render_834(enrollment, h.header(m), h.CONTROL)) == asked == render_834_naive(
        enrollment, h.header(m), h.CONTROL)
    # Only ISA14 differs from the default file.
    assert asked.replace(b"*1*T*:~", b"*0*T*:~", 1) == plain
    assert check_834(asked).ok
    out = tmp_path / "ta1.834"
    out.write_bytes(asked)
    verdict = validate_with_pyx12(out)
    assert verdict.ok, verdict.errors
