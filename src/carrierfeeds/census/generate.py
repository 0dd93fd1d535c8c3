"""Synthetic employer census: fake but well-formed families and elections, deterministic per seed.

Every value is generated here from small built-in lists and a seeded numpy generator; nothing comes
from real people. SSNs are *synthetic*: they are drawn from areas 773-899 (excluding 777 and 888),
a block SSA did not issue under its pre-2011 geographic scheme, with group 01-99 and serial 0001-9999,
so they pass our format rules (not 000/666/9xx, no zero group or serial, not all one digit) and are
unique per person. Phone numbers use the 555-01xx range reserved for fiction.

The output passes ``schemas/census-v1.suite.json`` and the cross-row rules of
:func:`carrierfeeds.validation.validate_census` with zero findings at the ``as_of`` day it was made for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from carrierfeeds.census.columns import CANONICAL_COLUMNS, ROW_NUMBER

_MALE = ("James", "John", "Robert", "Michael", "William", "David", "Richard", "Joseph", "Thomas",
         "Carlos", "José", "Luis", "Wei", "Hiroshi", "Ahmed", "Omar", "Kwame", "Liam", "Noah", "Ethan",
         "Jean-Luc", "François", "Seán", "Björn", "Mateo", "Raj", "Dmitri", "Andrés", "Tomás", "D'Andre")
_FEMALE = ("Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah",
           "María", "Sofía", "Chloé", "Zoë", "Aisha", "Mei", "Yuki", "Priya", "Fatima", "Emma", "Olivia",
           "Anne-Marie", "Renée", "Siobhán", "Ana-Lucía", "Noémie", "Amélie", "Ngozi", "Ingrid", "Lucía",
           "Mary-Kate")
_LAST = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
         "Martinez", "Hernández", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore",
         "Jackson", "Martin", "Lee", "Pérez", "Thompson", "White", "Harris", "Sánchez", "Clark", "Ramírez",
         "Lewis", "Robinson", "O'Brien", "O'Connor", "D'Angelo", "McDonald", "Smith-Jones", "García-López",
         "Nguyen", "Kim", "Patel", "Müller", "Björklund", "Núñez", "Øberg", "St. John", "Van der Berg",
         "Okafor", "Kowalski", "Dubois", "Rossi", "Cohen")
_STREETS = ("Main", "Oak", "Pine", "Maple", "Cedar", "Elm", "Washington", "Lake", "Hill", "Park",
            "Sunset", "River", "Church", "Mill", "Spring", "Ridge", "Highland", "Walnut", "Chestnut", "Birch")
_SUFFIXES = ("St", "Ave", "Rd", "Blvd", "Ln", "Dr", "Ct", "Way", "Pl", "Ter")
#: (city, USPS state, first three ZIP digits, phone area code); some ZIPs start with 0 on purpose.
_PLACES = (
    ("Boston", "MA", "021", "617"), ("Worcester", "MA", "016", "508"), ("Providence", "RI", "029", "401"),
    ("Hartford", "CT", "061", "860"), ("Portland", "ME", "041", "207"), ("Burlington", "VT", "054", "802"),
    ("Manchester", "NH", "031", "603"), ("Newark", "NJ", "071", "973"), ("Trenton", "NJ", "086", "609"),
    ("New York", "NY", "100", "212"), ("Buffalo", "NY", "142", "716"), ("Philadelphia", "PA", "191", "215"),
    ("Pittsburgh", "PA", "152", "412"), ("Baltimore", "MD", "212", "410"), ("Richmond", "VA", "232", "804"),
    ("Charlotte", "NC", "282", "704"), ("Atlanta", "GA", "303", "404"), ("Miami", "FL", "331", "305"),
    ("Nashville", "TN", "372", "615"), ("Columbus", "OH", "432", "614"), ("Detroit", "MI", "482", "313"),
    ("Chicago", "IL", "606", "312"), ("Milwaukee", "WI", "532", "414"), ("Minneapolis", "MN", "554", "612"),
    ("St. Louis", "MO", "631", "314"), ("Dallas", "TX", "752", "214"), ("Houston", "TX", "770", "713"),
    ("Denver", "CO", "802", "303"), ("Phoenix", "AZ", "850", "602"), ("Salt Lake City", "UT", "841", "801"),
    ("Seattle", "WA", "981", "206"), ("Portland", "OR", "972", "503"), ("San Francisco", "CA", "941", "415"),
    ("Los Angeles", "CA", "900", "213"), ("Honolulu", "HI", "968", "808"), ("Anchorage", "AK", "995", "907"),
    ("Coeur d'Alene", "ID", "838", "208"), ("Wilkes-Barre", "PA", "187", "570"),
)
_DEPARTMENTS = ("Engineering", "Sales", "Finance", "Operations", "Human Resources", "Warehouse",
                "Customer Service", "Legal", "Marketing", "R&D")
_LETTERS = tuple("ABCDEFGHIJKLMNOPRSTW")

_MEDICAL = ("MED-PPO", "MED-HDHP")
_DENTAL = "DEN-STD"
_VISION = "VIS-STD"
_PLANS = (*_MEDICAL, _DENTAL, _VISION)
_LEVELS = ("EMP", "ESP", "ECH", "FAM")

# SSN areas used: 773-899 without 777/888, so no SSN can be one digit repeated nine times.
_SSN_AREAS = np.array([a for a in range(773, 900) if a not in (777, 888)], dtype=np.int64)
_SSN_SPACE = len(_SSN_AREAS) * 99 * 9999
_SSN_STRIDE = 7_919_993  # prime, does not divide _SSN_SPACE: i -> i*stride mod space is a bijection

_DAY = np.timedelta64(1, "D")


def generate_census(members: int, seed: int, *, as_of: date, volumes: bool = False,
                    id_prefix: str = "E") -> pd.DataFrame:
    """A canonical census of exactly ``members`` people (distinct member_id), one row per election.

    Families: ~50% employee only, ~20% employee + spouse, ~30% with children (some with a spouse).
    Every family elects a medical plan (MED-PPO or MED-HDHP), often dental (DEN-STD) and vision
    (VIS-STD); each member carries the family's elections and its coverage level. A few percent of
    employees are terminated (TE, coverage_end set); some were hired in the last few months.

    ``volumes`` adds basic life, short- and long-term disability (LIFE-BASIC, STD-CORE, LTD-CORE,
    employee only) for most active employees, each with a benefit amount from their salary and a premium,
    and a few LTD lines waiting on evidence of insurability; every other row and value is the same as
    without it.

    ``id_prefix`` starts every member id (default ``E``): several employers' censuses generated with
    different prefixes (and seeds) never share a member id, as one aggregated carrier file needs.
    """
    return _generate_block(members, seed, as_of=as_of, volumes=volumes, id_prefix=id_prefix, block=None)[0]


def _generate_block(members: int, seed: int, *, as_of: date, volumes: bool, id_prefix: str,
                    block: CensusBlock | None) -> tuple[pd.DataFrame, CensusBlock]:
    """:func:`generate_census`, as the block after ``block`` of a larger census when one is given: its
    families and people numbered after the earlier blocks' and its SSNs continuing their sequence, so no
    id or SSN repeats across blocks; with the block that would follow it."""
    if not id_prefix.isascii() or not id_prefix.isalpha() or not 1 <= len(id_prefix) <= 3:
        raise ValueError("id_prefix must be one to three ASCII letters")
    if members < 1:
        raise ValueError("members must be at least 1")
    if members > _SSN_SPACE:
        raise ValueError(f"members must be at most {_SSN_SPACE}")
    rng = np.random.default_rng(seed)
    today = np.datetime64(as_of, "D")

    # ---- families: composition, truncated so the people add up to exactly ``members``
    n_fam = members  # upper bound: every family has at least one person
    kind = rng.choice(4, size=n_fam, p=[0.50, 0.20, 0.12, 0.18])  # EE, EE+SP, EE+CH, EE+SP+CH
    has_spouse = (kind == 1) | (kind == 3)
    n_children = np.where(kind >= 2, rng.choice([1, 2, 3, 4], size=n_fam, p=[0.45, 0.35, 0.15, 0.05]), 0)
    size = 1 + has_spouse + n_children
    ends = np.cumsum(size)
    n_fam = int(np.searchsorted(ends, members) + 1)
    has_spouse, n_children, size = has_spouse[:n_fam].copy(), n_children[:n_fam].copy(), size[:n_fam].copy()
    excess = int(ends[n_fam - 1] - members)
    if excess:  # the last family loses children first, then the spouse
        drop_children = min(excess, int(n_children[-1]))
        n_children[-1] -= drop_children
        if excess - drop_children:
            has_spouse[-1] = False
        size[-1] = 1 + has_spouse[-1] + n_children[-1]
    if int(size.sum()) != members:  # an internal invariant of the arithmetic above
        raise RuntimeError("family sizes do not add up to the members asked for")


    fam_has_child = n_children > 0
    level = (has_spouse & fam_has_child) * 3 + (has_spouse & ~fam_has_child) * 1 + (
        ~has_spouse & fam_has_child) * 2  # index into _LEVELS

    # ---- family-level facts (subscriber's employment and the family's address and elections)
    sub_age_days = rng.integers(22 * 365, 64 * 365, size=n_fam)
    service_days = np.minimum(rng.integers(0, 30 * 365, size=n_fam), sub_age_days - 18 * 365)
    recent = rng.random(n_fam) < 0.08
    service_days = np.where(recent, rng.integers(1, 120, size=n_fam), service_days)
    hire = today - service_days * _DAY
    # coverage starts on the first of the month after hire, or on the plan's 2020-01-01 launch
    first_after_hire = (hire.astype("datetime64[M]") + 1).astype("datetime64[D]")
    cov_start = np.maximum(first_after_hire, np.datetime64("2020-01-01"))
    status = rng.choice(3, size=n_fam, p=[0.90, 0.07, 0.03])  # FT, PT, RT
    termed = (rng.random(n_fam) < 0.04) & (cov_start <= today - 300 * _DAY)
    status = np.where(termed, 3, status)  # TE
    term_day = today - rng.integers(0, 60, size=n_fam) * _DAY
    month_end = (term_day.astype("datetime64[M]") + 1).astype("datetime64[D]") - _DAY
    cov_end = np.where(termed, month_end, np.datetime64("NaT"))

    medical = (rng.random(n_fam) < 0.35).astype(np.int64)  # 0 MED-PPO, 1 MED-HDHP
    dental = rng.random(n_fam) < 0.75
    vision = rng.random(n_fam) < 0.55
    n_plans = 1 + dental + vision

    place = rng.integers(0, len(_PLACES), size=n_fam)
    zip5 = _cat(_pick([p[2] for p in _PLACES], place), _num(rng.integers(0, 100, size=n_fam), 2))
    zips = _where(rng.random(n_fam) < 0.1, _cat(zip5, _num(rng.integers(1, 10000, size=n_fam), 4)), zip5)
    address1 = _cat(_num(rng.integers(1, 9999, size=n_fam)), " ", _pick(_STREETS, rng.integers(
        0, len(_STREETS), size=n_fam)), " ", _pick(_SUFFIXES, rng.integers(0, len(_SUFFIXES), size=n_fam)))
    address2 = _where(rng.random(n_fam) < 0.2,
                      _cat("Apt ", _num(rng.integers(1, 40, size=n_fam)),
                           _pick(_LETTERS, rng.integers(0, 6, size=n_fam))), "")
    phone = _cat(_pick([p[3] for p in _PLACES], place), "55501", _num(rng.integers(0, 100, size=n_fam), 2))
    department = rng.integers(0, len(_DEPARTMENTS), size=n_fam)
    family_last = rng.integers(0, len(_LAST), size=n_fam)
    sub_gender = rng.choice(3, size=n_fam, p=[0.495, 0.495, 0.01])  # M, F, U

    # ---- people: one per member, in family order (subscriber, spouse, children)
    fam = np.repeat(np.arange(n_fam), size)
    starts = np.concatenate(([0], np.cumsum(size)[:-1]))
    pos = np.arange(members) - starts[fam]           # 0 subscriber, 1.. dependents
    is_sub = pos == 0
    is_sp = (pos == 1) & has_spouse[fam]
    is_ch = ~is_sub & ~is_sp
    rel = np.where(is_sub, 0, np.where(is_sp, 1, 2))  # EE, SP, CH

    opposite = np.where(sub_gender[fam] == 1, 0, 1)
    sp_gender = np.where(rng.random(members) < 0.9, opposite, sub_gender[fam])
    gender = np.where(is_sub, sub_gender[fam], np.where(is_sp, sp_gender, rng.integers(0, 2, size=members)))
    male_name = (gender == 0) | ((gender == 2) & (rng.random(members) < 0.5))
    first = np.where(male_name, rng.integers(0, len(_MALE), size=members),
                     len(_MALE) + rng.integers(0, len(_FEMALE), size=members))
    own_last = is_sp & (rng.random(members) < 0.15)
    last = np.where(own_last, rng.integers(0, len(_LAST), size=members), family_last[fam])
    middle = np.where(rng.random(members) < 0.7, rng.integers(0, len(_LETTERS), size=members), len(_LETTERS))

    # ages: spouse near the subscriber's age; children under the dependent age limit, born when a
    # parent was an adult, and (in terminated families) born before coverage ended
    sp_age = np.clip(sub_age_days[fam] + rng.integers(-8 * 365, 8 * 365, size=members), 19 * 365, 75 * 365)
    child_max = np.minimum(25 * 365 + 300, sub_age_days[fam] - 18 * 365)
    child_min = np.where(termed[fam], 90, 0)
    child_age = child_min + (rng.random(members) * (child_max - child_min)).astype(np.int64)
    age_days = np.where(is_sub, sub_age_days[fam], np.where(is_sp, sp_age, child_age))
    dob = today - age_days * _DAY

    ssn_base = int(rng.integers(0, _SSN_SPACE))
    if block is not None:
        ssn_base = block.ssn_base
    first_family, first_person = (block.families, block.people) if block is not None else (0, 0)
    if first_person + members > _SSN_SPACE:
        raise ValueError(f"members must be at most {_SSN_SPACE} in all blocks together")
    person_index = ((np.arange(members, dtype=np.int64) + first_person) * _SSN_STRIDE + ssn_base) % _SSN_SPACE
    serial = person_index % 9999 + 1
    group = (person_index // 9999) % 99 + 1
    area = _SSN_AREAS[person_index // (9999 * 99)]
    ssn = _where(is_ch & (age_days < 365) & (rng.random(members) < 0.5), "",  # some newborns have none yet
                 _num(area * 1_000_000 + group * 10_000 + serial, 9))

    sub_id = _cat(id_prefix.upper(), _num(fam + first_family + 1, 7))
    member_id = _where(is_sub, sub_id, _cat(sub_id, "-", _num(pos, 2)))
    fam_idx = pa.array(fam)

    people: dict[str, pa.Array] = {
        "member_id": member_id, "subscriber_id": sub_id, "relationship": _pick(("EE", "SP", "CH"), rel),
        "last_name": _pick(_LAST, last), "first_name": _pick(_MALE + _FEMALE, first),
        "middle_initial": _pick((*_LETTERS, ""), middle), "ssn": ssn, "dob": _iso(dob),
        "gender": _pick(("M", "F", "U"), gender),
        "address1": address1.take(fam_idx), "address2": address2.take(fam_idx),
        "city": _pick([p[0] for p in _PLACES], place[fam]),
        "state": _pick([p[1] for p in _PLACES], place[fam]),
        "zip": zips.take(fam_idx),
        "phone": _where(is_sub | (rng.random(members) < 0.3), phone.take(fam_idx), ""),
        "hire_date": _where(is_sub, _iso(hire).take(fam_idx), ""),
        "employment_status": _pick(("FT", "PT", "RT", "TE", ""), np.where(is_sub, status[fam], 4)),
        "department": _pick((*_DEPARTMENTS, ""), np.where(is_sub, department[fam], len(_DEPARTMENTS))),
        "coverage_level": _pick(_LEVELS, level[fam]),
        "coverage_start": _iso(np.maximum(cov_start[fam], dob)),
        "coverage_end": _iso(cov_end).take(fam_idx),
    }

    people.update(_status_columns(np.random.default_rng([seed, 834]), today, fam=fam, is_sub=is_sub,
                                  is_sp=is_sp, is_ch=is_ch, age_days=age_days, dob=dob, status=status,
                                  term_day=term_day, cov_end=cov_end))

    # ---- rows: each person once per family election, medical first, then dental, then vision
    plan_table = np.full((n_fam, 3), -1, dtype=np.int64)  # indexes into _PLANS
    plan_table[:, 0] = medical
    plan_table[:, 1] = np.where(dental, 2, np.where(vision, 3, -1))
    plan_table[:, 2] = np.where(dental & vision, 3, -1)
    per_person = n_plans[fam]
    person_of_row = np.repeat(np.arange(members), per_person)
    row_starts = np.concatenate(([0], np.cumsum(per_person)[:-1]))
    slot = np.arange(len(person_of_row)) - row_starts[person_of_row]
    plan = _pick(_PLANS, plan_table[fam[person_of_row], slot])

    take = pa.array(person_of_row)
    people.update(_volume_people(seed, is_sub))
    people.update(_contact_people(seed, fam, is_ch, people))
    people.update(_primary_care_people(seed, members))
    by_row = _volume_rows(plan, level[fam[person_of_row]], is_sub[person_of_row])
    columns = {name: plan if name == "plan_code" else by_row[name] if name in by_row else people[name].take(take)
               for name in CANONICAL_COLUMNS}
    frame: pd.DataFrame = pa.table(columns).to_pandas(types_mapper=_as_str_dtype)
    frame = _with_volume_lines(frame, seed) if volumes else frame
    return frame, CensusBlock(families=first_family + n_fam, people=first_person + members, ssn_base=ssn_base)


@dataclass(frozen=True)
class CensusBlock:
    """Where the next block of a census generated in blocks starts: families and people before it, and
    the SSN sequence's base (the first block's draw)."""

    families: int
    people: int
    ssn_base: int


#: Members per block of :func:`generate_census_csv`: a block's frame and arrays stay a few GB at most.
GENERATE_BLOCK_MEMBERS = 1_000_000


def generate_census_csv(members: int, seed: int, path: Path, *, as_of: date, volumes: bool = False,
                        id_prefix: str = "E", block_members: int = GENERATE_BLOCK_MEMBERS) -> int:
    """Write a synthetic census of ``members`` people to ``path`` (owner-only, replaced atomically) in
    blocks of ``block_members``; its data rows.

    Up to one block it is exactly :func:`generate_census` written by :func:`write_census_csv`. A larger
    census is blocks generated one after the other (block ``k`` from its own seed, numbered after the
    blocks before it, see :class:`CensusBlock`), so memory stays that of one block however many members.
    """
    if block_members < 1:
        raise ValueError("block_members must be at least 1")
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    rows, done, block, writer = 0, 0, None, None
    try:
        while done < members:
            k, size = done // block_members, min(block_members, members - done)
            part, block = _generate_block(size, seed if k == 0 else seed * 1_000_003 + k, as_of=as_of,
                                          volumes=volumes, id_prefix=id_prefix, block=block)
            table = pa.Table.from_pandas(part.drop(columns=[ROW_NUMBER], errors="ignore").astype("str").fillna(""),
                                         preserve_index=False)
            if writer is None:
                writer = pacsv.CSVWriter(str(tmp), table.schema,
                                         write_options=pacsv.WriteOptions(quoting_style="needed"))
            writer.write_table(table)
            done, rows = done + size, rows + len(part)
            del part, table
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(path)
    return rows


# ---- Companion-guide depth: life, STD and LTD lines (opt-in). Their own stream, after every other column.
#: The plan codes of the generated volume lines (a mapping sends them as HD03 LIF, STD and LTD).
VOLUME_PLANS: tuple[str, str, str] = ("LIFE-BASIC", "STD-CORE", "LTD-CORE")
_ANNUAL_FACTOR = {"ANNUALLY": 1.0, "BIWEEKLY": 26.0, "HOURLY": 2080.0}


def _with_volume_lines(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Basic life (one year's pay rounded up to a thousand, at most 300,000) for ~85% of active employees,
    STD (weekly benefit: 60% of weekly pay, at most 1,500) for ~70% and LTD (monthly benefit: 60% of
    monthly pay, at most 10,000) for ~55%, each on the employee alone, from the employee's medical start;
    ~8% of LTD lines wait on evidence of insurability."""
    rng = np.random.default_rng([seed, 19, 4])
    order = np.arange(len(frame), dtype=np.float64)
    subscriber = (frame["relationship"] == "EE").to_numpy()
    first = subscriber & ~frame["member_id"].duplicated().to_numpy()
    last_row = pd.Series(order).groupby(frame["member_id"].to_numpy()).transform("max").to_numpy()
    rows = frame.loc[first]
    active = rows["employment_status"].isin(["FT", "PT"]).to_numpy()
    n = len(rows)
    annual = pd.to_numeric(rows["salary"], errors="coerce").fillna(0).to_numpy(dtype=np.float64) * rows[
        "salary_frequency"].map(_ANNUAL_FACTOR).fillna(0).to_numpy(dtype=np.float64)
    weekly = np.minimum(np.rint(annual * 0.6 / 52), 1500).astype(np.int64)
    monthly = np.minimum(np.rint(annual * 0.6 / 12), 10000).astype(np.int64)
    takes_std, takes_ltd = active & (rng.random(n) < 0.70), active & (rng.random(n) < 0.55)
    waits = rng.random(n) < 0.08
    life = np.minimum(np.ceil(annual / 1000) * 1000, 300_000).astype(np.int64)
    takes_life = active & (rng.random(n) < 0.85)
    extra = []
    for k, (plan, takes, amount, rate) in enumerate(((VOLUME_PLANS[0], takes_life, life, 0.00015),
                                                     (VOLUME_PLANS[1], takes_std, weekly, 0.055),
                                                     (VOLUME_PLANS[2], takes_ltd, monthly, 0.0035))):
        line = rows.loc[takes & (amount > 0)].copy()
        chosen = takes & (amount > 0)
        cents = np.rint(amount[chosen] * rate * 100).astype(np.int64)
        line["plan_code"] = plan
        line["coverage_level"] = "EMP"
        line["coverage_end"] = ""
        line["coverage_amount"] = [str(a) for a in amount[chosen]]
        line["premium_amount"] = [f"{c // 100}.{c % 100:02d}" for c in cents]
        line["eoi_pending"] = np.where(waits[chosen] & (k == 2), "Y", "")
        line["_order"] = last_row[np.flatnonzero(first)][chosen] + 0.2 * (k + 1)
        extra.append(line)
    out = pd.concat([frame.assign(_order=order), *extra]).sort_values("_order", kind="stable")
    result: pd.DataFrame = out.drop(columns="_order").reset_index(drop=True).astype(frame.dtypes.to_dict())
    return result


# ---- Companion-guide depth: volumes. Drawn from their own stream (seeded from ``seed``), so every
# column above is the same as without them.
_FREQUENCY_CHOICES = ("ANNUALLY", "BIWEEKLY", "HOURLY")
#: Monthly premium per plan for the employee alone; a level multiplies it (EMP, ESP, ECH, FAM).
_PREMIUMS = {"MED-PPO": 310.0, "MED-HDHP": 190.0, "DEN-STD": 32.0, "VIS-STD": 9.5}
_LEVEL_FACTORS = np.array([1.0, 2.0, 1.8, 2.9])


def _volume_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, 19])


def _volume_people(seed: int, is_sub: np.ndarray) -> dict[str, pa.Array]:
    """Salary and its frequency for each subscriber (annual, biweekly or hourly pay); dependents none."""
    rng = _volume_rng(seed)
    n = len(is_sub)
    annual = rng.integers(280, 1800, size=n) * 100
    frequency = rng.choice(3, size=n, p=[0.7, 0.2, 0.1])
    hourly_cents = rng.integers(1500, 8000, size=n)
    amount = np.where(frequency == 0, annual * 100, np.where(frequency == 1, annual * 100 // 26, hourly_cents))
    text = _cat(_num(amount // 100), ".", _num(amount % 100, 2))
    return {"salary": _where(is_sub, text, ""),
            "salary_frequency": _where(is_sub, _pick(_FREQUENCY_CHOICES, frequency), "")}


def _volume_rows(plan: pa.Array, level: np.ndarray, subscriber_row: np.ndarray) -> dict[str, pa.Array]:
    """Per election row: the family's monthly premium on the subscriber's row; no volume lines (the
    generated plans are medical, dental and vision), so no benefit amount and nothing waiting on EOI."""
    which = pc.fill_null(pc.index_in(plan, value_set=pa.array(list(_PREMIUMS))), -1).to_numpy(zero_copy_only=False)
    base = np.where(which >= 0, np.array([*_PREMIUMS.values(), 0.0])[which], 0.0)
    cents = np.rint(base * _LEVEL_FACTORS[level] * 100).astype(np.int64)
    premium = _cat(_num(cents // 100), ".", _num(cents % 100, 2))
    empty = pa.array(np.full(len(plan), ""), type=pa.string())
    return {"premium_amount": _where(subscriber_row & (base > 0), premium, ""),
            "coverage_amount": empty, "eoi_pending": empty}


# ---- Companion-guide depth: contact. Its own stream too.
_LANGUAGES = ("SPA", "ENG", "VIE", "ZHO", "KOR", "TGL")


def _contact_people(seed: int, fam: np.ndarray, is_child: np.ndarray, people: dict[str, pa.Array]
                    ) -> dict[str, pa.Array]:
    """E-mail (at example.com, reserved for examples) for most adults, a PO box mailing address in the
    family's own city for a few families, a language for some, tobacco use for adults."""
    rng = np.random.default_rng([seed, 19, 2])
    n, families = len(fam), int(fam.max()) + 1 if len(fam) else 0
    adult = ~is_child
    email = _where(adult & (rng.random(n) < 0.8), _cat("member", _num(np.arange(n) + 1, 7), "@example.com"), "")
    box = rng.random(families) < 0.1
    po_box = _where(box, _cat("PO Box ", _num(rng.integers(1, 9999, size=families))), "")
    fam_idx = pa.array(fam)
    has_box = box[fam]
    language = _where(rng.random(families) < 0.15, _pick(_LANGUAGES, rng.integers(0, len(_LANGUAGES), size=families)),
                      "")
    tobacco = _pick(("Y", "N", "U"), rng.choice(3, size=n, p=[0.12, 0.83, 0.05]))
    return {"email": email,
            "mailing_address1": po_box.take(fam_idx),
            "mailing_address2": pa.array(np.full(n, ""), type=pa.string()),
            "mailing_city": _where(has_box, people["city"], ""),
            "mailing_state": _where(has_box, people["state"], ""),
            "mailing_zip": _where(has_box, people["zip"], ""),
            "language": language.take(fam_idx),
            "tobacco_use": _where(adult, tobacco, "")}


# ---- Companion-guide depth: primary care provider. Its own stream too.


def _npi_check_digits(body: np.ndarray) -> np.ndarray:
    """The NPI check digit (Luhn over the prefix 80840 and the nine digits) of each nine-digit ``body``."""
    digits = np.stack([(body // 10 ** (8 - k)) % 10 for k in range(9)], axis=1)
    doubled = digits[:, ::-2] * 2  # from the right, every other digit starting with the last is doubled
    doubled = np.where(doubled > 9, doubled - 9, doubled)
    total = 24 + doubled.sum(axis=1) + digits[:, -2::-2].sum(axis=1)  # 24: what "80840" adds
    out: np.ndarray = (10 - total % 10) % 10
    return out


def _primary_care_people(seed: int, members: int) -> dict[str, pa.Array]:
    """A PCP NPI (synthetic, with a valid check digit) for about half the members, and whether the member
    is already the provider's patient."""
    rng = np.random.default_rng([seed, 19, 3])
    body = 100_000_000 + rng.integers(0, 100_000_000, size=members)
    npi = body * 10 + _npi_check_digits(body)
    has = rng.random(members) < 0.5
    return {"pcp_npi": _where(has, _num(npi, 10), ""),
            "pcp_existing_patient": _where(has, _pick(("Y", "N"), rng.integers(0, 2, size=members)), "")}


def _status_columns(rng: np.random.Generator, today: np.datetime64, *, fam: np.ndarray, is_sub: np.ndarray,
                    is_sp: np.ndarray, is_ch: np.ndarray, age_days: np.ndarray, dob: np.ndarray,
                    status: np.ndarray, term_day: np.ndarray, cov_end: np.ndarray) -> dict[str, pa.Array]:
    """Status, COBRA and Medicare columns, from their own generator so every older column stays as a seed
    made it: retirees and spouses of 65 or more on Medicare parts A and B by age; half the terminated
    families on COBRA from the day after their coverage ended, for 18 months; adult children students
    or not; newborns' birth as the event of their add. Nobody has a date of death."""
    members = len(fam)
    n_fam = len(status)
    termed = status == 3
    cobra = termed & (rng.random(n_fam) < 0.5)
    cobra_begin = np.where(cobra, cov_end + _DAY, np.datetime64("NaT"))
    cobra_end = np.where(cobra, (cobra_begin.astype("datetime64[M]") + 18).astype("datetime64[D]")
                         + (cobra_begin - cobra_begin.astype("datetime64[M]").astype("datetime64[D]")) - _DAY,
                         np.datetime64("NaT"))
    senior = (is_sub | is_sp) & (age_days >= 65 * 365)
    adult_child = is_ch & (age_days >= 19 * 365)
    student = np.where(adult_child, rng.choice(2, size=members, p=[0.6, 0.4]), 2)  # F, N, ""
    handicap = np.where(is_ch, (rng.random(members) < 0.01).astype(np.int64), 2)  # N, Y, ""
    newborn = is_ch & (age_days < 365)
    ended_work = is_sub & (termed | (status == 2))[fam]
    return {
        "benefit_status": _pick(("A", "C"), cobra[fam].astype(np.int64)),
        "student_status": _pick(("F", "N", ""), student),
        "handicap": _pick(("N", "Y", ""), handicap),
        "death_date": _pick(("",), np.zeros(members, dtype=np.int64)),
        "employment_end_date": _where(ended_work, _iso(term_day).take(pa.array(fam)), ""),
        "event_reason": _where(newborn, "birth", ""),
        "event_date": _where(newborn, _iso(dob), ""),
        "medicare_plan": _where(senior, "C", ""),
        "medicare_reason": _where(senior, "0", ""),
        "cobra_event": _where(cobra[fam], "1", ""),
        "cobra_begin": _iso(cobra_begin).take(pa.array(fam)),
        "cobra_end": _iso(cobra_end).take(pa.array(fam)),
    }


def write_census_csv(df: pd.DataFrame, path: Path) -> None:
    """Write a census as UTF-8 CSV (quoted only where needed), owner-only, replacing ``path`` atomically."""
    frame = df.drop(columns=[ROW_NUMBER], errors="ignore").astype("str").fillna("")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    pacsv.write_csv(table, str(tmp), write_options=pacsv.WriteOptions(quoting_style="needed"))
    tmp.replace(path)


def _as_str_dtype(_type: pa.DataType) -> pd.api.extensions.ExtensionDtype:
    return pd.StringDtype(storage="pyarrow", na_value=np.nan)


def _pick(options: tuple[str, ...] | list[str], index: np.ndarray) -> pa.Array:
    return pa.array(options, type=pa.string()).take(pa.array(np.asarray(index, dtype=np.int64)))


def _num(values: np.ndarray, width: int = 0) -> pa.Array:
    text = pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string())
    return pc.utf8_lpad(text, width=width, padding="0") if width else text


def _cat(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _where(mask: np.ndarray, then: pa.Array | str, otherwise: pa.Array | str) -> pa.Array:
    return pc.if_else(pa.array(mask), then, otherwise)


def _iso(days: np.ndarray) -> pa.Array:
    """ISO YYYY-MM-DD text; NaT becomes the empty string."""
    dates = pa.array(np.asarray(days, dtype="datetime64[D]"), type=pa.date32())
    return pc.fill_null(pc.cast(dates, pa.string()), "")
