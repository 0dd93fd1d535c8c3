"""The conformance gate: broken files fail both checks, and no problem ever quotes a data value."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import x12_helpers as h

from carrierfeeds.x12.check import Problem, check_834, validate_with_pyx12
from carrierfeeds.x12.render import render_834_bytes

#: Values planted in the broken files; none may appear in any problem.
PLANTED_CODE = "777"
PLANTED_NAME = "ZQXWVKJHPLMNBRTSDFGQWERTYUIOPZX"


def _good() -> bytes:
    return render_834_bytes(h.enrollment(), h.header(), h.CONTROL)


def _bad_se_count(data: bytes) -> bytes:
    return data.replace(b"SE*60*0001~", b"SE*61*0001~")


def _missing_dmg(data: bytes) -> bytes:
    """The first child's DMG dropped, SE01 corrected so that only the missing segment is wrong."""
    return data.replace(b"DMG*D8*20120715*F~\n", b"").replace(b"SE*60*", b"SE*59*")


def _bad_ins03(data: bytes) -> bytes:
    return data.replace(b"INS*N*01*030", b"INS*N*01*" + PLANTED_CODE.encode(), 1)


def _name_too_long(data: bytes) -> bytes:
    return data.replace(b"NM1*IL*1*RIVERA*TEO~", b"NM1*IL*1*RIVERA*TEO*" + PLANTED_NAME.encode() + b"~")


def _texts(problems: tuple[Problem, ...]) -> str:
    return " ".join(" ".join(str(part) for part in p) for p in problems)


def test_good_file_is_clean() -> None:
    assert b"SE*60*0001~" in _good()
    report = check_834(_good())
    assert report.ok and report.problems == ()
    assert (report.member_count, report.transaction_sets, report.segment_count) == (5, 1, 64)


@pytest.mark.parametrize(("breaker", "segment_id", "element", "code", "position"), [
    (_bad_se_count, "SE", "SE01", "se_count", 62),
    (_missing_dmg, "INS", "", "segment_order", 29),
    (_bad_ins03, "INS", "INS03", "invalid_code", 18),
])
def test_structural_check_names_position_and_element(breaker: Callable[[bytes], bytes], segment_id: str,
                                                      element: str, code: str, position: int) -> None:
    report = check_834(breaker(_good()))
    assert not report.ok
    assert (position, segment_id, element, code) in {
        (p.segment_position, p.segment_id, p.element, p.code) for p in report.problems}
    assert PLANTED_CODE not in _texts(report.problems)


def test_missing_dmg_may_be_allowed_explicitly() -> None:
    assert check_834(_missing_dmg(_good()), require_dmg=False).ok


@pytest.mark.parametrize(("breaker", "element"), [(_bad_se_count, ""), (_bad_ins03, "INS03"),
                                                   (_name_too_long, "NM105")])
def test_pyx12_fails_broken_files_without_quoting_values(tmp_path: Path, breaker: Callable[[bytes], bytes],
                                                          element: str) -> None:
    path = tmp_path / "broken.834"
    path.write_bytes(breaker(_good()))
    verdict = validate_with_pyx12(path)
    assert not verdict.ok
    assert verdict.errors
    if element:
        assert element in {e.element for e in verdict.errors}
    text = _texts(verdict.errors)
    assert PLANTED_CODE not in text and PLANTED_NAME not in text
    assert verdict.ack_999 is not None and b"IK5*R" in verdict.ack_999


def test_everything_broken_at_once_fails_both(tmp_path: Path) -> None:
    data = _bad_ins03(_missing_dmg(_good())).replace(b"SE*59*", b"SE*61*")
    report = check_834(data)
    assert {p.code for p in report.problems} >= {"se_count", "invalid_code", "segment_order"}
    path = tmp_path / "broken.834"
    path.write_bytes(data)
    assert not validate_with_pyx12(path).ok


@pytest.mark.parametrize(("data", "code"), [
    (b"GS*BE*X~", "isa_missing"),
    (b"ISA*00*too short~", "isa_missing"),
])
def test_not_an_interchange(data: bytes, code: str) -> None:
    report = check_834(data)
    assert not report.ok and report.problems[0].code == code


def test_control_number_mismatches_and_empty_segments() -> None:
    data = _good().replace(b"IEA*1*000000042~", b"IEA*1*000000043~").replace(b"GE*1*42~", b"GE*1*41~")
    data = data.replace(b"REF*38*SHP-0042~\n", b"REF*38*SHP-0042~\n~\n").replace(b"SE*60", b"SE*61")
    codes = {(p.segment_id, p.element, p.code) for p in check_834(data).problems}
    assert ("IEA", "IEA02", "control_number") in codes
    assert ("GE", "GE02", "control_number") in codes
    assert ("", "", "empty_segment") in codes


def test_pyx12_unexpected_segment_message_holds_no_data(tmp_path: Path) -> None:
    data = _good().replace(b"N1*IN*", b"N3*" + PLANTED_NAME.encode() + b" STREET~\nN1*IN*", 1)
    data = data.replace(b"SE*60*", b"SE*61*")
    path = tmp_path / "stray.834"
    path.write_bytes(data)
    verdict = validate_with_pyx12(path)
    assert not verdict.ok
    assert any(e.segment_id == "N3" for e in verdict.errors)
    assert PLANTED_NAME not in _texts(verdict.errors)
    report = check_834(data)
    assert not report.ok and PLANTED_NAME not in _texts(report.problems)
    assert (7, "N3", "segment_order") in {(p.segment_position, p.segment_id, p.code) for p in report.problems}


def _golden(name: str) -> bytes:
    data = (h.FIXTURES / name).read_bytes()
    assert check_834(data).ok  # each mutation below breaks a file the gate accepts
    return data


def _problems(data: bytes) -> set[tuple[int, str, str, str]]:
    return {(p.segment_position, p.segment_id, p.element, p.code) for p in check_834(data).problems}


def test_a_repeated_st02_within_the_group_is_refused() -> None:
    data = _golden("full-file-split-transaction-sets.834")
    dup = data.replace(b"ST*834*0002*", b"ST*834*0001*").replace(b"SE*28*0002~", b"SE*28*0001~")
    assert (52, "ST", "ST02", "duplicate_control_number") in _problems(dup)


@pytest.mark.parametrize(("old", "new", "position"), [
    (b"REF*1L*SHP-0042~\nREF*17*EAST~\n", b"REF*17*EAST~\nREF*1L*SHP-0042~\n", 8),  # REF*17 before REF*1L
    (b"REF*1L*SHP-0042~\nREF*17*EAST~\nREF*DX*PLANT 2~\n", b"REF*DX*PLANT 2~\nREF*1L*SHP-0042~\nREF*17*EAST~\n",
     8),  # REF*DX before REF*1L
    (b"REF*17*EAST~\nREF*DX*PLANT 2~\n", b"REF*DX*PLANT 2~\nREF*17*EAST~\n", 8),  # REF*DX before REF*17
    (b"REF*17*EAST~\n", b"REF*17*EAST~\nREF*17*EAST~\n", 8),  # a situational REF twice
])
def test_loop_2000_references_must_follow_the_guide_order(old: bytes, new: bytes, position: int) -> None:
    data = _golden("full-file-member-references.834")
    assert old in data
    broken = data.replace(old, new, 1)
    if len(new) > len(old):
        broken = broken.replace(b"SE*75*", b"SE*76*")
    assert _problems(broken) == {(position, "INS", "", "segment_order")}


def test_loop_2000_dates_must_follow_the_guide_order() -> None:
    data = _golden("full-file-member-dates.834")
    old = b"DTP*356*D8*20240101~\nDTP*357*D8*20261130~\n"
    assert old in data
    broken = data.replace(old, b"DTP*357*D8*20261130~\nDTP*356*D8*20240101~\n")
    assert {p.code for p in check_834(broken).problems} == {"segment_order"}


@pytest.mark.parametrize(("old", "new", "element"), [
    (b"NM1*IL*1*RIVERA*ANA*", b"NM1*IL*1*RIV:ERA*ANA*", "NM103"),  # component separator (ISA16)
    (b"N3*12 ELM STREET*APT 3~", b"N3*12 ELM^STREET*APT 3~", "N301"),  # repetition separator (ISA11)
    (b"N3*12 ELM STREET*APT 3~", b"N3*12 ELM STREET*APT:3~", "N302"),
])
def test_a_component_or_repetition_separator_in_data_is_refused(old: bytes, new: bytes, element: str) -> None:
    data = _golden("full-file-family.834")
    broken = data.replace(old, new, 1)
    segment = 10 if element == "NM103" else 11
    assert _problems(broken) == {(segment, element[:-2], element, "delimiter_in_data")}
    assert b"RIV" not in " ".join(p.message for p in check_834(broken).problems).encode()


def test_broken_group_and_interchange_counts_are_refused() -> None:
    data = _golden("full-file-split-transaction-sets.834")
    assert (80, "GE", "GE01", "ge_count") in _problems(data.replace(b"GE*2*42~", b"GE*1*42~"))
    assert (81, "IEA", "IEA01", "iea_count") in _problems(data.replace(b"IEA*1*", b"IEA*2*"))
