"""A small, independent 834 reader for the carrier-replay test: bytes in, members and coverage loops out.

Written for the test alone: it imports nothing from :mod:`carrierfeeds.x12` (neither the renderer nor
the project's parser), so a renderer bug cannot hide behind a reader that shares its code. It reads the
delimiters from the ISA segment itself (element separator at byte 3, ISA16 the component separator,
the segment terminator right after ISA16), then walks the 834 005010X220A1 member loops:

    INS (Loop 2000)  REF*0F subscriber id  REF*23 member id (dependents)  REF*17/1L/DX  DTP*336/356/357
    NM1*IL (Loop 2100A, NM109 the SSN when NM108 is 34)  PER  N3  N4  DMG  ICM  HLH  LUI
    NM1*70 (Loop 2100B: the identity the carrier held before a correction)  DMG
    NM1*31 (Loop 2100C mailing address)  N3  N4
    HD (Loop 2300)  DTP*348 start  DTP*349 end  AMT  REF under 2300  LX NM1*P3 (Loop 2310 PCP)
    LS*2700  LX N1*75 REF DTP*007 (Loop 2700/2750 reporting categories)  LE*2700

Anything it does not understand inside a member loop is an error (:class:`ReadError`), not a skip: the
replay must never silently drop a segment the carrier would act on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date


class ReadError(ValueError):
    """The bytes are not an 834 this reader can follow (names the segment position)."""


@dataclass
class Coverage:
    """One Loop 2300: HD01 maintenance type, HD03 insurance line, HD04 plan, HD05 level, its dates."""

    hd01: str
    hd03: str
    hd04: str
    hd05: str
    start: date | None = None
    end: date | None = None
    refs: dict[str, str] = field(default_factory=dict)
    amounts: dict[str, str] = field(default_factory=dict)  # AMT01 -> AMT02
    pcp: tuple[str, str] | None = None  # Loop 2310 NM109 (NPI), NM110


@dataclass
class Member:
    """One Loop 2000 and its 2100A demographics, with the coverage loops that follow it."""

    ins01: str
    ins02: str
    ins03: str
    ins04: str
    ins08: str
    subscriber_id: str = ""
    member_id: str = ""
    refs: dict[str, str] = field(default_factory=dict)
    dates: dict[str, date] = field(default_factory=dict)
    last_name: str = ""
    first_name: str = ""
    middle_initial: str = ""
    ssn: str = ""
    address1: str = ""
    address2: str = ""
    city: str = ""
    state: str = ""
    zip: str = ""
    dob: date | None = None
    gender: str = ""
    coverages: list[Coverage] = field(default_factory=list)
    contact: dict[str, str] = field(default_factory=dict)  # PER qualifier (TE, EM) -> number
    income: tuple[str, str] | None = None  # ICM01 frequency, ICM02 amount
    health: str = ""  # HLH01
    language: str = ""  # LUI02
    mailing: tuple[str, str, str, str, str] | None = None  # Loop 2100C N301 N302 N401 N402 N403
    categories: list[dict[str, str]] = field(default_factory=list)  # Loop 2750: name, REF01, REF02, date
    ins05: str = "A"
    ins07: str = ""
    #: Loop 2100B: last_name, first_name, ssn (and dob, gender with its DMG) as the carrier held them
    prior: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        """(subscriber id, member id): a subscriber's own member id is its subscriber id (no REF*23)."""
        return self.subscriber_id, self.member_id or self.subscriber_id


@dataclass
class Transmission:
    """One interchange: its control number, each transaction set's BGN08 action, the members in order."""

    isa13: str
    actions: list[str]
    members: list[Member]

    @property
    def full_file(self) -> bool:
        """Every member is INS03 030 (the full audit file)."""
        return bool(self.members) and all(m.ins03 == "030" for m in self.members)


def _d8(qualifier: str, value: str, where: int) -> date:
    if qualifier != "D8" or len(value) != 8 or not value.isdigit():
        raise ReadError(f"segment {where}: date is not D8 CCYYMMDD")
    return date(int(value[:4]), int(value[4:6]), int(value[6:]))


def split_segments(data: bytes) -> list[list[str]]:
    """The interchange's segments, each a list of elements, delimiters taken from ISA."""
    text = data.decode("ascii")
    if not text.startswith("ISA") or len(text) < 106:
        raise ReadError("segment 1: no ISA header")
    element = text[3]
    isa = text[:106].split(element)
    if len(isa) != 17:
        raise ReadError("segment 1: ISA does not have 16 elements at fixed width")
    terminator = text[105]
    if len(isa[16]) != 2 or isa[16][1] != terminator:
        raise ReadError("segment 1: ISA16 is not one character followed by the terminator")
    out: list[list[str]] = []
    for raw in text.split(terminator):
        seg = raw.strip("\r\n")
        if seg:
            out.append(seg.split(element))
    return out


def _category(member: Member, tag: str, el: list[str], pos: int) -> None:
    """One segment of Loop 2700/2750 (LS opened it): LX starts a category; N1*75, REF, DTP*007 fill it."""
    last = member.categories[-1] if member.categories else None
    if tag == "LX" and el[1] == str(len(member.categories) + 1):
        member.categories.append({})
    elif tag == "N1" and el[1] == "75" and last is not None and not last:
        last["name"] = el[2]
    elif tag == "REF" and last is not None and "name" in last and "value" not in last:
        last.update(qualifier=el[1], value=el[2])
    elif tag == "DTP" and el[1] == "007" and last is not None and "value" in last and "date" not in last:
        last["date"] = _d8(el[2], el[3], pos).isoformat()
    elif tag == "LE" and el[1] == "2700" and member.categories:
        return
    else:
        raise ReadError(f"segment {pos}: {tag} not expected in Loop 2700")


def read_834(data: bytes) -> Transmission:
    """Parse one 834 interchange."""
    segments = split_segments(data)
    isa13 = segments[0][13]
    actions: list[str] = []
    members: list[Member] = []
    member: Member | None = None
    cover: Coverage | None = None
    in_2100 = False
    mailing: list[str] | None = None  # inside Loop 2100C
    provider = False  # after a Loop 2310 LX, before its NM1*P3
    categories = False  # inside LS..LE
    for pos, seg in enumerate(segments, start=1):
        tag = seg[0]
        el = seg + [""] * (12 - len(seg))
        if tag in ("ISA", "GS", "ST", "GE", "IEA"):
            continue
        if tag == "BGN":
            actions.append(el[8])
            continue
        if tag == "SE":
            member = cover = None
            continue
        if member is None and tag in ("REF", "N1", "DTP", "QTY"):
            continue  # Loop 1000 / header segments before the first INS
        if tag == "INS":
            member = Member(ins01=el[1], ins02=el[2], ins03=el[3], ins04=el[4], ins08=el[8], ins05=el[5],
                            ins07=el[7])
            members.append(member)
            cover, in_2100, mailing, provider, categories = None, False, None, False, False
            continue
        if member is None:
            raise ReadError(f"segment {pos}: {tag} outside a member loop")
        if categories:
            _category(member, tag, el, pos)
            categories = tag != "LE"
            continue
        if tag == "LS" and el[1] == "2700":
            cover, in_2100, mailing, categories = None, False, None, True
            continue
        if tag == "HD":
            cover = Coverage(hd01=el[1], hd03=el[3], hd04=el[4], hd05=el[5])
            member.coverages.append(cover)
            in_2100, mailing = False, None
            continue
        if cover is not None and (provider or tag == "LX"):
            if tag == "LX" and not provider and cover.pcp is None:
                provider = True
            elif tag == "NM1" and provider and el[1] == "P3" and el[8] == "XX":
                cover.pcp, provider = (el[9], el[10]), False
            else:
                raise ReadError(f"segment {pos}: {tag} not expected in Loop 2310")
            continue
        if cover is not None:
            if tag == "DTP" and el[1] == "348":
                cover.start = _d8(el[2], el[3], pos)
            elif tag == "DTP" and el[1] == "349":
                cover.end = _d8(el[2], el[3], pos)
            elif tag == "REF":
                cover.refs[el[1]] = el[2]
            elif tag == "AMT" and not cover.refs and cover.pcp is None:
                cover.amounts[el[1]] = el[2]
            else:
                raise ReadError(f"segment {pos}: {tag} not expected in Loop 2300")
            continue
        if mailing is not None:
            if tag == "N3" and not mailing:
                mailing.extend((el[1], el[2]))
            elif tag == "N4" and len(mailing) == 2:
                mailing.extend((el[1], el[2], el[3]))
                member.mailing = (mailing[0], mailing[1], mailing[2], mailing[3], mailing[4])
            else:
                raise ReadError(f"segment {pos}: {tag} not expected in Loop 2100C")
            continue
        if tag == "REF" and not in_2100:
            if el[1] == "0F":
                member.subscriber_id = el[2]
            elif el[1] == "23":
                member.member_id = el[2]
            else:
                member.refs[el[1]] = el[2]
        elif tag == "DTP" and not in_2100:
            member.dates[el[1]] = _d8(el[2], el[3], pos)
        elif tag == "NM1" and el[1] == "IL":
            in_2100 = True
            member.last_name, member.first_name, member.middle_initial = el[3], el[4], el[5]
            if el[8] == "34":
                member.ssn = el[9]
        elif tag == "N3" and in_2100:
            member.address1, member.address2 = el[1], el[2]
        elif tag == "N4" and in_2100:
            member.city, member.state, member.zip = el[1], el[2], el[3]
        elif tag == "DMG" and in_2100 and member.prior:
            member.prior.update(dob=_d8(el[1], el[2], pos).isoformat(), gender=el[3])
        elif tag == "DMG" and in_2100:
            member.dob = _d8(el[1], el[2], pos)
            member.gender = el[3]
        elif tag == "PER" and in_2100 and el[1] == "IP" and not member.contact:
            member.contact = dict(zip(el[3:9:2], el[4:9:2], strict=True))
            member.contact.pop("", None)
        elif tag == "ICM" and in_2100:
            member.income = (el[1], el[2])
        elif tag == "HLH" and in_2100:
            member.health = el[1]
        elif tag == "LUI" and in_2100 and el[1] == "LE":
            member.language = el[2]
        elif tag == "NM1" and el[1] == "31" and in_2100:
            in_2100, mailing = False, []
        elif tag == "NM1" and el[1] == "70" and in_2100:
            member.prior = {"last_name": el[3], "first_name": el[4], "ssn": el[9] if el[8] == "34" else ""}
        else:
            raise ReadError(f"segment {pos}: {tag} not expected in a member loop")
    if categories:
        raise ReadError("Loop 2700 without LE")
    if not members and not actions:
        raise ReadError("no transaction set")
    return Transmission(isa13=isa13, actions=actions, members=members)
