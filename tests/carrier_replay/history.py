"""A small employer's census over several days: families, elections, and the events that change them.

A history is a start day and a list of days, each a list of events (:class:`Event`: a kind and a few
integers that pick the family, member or variant, resolved against the census as it stands that day, so
hypothesis can shrink them freely). :func:`play` turns it into one census per day (rows of canonical
text columns) and, for each day, what the employer meant: which families carry deliberately bad data
(validation must hold them back or reject the day), and which changes reach back before the carrier's
retroactive window (the employer fixes both the next morning).

Every value is already in the carrier's form (upper-case ASCII, no delimiters), so the expected roster
can compare demographics without re-implementing the project's folding.
"""

from __future__ import annotations

import calendar
import copy
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any, Literal

EventKind = Literal[
    "add_family", "remove_family", "end_family", "remove_dependent", "add_dependent", "plan_change_one_row",
    "plan_change_two_rows", "level_change", "address_change", "name_change", "dob_change", "ssn_change",
    "rehire", "reinstate", "drop_dental", "bad_data", "retro_add_outside", "retro_term_outside",
    "salary_change", "volume_change", "eoi_release",
]
EVENT_KINDS: tuple[EventKind, ...] = EventKind.__args__  # type: ignore[attr-defined]

MEDICAL = ("MED-PPO", "MED-HDHP")
LEVELS = ("EMP", "ESP", "ECH", "FAM")
#: The employee's own disability lines (volumes: a benefit amount, 2300 AMT*FK; salary is 2100A ICM).
VOLUME = ("STD-CORE", "LTD-CORE")
_LAST = ("RIVERA", "OKAFOR", "LINDQVIST", "NAKAMURA", "BROWN", "GARCIA", "SINGH", "MOREAU")
_FIRST = ("ANA", "MATEO", "LUCIA", "TEO", "SAM", "KIM", "NOOR", "LEE", "ROSA", "IVAN")
_STREETS = ("12 ELM STREET", "9 OAK AVE", "400 MAIN ST", "7 HILL RD", "88 LAKE DR")
_CITIES = (("SPRINGFIELD", "IL", "62701"), ("PEORIA", "IL", "61602"), ("MADISON", "WI", "53703"))


@dataclass(frozen=True)
class Event:
    kind: EventKind
    a: int = 0
    b: int = 0


@dataclass(frozen=True)
class Period:
    plan_code: str
    level: str
    start: date
    end: date | None = None
    amount: str = ""  # the benefit amount of a volume line
    eoi: bool = False  # an increase waiting on evidence of insurability (eoi_pending Y)


@dataclass
class Person:
    member_id: str
    relationship: str
    last_name: str
    first_name: str
    middle_initial: str
    ssn: str
    dob: date
    gender: str
    periods: list[Period] = field(default_factory=list)
    salary: str = ""  # the employee's annual wage


@dataclass
class Family:
    subscriber_id: str
    members: list[Person]
    address1: str
    address2: str
    city: str
    state: str
    zip: str
    hire_date: date
    present: bool = True
    next_dependent: int = 1


@dataclass(frozen=True)
class Day:
    """One day of the history: the census the employer drops, and what the employer meant by it."""

    on: date
    rows: list[dict[str, str]]
    bad_families: frozenset[str]
    retro_outside: bool


def month_end(day: date) -> date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def next_month(day: date) -> date:
    return month_end(day) + timedelta(days=1)


def years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


class Employer:
    """The census as it stands; events change it, :meth:`rows` writes it."""

    def __init__(self, start: date, families: int, seed: int, age_out: bool) -> None:
        self.start = start
        self.families: list[Family] = []
        self.serial = seed * 7
        self.fixes: list[Any] = []
        for i in range(families):
            self._new_family(i, date(2025, 1, 1), age_out=age_out and i == 0)

    # ------------------------------------------------------------------ helpers
    def _serial(self) -> int:
        self.serial += 1
        return self.serial

    def _ssn(self) -> str:
        return f"{123 + self.serial % 500:03d}{45 + self.serial % 50:02d}{1000 + self.serial:04d}"[:9]

    def _person(self, member_id: str, relationship: str, last: str, dob: date) -> Person:
        n = self._serial()
        return Person(member_id=member_id, relationship=relationship, last_name=last,
                      first_name=_FIRST[n % len(_FIRST)], middle_initial="ABCDE"[n % 5] if n % 3 else "",
                      ssn=self._ssn() if relationship != "CH" else "", dob=dob, gender="MF"[n % 2])

    def _new_family(self, variant: int, start: date, *, age_out: bool = False) -> Family:
        n = self._serial()
        sid = f"E{1000 + n}"
        last = _LAST[n % len(_LAST)]
        city, state, zipc = _CITIES[n % len(_CITIES)]
        ee = self._person(sid, "EE", last, date(1970 + n % 25, 1 + n % 12, 1 + n % 28))
        members = [ee]
        deps = variant % 4  # 0..3 dependents
        if deps >= 1:
            members.append(self._person(f"{sid}-01", "SP", last, date(1972 + n % 20, 1 + (n + 3) % 12, 5)))
        for k in range(2, deps + 1):
            members.append(self._person(f"{sid}-{k:02d}", "CH", last, date(2008 + (n + k) % 12, 1 + k, 10)))
        family = Family(subscriber_id=sid, members=members, address1=_STREETS[n % len(_STREETS)],
                        address2="APT 3" if n % 2 else "", city=city, state=state, zip=zipc,
                        hire_date=date(2020, 1 + n % 12, 1), next_dependent=deps + 1)
        level = LEVELS[min(deps, 3)]
        medical = MEDICAL[variant % 2]
        for person in members:
            person.periods = [Period(medical, level, start), Period("DEN-STD", level, start)]
            if variant % 3 == 0:
                person.periods.append(Period("VIS-STD", level, start))  # not authorised for this carrier
        ee.salary = str(40000 + 1000 * (n % 30))
        ee.periods.append(Period("STD-CORE", "EMP", start, amount=str(800 + 50 * (n % 10))))
        if variant % 2:
            ee.periods.append(Period("LTD-CORE", "EMP", start, amount=str(3000 + 100 * (n % 10))))
        if age_out:
            # A child whose 26th birthday falls a few days into the history; the employer ends its
            # coverage at the end of that month, as most plans do.
            birthday = self.start + timedelta(days=2 + n % 5)
            child = self._person(f"{sid}-{family.next_dependent:02d}", "CH", last, years_before(birthday, 26))
            family.next_dependent += 1
            child.periods = [replace(p, end=month_end(birthday)) for p in ee.periods if p.plan_code not in VOLUME]
            members.append(child)
        self.families.append(family)
        return family

    def _present(self) -> list[Family]:
        return [f for f in self.families if f.present]

    def _pick(self, families: list[Family], i: int) -> Family | None:
        return families[i % len(families)] if families else None

    @staticmethod
    def _open(person: Person) -> list[Period]:
        return [p for p in person.periods if p.end is None]

    # ------------------------------------------------------------------ events
    def apply(self, event: Event, day: date) -> tuple[str | None, bool]:
        """Apply ``event`` on ``day``: (a family made invalid today or None, whether it reaches back
        before the retroactive window)."""
        kind, a, b = event.kind, event.a, event.b
        present = self._present()
        fam = self._pick(present, a)
        if kind == "add_family":
            start = (next_month(day), day, day - timedelta(days=20))[b % 3]
            self._new_family(a, start)
        elif kind == "retro_add_outside":
            family = self._new_family(a, day - timedelta(days=90))
            self.fixes.append(("start", family.subscriber_id, None))
            return None, True
        elif kind == "remove_family" and fam is not None:
            fam.present = False
        elif kind == "end_family" and fam is not None:
            end = (month_end(day), day + timedelta(days=3), day - timedelta(days=10))[b % 3]
            self._end(fam, end)
        elif kind == "retro_term_outside" and fam is not None:
            if self._end(fam, day - timedelta(days=90)):
                self.fixes.append(("end", fam.subscriber_id, None))
                return None, True
        elif kind == "remove_dependent" and fam is not None and len(fam.members) > 1:
            del fam.members[1 + b % (len(fam.members) - 1)]
        elif kind == "add_dependent" and fam is not None:
            self._add_dependent(fam, day)
        elif kind == "plan_change_one_row" and fam is not None:
            self._plan_change(fam, day, two_rows=False)
        elif kind == "plan_change_two_rows" and fam is not None:
            self._plan_change(fam, day, two_rows=True)
        elif kind == "level_change" and fam is not None:
            for person in fam.members:
                person.periods = [p if p.plan_code in VOLUME else
                                  replace(p, level=LEVELS[(LEVELS.index(p.level) + 1 + b) % 4])
                                  for p in person.periods]
        elif kind == "salary_change" and fam is not None and fam.members[0].salary:
            fam.members[0].salary = str(int(fam.members[0].salary) + 1000 * (1 + b))
        elif kind == "volume_change" and fam is not None:
            # b even: a change the carrier takes as it comes; b odd: an increase waiting on evidence of
            # insurability (held back until approved, the carrier keeping the amount it holds)
            ee = fam.members[0]
            lines = [p for p in self._open(ee) if p.plan_code in VOLUME]
            if lines:
                line = lines[b % len(lines)]
                ee.periods = [replace(p, amount=str(int(p.amount) + 250 * (1 + b)), eoi=p.eoi or b % 2 == 1)
                              if p is line else p for p in ee.periods]
        elif kind == "eoi_release" and fam is not None:
            ee = fam.members[0]
            ee.periods = [replace(p, eoi=False) for p in ee.periods]
        elif kind == "address_change" and fam is not None:
            n = self._serial()
            city, state, zipc = _CITIES[n % len(_CITIES)]
            fam.address1, fam.city, fam.state, fam.zip = f"{n} NEW ROAD", city, state, zipc
        elif kind in ("name_change", "dob_change", "ssn_change") and fam is not None:
            person = fam.members[b % len(fam.members)]
            if kind == "name_change":
                person.last_name = _LAST[(_LAST.index(person.last_name) + 1) % len(_LAST)]
            elif kind == "dob_change" and person.relationship != "CH":
                person.dob = person.dob + timedelta(days=1 + b % 20)
            elif kind == "ssn_change" and person.relationship != "CH":
                self._serial()
                person.ssn = self._ssn()
        elif kind == "rehire":
            self._rehire(a, day)
        elif kind == "reinstate":
            self._reinstate(a, day)
        elif kind == "drop_dental" and fam is not None:
            for person in fam.members:
                person.periods = [p for p in person.periods if p.plan_code != "DEN-STD"]
        elif kind == "bad_data" and fam is not None:
            if fam.members[0].gender == "X":
                return fam.subscriber_id, False
            self.fixes.append(("gender", fam.subscriber_id, fam.members[0].gender))
            fam.members[0].gender = "X"
            return fam.subscriber_id, False
        return None, False

    def _end(self, fam: Family, end: date) -> bool:
        changed = False
        for person in fam.members:
            new = []
            for p in person.periods:
                if p.start > end:
                    changed = True  # an election that had not started yet is withdrawn
                elif p.end is None or p.end > end:
                    new.append(replace(p, end=end))
                    changed = True
                else:
                    new.append(p)
            person.periods = new
        fam.members = [fam.members[0], *(m for m in fam.members[1:] if m.periods)]
        return changed

    def _add_dependent(self, fam: Family, day: date) -> None:
        ee = fam.members[0]
        start = next_month(day)
        periods = [replace(p, start=max(p.start, start)) for p in self._open(ee)
                   if p.start <= start and p.plan_code not in VOLUME]
        if not periods:
            return
        child = self._person(f"{fam.subscriber_id}-{fam.next_dependent:02d}", "CH", ee.last_name,
                             date(2019, 1 + fam.next_dependent % 12, 3))
        fam.next_dependent += 1
        child.periods = periods
        fam.members.append(child)

    def _plan_change(self, fam: Family, day: date, *, two_rows: bool) -> None:
        new_start = next_month(day)
        for person in fam.members:
            meds = [p for p in person.periods if p.plan_code in MEDICAL]
            if len(meds) != 1 or meds[0].end is not None or meds[0].start >= new_start:
                return  # only a single open medical election changes plan here
        for person in fam.members:
            med = next(p for p in person.periods if p.plan_code in MEDICAL)
            other = MEDICAL[1 - MEDICAL.index(med.plan_code)]
            rest = [p for p in person.periods if p is not med]
            if two_rows:
                person.periods = [replace(med, end=new_start - timedelta(days=1)),
                                  Period(other, med.level, new_start), *rest]
            else:
                person.periods = [Period(other, med.level, new_start), *rest]

    def _rehire(self, a: int, day: date) -> None:
        gone = [f for f in self.families if not f.present or all(
            p.end is not None and p.end < day for m in f.members for p in m.periods)]
        fam = self._pick(gone, a)
        if fam is None:
            return
        ended = [p.end for m in fam.members for p in m.periods if p.end is not None]
        start = next_month(day)
        if ended and max(ended) + timedelta(days=1) >= start:
            start = next_month(start)  # a real gap
        fam.present = True
        for person in fam.members:
            person.periods = [replace(p, start=start, end=None) for p in _latest_per_line(person).values()]

    def _reinstate(self, a: int, day: date) -> None:
        ended = [f for f in self._present() if any(p.end is not None for p in f.members[0].periods)]
        fam = self._pick(ended, a)
        if fam is None:
            return
        for person in fam.members:
            if person.relationship == "CH" and years_before(day + timedelta(days=60), 26) <= person.dob:
                pass
            elif person.relationship == "CH":
                continue  # an aged-out child stays ended
            # The latest period of each line runs on again, as if it had never been ended.
            latest = _latest_per_line(person)
            person.periods = [replace(p, end=None) if latest[_line(p)] is p else p for p in person.periods]

    def apply_fixes(self, day: date) -> None:
        """The employer corrects yesterday's bad data and out-of-window dates first thing."""
        for what, sid, value in self.fixes:
            fam = next(f for f in self.families if f.subscriber_id == sid)
            if what == "gender":
                fam.members[0].gender = value
            elif what == "start":
                for person in fam.members:
                    person.periods = [replace(p, start=day - timedelta(days=10)) for p in person.periods]
            elif what == "end":
                for person in fam.members:
                    person.periods = [replace(p, end=day - timedelta(days=5)) if p.end is not None
                                      and p.end < day - timedelta(days=60) else p for p in person.periods]
        self.fixes = []

    # ------------------------------------------------------------------ census
    def rows(self) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        for fam in self._present():
            for person in fam.members:
                ee = person.relationship == "EE"
                for p in person.periods:
                    out.append({
                        "member_id": person.member_id, "subscriber_id": fam.subscriber_id,
                        "relationship": person.relationship, "last_name": person.last_name,
                        "first_name": person.first_name, "middle_initial": person.middle_initial,
                        "ssn": person.ssn, "dob": person.dob.isoformat(), "gender": person.gender,
                        "address1": fam.address1, "address2": fam.address2, "city": fam.city,
                        "state": fam.state, "zip": fam.zip, "phone": "2175550100",
                        "hire_date": fam.hire_date.isoformat() if ee else "",
                        "salary": person.salary, "salary_frequency": "ANNUALLY" if person.salary else "",
                        "coverage_amount": p.amount, "eoi_pending": "Y" if p.eoi else "",
                        "employment_status": "FT" if ee else "", "department": "PLANT 2",
                        "plan_code": p.plan_code, "coverage_level": p.level,
                        "coverage_start": p.start.isoformat(),
                        "coverage_end": p.end.isoformat() if p.end else "",
                    })
        return out


def _line(p: Period) -> str:
    return "MED" if p.plan_code in MEDICAL else p.plan_code


def _latest_per_line(person: Person) -> dict[str, Period]:
    latest: dict[str, Period] = {}
    for p in person.periods:
        if _line(p) not in latest or p.start > latest[_line(p)].start:
            latest[_line(p)] = p
    return latest


def play(start: date, days: list[list[Event]], *, families: int = 3, seed: int = 0,
         age_out: bool = False) -> list[Day]:
    """The census of each day of the history (day 0 is the initial roster, before any event)."""
    employer = Employer(start, families, seed, age_out)
    out: list[Day] = []
    for i, events in enumerate(days):
        on = start + timedelta(days=i)
        employer.apply_fixes(on)
        bad: set[str] = set()
        retro = False
        for event in events:
            family, outside = employer.apply(event, on)
            if family is not None:
                bad.add(family)
            retro = retro or outside
        out.append(Day(on=on, rows=copy.deepcopy(employer.rows()), bad_families=frozenset(bad),
                       retro_outside=retro))
    return out
