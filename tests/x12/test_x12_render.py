"""The 834 writer: pyx12 accepts it, counts are exact, both writers agree, minimum necessary holds."""

from __future__ import annotations

from pathlib import Path

import pytest
import x12_helpers as h

from carrierfeeds.errors import ConformanceFailed, FieldNotAllowed
from carrierfeeds.x12.check import check_834, validate_with_pyx12
from carrierfeeds.x12.envelope import ControlNumbers, Delimiters
from carrierfeeds.x12.read import read_834, split_segments
from carrierfeeds.x12.render import render_834, render_834_bytes, render_834_naive


def test_family_file_passes_pyx12_and_counts_members(tmp_path: Path) -> None:
    enrollment = h.enrollment()
    data = render_834_bytes(enrollment, h.header(), h.CONTROL)
    path = tmp_path / "family.834"
    path.write_bytes(data)

    verdict = validate_with_pyx12(path)
    assert verdict.ok, verdict.errors
    assert verdict.errors == ()
    assert verdict.ack_999 is not None and b"IK5*A" in verdict.ack_999 and b"AK9*A*1*1*1" in verdict.ack_999

    census = h.family_census()
    authorised = census[census["plan_code"].isin(h.feed().authorization.plans)]
    assert enrollment.member_count == authorised["member_id"].nunique() == 5
    assert enrollment.subscriber_count == 2
    assert enrollment.coverage_count == len(authorised)
    report = check_834(data)
    assert report.ok, report.problems
    assert report.member_count == enrollment.member_count
    assert verdict.segments == report.segment_count


def test_se01_counts_every_segment_from_st_to_se() -> None:
    segments, _ = split_segments(render_834_bytes(h.enrollment(), h.header(), h.CONTROL))
    ids = [s[0] for s in segments]
    st, se = ids.index("ST"), ids.index("SE")
    assert int(segments[se][1]) == se - st + 1
    assert segments[-1] == ["IEA", "1", "000000042"]
    assert segments[-2] == ["GE", "1", "42"]


@pytest.mark.parametrize("delimiters", [Delimiters(), Delimiters(suffix=""),
                                        Delimiters(element="|", component=">", repetition="{", segment="~",
                                                   suffix="\r\n")])
@pytest.mark.parametrize("chunk_members", [1, 2, 50_000])
def test_vectorised_and_naive_writers_agree(delimiters: Delimiters, chunk_members: int) -> None:
    enrollment = h.enrollment()
    chunks = list(render_834(enrollment, h.header(), h.CONTROL, delimiters, chunk_members=chunk_members))
    naive = render_834_naive(enrollment, h.header(), h.CONTROL, delimiters)
    assert b"".join(chunks) == naive
    assert len(chunks) == 2 + -(-enrollment.member_count // chunk_members)
    assert check_834(naive, delimiters=delimiters).ok


def test_round_trip_recovers_every_member_and_coverage() -> None:
    enrollment = h.enrollment()
    back = read_834(render_834_bytes(enrollment, h.header(), h.CONTROL))
    table = enrollment.table
    assert len(back) == enrollment.coverage_count
    for col in ("member_id", "subscriber_id", "ins01", "ins02", "last_name", "first_name", "dob", "gender",
                "hd03", "hd04", "hd05", "coverage_start", "coverage_end", "ssn", "zip"):
        assert back[col].tolist() == table[col].tolist(), col
    assert set(back["ins03"]) == set(back["hd01"]) == {"030"}


def test_minimum_necessary_unauthorised_plan_ssn_and_address_never_leave() -> None:
    narrow = h.mapping(allowlist=("member_id", "subscriber_id", "relationship", "last_name", "first_name",
                                  "dob", "gender", "plan_code", "coverage_level", "coverage_start",
                                  "coverage_end"))
    enrollment = h.enrollment(m=narrow)
    assert not {"ssn", "address1", "address2", "city", "state", "zip", "hire_date",
                "employment_status"} & set(enrollment.table.columns)
    data = render_834_bytes(enrollment, h.header(narrow), h.CONTROL)
    census = h.family_census()
    for value in (*census["ssn"], *census["address1"], *census["city"], *census["zip"], "VIS", "VISION",
                  "VIS-STD", *census["department"], *census["phone"]):
        if value:
            assert value.upper().encode() not in data, "a field outside the allowlist reached the file"
    assert b"N3*" not in data and b"*34*" not in data
    assert check_834(data).ok


def test_renderer_refuses_fields_off_the_allowlist() -> None:
    enrollment = h.enrollment(m=h.mapping(allowlist=(
        "member_id", "subscriber_id", "relationship", "last_name", "first_name", "dob", "gender", "plan_code",
        "coverage_level", "coverage_start")))
    leaky = type(enrollment)(table=h.enrollment().table, member_count=5, subscriber_count=2, coverage_count=9,
                             allowlist=enrollment.allowlist)
    with pytest.raises(FieldNotAllowed) as info:
        render_834_bytes(leaky, h.header(), h.CONTROL)
    assert "ssn" in info.value.details["fields"]


def test_renderer_refuses_a_value_holding_a_delimiter() -> None:
    enrollment = h.enrollment()
    enrollment.table.loc[0, "last_name"] = "RIV~ERA"
    with pytest.raises(ConformanceFailed) as info:
        render_834_bytes(enrollment, h.header(), h.CONTROL)
    assert "RIV" not in str(info.value)
    with pytest.raises(ConformanceFailed):
        render_834_naive(enrollment, h.header(), h.CONTROL)


def test_control_numbers_are_formatted_and_bounded() -> None:
    control = ControlNumbers(isa13=7, gs06=8, st02=9)
    assert (control.isa13_text, control.gs06_text, control.st02_text) == ("000000007", "8", "0009")
    from carrierfeeds.errors import ConfigError

    with pytest.raises(ConfigError):
        ControlNumbers(isa13=1_000_000_000, gs06=1, st02=1)


def test_hire_date_on_the_allowlist_becomes_dtp336_and_pyx12_accepts_it(tmp_path: Path) -> None:
    wide = h.mapping(allowlist=(*h.mapping().allowlist, "hire_date"))
    enrollment = h.enrollment(m=wide)
    data = render_834_bytes(enrollment, h.header(wide), h.CONTROL)
    assert data.count(b"DTP*336*D8*") == 2  # the two subscribers, never their dependents
    assert b"DTP*336*D8*20190601~" in data
    path = tmp_path / "hire.834"
    path.write_bytes(data)
    assert validate_with_pyx12(path).ok
    assert check_834(data).ok
    assert data == render_834_naive(enrollment, h.header(wide), h.CONTROL)
