"""The TA1/999 reader: pyx12's own 999s for our 834s, hand-written TA1s, carriers' quirks, no data kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import x12_helpers as h
from hypothesis import given, settings
from hypothesis import strategies as st

from carrierfeeds.errors import DataError
from carrierfeeds.x12.ack_reader import (
    ElementErrorCode,
    GroupAckCode,
    InterchangeAckCode,
    InterchangeNoteCode,
    SegmentErrorCode,
    TransactionSetAckCode,
    TransactionSetErrorCode,
    read_acks,
    redact_acks,
)
from carrierfeeds.x12.check import validate_with_pyx12
from carrierfeeds.x12.render import render_834_bytes

#: A value planted in the broken 834: pyx12 copies it into IK404; it must never reach our result.
PLANTED = "ZQX"


def _pyx12_999(tmp_path: Path, data: bytes) -> bytes:
    path = tmp_path / "file.834"
    path.write_bytes(data)
    ack = validate_with_pyx12(path).ack_999
    assert ack is not None
    return ack


def _good() -> bytes:
    return render_834_bytes(h.enrollment(), h.header(), h.CONTROL)


def _broken() -> bytes:
    """The first dependent's INS03 replaced by a code no list holds."""
    data = _good()
    assert b"INS*N*01*030" in data
    return data.replace(b"INS*N*01*030", b"INS*N*01*" + PLANTED.encode(), 1)


def test_pyx12_999_for_a_good_834_reads_as_accepted(tmp_path: Path) -> None:
    result = read_acks(_pyx12_999(tmp_path, _good()))
    (ic,) = result.interchanges
    assert (ic.sender_id, ic.receiver_id) == ("SUNRISEHP", "CARRIERFEEDS")
    (ack,) = result.acks
    assert ack.functional_id == "BE" and ack.version == "005010X220A1"
    assert ack.group_control_number == h.CONTROL.gs06
    assert ack.status is GroupAckCode.ACCEPTED
    assert (ack.sets_included, ack.sets_received, ack.sets_accepted) == (1, 1, 1)
    (ts,) = ack.transaction_sets
    assert (ts.transaction_set, ts.control_number, ts.status) == ("834", h.CONTROL.st02,
                                                                  TransactionSetAckCode.ACCEPTED)
    assert ts.accepted and ts.segment_errors == () and ts.errors == ()
    assert result.ta1s == ()


def test_pyx12_999_for_a_broken_834_names_position_element_and_code_but_never_the_value(
        tmp_path: Path) -> None:
    raw = _pyx12_999(tmp_path, _broken())
    assert PLANTED.encode() in raw  # pyx12 copies the bad value into IK404 ...
    result = read_acks(raw)
    (ack,) = result.acks
    assert ack.status is GroupAckCode.REJECTED and ack.sets_accepted == 0
    (ts,) = ack.transaction_sets
    assert ts.status is TransactionSetAckCode.REJECTED and not ts.accepted
    assert TransactionSetErrorCode.ONE_OR_MORE_SEGMENTS_IN_ERROR in ts.errors
    (seg,) = ts.segment_errors
    # INS of the second member: position counted from ST = 1 in the transaction set.
    st_line = _broken().split(b"~\n").index(next(s for s in _broken().split(b"~\n") if s.startswith(b"ST*")))
    bad_line = next(i for i, s in enumerate(_broken().split(b"~\n")) if PLANTED.encode() in s)
    assert (seg.segment_id, seg.position) == ("INS", bad_line - st_line + 1)
    assert seg.code is SegmentErrorCode.SEGMENT_HAS_DATA_ELEMENT_ERRORS
    (el,) = seg.elements
    assert (el.position, el.reference, el.code) == (3, "875", ElementErrorCode.INVALID_CODE_VALUE)
    assert el.code.meaning == "invalid code value"
    assert PLANTED not in repr(result)  # ... and the reader never keeps it


def test_redacted_copy_drops_ik404_and_reads_the_same(tmp_path: Path) -> None:
    raw = _pyx12_999(tmp_path, _broken())
    redacted = redact_acks(raw)
    assert PLANTED.encode() not in redacted
    assert read_acks(redacted) == read_acks(raw)


TA1_ACCEPT = (b"ISA*00*          *00*          *ZZ*SUNRISEHP      *ZZ*CARRIERFEEDS   *261121*0800*^*00501*"
              b"000000501*0*T*:~TA1*000000042*261121*0730*A*000~IEA*0*000000501~")


def test_hand_written_ta1_accept() -> None:
    (ta1,) = read_acks(TA1_ACCEPT).ta1s
    assert (ta1.control_number, ta1.status, ta1.note) == (42, InterchangeAckCode.ACCEPTED,
                                                          InterchangeNoteCode.NO_ERROR)
    assert (ta1.interchange_date, ta1.interchange_time, ta1.segment_position) == ("261121", "0730", 2)
    assert read_acks(TA1_ACCEPT).acks == ()


def test_hand_written_ta1_reject_with_other_delimiters_and_crlf() -> None:
    data = (b"ISA|00|          |00|          |ZZ|SUNRISEHP      |ZZ|CARRIERFEEDS   |261121|0800|U|00501|"
            b"000000502|0|P|>\r\nTA1|000000043|261121|0731|R|008\r\nIEA|0|000000502\r\n")
    (ta1,) = read_acks(data).ta1s
    assert ta1.status is InterchangeAckCode.REJECTED
    assert ta1.note is InterchangeNoteCode.INVALID_RECEIVER_ID
    assert ta1.note.meaning == "invalid receiver id"
    assert read_acks(data).interchanges[0].usage == "P"


def test_ta1_ahead_of_the_gs_in_a_999_and_an_unknown_error_code() -> None:
    data = "\n".join([
        "ISA*00*          *00*          *ZZ*SUNRISEHP      *ZZ*CARRIERFEEDS   *261121*0800*^*00501*000000503*0*T*:~",
        "TA1*000000044*261121*0732*E*024~",
        "GS*FA*SUNRISEHP*CARRIERFEEDS*20261121*0800*503*X*005010X231A1~",
        "ST*999*0001*005010X231A1~",
        "AK1*BE*44*005010X220A1~",
        "AK2*834*0044*005010X220A1~",
        "IK3*DMG*12*2100*8~",
        "CTX*SITUATIONAL TRIGGER*DMG*12**2~",
        "IK4*2:1*1251*Z9~",
        "IK5*E*I5~",
        "AK9*E*1*1*1~",
        "SE*10*0001~",
        "GE*1*503~",
        "IEA*1*000000503~",
    ]).encode()
    result = read_acks(data)
    (ta1,) = result.ta1s
    assert ta1.status is InterchangeAckCode.ACCEPTED_WITH_ERRORS
    (ack,) = result.acks
    assert ack.status is GroupAckCode.ACCEPTED_WITH_ERRORS and ack.segment_position == 4
    (ts,) = ack.transaction_sets
    assert ts.accepted and ts.control_number == 44
    assert ts.errors == (TransactionSetErrorCode.IMPLEMENTATION_ONE_OR_MORE_SEGMENTS_IN_ERROR,)
    (seg,) = ts.segment_errors
    assert (seg.segment_id, seg.position, seg.loop) == ("DMG", 12, "2100")
    (el,) = seg.elements
    assert (el.position, el.component, el.reference) == (2, 1, "1251")
    assert el.code == "Z9" and not el.code.known and el.code.meaning == "unknown code"
    assert "SITUATIONAL" not in repr(result)


@pytest.mark.parametrize(("data", "rule"), [
    (b"not an interchange", "isa"),
    (b"ISA*00*short~", "isa"),
    (TA1_ACCEPT.replace(b"*A*000~", b"*Q*000~"), "unknown_ack_code"),
    (TA1_ACCEPT.replace(b"IEA*0*000000501~", b""), "iea_missing"),
    (TA1_ACCEPT.replace(b"TA1*000000042*261121*0730*A*000~", b""), "no_acknowledgment"),
    (TA1_ACCEPT.replace(b"TA1*", b"NM1*IL*1*SMITH~TA1*"), "unexpected_segment"),
    (TA1_ACCEPT.replace(b"TA1*000000042", b"TA1*ABC"), "not_a_number"),
])
def test_unreadable_files_are_refused_by_rule_and_position_never_value(data: bytes, rule: str) -> None:
    with pytest.raises(DataError) as err:
        read_acks(data)
    assert err.value.rule == rule
    assert "SMITH" not in str(err.value) and "SMITH" not in repr(err.value.details)


def _ack_999(element: str, component: str, terminator: str, suffix: str, repetition: str = "^") -> bytes:
    segs = [
        ["ISA", "00", " " * 10, "00", " " * 10, "ZZ", "SUNRISEHP".ljust(15), "ZZ", "CARRIERFEEDS".ljust(15),
         "261121", "0800", repetition, "00501", "000000777", "0", "T", component],
        ["GS", "FA", "SUNRISEHP", "CARRIERFEEDS", "20261121", "0800", "777", "X", "005010X231A1"],
        ["ST", "999", "0001", "005010X231A1"], ["AK1", "BE", "61", "005010X220A1"],
        ["AK2", "834", "0061", "005010X220A1"], ["IK3", "NM1", "9", "2100", "8"],
        ["IK4", f"3{component}2", "1035", "6"], ["IK5", "R", "5"], ["AK9", "R", "1", "1", "0"],
        ["SE", "8", "0001"], ["GE", "1", "777"], ["IEA", "1", "000000777"]]
    return "".join(element.join(s) + terminator + suffix for s in segs).encode()


@settings(max_examples=40, deadline=None)
@given(st.permutations(list("*|~^!>:")).map(lambda p: p[:4]), st.sampled_from(["", "\n", "\r\n"]))
def test_any_delimiter_set_reads_the_same(seps: list[str], suffix: str) -> None:
    result = read_acks(_ack_999(seps[0], seps[1], seps[2], suffix, repetition=seps[3]))
    (ack,) = result.acks
    (seg,) = ack.transaction_sets[0].segment_errors
    assert (ack.group_control_number, ack.status, seg.segment_id, seg.position) == (61, GroupAckCode.REJECTED,
                                                                                    "NM1", 9)
    assert (seg.elements[0].position, seg.elements[0].component) == (3, 2)
    assert seg.elements[0].code is ElementErrorCode.INVALID_CHARACTER_IN_DATA_ELEMENT


def test_hand_written_999_is_valid_for_pyx12(tmp_path: Path) -> None:
    """The fixture 999 shape the other tests use is itself a conformant 005010X231A1 999."""
    path = tmp_path / "ack.999"
    path.write_bytes(_ack_999("*", ":", "~", "\n"))
    verdict = validate_with_pyx12(path)
    assert verdict.ok, verdict.errors


def _split_broken_in_second_set() -> bytes:
    """The family of four and the single in two sets (cap 4); the single's INS03 replaced."""
    m = h.validated(max_members_per_transaction=4)
    data = render_834_bytes(h.enrollment(m=m), h.header(m), h.CONTROL)
    i = data.rindex(b"INS*Y*18*030")
    return data[:i] + data[i:].replace(b"INS*Y*18*030", b"INS*Y*18*" + PLANTED.encode(), 1)


def test_partially_accepted_999_for_a_split_834_reads_each_set(tmp_path: Path) -> None:
    data = _split_broken_in_second_set()
    raw = _pyx12_999(tmp_path, data)
    # pyx12 writes AK901 R when one of two sets is rejected; X231A1 carriers write P: both are read as sent.
    (as_sent,) = read_acks(raw).acks
    assert (as_sent.status, as_sent.sets_accepted) == (GroupAckCode.REJECTED, 1)
    assert b"AK9*R*2*2*1~" in raw
    result = read_acks(raw.replace(b"AK9*R*2*2*1~", b"AK9*P*2*2*1~"))
    (ack,) = result.acks
    assert ack.status is GroupAckCode.PARTIALLY_ACCEPTED and ack.status.meaning == "partially accepted"
    assert (ack.group_control_number, ack.sets_included, ack.sets_received, ack.sets_accepted) == (
        h.CONTROL.gs06, 2, 2, 1)
    first, second = ack.transaction_sets
    assert (first.control_number, first.status, first.accepted, first.segment_errors) == (
        1, TransactionSetAckCode.ACCEPTED, True, ())
    assert (second.control_number, second.status, second.accepted) == (2, TransactionSetAckCode.REJECTED, False)
    (seg,) = second.segment_errors
    # Counted from the second set's own ST (= 1), not from the file's start.
    lines = data.split(b"~\n")
    st = max(i for i, s in enumerate(lines) if s.startswith(b"ST*"))
    bad = next(i for i, s in enumerate(lines) if PLANTED.encode() in s)
    assert (seg.segment_id, seg.position, seg.elements[0].position) == ("INS", bad - st + 1, 3)
    assert PLANTED not in repr(result)
