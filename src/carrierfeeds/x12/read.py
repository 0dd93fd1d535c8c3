"""A small 834 reader for round-trip tests and previews: one dict per member coverage, text only.

It trusts the file's ISA for delimiters and reads only the segments :mod:`carrierfeeds.x12.render`
writes; it is not a general X12 parser (use pyx12 for that).
"""

from __future__ import annotations

import pandas as pd

from carrierfeeds.errors import DataError

#: Columns of :func:`read_834`'s frame, in order.
READ_COLUMNS: tuple[str, ...] = (
    "member_id", "subscriber_id", "ins01", "ins02", "ins03", "ins04", "employment_status", "last_name",
    "first_name", "middle_initial", "ssn", "dob", "gender", "address1", "address2", "city", "state",
    "zip", "hire_date", "hd01", "hd03", "hd04", "hd05", "coverage_start", "coverage_end",
    "group_policy_number", "reporting_category", "department", "eligibility_begin", "eligibility_end",
    "coverage_policy_number", "st02",
    # volumes: ICM01, ICM02 (2100A), AMT*FK and AMT*P3 (2300)
    "icm01", "salary", "coverage_amount", "premium_amount",
    # contact: PER, HLH, LUI (2100A), N3/N4 (2100C)
    "phone", "email", "hlh01", "language", "mailing_address1", "mailing_address2", "mailing_city",
    "mailing_state", "mailing_zip",
    # primary care provider: Loop 2310 NM1*P3 NM109, NM110
    "pcp_npi", "pcp_relationship",
    # member status: INS05-INS12 and the status dates
    "benefit_status", "medicare_plan", "medicare_reason", "cobra_event", "student_status", "handicap",
    "death_date", "maintenance_effective", "employment_end_date", "cobra_begin", "cobra_end",
    # Loop 2100B: the identity the carrier held before a correction
    "prior_last_name", "prior_first_name", "prior_middle_initial", "prior_ssn", "prior_dob", "prior_gender",
)
_AMOUNTS = {"FK": "coverage_amount", "P3": "premium_amount"}
_MEMBER_REFS = {"1L": "group_policy_number", "17": "reporting_category", "DX": "department"}
_MEMBER_DATES = {"336": "hire_date", "356": "eligibility_begin", "357": "eligibility_end",
                 "303": "maintenance_effective", "337": "employment_end_date", "340": "cobra_begin",
                 "341": "cobra_end"}


def split_segments(data: bytes) -> tuple[list[list[str]], str]:
    """Every segment as its list of elements, and the element separator (from the ISA)."""
    if len(data) < 106 or data[:3] != b"ISA":
        raise DataError("not an X12 interchange (no 106-character ISA)", rule="isa")
    text = data.decode("ascii", "replace")
    element, terminator = text[3], text[105]
    segments = [s.strip("\r\n") for s in text.split(terminator)]
    return [s.split(element) for s in segments if s], element


def read_834(data: bytes) -> pd.DataFrame:
    """The members and coverages in ``data``: one row per Loop 2300 (HD), columns :data:`READ_COLUMNS`.

    A member without any Loop 2300 (a demographic change) is one row with the coverage columns "".
    Dependents carry their own id from REF*23, subscribers from REF*0F; dates stay CCYYMMDD; ``st02``
    is the transaction set the member was sent in.
    """
    segments, _ = split_segments(data)
    component = chr(data[104]) if len(data) > 104 else ":"
    rows: list[dict[str, str]] = []
    member: dict[str, str] = {}
    coverage: dict[str, str] | None = None
    covered = False
    mailing = False  # inside Loop 2100C: its N3/N4 are the mailing address
    st02 = ""

    def close_member() -> None:
        if member and not covered:
            rows.append(dict(member))

    def get(elements: list[str], index: int) -> str:
        return elements[index] if index < len(elements) else ""

    categories = False  # inside Loop 2700 (LS..LE): its REF and DTP are not the member's
    for el in segments:
        seg = el[0]
        if seg in ("LS", "LE"):
            categories = seg == "LS"
        elif categories:
            continue
        elif seg == "ST":
            st02 = get(el, 2)
        elif seg == "INS":
            close_member()
            member = {c: "" for c in READ_COLUMNS}
            member["st02"] = st02
            member.update(ins01=get(el, 1), ins02=get(el, 2), ins03=get(el, 3), ins04=get(el, 4),
                          employment_status=get(el, 8))
            medicare_plan, _, medicare_reason = get(el, 6).partition(component)
            member.update(benefit_status=get(el, 5), medicare_plan=medicare_plan, medicare_reason=medicare_reason,
                          cobra_event=get(el, 7), student_status=get(el, 9), handicap=get(el, 10),
                          death_date=get(el, 12))
            coverage, covered, mailing = None, False, False
        elif seg == "REF" and coverage is not None:
            if get(el, 1) == "1L":
                coverage["coverage_policy_number"] = get(el, 2)
        elif seg == "REF" and member:
            if get(el, 1) in _MEMBER_REFS:
                member[_MEMBER_REFS[get(el, 1)]] = get(el, 2)
            elif get(el, 1) == "0F":
                member["subscriber_id"] = get(el, 2)
                if member["ins01"] == "Y":
                    member["member_id"] = get(el, 2)
            elif get(el, 1) == "23":
                member["member_id"] = get(el, 2)
        elif seg == "DTP" and member and coverage is None and get(el, 1) in _MEMBER_DATES:
            member[_MEMBER_DATES[get(el, 1)]] = get(el, 3)
        elif seg == "NM1" and coverage is not None and get(el, 1) == "P3":
            coverage.update(pcp_npi=get(el, 9), pcp_relationship=get(el, 10))
        elif seg == "NM1" and member and get(el, 1) == "31":
            mailing = True
        elif seg == "PER" and member:
            pairs = dict(zip(el[3::2], el[4::2], strict=False))
            member.update(phone=pairs.get("TE", ""), email=pairs.get("EM", ""))
        elif seg == "HLH" and member:
            member["hlh01"] = get(el, 1)
        elif seg == "LUI" and member:
            member["language"] = get(el, 2)
        elif seg == "N3" and member and mailing:
            member.update(mailing_address1=get(el, 1), mailing_address2=get(el, 2))
        elif seg == "N4" and member and mailing:
            member.update(mailing_city=get(el, 1), mailing_state=get(el, 2), mailing_zip=get(el, 3))
        elif seg == "NM1" and member and get(el, 1) == "IL":
            member.update(last_name=get(el, 3), first_name=get(el, 4), middle_initial=get(el, 5),
                          ssn=get(el, 9) if get(el, 8) == "34" else "")
        elif seg == "N3" and member:
            member.update(address1=get(el, 1), address2=get(el, 2))
        elif seg == "N4" and member:
            member.update(city=get(el, 1), state=get(el, 2), zip=get(el, 3))
        elif seg == "NM1" and member and get(el, 1) == "70":
            member.update(prior_last_name=get(el, 3), prior_first_name=get(el, 4), prior_middle_initial=get(el, 5),
                          prior_ssn=get(el, 9) if get(el, 8) == "34" else "")
        elif seg == "DMG" and member and member.get("prior_last_name"):
            member.update(prior_dob=get(el, 2), prior_gender=get(el, 3))
        elif seg == "DMG" and member:
            member.update(dob=get(el, 2), gender=get(el, 3))
        elif seg == "ICM" and member:
            member.update(icm01=get(el, 1), salary=get(el, 2))
        elif seg == "AMT" and coverage is not None and get(el, 1) in _AMOUNTS:
            coverage[_AMOUNTS[get(el, 1)]] = get(el, 2)
        elif seg == "HD" and member:
            coverage = dict(member)
            coverage.update(hd01=get(el, 1), hd03=get(el, 3), hd04=get(el, 4), hd05=get(el, 5))
            rows.append(coverage)
            covered = True
        elif seg == "DTP" and coverage is not None:
            if get(el, 1) == "348":
                coverage["coverage_start"] = get(el, 3)
            elif get(el, 1) == "349":
                coverage["coverage_end"] = get(el, 3)
        elif seg in ("SE", "GE", "IEA"):
            close_member()
            member, coverage, covered = {}, None, False
    return pd.DataFrame(rows, columns=list(READ_COLUMNS)).astype(object)
