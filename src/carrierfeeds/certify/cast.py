"""The certification packet's synthetic cast: a few fake families, deterministic per seed and anchor day.

Nothing here comes from a census. Names come from small built-in lists of upper-case ASCII names (so
every carrier character set takes them unchanged), SSNs from the areas 773-899 (no 777, 888) that SSA
never issued under its geographic scheme (as :mod:`carrierfeeds.census.generate` does), phones from
555-01xx. Every optional census field a mapping might send (volumes, contact, PCP, reporting category
sources, member status) is filled, so a mapping that turns a setting on finds its data; the mapping's
allowlist still decides what reaches the file.

Families (roles the scenarios pick by name):

- ``family``: employee, spouse and two children, every line at the family level;
- ``single``: an employee alone;
- ``ageout``: an employee and a child whose 26th birthday falls in the anchor day's month;
- ``former``: an employee whose coverage ended months before the anchor day (for a rehire);
- ``leaver``: an employee about to leave employment (for COBRA);
- ``newhire``: a new employee with spouse and child, absent from the roster until the scenario adds it.
"""

from __future__ import annotations

import calendar
import random
from dataclasses import dataclass, field, replace
from datetime import date, timedelta

from carrierfeeds.census.columns import CANONICAL_COLUMNS
from carrierfeeds.config import CarrierMapping, Feed

_LAST = ("ABERNATHY", "BALDWIN", "CALLOWAY", "DELACROIX", "ELLSWORTH", "FAIRBANKS", "GALLOWAY", "HOLLOWAY",
         "IVERSEN", "JANSSEN", "KINCAID", "LANGLEY", "MERRIWEATHER", "NORTHCOTT", "OYELARAN", "PEMBERTON",
         "QUINTERO", "ROCKWELL", "SANDOVAL", "THORNBURY", "UNDERHILL", "VANTERPOOL", "WHITACRE", "YARBROUGH")
_FIRST_F = ("ADA", "BEATRIX", "CORA", "DELIA", "EDITH", "FLORA", "GRETA", "HAZEL", "IRIS", "JUNE", "LENA",
            "MAEVE", "NELL", "OPAL", "PEARL", "RUTH", "SYLVIA", "TESSA", "VERA", "WREN")
_FIRST_M = ("ABEL", "BRAM", "CASPER", "DORIAN", "EMMETT", "FELIX", "GIDEON", "HUGO", "IRA", "JASPER",
            "KEES", "LOWELL", "MILO", "NILES", "OTIS", "PERCY", "ROLAND", "SILAS", "TOBIAS", "WALLACE")
_STREETS = ("MAPLE", "CEDAR", "JUNIPER", "LINDEN", "SYCAMORE", "HAWTHORN", "ALDER", "ROWAN")
_PLACES = (("SPRINGFIELD", "IL", "627"), ("MADISON", "WI", "537"), ("DAYTON", "OH", "454"),
           ("BOISE", "ID", "837"), ("TOPEKA", "KS", "666"), ("ALBANY", "NY", "122"))
_SSN_AREAS = tuple(a for a in range(773, 900) if a not in (777, 888))
#: A valid (check digit) NPI used by CMS's own examples, and a second one.
NPIS = ("1234567893", "1245319599")
#: Insurance lines whose coverage is the employee's alone (volumes), never a dependent's.
EMPLOYEE_ONLY_LINES = frozenset({"LIF", "ADD", "STD", "LTD"})


def month_end(day: date) -> date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def next_month(day: date) -> date:
    return month_end(day) + timedelta(days=1)


def years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


@dataclass(frozen=True)
class Election:
    plan_code: str
    level: str
    start: date
    end: date | None = None


@dataclass
class Person:
    member_id: str
    relationship: str  # EE, SP, CH
    last_name: str
    first_name: str
    gender: str
    dob: date
    ssn: str
    elections: list[Election] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)  # any other canonical column


@dataclass
class Family:
    role: str
    subscriber_id: str
    address: tuple[str, str, str, str, str]  # address1, address2, city, state, zip
    hire_date: date
    members: list[Person]
    present: bool = True


@dataclass(frozen=True)
class Plans:
    """The plans the cast elects: per insurance line the first authorised, mapped plan, and a second plan on
    the same line when there is one (for a plan change)."""

    by_line: dict[str, str]
    alternative: dict[str, str]
    levels: tuple[str, ...]
    line_of: dict[str, str]

    @classmethod
    def of(cls, feed: Feed, mapping: CarrierMapping) -> Plans:
        authorised = set(feed.authorization.plans)
        by_line: dict[str, str] = {}
        alternative: dict[str, str] = {}
        line_of: dict[str, str] = {}
        for code, plan in mapping.plans.items():
            if code not in authorised:
                continue
            line = str(plan.insurance_line)
            line_of[code] = line
            if line not in by_line:
                by_line[line] = code
            elif line not in alternative:
                alternative[line] = code
        return cls(by_line, alternative, tuple(mapping.coverage_levels), line_of)

    def level(self, wanted: str) -> str:
        """``wanted`` (EMP, ESP, ECH, FAM) when the mapping knows it, else its first level."""
        return wanted if wanted in self.levels else self.levels[0]


class Cast:
    """The roster as it stands; scenarios copy it, change a family, and write both as census rows."""

    def __init__(self, feed: Feed, mapping: CarrierMapping, *, seed: int, as_of: date) -> None:
        self.rng = random.Random(seed)  # noqa: S311  # picks fictional people, reproducibly: no secret
        self.as_of = as_of
        self.plans = Plans.of(feed, mapping)
        self.base_start = date(as_of.year - 1, 1, 1)
        self._serial = self.rng.randrange(1000, 8000)
        self._ssns: set[str] = set()
        self.families: list[Family] = []
        self._family("family", spouse=True, children=2)
        self._family("single")
        self._family("ageout", children=1, age_out=True)
        self._family("former")
        self._family("leaver")
        self._family("newhire", spouse=True, children=1, present=False)
        former = self.get("former")
        ended = month_end(date(as_of.year, as_of.month, 1) - timedelta(days=75))
        for person in former.members:
            person.elections = [replace(e, end=ended) for e in person.elections]
        newhire = self.get("newhire")
        newhire.hire_date = as_of - timedelta(days=3)
        for person in newhire.members:
            person.elections = [replace(e, start=next_month(as_of)) for e in person.elections]

    # ------------------------------------------------------------------ making people
    def _ssn(self) -> str:
        while True:
            ssn = (f"{self.rng.choice(_SSN_AREAS):03d}{self.rng.randrange(1, 100):02d}"
                   f"{self.rng.randrange(1, 10000):04d}")
            if ssn not in self._ssns:
                self._ssns.add(ssn)
                return ssn

    def _person(self, member_id: str, relationship: str, last: str, gender: str, dob: date, *,
                ssn: bool = True) -> Person:
        first = self.rng.choice(_FIRST_F if gender == "F" else _FIRST_M)
        return Person(member_id=member_id, relationship=relationship, last_name=last, first_name=first,
                      gender=gender, dob=dob, ssn=self._ssn() if ssn else "")

    def _family(self, role: str, *, spouse: bool = False, children: int = 0, age_out: bool = False,
                present: bool = True) -> None:
        self._serial += self.rng.randrange(1, 40)
        sid = f"CF{self._serial:05d}"
        last = self.rng.choice(_LAST)
        city, state, zip3 = self.rng.choice(_PLACES)
        address = (f"{self.rng.randrange(10, 990)} {self.rng.choice(_STREETS)} ST",
                   f"APT {self.rng.randrange(1, 30)}" if self.rng.random() < 0.4 else "", city, state,
                   f"{zip3}{self.rng.randrange(1, 100):02d}")
        year = self.as_of.year
        ee_gender = self.rng.choice("FM")
        members = [self._person(sid, "EE", last, ee_gender,
                                date(year - self.rng.randrange(30, 55), self.rng.randrange(1, 13),
                                     self.rng.randrange(1, 29)))]
        if spouse:
            members.append(self._person(f"{sid}-01", "SP", last, "M" if ee_gender == "F" else "F",
                                        date(year - self.rng.randrange(30, 55), self.rng.randrange(1, 13),
                                             self.rng.randrange(1, 29))))
        for k in range(children):
            if age_out:
                birthday = self.as_of.replace(day=min(10, month_end(self.as_of).day))
                dob = years_before(birthday, 26)
            else:
                dob = date(year - self.rng.randrange(2, 17), self.rng.randrange(1, 13), self.rng.randrange(1, 29))
            members.append(self._person(f"{sid}-{len(members):02d}", "CH", last, self.rng.choice("FM"), dob,
                                        ssn=not age_out and k == 0))
        level = "FAM" if spouse and children else "ESP" if spouse else "ECH" if children else "EMP"
        for person in members:
            for line, code in self.plans.by_line.items():
                if person.relationship != "EE" and line in EMPLOYEE_ONLY_LINES:
                    continue
                end = None
                if age_out and person.relationship == "CH":
                    end = None  # the carrier holds open coverage; the scenario's census ends it
                person.elections.append(Election(code, self.plans.level(level), self.base_start, end))
            person.extra = self._extras(person, line_codes=self.plans.line_of)
        self.families.append(Family(role, sid, address, date(year - self.rng.randrange(1, 12),
                                                             self.rng.randrange(1, 13), 1), members, present))

    def _extras(self, person: Person, *, line_codes: dict[str, str]) -> dict[str, str]:
        ee = person.relationship == "EE"
        first = person.first_name.lower()
        return {
            "phone": f"217555{self.rng.randrange(100, 200):04d}"[:10],
            "email": f"{first}.{self.rng.randrange(10, 99)}@example.com",
            "language": "eng", "tobacco_use": "N",
            "benefit_status": "A",
            "employment_status": "FT" if ee else "",
            "department": "PLANT 2" if ee else "",
            "salary": f"{self.rng.randrange(40, 120) * 1000}" if ee else "",
            "salary_frequency": "ANNUALLY" if ee else "",
            "pcp_npi": NPIS[0], "pcp_existing_patient": "Y",
            "eoi_pending": "N",
        }

    # ------------------------------------------------------------------ reading
    def get(self, role: str) -> Family:
        return next(f for f in self.families if f.role == role)

    def rows(self) -> list[dict[str, str]]:
        """The census: one row per member per election, every canonical column as text."""
        out: list[dict[str, str]] = []
        for fam in self.families:
            if not fam.present:
                continue
            for person in fam.members:
                ee = person.relationship == "EE"
                for e in person.elections:
                    r = dict.fromkeys(CANONICAL_COLUMNS, "")
                    r.update({
                        "member_id": person.member_id, "subscriber_id": fam.subscriber_id,
                        "relationship": person.relationship, "last_name": person.last_name,
                        "first_name": person.first_name, "ssn": person.ssn, "dob": person.dob.isoformat(),
                        "gender": person.gender, "address1": fam.address[0], "address2": fam.address[1],
                        "city": fam.address[2], "state": fam.address[3], "zip": fam.address[4],
                        "hire_date": fam.hire_date.isoformat() if ee else "",
                        "plan_code": e.plan_code, "coverage_level": e.level,
                        "coverage_start": e.start.isoformat(), "coverage_end": e.end.isoformat() if e.end else "",
                    })
                    r.update(person.extra)
                    line = self.plans.line_of.get(e.plan_code, "")
                    if ee and line in EMPLOYEE_ONLY_LINES:
                        r.update(coverage_amount="50000", premium_amount="12.50")
                    out.append(r)
        return out
