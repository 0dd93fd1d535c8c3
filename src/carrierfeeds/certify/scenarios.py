"""The certification scenarios: for one feed's mapping, a before/after census pair per case a carrier must
handle, each turned into an 834 by the pipeline's own pure stages, with what the carrier should do.

Pure: feed, mapping, seed and anchor day in; bytes and expectations out. Each scenario builds the
carrier's state from the ``before`` census (``diff_against_snapshot`` against nothing, as a first full
file would leave it), then the ``after`` census's change set against that snapshot under the mapping's
own change settings (term policy, term end, retro window, plan change), rendered by
:func:`carrierfeeds.x12.render.render_834_bytes`. A full-mode mapping gets the ``after`` census as a full
file (030) in every scenario, as its runs would send it.

Reproducible: every date follows from the anchor day, every name and id from the seed; the header's
creation time is the anchor day at 06:00 UTC and control numbers come from a fixed test range
(:data:`CERT_ISA13_BASE` + the scenario's number); ISA15 is always T (test), whatever the mapping's
production setting. A case the mapping cannot express (a COBRA event when the mapping sends no COBRA
data, a plan change with one plan per line) is listed as not applicable, with the reason.

The member tokens in the expectations are keyed by a constant derived from the seed: the people are
fictional, and anyone holding the packet must be able to recompute them.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pandas as pd

from carrierfeeds.census.columns import CANONICAL_COLUMNS
from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.certify.cast import NPIS, Cast, Election, month_end, next_month
from carrierfeeds.changes import ChangeSet, diff_against_snapshot
from carrierfeeds.config import CarrierMapping, Feed, Party
from carrierfeeds.enrollment import Enrollment, build_enrollment
from carrierfeeds.errors import ConfigError
from carrierfeeds.x12.envelope import ControlNumbers, TransactionHeader
from carrierfeeds.x12.render import render_834_bytes

#: ISA13/GS06 of scenario k is CERT_ISA13_BASE + k: a range production numbering never reaches.
CERT_ISA13_BASE = 990_000_000

INS03_WORDS = {"021": "added", "024": "terminated", "025": "reinstated", "001": "changed", "030": "audit (full file)"}
HD01_WORDS = {"021": "add", "024": "terminate", "025": "reinstate", "001": "change", "030": "audit"}


@dataclass(frozen=True)
class Scenario:
    """One file of the packet: its case, the 834 bytes, what the carrier should do with it."""

    number: int
    slug: str
    title: str
    story: str
    data: bytes
    expected: dict[str, Any]
    #: What was rendered (the change set's view) and its BGN08: a delivery renders it again under the
    #: ledger's control numbers.
    enrollment: Enrollment = field(compare=False, repr=False)
    action: str

    @property
    def file_name(self) -> str:
        return f"{self.number:02d}-{self.slug}.834"


@dataclass(frozen=True)
class NotApplicable:
    slug: str
    title: str
    reason: str


@dataclass(frozen=True)
class ScenarioSet:
    feed_id: str
    mapping_id: str
    seed: int
    as_of: date
    scenarios: tuple[Scenario, ...]
    not_applicable: tuple[NotApplicable, ...]


Edit = Callable[[Cast], str | None]  # changes the cast in place; a reason when not applicable


@dataclass(frozen=True)
class _Case:
    slug: str
    title: str
    story: str
    edit: Edit
    full_file: bool = False


def _census(rows: list[dict[str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(CANONICAL_COLUMNS))
    frame["row_number"] = range(2, len(frame) + 2)
    return frame


# ---------------------------------------------------------------------------------------------- the cases
def _new_family(cast: Cast) -> None:
    cast.get("newhire").present = True


def _terminate(cast: Cast) -> None:
    end = month_end(cast.as_of)
    for person in cast.get("single").members:
        person.elections = [replace(e, end=end) for e in person.elections]
        person.extra["employment_status"] = "TE" if person.relationship == "EE" else ""


def _reinstate_before(cast: Cast) -> None:
    _terminate(cast)


def _reinstate(cast: Cast) -> None:
    for person in cast.get("single").members:
        person.elections = [replace(e, end=None) for e in person.elections]
        person.extra["employment_status"] = "FT"


def _rehire(cast: Cast) -> None:
    fam = cast.get("former")
    fam.hire_date = cast.as_of - timedelta(days=2)
    for person in fam.members:
        person.elections = [Election(e.plan_code, e.level, next_month(cast.as_of)) for e in person.elections]


def _plan_change(cast: Cast) -> str | None:
    alt = cast.plans.alternative
    if not alt:
        return "the mapping authorises one plan per insurance line: there is no other plan to change to"
    line, code = next(iter(alt.items()))
    start = next_month(cast.as_of)
    for person in cast.get("single").members:
        person.elections = [Election(code, e.level, start) if cast.plans.line_of[e.plan_code] == line else e
                            for e in person.elections]
    return None


def _level_change(cast: Cast) -> str | None:
    fam = cast.get("single")
    new = cast.plans.level("ESP")
    if new == fam.members[0].elections[0].level:
        return "the mapping has one coverage level only"
    spouse = cast._person(f"{fam.subscriber_id}-01", "SP", fam.members[0].last_name,
                          "M" if fam.members[0].gender == "F" else "F", date(cast.as_of.year - 33, 5, 17))
    spouse.extra = cast._extras(spouse, line_codes=cast.plans.line_of)
    start = next_month(cast.as_of)
    ee = fam.members[0]
    ee.elections = [replace(e, level=new) if cast.plans.line_of[e.plan_code] not in _EMPLOYEE_ONLY else e
                    for e in ee.elections]
    spouse.elections = [Election(e.plan_code, new, start) for e in ee.elections
                        if cast.plans.line_of[e.plan_code] not in _EMPLOYEE_ONLY]
    fam.members.append(spouse)
    return None


def _address_and_name(cast: Cast) -> None:
    fam = cast.get("family")
    fam.address = ("77 QUARRY RD", "", fam.address[2], fam.address[3], fam.address[4])
    spouse = fam.members[1]
    spouse.last_name = "WESTBROOK" if spouse.last_name != "WESTBROOK" else "EASTBROOK"


def _identity(cast: Cast) -> None:
    fam = cast.get("family")
    ee = fam.members[0]
    ee.ssn = cast._ssn()  # the SSN was keyed wrong
    child = fam.members[2]
    child.dob = child.dob + timedelta(days=1)  # the birth date was keyed a day early


def _age_out(cast: Cast) -> None:
    fam = cast.get("ageout")
    child = fam.members[1]
    end = month_end(cast.as_of)
    child.elections = [replace(e, end=end) for e in child.elections]


def _cobra(cast: Cast) -> None:
    leaver = cast.get("leaver").members[0]
    left = month_end(cast.as_of)
    begin = left + timedelta(days=1)
    leaver.extra.update(employment_status="TE", employment_end_date=left.isoformat(), benefit_status="C",
                        cobra_event="1", cobra_begin=begin.isoformat(),
                        cobra_end=_months_later(begin, 18).isoformat(),
                        event_reason="cobra", event_date=begin.isoformat())


def _months_later(day: date, months: int) -> date:
    """The last day of the month before the one ``months`` after ``day``'s (an 18-month COBRA period)."""
    index = day.year * 12 + day.month - 1 + months
    first = date(index // 12, index % 12 + 1, 1)
    return first - timedelta(days=1)


def _nothing(cast: Cast) -> None:
    return None


def _volumes(cast: Cast) -> None:
    ee = cast.get("family").members[0]
    ee.extra["salary"] = str(int(ee.extra["salary"] or "50000") + 4000)


def _contact(cast: Cast) -> None:
    ee = cast.get("family").members[0]
    ee.extra.update(phone="2175550188", email=f"{ee.first_name.lower()}.new@example.com",
                    mailing_address1="PO BOX 4410", mailing_city="SPRINGFIELD", mailing_state="IL",
                    mailing_zip="62705", language="spa", tobacco_use="Y")


def _pcp(cast: Cast) -> None:
    spouse = cast.get("family").members[1]
    spouse.extra.update(pcp_npi=NPIS[1], pcp_existing_patient="N")


_CATEGORY_VALUES = {"department": "PLANT 7", "employment_status": "PT"}


def _category_edit(field: str) -> Edit:
    def edit(cast: Cast) -> str | None:
        value = _CATEGORY_VALUES.get(field)
        if value is None:
            return f"the reporting category reads census field {field!r}, which the cast does not vary"
        cast.get("family").members[0].extra[field] = value
        return None
    return edit


_EMPLOYEE_ONLY = frozenset({"LIF", "ADD", "STD", "LTD"})


def _cases(mapping: CarrierMapping) -> list[tuple[_Case, Edit | None]]:
    """Every case, with the edit that makes its ``before`` census when that differs from the roster."""
    status = mapping.member_status
    cases: list[tuple[_Case, Edit | None]] = [
        (_Case("new-subscriber-with-dependents", "New subscriber with dependents",
               "A new employee joins with a spouse and a child; coverage starts on the first of next month.",
               _wrap(_new_family)), None),
        (_Case("termination", "Termination",
               "An employee leaves; the census ends every line at the end of this month.", _wrap(_terminate)), None),
        (_Case("reinstatement", "Reinstatement",
               "The termination sent earlier is withdrawn: the coverage runs on without a gap.",
               _wrap(_reinstate)), _wrap(_reinstate_before)),
        (_Case("rehire-after-gap", "Rehire after a gap",
               "A former employee whose coverage ended months ago is rehired; new coverage starts on the "
               "first of next month, never covering the gap.", _wrap(_rehire)), None),
        (_Case("plan-change", "Plan change",
               f"An employee moves to another plan on one insurance line from the first of next month "
               f"(plan_change: {mapping.plan_change}).", _plan_change), None),
        (_Case("coverage-level-change", "Coverage level change",
               "An employee marries: the spouse is added from the first of next month and the employee's "
               "coverage level changes.", _level_change), None),
        (_Case("address-and-name-change", "Address and name change",
               "A family moves house; the spouse takes a new last name.", _wrap(_address_and_name)), None),
        (_Case("identity-correction", "Identity correction",
               "The employee's SSN and a child's birth date were keyed wrong and are corrected"
               + (" (Loop 2100B carries the identity the carrier holds)." if status.identity_corrections
                  else " (the mapping sends no Loop 2100B: the corrected identity comes in 2100A alone)."),
               _wrap(_identity)), None),
        (_Case("dependent-age-out", "Dependent age-out",
               "A child reaches 26 this month; the census ends the child's coverage at the end of the month.",
               _wrap(_age_out)), None),
        (_Case("cobra-event", "COBRA event",
               "An employee leaves employment at the end of this month and elects COBRA continuation from "
               "the first of next month.", _cobra_edit(mapping)), None),
        (_Case("full-audit-file", "Full audit file",
               f"The whole roster as the carrier should hold it (INS03 030, BGN08 {mapping.full_file.bgn08}).",
               _wrap(_nothing), full_file=True), None),
    ]
    if mapping.volumes.salary or mapping.volumes.coverage_amount or mapping.volumes.premium:
        cases.append((_Case("volume-change", "Salary (volume) change", "An employee's salary changes.",
                            _wrap(_volumes) if mapping.volumes.salary else
                            (lambda _c: "only salary changes are cast; the mapping does not send salary")), None))
    if any(mapping.contact.census_fields()):
        cases.append((_Case("contact-change", "Contact change",
                            "An employee's phone, e-mail, mailing address, language or tobacco use changes "
                            "(whichever the mapping sends).", _wrap(_contact)), None))
    if mapping.primary_care_provider is not None:
        cases.append((_Case("primary-care-provider-change", "Primary care provider change",
                            "A spouse picks another primary care provider, as a new patient.", _wrap(_pcp)), None))
    for k, category in enumerate(mapping.reporting_categories):
        cases.append((_Case(f"reporting-category-{k + 1}", f"Reporting category change ({category.name})",
                            f"An employee's {category.name} changes.", _category_edit(category.field)), None))
    return cases


def _wrap(fn: Callable[[Cast], None]) -> Edit:
    def edit(cast: Cast) -> str | None:
        fn(cast)
        return None
    return edit


def _cobra_edit(mapping: CarrierMapping) -> Edit:
    def edit(cast: Cast) -> str | None:
        if not mapping.member_status.cobra:
            return "the mapping sends no COBRA data (member_status.cobra is off)"
        _cobra(cast)
        return None
    return edit


# ---------------------------------------------------------------------------------------------- building
def header_for(feed: Feed, mapping: CarrierMapping, *, as_of: date, isa13: int, action: str) -> TransactionHeader:
    """The transaction header a run would write, on the anchor day, ISA15 T (test)."""
    return TransactionHeader(
        ids=mapping.envelope.model_copy(update={"usage": "T"}),
        created=datetime.combine(as_of, time(6, 0), tzinfo=UTC), reference=f"CERT{isa13:09d}",
        sponsor=Party(name=feed.employer.name, id_qualifier="FI", id=feed.employer.tax_id),
        payer=mapping.payer, action=action, group_number=mapping.group_number)


def token_key(seed: int) -> bytes:
    return hashlib.sha256(f"carrierfeeds certification packet, seed {seed}".encode()).digest()


def build_scenarios(feed: Feed, mapping: CarrierMapping, *, seed: int, as_of: date) -> ScenarioSet:
    """Every applicable scenario for ``feed``'s carrier, numbered in order, and the ones that are not."""
    if feed.output.format != "x12-834":
        raise ConfigError(f"feed {feed.feed_id} sends {feed.output.format}, not 834s: a certification packet is "
                          "made of 834s", field="output.format")
    roster = Cast(feed, mapping, seed=seed, as_of=as_of)
    tokens = MemberTokenizer(token_key(seed))
    built: list[Scenario] = []
    skipped: list[NotApplicable] = []
    for case, before_edit in _cases(mapping):
        before, after = copy.deepcopy(roster), copy.deepcopy(roster)
        if before_edit is not None:
            before_edit(before)
            before_edit(after)
        reason = case.edit(after)
        if reason is not None:
            skipped.append(NotApplicable(case.slug, case.title, reason))
            continue
        number = len(built) + 1
        isa13 = CERT_ISA13_BASE + number
        change, after_view = _change_set(feed, mapping, before, after, as_of=as_of, full_file=case.full_file)
        if change.empty:
            skipped.append(NotApplicable(case.slug, case.title, "the mapping sends none of the data this case "
                                                                "changes: nothing would reach the carrier"))
            continue
        action = mapping.full_file.bgn08 if change.full_file else "2"
        data = render_834_bytes(change.enrollment, header_for(feed, mapping, as_of=as_of, isa13=isa13,
                                                              action=action),
                                ControlNumbers(isa13=isa13, gs06=isa13, st02=1))
        expected = expected_outcome(change, after_view, tokens, slug=case.slug, title=case.title,
                                    isa13=isa13, action=action, as_of=as_of)
        built.append(Scenario(number, case.slug, case.title, case.story, data, expected, change.enrollment, action))
    return ScenarioSet(feed.feed_id, mapping.mapping_id, seed, as_of, tuple(built), tuple(skipped))


def _change_set(feed: Feed, mapping: CarrierMapping, before: Cast, after: Cast, *, as_of: date,
                full_file: bool) -> tuple[ChangeSet, Enrollment]:
    before_view = build_enrollment(_census(before.rows()), feed, mapping, as_of=as_of, workers=1)
    after_view = build_enrollment(_census(after.rows()), feed, mapping, as_of=as_of, workers=1)
    held = diff_against_snapshot(before_view, None, as_of=as_of).snapshot
    full = full_file or mapping.mode == "full"
    change = diff_against_snapshot(after_view, held, as_of=as_of, term_policy=mapping.term_policy,
                                   term_end=mapping.term_end, retro_window_days=mapping.retro_window_days,
                                   full_file=full, plan_change=mapping.plan_change)
    return change, after_view


# ---------------------------------------------------------------------------------------------- expectations
def _iso(value: str) -> str | None:
    return f"{value[:4]}-{value[4:6]}-{value[6:]}" if value else None


def expected_outcome(change: ChangeSet, after: Enrollment, tokens: MemberTokenizer, *, slug: str, title: str,
                     isa13: int, action: str, as_of: date) -> dict[str, Any]:
    """What the file sends per member (INS03/INS04, each Loop 2300) and what the carrier should hold for
    those members afterwards, keyed by member token (member ids are synthetic and shown as sent)."""
    sent = change.enrollment.table
    members: list[dict[str, Any]] = []
    for (sid, mid), rows in sent.groupby(["subscriber_id", "member_id"], sort=False):
        first = rows.iloc[0]
        coverages = [{"hd01": r["hd01"], "insurance_line": r["hd03"], "plan": r["hd04"], "level": r["hd05"],
                      "start": _iso(r["coverage_start"]), "end": _iso(r["coverage_end"])}
                     for r in rows.to_dict("records") if r["hd03"]]
        members.append({"member_token": tokens.token(str(mid)), "subscriber_id": str(sid), "member_id": str(mid),
                        "subscriber": first["ins01"] == "Y", "relationship": first["ins02"],
                        "ins03": first["ins03"], "ins04": first.get("ins04", ""), "coverages": coverages})
    sent_keys = {(m["subscriber_id"], m["member_id"]) for m in members}
    view = after.table
    holds: list[dict[str, Any]] = []
    for (sid, mid), rows in view.groupby(["subscriber_id", "member_id"], sort=False):
        if (str(sid), str(mid)) not in sent_keys:
            continue
        holds.append({"member_token": tokens.token(str(mid)), "subscriber_id": str(sid), "member_id": str(mid),
                      "coverages": [{"insurance_line": r["hd03"], "plan": r["hd04"], "level": r["hd05"],
                                     "start": _iso(r["coverage_start"]), "end": _iso(r["coverage_end"])}
                                    for r in rows.to_dict("records") if r["hd03"]]})
    return {"scenario": slug, "title": title, "as_of": as_of.isoformat(), "isa13": f"{isa13:09d}",
            "bgn08": action, "full_file": change.full_file, "members_by_ins03": dict(change.members_by_type),
            "coverages_by_hd01": dict(change.coverages_by_type), "members": members,
            "carrier_holds_after": holds}


def describe(expected: dict[str, Any]) -> list[str]:
    """The expected outcome in words, one line per member and coverage (tokens and plans, no names)."""
    lines: list[str] = []
    for m in expected["members"]:
        who = "subscriber" if m["subscriber"] else f"dependent (INS02 {m['relationship']})"
        lines.append(f"- {m['member_token']} ({who}, {m['member_id']}): INS03 {m['ins03']} "
                     f"({INS03_WORDS.get(m['ins03'], m['ins03'])})"
                     + (f", INS04 {m['ins04']}" if m["ins04"] else ""))
        for c in m["coverages"]:
            span = f"from {c['start']}" + (f" to {c['end']}" if c["end"] else "")
            lines.append(f"    HD*{c['hd01']} ({HD01_WORDS.get(c['hd01'], c['hd01'])}) {c['insurance_line']} "
                         f"{c['plan']} level {c['level']} {span}")
        if not m["coverages"]:
            lines.append("    no coverage loop: member data only")
    lines.append("")
    lines.append("Afterwards the carrier holds, for these members:")
    for h in expected["carrier_holds_after"]:
        lines.append(f"- {h['member_token']} ({h['member_id']}):")
        for c in h["coverages"]:
            span = f"from {c['start']}" + (f", ended {c['end']}" if c["end"] else ", open")
            lines.append(f"    {c['insurance_line']} {c['plan']} level {c['level']} {span}")
    return lines


__all__ = ["CERT_ISA13_BASE", "NotApplicable", "Scenario", "ScenarioSet", "build_scenarios", "describe",
           "expected_outcome", "header_for", "token_key"]
