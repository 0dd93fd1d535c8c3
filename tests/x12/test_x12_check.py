"""The conformance gate: broken files fail both checks, and no problem ever quotes a data value."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import x12_helpers as h

from carrierfeeds.x12.check import Problem, check_834, check_sample, validate_with_pyx12
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


def test_sample_gate_checks_every_kth_family() -> None:
    enrollment = h.enrollment()
    whole = check_sample(enrollment, h.header(), h.CONTROL, max_members=100)
    assert whole.ok and not whole.sampled
    sampled = check_sample(enrollment, h.header(), h.CONTROL, max_members=2)
    assert sampled.ok and sampled.sampled
    assert sampled.segments < whole.segments


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
