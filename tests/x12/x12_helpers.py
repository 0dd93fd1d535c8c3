"""Synthetic census builders and fixed envelopes shared by the 834 tests (no real data)."""

from __future__ import annotations

import functools
import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from carrierfeeds.census.columns import CANONICAL_COLUMNS
from carrierfeeds.config import CarrierMapping, Feed, MemberStatus, Party, load_feed, load_mapping
from carrierfeeds.enrollment import Enrollment, build_enrollment
from carrierfeeds.x12.envelope import DEFAULT_DELIMITERS, ControlNumbers, Delimiters, TransactionHeader

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "x12"
AS_OF = date(2026, 11, 20)
CREATED = datetime(2026, 11, 21, 7, 30, tzinfo=UTC)
CONTROL = ControlNumbers(isa13=42, gs06=42, st02=1)


REGENERATE_ENV = "CARRIERFEEDS_REGENERATE_GOLDEN"


def write_golden_if_asked(path: Path, data: bytes) -> None:
    """Rewrite golden file ``path`` only when a developer asks (REGENERATE_ENV=1), never in CI: there the
    golden files are compared byte for byte, so a CI run with the flag set fails instead of passing."""
    flag = os.environ.get(REGENERATE_ENV)
    if not flag:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{REGENERATE_ENV} is set in CI; golden files are compared there, never regenerated")
    if flag == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def feed() -> Feed:
    return load_feed(ROOT / "feeds" / "acme-sunrise-medical.yaml")


def mapping(**update: Any) -> CarrierMapping:
    base = load_mapping(ROOT / "mappings" / "sunrise-health.yaml")
    return base.model_copy(update=update) if update else base


def validated(**update: Any) -> CarrierMapping:
    """The demo mapping with ``update``, validated as if loaded from YAML (model_copy skips that)."""
    return CarrierMapping.model_validate({**mapping().model_dump(), **update})


#: Every member_status setting on.
ALL_STATUS: dict[str, object] = dict(benefit_status=True, employment_codes="all", student=True, handicap=True,
                                     death=True, employment_end=True, event_reasons=True,
                                     maintenance_effective=True, medicare=True, cobra=True)


def status_mapping(**settings: object) -> CarrierMapping:
    """The demo mapping with ``member_status`` settings on and their census fields (and event_date) on
    the allowlist."""
    status = MemberStatus.model_validate(settings)
    fields = [f for need in status.needs().values() for f in need] + ["event_date"]
    base = mapping().allowlist
    return validated(allowlist=(*base, *dict.fromkeys(f for f in fields if f not in base)),
                     member_status=status.model_dump())


def header(m: CarrierMapping | None = None, f: Feed | None = None) -> TransactionHeader:
    m, f = m or mapping(), f or feed()
    return TransactionHeader(
        ids=m.envelope, created=CREATED, reference="CF000000042",
        sponsor=Party(name=f.employer.name, id_qualifier="FI", id=f.employer.tax_id),
        payer=m.payer, action=m.full_file.bgn08, group_number=m.group_number)


def row(**values: str) -> dict[str, str]:
    out = dict.fromkeys(CANONICAL_COLUMNS, "")
    out.update(values)
    return out


_HOME = {"address1": "12 Elm Street", "address2": "Apt 3", "city": "Springfield", "state": "IL",
         "zip": "62701", "phone": "2175550100"}


def family_rows() -> list[dict[str, str]]:
    """A family of four with medical and dental, a single employee on HDHP whose dental ended, and
    an unauthorised vision plan on the family (which must never reach the carrier)."""
    ee = dict(member_id="E1001", subscriber_id="E1001", last_name="Rivera", first_name="Ana",
              middle_initial="L", ssn="900112222", dob="1984-03-09", gender="F", hire_date="2019-06-01",
              employment_status="FT", department="Plant 2", **_HOME)
    sp = dict(member_id="E1001-01", subscriber_id="E1001", last_name="Rivera", first_name="Mateo",
              ssn="900113333", dob="1983-11-30", gender="M", **_HOME)
    c1 = dict(member_id="E1001-02", subscriber_id="E1001", last_name="Rivera", first_name="Lucía",
              dob="2012-07-15", gender="F", **_HOME)
    c2 = dict(member_id="E1001-03", subscriber_id="E1001", last_name="Rivera", first_name="Teo",
              dob="2016-01-02", gender="M", **_HOME)
    solo = dict(member_id="E2002", subscriber_id="E2002", last_name="O'Neil", first_name="Sam",
                ssn="900124444", dob="1990-12-01", gender="U", hire_date="2021-02-15",
                employment_status="TE", address1="9 Oak Ave", city="Peoria", state="IL", zip="616021234")
    rows: list[dict[str, str]] = []
    for person, rel in ((ee, "EE"), (sp, "SP"), (c1, "CH"), (c2, "CH")):
        for plan, level in (("MED-PPO", "FAM"), ("DEN-STD", "FAM"), ("VIS-STD", "FAM")):
            rows.append(row(relationship=rel, plan_code=plan, coverage_level=level,
                            coverage_start="2025-01-01", **person))
    rows.append(row(relationship="EE", plan_code="MED-HDHP", coverage_level="EMP",
                    coverage_start="2024-01-01", **solo))
    rows.append(row(relationship="EE", plan_code="DEN-STD", coverage_level="EMP",
                    coverage_start="2024-01-01", coverage_end="2026-10-31", **solo))
    return rows


def census(rows: list[dict[str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(CANONICAL_COLUMNS))
    frame["row_number"] = range(2, len(frame) + 2)
    return frame


def family_census() -> pd.DataFrame:
    return census(family_rows())


def enrollment(frame: pd.DataFrame | None = None, m: CarrierMapping | None = None) -> Enrollment:
    return build_enrollment(family_census() if frame is None else frame, feed(), m or mapping(),
                            as_of=AS_OF)


def damaged(data: bytes, edits: list[tuple[int, str, bytes]]) -> bytes:
    """``data`` with each (position, "insert" | "delete" | "replace", bytes) edit applied in turn (a
    position wraps around the current length): the damage the gate's property tests throw at a file."""
    for at, kind, chunk in edits:
        at %= len(data) + 1
        if kind == "insert":
            data = data[:at] + chunk + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + 1:]
        else:
            data = data[:at] + chunk + data[at + 1:]
    return data


#: CRLF after every segment and other delimiters than the default: a file the scans must not assume.
CRLF = Delimiters(element="|", component=">", repetition="{", segment="~", suffix="\r\n")


@functools.cache
def family_file(delimiters: Delimiters = DEFAULT_DELIMITERS, cap: int | None = None) -> bytes:
    """The family census rendered as an 834 (``cap`` members per transaction set: a split file)."""
    from carrierfeeds.x12.render import render_834_bytes

    m = validated(max_members_per_transaction=cap) if cap else mapping()
    return render_834_bytes(enrollment(census(family_rows()), m), header(m), CONTROL, delimiters)


def golden_834(name: str, enrollment: Enrollment, header: TransactionHeader, tmp_path: Path) -> bytes:
    """The scenario's 834: the streaming and naive renderers agree, it equals its golden file under
    tests/fixtures/x12 (written with CARRIERFEEDS_WRITE_GOLDEN), and the structural check and pyx12 pass."""
    from carrierfeeds.x12.check import check_834, validate_with_pyx12
    from carrierfeeds.x12.render import render_834_bytes, render_834_naive

    data = render_834_bytes(enrollment, header, CONTROL)
    assert data == render_834_naive(enrollment, header, CONTROL)
    path = FIXTURES / name
    write_golden_if_asked(path, data)
    assert path.exists(), f"missing golden file {name}; see the test module's docstring to create it"
    assert data == path.read_bytes()
    report = check_834(data)
    assert report.ok, report.problems
    out = tmp_path / name
    out.write_bytes(data)
    verdict = validate_with_pyx12(out)
    assert verdict.ok, verdict.errors
    return data
