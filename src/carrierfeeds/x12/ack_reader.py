"""A pure reader of carriers' TA1 and 999 (005010X231A1) acknowledgments: bytes in, frozen values out.

Delimiters come from each ISA (element separator at ISA position 4, the component separator in
ISA16 and the segment terminator right after it), so a carrier's own delimiter set, CR/LF between
segments, several interchanges in one file, TA1 segments ahead of the GS (or alone in an
interchange) are all read the same way.

Copies of bad data (IK404) and business-unit context values (CTX01) are never read into the result:
they may be member data. Everything kept is a position, a segment or loop id, an element reference
number or a code. Acceptance codes (TA104, AK901, IK501) must be known, else the file is refused
(a :class:`~carrierfeeds.errors.DataError`): an acknowledgment we cannot classify is not an acceptance.
Error codes (TA105, AK905-AK909, IK502-IK506, IK304, IK403) a carrier sends outside the standard
lists are kept as-is, with the meaning "unknown code".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from carrierfeeds.errors import DataError

_CODE_SHAPE = re.compile(r"[A-Z0-9]{1,3}")


class _OpenCode(StrEnum):
    """An error-code list that also holds codes outside the standard list (as ``UNKNOWN`` members)."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, str) and _CODE_SHAPE.fullmatch(value):
            member = str.__new__(cls, value)
            member._name_ = "UNKNOWN"
            member._value_ = value
            return member
        return None

    @property
    def meaning(self) -> str:
        """The code's meaning in words, from its name (``unknown code`` outside the standard list)."""
        return "unknown code" if self.name == "UNKNOWN" else self.name.replace("_", " ").lower()

    @property
    def known(self) -> bool:
        return self.name != "UNKNOWN"


class _ClosedCode(StrEnum):
    @property
    def meaning(self) -> str:
        return self.name.replace("_", " ").lower()


class InterchangeAckCode(_ClosedCode):
    """TA104 Interchange Acknowledgment Code (element I17)."""

    ACCEPTED = "A"
    ACCEPTED_WITH_ERRORS = "E"
    REJECTED = "R"


class InterchangeNoteCode(_OpenCode):
    """TA105 Interchange Note Code (element I18)."""

    NO_ERROR = "000"
    CONTROL_NUMBER_IN_HEADER_AND_TRAILER_DO_NOT_MATCH = "001"
    STANDARD_NOT_SUPPORTED = "002"
    VERSION_OF_THE_CONTROLS_NOT_SUPPORTED = "003"
    SEGMENT_TERMINATOR_INVALID = "004"
    INVALID_SENDER_ID_QUALIFIER = "005"
    INVALID_SENDER_ID = "006"
    INVALID_RECEIVER_ID_QUALIFIER = "007"
    INVALID_RECEIVER_ID = "008"
    UNKNOWN_RECEIVER_ID = "009"
    INVALID_AUTHORIZATION_INFORMATION_QUALIFIER = "010"
    INVALID_AUTHORIZATION_INFORMATION = "011"
    INVALID_SECURITY_INFORMATION_QUALIFIER = "012"
    INVALID_SECURITY_INFORMATION = "013"
    INVALID_INTERCHANGE_DATE = "014"
    INVALID_INTERCHANGE_TIME = "015"
    INVALID_INTERCHANGE_STANDARDS_IDENTIFIER = "016"
    INVALID_INTERCHANGE_VERSION_ID = "017"
    INVALID_INTERCHANGE_CONTROL_NUMBER = "018"
    INVALID_ACKNOWLEDGMENT_REQUESTED = "019"
    INVALID_TEST_INDICATOR = "020"
    INVALID_NUMBER_OF_INCLUDED_GROUPS = "021"
    INVALID_CONTROL_STRUCTURE = "022"
    IMPROPER_END_OF_FILE = "023"
    INVALID_INTERCHANGE_CONTENT = "024"
    DUPLICATE_INTERCHANGE_CONTROL_NUMBER = "025"
    INVALID_DATA_ELEMENT_SEPARATOR = "026"
    INVALID_COMPONENT_ELEMENT_SEPARATOR = "027"
    INVALID_DELIVERY_DATE_IN_DEFERRED_DELIVERY_REQUEST = "028"
    INVALID_DELIVERY_TIME_IN_DEFERRED_DELIVERY_REQUEST = "029"
    INVALID_DELIVERY_TIME_CODE_IN_DEFERRED_DELIVERY_REQUEST = "030"
    INVALID_GRADE_OF_SERVICE_CODE = "031"


class GroupAckCode(_ClosedCode):
    """AK901 Functional Group Acknowledge Code (element 715)."""

    ACCEPTED = "A"
    ACCEPTED_WITH_ERRORS = "E"
    REJECTED_MESSAGE_AUTHENTICATION_CODE_FAILED = "M"
    PARTIALLY_ACCEPTED = "P"
    REJECTED = "R"
    REJECTED_ASSURANCE_FAILED = "W"
    REJECTED_CONTENT_AFTER_DECRYPTION_COULD_NOT_BE_ANALYZED = "X"


class GroupErrorCode(_OpenCode):
    """AK905-AK909 Functional Group Syntax Error Code (element 716)."""

    FUNCTIONAL_GROUP_NOT_SUPPORTED = "1"
    FUNCTIONAL_GROUP_VERSION_NOT_SUPPORTED = "2"
    FUNCTIONAL_GROUP_TRAILER_MISSING = "3"
    GROUP_CONTROL_NUMBER_IN_HEADER_AND_TRAILER_DO_NOT_AGREE = "4"
    NUMBER_OF_INCLUDED_TRANSACTION_SETS_DOES_NOT_MATCH_ACTUAL_COUNT = "5"
    GROUP_CONTROL_NUMBER_VIOLATES_SYNTAX = "6"
    AUTHENTICATION_KEY_NAME_UNKNOWN = "10"
    ENCRYPTION_KEY_NAME_UNKNOWN = "11"
    REQUESTED_SERVICE_NOT_AVAILABLE = "12"
    UNKNOWN_SECURITY_RECIPIENT = "13"
    UNKNOWN_SECURITY_ORIGINATOR = "14"
    SYNTAX_ERROR_IN_DECRYPTED_TEXT = "15"
    SECURITY_NOT_SUPPORTED = "16"
    INCORRECT_MESSAGE_LENGTH = "17"
    MESSAGE_AUTHENTICATION_CODE_FAILED = "18"
    FUNCTIONAL_GROUP_CONTROL_NUMBER_NOT_UNIQUE_WITHIN_INTERCHANGE = "19"
    S3E_SECURITY_END_SEGMENT_MISSING_FOR_S3S = "23"
    S3S_SECURITY_START_SEGMENT_MISSING_FOR_S3E = "24"
    S4E_SECURITY_END_SEGMENT_MISSING_FOR_S4S = "25"
    S4S_SECURITY_START_SEGMENT_MISSING_FOR_S4E = "26"


class TransactionSetAckCode(_ClosedCode):
    """IK501 Transaction Set Acknowledgment Code (element 717)."""

    ACCEPTED = "A"
    ACCEPTED_WITH_ERRORS = "E"
    REJECTED_MESSAGE_AUTHENTICATION_CODE_FAILED = "M"
    REJECTED = "R"
    REJECTED_ASSURANCE_FAILED = "W"
    REJECTED_CONTENT_AFTER_DECRYPTION_COULD_NOT_BE_ANALYZED = "X"


class TransactionSetErrorCode(_OpenCode):
    """IK502-IK506 Implementation Transaction Set Syntax Error Code (element 618)."""

    TRANSACTION_SET_NOT_SUPPORTED = "1"
    TRANSACTION_SET_TRAILER_MISSING = "2"
    CONTROL_NUMBER_IN_HEADER_AND_TRAILER_DO_NOT_MATCH = "3"
    NUMBER_OF_INCLUDED_SEGMENTS_DOES_NOT_MATCH_ACTUAL_COUNT = "4"
    ONE_OR_MORE_SEGMENTS_IN_ERROR = "5"
    MISSING_OR_INVALID_TRANSACTION_SET_IDENTIFIER = "6"
    MISSING_OR_INVALID_TRANSACTION_SET_CONTROL_NUMBER = "7"
    AUTHENTICATION_KEY_NAME_UNKNOWN = "8"
    ENCRYPTION_KEY_NAME_UNKNOWN = "9"
    REQUESTED_SERVICE_NOT_AVAILABLE = "10"
    UNKNOWN_SECURITY_RECIPIENT = "11"
    INCORRECT_MESSAGE_LENGTH = "12"
    MESSAGE_AUTHENTICATION_CODE_FAILED = "13"
    UNKNOWN_SECURITY_ORIGINATOR = "15"
    SYNTAX_ERROR_IN_DECRYPTED_TEXT = "16"
    SECURITY_NOT_SUPPORTED = "17"
    TRANSACTION_SET_NOT_IN_FUNCTIONAL_GROUP = "18"
    INVALID_IMPLEMENTATION_CONVENTION_REFERENCE = "19"
    CONTROL_NUMBER_NOT_UNIQUE_WITHIN_THE_FUNCTIONAL_GROUP = "23"
    S3E_SECURITY_END_SEGMENT_MISSING_FOR_S3S = "24"
    S3S_SECURITY_START_SEGMENT_MISSING_FOR_S3E = "25"
    S4E_SECURITY_END_SEGMENT_MISSING_FOR_S4S = "26"
    S4S_SECURITY_START_SEGMENT_MISSING_FOR_S4E = "27"
    IMPLEMENTATION_ONE_OR_MORE_SEGMENTS_IN_ERROR = "I5"
    IMPLEMENTATION_CONVENTION_NOT_SUPPORTED = "I6"


class SegmentErrorCode(_OpenCode):
    """IK304 Implementation Segment Syntax Error Code (element 620)."""

    UNRECOGNIZED_SEGMENT_ID = "1"
    UNEXPECTED_SEGMENT = "2"
    REQUIRED_SEGMENT_MISSING = "3"
    LOOP_OCCURS_OVER_MAXIMUM_TIMES = "4"
    SEGMENT_EXCEEDS_MAXIMUM_USE = "5"
    SEGMENT_NOT_IN_DEFINED_TRANSACTION_SET = "6"
    SEGMENT_NOT_IN_PROPER_SEQUENCE = "7"
    SEGMENT_HAS_DATA_ELEMENT_ERRORS = "8"
    IMPLEMENTATION_NOT_USED_SEGMENT_PRESENT = "I4"
    IMPLEMENTATION_DEPENDENT_SEGMENT_MISSING = "I6"
    IMPLEMENTATION_LOOP_OCCURS_UNDER_MINIMUM_TIMES = "I7"
    IMPLEMENTATION_SEGMENT_BELOW_MINIMUM_USE = "I8"
    IMPLEMENTATION_DEPENDENT_NOT_USED_SEGMENT_PRESENT = "I9"


class ElementErrorCode(_OpenCode):
    """IK403 Implementation Data Element Syntax Error Code (element 621)."""

    REQUIRED_DATA_ELEMENT_MISSING = "1"
    CONDITIONAL_REQUIRED_DATA_ELEMENT_MISSING = "2"
    TOO_MANY_DATA_ELEMENTS = "3"
    DATA_ELEMENT_TOO_SHORT = "4"
    DATA_ELEMENT_TOO_LONG = "5"
    INVALID_CHARACTER_IN_DATA_ELEMENT = "6"
    INVALID_CODE_VALUE = "7"
    INVALID_DATE = "8"
    INVALID_TIME = "9"
    EXCLUSION_CONDITION_VIOLATED = "10"
    TOO_MANY_REPETITIONS = "12"
    TOO_MANY_COMPONENTS = "13"
    IMPLEMENTATION_CODE_VALUE_NOT_USED = "I6"
    IMPLEMENTATION_DEPENDENT_DATA_ELEMENT_MISSING = "I9"
    IMPLEMENTATION_NOT_USED_DATA_ELEMENT_PRESENT = "I10"
    IMPLEMENTATION_TOO_FEW_REPETITIONS = "I11"
    IMPLEMENTATION_PATTERN_MATCH_FAILURE = "I12"
    IMPLEMENTATION_DEPENDENT_NOT_USED_DATA_ELEMENT_PRESENT = "I13"


# ------------------------------------------------------------------------------------------ values
@dataclass(frozen=True)
class ElementError:
    """IK4: an element in error. ``position`` (IK401-1), ``component`` (IK401-2) and ``repetition``
    (IK401-3) locate it in its segment; ``reference`` is its data element number (IK402)."""

    position: int
    component: int | None
    repetition: int | None
    reference: str | None
    code: ElementErrorCode


@dataclass(frozen=True)
class SegmentError:
    """IK3: a segment in error: its id (IK301), its position in the transaction set counting ST as 1
    (IK302), its loop (IK303), the code (IK304, None when the carrier leaves it out) and its IK4s."""

    segment_id: str
    position: int
    loop: str | None
    code: SegmentErrorCode | None
    elements: tuple[ElementError, ...]


@dataclass(frozen=True)
class TransactionSetAck:
    """AK2 ... IK5: one acknowledged transaction set: its id (AK201), control number (AK202 = our
    ST02), implementation guide (AK203), acceptance (IK501), set-level codes (IK502-IK506) and the
    segments in error."""

    transaction_set: str
    control_number: int
    implementation: str | None
    status: TransactionSetAckCode
    errors: tuple[TransactionSetErrorCode, ...]
    segment_errors: tuple[SegmentError, ...]

    @property
    def accepted(self) -> bool:
        return self.status in (TransactionSetAckCode.ACCEPTED, TransactionSetAckCode.ACCEPTED_WITH_ERRORS)


@dataclass(frozen=True)
class Ack999:
    """One 999 transaction set (one AK1 ... AK9): the group it acknowledges (AK101 functional id,
    AK102 = our GS06, AK103 version), the group's acceptance (AK901), the set counts (AK902 included,
    AK903 received, AK904 accepted), group-level codes (AK905-AK909) and each set's acknowledgment.
    ``st02`` is the 999's own control number; ``segment_position`` where its ST sits in the file."""

    functional_id: str
    group_control_number: int
    version: str | None
    status: GroupAckCode
    sets_included: int
    sets_received: int
    sets_accepted: int
    group_errors: tuple[GroupErrorCode, ...]
    transaction_sets: tuple[TransactionSetAck, ...]
    st02: int
    segment_position: int


@dataclass(frozen=True)
class Ta1:
    """TA1: the acknowledged interchange's control number (TA101 = our ISA13), its date (TA102,
    YYMMDD) and time (TA103, HHMM), acceptance (TA104) and note (TA105)."""

    control_number: int
    interchange_date: str
    interchange_time: str
    status: InterchangeAckCode
    note: InterchangeNoteCode
    segment_position: int


@dataclass(frozen=True)
class AckInterchange:
    """One interchange of an acknowledgment file: who sent it (ISA05/ISA06: the carrier), to whom
    (ISA07/ISA08: us), its own control number (ISA13), usage (ISA15) and what it holds."""

    sender_qualifier: str
    sender_id: str
    receiver_qualifier: str
    receiver_id: str
    control_number: int
    usage: str
    ta1s: tuple[Ta1, ...]
    acks: tuple[Ack999, ...]


@dataclass(frozen=True)
class AckFile:
    """Every interchange in one acknowledgment file, in file order."""

    interchanges: tuple[AckInterchange, ...]

    @property
    def ta1s(self) -> tuple[Ta1, ...]:
        return tuple(t for i in self.interchanges for t in i.ta1s)

    @property
    def acks(self) -> tuple[Ack999, ...]:
        return tuple(a for i in self.interchanges for a in i.acks)


# ------------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class _Seps:
    element: str
    component: str
    terminator: str


def _seps(text: str, at: int) -> tuple[_Seps, int]:
    """The delimiters an ISA at ``at`` declares, and where its terminator is.

    Found by counting separators rather than by fixed offsets, so an ISA whose fixed-width fields a
    carrier failed to pad still reads.
    """
    if len(text) < at + 4:
        raise DataError("ISA is cut short", rule="isa")
    element = text[at + 3]
    pos = at + 3
    for _ in range(15):
        pos = text.find(element, pos + 1)
        if pos < 0:
            raise DataError("ISA does not have 16 elements", rule="isa")
    if len(text) < pos + 3:
        raise DataError("ISA is cut short", rule="isa")
    component, terminator = text[pos + 1], text[pos + 2]
    if len({element, component, terminator}) != 3 or any(c.isalnum() or c == " "
                                                       for c in (element, component, terminator)):
        raise DataError("ISA declares unusable delimiters", rule="isa_delimiters")
    return _Seps(element, component, terminator), pos + 2


def _segments(data: bytes) -> list[tuple[int, list[str], _Seps]]:
    """Every segment as (1-based position in the file, its elements, the delimiters in force)."""
    text = data.decode("latin-1").lstrip("\ufeff\xef\xbb\xbf \t\r\n")
    if not text.startswith("ISA"):
        raise DataError("not an X12 interchange (no ISA at the start)", rule="isa")
    out: list[tuple[int, list[str], _Seps]] = []
    pos = 0
    position = 0
    while pos < len(text):
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos >= len(text):
            break
        if text.startswith("ISA", pos):
            seps, end = _seps(text, pos)
            raw = text[pos:end]
            position += 1
            out.append((position, raw.split(seps.element), seps))
            pos = end + 1
            # Everything up to this interchange's IEA uses its delimiters.
            while pos < len(text):
                nxt = text.find(seps.terminator, pos)
                chunk = text[pos:] if nxt < 0 else text[pos:nxt]
                chunk = chunk.strip(" \t\r\n")
                pos = len(text) if nxt < 0 else nxt + 1
                if not chunk:
                    continue
                position += 1
                elements = chunk.split(seps.element)
                out.append((position, elements, seps))
                if elements[0] == "IEA":
                    break
        else:
            raise DataError("text after an IEA that is not another ISA", rule="trailing_text",
                            details={"segment_position": position + 1})
    return out


def _el(elements: list[str], index: int) -> str:
    return elements[index].strip() if index < len(elements) else ""


def _int(elements: list[str], index: int, ref: str, position: int, *, required: bool = True) -> int:
    value = _el(elements, index)
    if not value and not required:
        return 0
    if not value.isdigit():
        raise DataError(f"{ref} is missing or not a number", rule="not_a_number",
                        details={"segment_position": position, "element": ref})
    return int(value)


def _closed(enum: type[_ClosedCode], elements: list[str], index: int, ref: str,
            position: int) -> Any:
    value = _el(elements, index)
    try:
        return enum(value)
    except ValueError:
        raise DataError(f"{ref} is missing or not a known acknowledgment code", rule="unknown_ack_code",
                        details={"segment_position": position, "element": ref}) from None


def _open(enum: type[_OpenCode], elements: list[str], index: int, ref: str, position: int) -> Any:
    value = _el(elements, index)
    try:
        return enum(value)
    except ValueError:
        raise DataError(f"{ref} is not shaped like a code", rule="bad_code",
                        details={"segment_position": position, "element": ref}) from None


def _opens(enum: type[_OpenCode], elements: list[str], first: int, last: int, ref: str,
           position: int) -> tuple[Any, ...]:
    return tuple(_open(enum, elements, i, f"{ref}{i:02d}", position)
                 for i in range(first, last + 1) if _el(elements, i))


def _optional_int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


class _Builder:
    """State while walking one file's segments."""

    def __init__(self) -> None:
        self.interchanges: list[AckInterchange] = []
        self.isa: list[str] | None = None
        self.ta1s: list[Ta1] = []
        self.acks: list[Ack999] = []
        self.st: tuple[int, int] | None = None  # (999 ST02, its position)
        self.ak1: list[str] | None = None
        self.ak1_pos = 0
        self.ak2: list[str] | None = None
        self.ak2_pos = 0
        self.sets: list[TransactionSetAck] = []
        self.ik3s: list[tuple[list[str], int, list[ElementError]]] = []

    def segment_errors(self) -> tuple[SegmentError, ...]:
        out = []
        for el, pos, elements in self.ik3s:
            code = _open(SegmentErrorCode, el, 4, "IK304", pos) if _el(el, 4) else None
            out.append(SegmentError(segment_id=_el(el, 1), position=_int(el, 2, "IK302", pos),
                                    loop=_el(el, 3) or None, code=code, elements=tuple(elements)))
        return tuple(out)

    def feed(self, position: int, el: list[str], seps: _Seps) -> None:
        seg = el[0].strip()
        if seg == "ISA":
            if len(el) != 17:
                raise DataError("ISA does not have 16 elements", rule="isa",
                                details={"segment_position": position})
            self.isa = el
            self.ta1s, self.acks = [], []
        elif self.isa is None:
            raise DataError(f"{seg or 'an empty segment'} before any ISA", rule="segment_order",
                            details={"segment_position": position})
        elif seg == "TA1":
            self.ta1s.append(Ta1(control_number=_int(el, 1, "TA101", position),
                                 interchange_date=_el(el, 2), interchange_time=_el(el, 3),
                                 status=_closed(InterchangeAckCode, el, 4, "TA104", position),
                                 note=_open(InterchangeNoteCode, el, 5, "TA105", position),
                                 segment_position=position))
        elif seg == "ST":
            if _el(el, 1) != "999":
                raise DataError("transaction set is not a 999", rule="not_a_999",
                                details={"segment_position": position, "element": "ST01"})
            self.st = (_int(el, 2, "ST02", position), position)
            self.ak1, self.ak2, self.sets, self.ik3s = None, None, [], []
        elif seg == "AK1":
            self.ak1, self.ak1_pos = el, position
        elif seg == "AK2":
            self.ak2, self.ak2_pos, self.ik3s = el, position, []
        elif seg == "IK3":
            if self.ak2 is None:
                raise DataError("IK3 outside an AK2 loop", rule="segment_order",
                                details={"segment_position": position})
            self.ik3s.append((el, position, []))
        elif seg == "IK4":
            if not self.ik3s:
                raise DataError("IK4 without an IK3", rule="segment_order",
                                details={"segment_position": position})
            parts = _el(el, 1).split(seps.component)
            if not parts[0].isdigit():
                raise DataError("IK401 is missing or not a position", rule="not_a_number",
                                details={"segment_position": position, "element": "IK401"})
            self.ik3s[-1][2].append(ElementError(
                position=int(parts[0]), component=_optional_int(parts[1]) if len(parts) > 1 else None,
                repetition=_optional_int(parts[2]) if len(parts) > 2 else None,
                reference=_el(el, 2) or None, code=_open(ElementErrorCode, el, 3, "IK403", position)))
            # IK404 (a copy of the bad data) is deliberately never read.
        elif seg == "CTX":
            pass  # context: CTX01 may carry a business identifier (member data); positions are in IK3.
        elif seg == "IK5":
            if self.ak2 is None:
                raise DataError("IK5 without an AK2", rule="segment_order",
                                details={"segment_position": position})
            self.sets.append(TransactionSetAck(
                transaction_set=_el(self.ak2, 1), control_number=_int(self.ak2, 2, "AK202", self.ak2_pos),
                implementation=_el(self.ak2, 3) or None,
                status=_closed(TransactionSetAckCode, el, 1, "IK501", position),
                errors=_opens(TransactionSetErrorCode, el, 2, 6, "IK5", position),
                segment_errors=self.segment_errors()))
            self.ak2, self.ik3s = None, []
        elif seg == "AK9":
            if self.ak1 is None or self.st is None:
                raise DataError("AK9 without an AK1", rule="segment_order",
                                details={"segment_position": position})
            if self.ak2 is not None:
                raise DataError("AK2 loop without its IK5", rule="segment_order",
                                details={"segment_position": self.ak2_pos})
            self.acks.append(Ack999(
                functional_id=_el(self.ak1, 1), group_control_number=_int(self.ak1, 2, "AK102", self.ak1_pos),
                version=_el(self.ak1, 3) or None,
                status=_closed(GroupAckCode, el, 1, "AK901", position),
                sets_included=_int(el, 2, "AK902", position), sets_received=_int(el, 3, "AK903", position),
                sets_accepted=_int(el, 4, "AK904", position),
                group_errors=_opens(GroupErrorCode, el, 5, 9, "AK9", position),
                transaction_sets=tuple(self.sets), st02=self.st[0], segment_position=self.st[1]))
            self.ak1, self.sets = None, []
        elif seg == "SE":
            if self.ak1 is not None:
                raise DataError("999 ends without its AK9", rule="segment_order",
                                details={"segment_position": position})
            self.st = None
        elif seg == "IEA":
            isa = self.isa
            self.interchanges.append(AckInterchange(
                sender_qualifier=_el(isa, 5), sender_id=_el(isa, 6), receiver_qualifier=_el(isa, 7),
                receiver_id=_el(isa, 8), control_number=_int(isa, 13, "ISA13", position),
                usage=_el(isa, 15), ta1s=tuple(self.ta1s), acks=tuple(self.acks)))
            self.isa = None
        elif seg in ("GS", "GE"):
            pass
        else:
            raise DataError(f"segment {seg[:3]!r} has no place in a TA1 or 999", rule="unexpected_segment",
                            details={"segment_position": position})


def read_acks(data: bytes) -> AckFile:
    """Every TA1 and 999 in ``data``; a DataError (naming a segment position and rule) if unreadable.

    An empty result is refused too: a file holding neither a TA1 nor a 999 acknowledges nothing.
    """
    builder = _Builder()
    for position, elements, seps in _segments(data):
        builder.feed(position, elements, seps)
    if builder.isa is not None:
        raise DataError("interchange without its IEA", rule="iea_missing")
    result = AckFile(tuple(builder.interchanges))
    if not result.ta1s and not result.acks:
        raise DataError("the file holds neither a TA1 nor a 999", rule="no_acknowledgment")
    return result


def redact_acks(data: bytes) -> bytes:
    """``data`` with IK404 and CTX01 values emptied: the form of an acknowledgment safe to keep at rest."""
    try:
        segments = _segments(data)
    except DataError:
        return b""
    out: list[str] = []
    for _, el, seps in segments:
        el = list(el)
        if el[0].strip() == "IK4" and len(el) > 4:
            el[4] = ""
        elif el[0].strip() == "CTX" and len(el) > 1:
            el[1] = ""
        out.append(seps.element.join(el).rstrip(seps.element) if el[0].strip() != "ISA"
                   else seps.element.join(el))
        out.append(seps.terminator + "\n")
    return "".join(out).encode("latin-1")
