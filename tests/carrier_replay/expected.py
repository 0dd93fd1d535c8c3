"""The roster a carrier should hold after each day, computed from the census alone (never from the
project's diff or snapshot).

Per accepted member (its family not held back by validation), per insurance line (HD03) of a plan the
feed authorises and the mapping knows: the census period that counts on day D, i.e. the one in effect
(start <= D and no end or end >= D), else the earliest starting after D, else the one that ended last;
held as (plan description HD04, level HD05, start, end). Demographics are the census values of the
fields on the mapping's allowlist.

Lines the census no longer has:

* on a full-file day (mode ``full``, the first delivery, the mapping's full-file weekday) the carrier
  gets INS03 030 and keeps exactly the file's members and lines, so they are gone, except, in changes
  mode, a line whose end the carrier holds and has not yet passed (a pending term): the file carries it
  with that end;
* otherwise, term policy ``explicit``: termed at the mapping's ``term_end`` (end of the run's month or
  the day before; never before the line's start), unless the census had already given an end, which
  stands; term policy ``omission``: kept as last sent, until the next full file.

A period that resumes the day after the held one ended (same plan) is one continuous coverage: the
carrier keeps the original start (a reinstatement, 025, restores it; with a gap it is a new 021), for as
long as the census keeps the start it resumed on, ended again or not.

Families validation holds back (quarantine) keep exactly what the carrier had; so does a line waiting on
evidence of insurability (eoi_pending Y under the mapping's EOI hold), alone, until it is approved (and
a new line waiting on it is not held at all), except for an end the census gives it: the hold is for an
increase, never for an end, so the carrier's coverage ends then, as it holds it. Volumes: each line's
benefit amount (AMT*FK) and the employee's salary (ICM) are compared with the rest. A day is not delivered
(the carrier keeps yesterday's roster) when the validation policy rejects it, or in a change file when a
line would be added, moved or ended before the retroactive window (the run refuses it).

What is compared (:func:`compare`): per member and line, (plan, level, start, end), on both sides after
leaving out lines that ended before D minus ``retro_window_days``. Both sides may forget those: the
project drops such terms from its snapshot (a reinstatement can no longer be retroactive), and a carrier
keeps them as history only, so neither an old ended line still held nor one dropped is a coverage error.
Everything that ends on or after that horizon, or is open, must agree exactly. For a plan-keyed carrier
the plan the census names for the line is compared, and no other plan of the same line may share a
day with it (else the carrier pays two plans of one line): the carrier may rightly hold the
old plan up to the day before a plan change it was told of in advance, which a census written in one row
no longer shows. Demographics are compared for members both sides hold a compared line for.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Literal

from tests.carrier_replay.carrier import Carrier, Flavour, Held, counting
from tests.carrier_replay.history import Day

LineKey = tuple[str, str, str]
Outcome = Literal["delivered", "rejected", "refused"]

_INS02 = {"EE": "18", "SP": "01", "CH": "19"}
_ICM01 = {"ANNUALLY": "7"}


@dataclass(frozen=True)
class Config:
    """One drawn configuration of the feed, the mapping and the carrier."""

    mode: Literal["changes", "full"] = "changes"
    plan_change: Literal["term_and_add", "change"] = "term_and_add"
    term_policy: Literal["explicit", "omission"] = "explicit"
    term_end: Literal["end_of_month", "day_before"] = "end_of_month"
    flavour: Flavour = "line"
    policy: Literal["reject", "quarantine"] = "reject"
    full_file_weekday: str | None = None
    retro_window_days: int = 60


def term_date(on: date, rule: str) -> date:
    if rule == "day_before":
        return on - timedelta(days=1)
    return on.replace(day=calendar.monthrange(on.year, on.month)[1])


def _d(text: str) -> date | None:
    return date.fromisoformat(text) if text else None


class ExpectedRoster:
    """What the carrier should hold, advanced one census at a time."""

    def __init__(self, cfg: Config, plans: dict[str, tuple[str, str]], authorised: set[str],
                 allowlist: set[str]) -> None:
        self.cfg = cfg
        self.plans = plans  # plan code -> (HD03, HD04)
        self.authorised = authorised
        self.allowlist = allowlist
        self.lines: dict[LineKey, Held] = {}
        self.demographics: dict[tuple[str, str], dict[str, object]] = {}
        self.delivered_any = False
        #: Lines whose census period resumed the day after the held one ended: its census start.
        self.merged: dict[LineKey, date] = {}

    def full_day(self, on: date) -> bool:
        return (self.cfg.mode == "full" or not self.delivered_any
                or (self.cfg.full_file_weekday is not None
                    and calendar.day_name[on.weekday()].lower() == self.cfg.full_file_weekday))

    def _demographics(self, row: dict[str, str]) -> dict[str, object]:
        allowed = self.allowlist

        def field(name: str) -> str:
            return row[name] if name in allowed else ""

        ee = row["relationship"] == "EE"
        return {"ins01": "Y" if ee else "N", "ins02": _INS02[row["relationship"]],
                "ins08": field("employment_status") if ee else "", "last_name": field("last_name"),
                "first_name": field("first_name"), "middle_initial": field("middle_initial"),
                "ssn": field("ssn"), "dob": _d(field("dob")), "gender": field("gender"),
                "address1": field("address1"), "address2": field("address2"), "city": field("city"),
                "state": field("state"), "zip": field("zip"),
                "income": (_ICM01[row["salary_frequency"]], field("salary")) if field("salary") else None}

    def step(self, day: Day) -> Outcome:
        """Apply ``day``'s census; returns what should become of the day's run."""
        on, cfg = day.on, self.cfg
        present = {r["subscriber_id"] for r in day.rows}
        bad = day.bad_families & present
        if not present:
            return "rejected"  # an empty census is refused (fail closed), never read as "everyone left"
        if bad and (cfg.policy == "reject" or bad == present):
            return "rejected"
        periods: dict[LineKey, list[Held]] = {}
        demographics: dict[tuple[str, str], dict[str, object]] = {}
        eoi_held: set[LineKey] = set()
        eoi_ends: dict[LineKey, date] = {}
        for row in day.rows:
            if row["subscriber_id"] in bad or row["plan_code"] not in self.authorised:
                continue
            if row["plan_code"] not in self.plans:
                continue
            hd03, hd04 = self.plans[row["plan_code"]]
            key = (row["subscriber_id"], row["member_id"], hd03)
            if row.get("eoi_pending") == "Y" and "eoi_pending" in self.allowlist:
                # waiting on evidence of insurability: the carrier keeps what it holds, but for an end
                eoi_held.add(key)
                if row["coverage_end"]:
                    eoi_ends[key] = date.fromisoformat(row["coverage_end"])
                demographics[key[:2]] = self._demographics(row)
                continue
            amount = row.get("coverage_amount", "") if "coverage_amount" in self.allowlist else ""
            periods.setdefault(key, []).append(
                Held(hd04, row["coverage_level"], _d(row["coverage_start"]), _d(row["coverage_end"]), amount))
            demographics[key[:2]] = self._demographics(row)
        today = {key: counting(helds, on) for key, helds in periods.items()}
        full = self.full_day(on)
        merged = {} if full else {k: v for k, v in self.merged.items() if k in today}
        for key, held in today.items():
            old = self.lines.get(key)
            if full or old is None or held.start is None:
                continue
            resumes = (old.end is not None and held.start == old.end + timedelta(days=1)
                       and held.plan == old.plan)
            if resumes or merged.get(key) == held.start:
                # Coverage resumes the day after it ended: one continuous coverage (025 restores it),
                # so the carrier rightly keeps the original start, for as long as the census keeps the
                # start it resumed on (an end given later ends that coverage, still from its start).
                merged[key] = held.start
                today[key] = replace(held, start=old.start)
            else:
                merged.pop(key, None)
        new: dict[LineKey, Held] = {}
        new_demo: dict[tuple[str, str], dict[str, object]] = {}
        for key, held in self.lines.items():
            if key[0] in bad or (key in eoi_held and key not in today):
                new[key] = replace(held, end=eoi_ends[key]) if key in eoi_ends and key[0] not in bad else held
                new_demo[key[:2]] = self.demographics[key[:2]]
            elif key not in today and not full:
                if cfg.term_policy == "explicit" and held.end is None:
                    assert held.start is not None
                    held = replace(held, end=max(held.start, term_date(on, cfg.term_end)))
                new[key] = held
                new_demo[key[:2]] = self.demographics[key[:2]]
            elif key not in today and cfg.mode == "changes" and held.end is not None and held.end >= on:
                # A weekly full file still carries a line whose end the carrier was sent and which it
                # still covers (a pending end-of-month term), with that end.
                new[key] = held
                new_demo[key[:2]] = self.demographics[key[:2]]
        new.update(today)
        new_demo.update(demographics)
        if not full and self._reaches_back(today, on):
            return "refused"
        self.lines, self.demographics, self.delivered_any, self.merged = new, new_demo, True, merged
        return "delivered"

    def _reaches_back(self, today: dict[LineKey, Held], on: date) -> bool:
        """A change file would add, move or end a line before the retroactive window."""
        window = on - timedelta(days=self.cfg.retro_window_days)
        for key, held in today.items():
            old = self.lines.get(key)
            assert held.start is not None
            if old is None:
                if held.start < window:
                    return True
                continue
            if held.start != old.start and held.start < window:
                return True
            if held.end is not None and held.end != old.end and held.end < window:
                return True
        return False


def compare(carrier: Carrier, expected: ExpectedRoster, on: date) -> list[str]:
    """Every difference between what the carrier holds and what it should hold on ``on`` (see module)."""
    horizon = on - timedelta(days=expected.cfg.retro_window_days)

    def live(h: Held) -> bool:
        return h.end is None or h.end >= horizon

    got_all, overlaps = carrier.per_line(on, {k: v.plan for k, v in expected.lines.items()})
    got = {k: v for k, v in got_all.items() if live(v)}
    want = {k: v for k, v in expected.lines.items() if live(v)}
    out: list[str] = []
    for key in sorted(set(got) | set(want)):
        g, w = got.get(key), want.get(key)
        if g != w:
            out.append(f"member {key[1]} line {key[2]}: carrier holds {_show(g)}, census says {_show(w)}")
    out += overlaps
    for member in sorted({k[:2] for k in got} & {k[:2] for k in want}):
        g_demo, w_demo = carrier.members.get(member), expected.demographics.get(member)
        if g_demo != w_demo:
            fields = sorted(n for n in (w_demo or {}) if (g_demo or {}).get(n) != (w_demo or {}).get(n))
            out.append(f"member {member[1]}: demographics differ in {fields}")
    return out


def _show(h: Held | None) -> str:
    if h is None:
        return "nothing"
    return f"{h.plan}/{h.level} {h.start}..{h.end or ''}" + (f" amount {h.amount}" if h.amount else "")
