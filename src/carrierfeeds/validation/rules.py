"""Rules across rows and families, the plan rule, and the rows the build would refuse, on column codes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from carrierfeeds.census.columns import RELATIONSHIP_CODES, ROW_NUMBER
from carrierfeeds.config import CarrierMapping, CensusSchema, PlanCatalogue
from carrierfeeds.validation.columns import CodedColumn, EncodedColumns
from carrierfeeds.validation.findings import RuleRows
from carrierfeeds.validation.report import HEADER_ROW
from carrierfeeds.x12.sanitize import TextRule, fold_column

_ISO_RE = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
_IDENTITY = ("dob", "first_name", "last_name", "ssn")


#: The columns the cross-row rules read (and encode), all or none; ``hire_date`` too when there.
CROSS_ROW_COLUMNS = ("member_id", "subscriber_id", "relationship", "plan_code", "coverage_start",
                      "coverage_end", "dob", "first_name", "last_name", "ssn")


def cross_row_rules(census: pd.DataFrame, schema: CensusSchema, as_of: date, *,
                     columns: EncodedColumns | None = None) -> list[RuleRows]:
    """Rules across rows and families, on integer codes of the text (equal text, equal code).

    Each column is factorised once (``columns``, shared with the suite); rules of one cell's text run
    once per distinct value; family and member rules compare codes after one sort by member.
    """
    if any(c not in census.columns for c in CROSS_ROW_COLUMNS):
        return []  # the suite's required-column findings already fail the file
    if columns is None:
        columns = EncodedColumns(census)
    rn = census[ROW_NUMBER].to_numpy(dtype=np.int64)
    out: list[RuleRows] = []

    def add(mask: np.ndarray, column: str, rule: str, message: str) -> None:
        if mask.any():
            out.append(RuleRows(rows=rn[mask], column=column, rule=rule, message=message))

    date_columns = ("dob", "coverage_start", "coverage_end", *(("hire_date",) if "hire_date" in census.columns
                                                              else ()))
    dates: dict[str, pd.Series] = {}  # per date column, its distinct texts parsed (NaT: blank or not a date)
    for c in date_columns:
        coded = columns.coded(c)
        dates[c] = _parse_iso(coded.uniques)
        not_real = np.asarray(coded.uniques.str.match(_ISO_RE) & dates[c].isna(), dtype=bool)
        add(coded.spread(not_real), c, "real_date", "date does not exist in the calendar")

    # subscriber_id as a member_id code (-1: the text is no member_id), so "names an employee's member_id"
    # and "equals member_id" are comparisons of codes
    sid_as_mid = columns.codes_in("subscriber_id", of="member_id")
    member, family, plan = columns.coded("member_id"), columns.coded("subscriber_id"), columns.coded("plan_code")
    relationship = columns.coded("relationship")
    mc = member.codes
    has_mid, has_sid, has_plan = mc != member.blank, family.codes != family.blank, plan.codes != plan.blank
    is_ee = relationship.spread(np.asarray(relationship.uniques == "EE", dtype=bool))
    is_ee_id = np.zeros(len(member.uniques) + 1, dtype=bool)  # [-1] (no member_id) stays False
    is_ee_id[mc[is_ee & has_mid]] = True
    names_ee = is_ee_id[sid_as_mid]
    add(~is_ee & has_sid & ~names_ee, "subscriber_id", "subscriber_present",
        "subscriber_id names no employee (EE) row in this file")
    add(is_ee & has_mid & has_sid & (mc != sid_as_mid), "subscriber_id", "subscriber_id_self",
        "on an employee's rows subscriber_id must equal member_id")
    add(_within(is_ee, _varies(family.codes[is_ee], mc[is_ee])), "relationship", "one_subscriber_per_family",
        "a family (subscriber_id) must have exactly one employee (EE)")
    # The same period of a plan twice; several periods of one plan (history, a rehire) are a supported
    # shape, and periods that overlap on an insurance line are overlapping_coverage (build_rules).
    repeats = _repeated(mc, plan.codes) & has_mid & has_plan  # nearly always none: only those are looked at
    if repeats.any():
        again = np.flatnonzero(repeats)
        twice = _repeated(_pair_keys(mc[again], plan.codes[again]), columns.coded("coverage_start").codes[again])
        add(_at(len(census), again[twice]), "plan_code", "unique_member_plan",
            "the same member_id appears twice for the same plan_code and coverage_start")
    by_member = np.argsort(mc, kind="stable")  # one sort, shared by the four identity columns
    for c in _IDENTITY:
        add(_varies(mc, columns.coded(c).codes, by_member) & has_mid, c, "same_person_fields",
            f"the same member_id has different {c} values on different rows")

    # a dependent's coverage must sit inside the subscriber's coverage in the same plan: each dependent
    # row against the employee row (member_id == subscriber_id) with its subscriber and plan whose
    # period started last on or before the dependent's start (the first such row when none did), so
    # a subscriber with several periods of a plan (history, a rehire) is judged period by period
    width = len(plan.uniques)
    start, end = columns.coded("coverage_start"), columns.coded("coverage_end")
    start_u, end_u = dates["coverage_start"].to_numpy(), dates["coverage_end"].to_numpy()
    start_day = _day_numbers(start_u)[start.codes]  # -1 where not a date
    subs = np.flatnonzero(is_ee & (mc == sid_as_mid))
    sub_keys = mc[subs].astype(np.int64) * width + plan.codes[subs]
    by_key = np.lexsort((np.arange(len(subs)), start_day[subs], sub_keys))
    subs, sub_keys = subs[by_key], sub_keys[by_key]
    span = _DAY_SPAN
    deps = np.flatnonzero(~is_ee & names_ee)
    dep_keys = sid_as_mid[deps].astype(np.int64) * width + plan.codes[deps]
    latest = np.searchsorted(sub_keys * span + start_day[subs], dep_keys * span + start_day[deps], side="right") - 1
    first_of_key = np.searchsorted(sub_keys, dep_keys)
    fits = (latest >= 0) & (sub_keys[np.maximum(latest, 0)] == dep_keys) if len(subs) else np.zeros(
        len(deps), dtype=bool)
    at = np.where(fits, latest, np.minimum(first_of_key, max(len(subs) - 1, 0)))
    in_plan = sub_keys[at] == dep_keys if len(subs) else np.zeros(len(deps), dtype=bool)
    dep_start, dep_end = start_u[start.codes[deps[in_plan]]], end_u[end.codes[deps[in_plan]]]
    sub_start, sub_end = start_u[start.codes[subs[at[in_plan]]]], end_u[end.codes[subs[at[in_plan]]]]

    def add_rows(rows: np.ndarray, column: str, rule: str, message: str) -> None:
        add(_at(len(census), rows), column, rule, message)

    add_rows(deps[~in_plan], "plan_code", "dependent_plan_not_elected",
             "a dependent is enrolled in a plan the subscriber has not elected")
    add_rows(deps[in_plan][dep_start < sub_start], "coverage_start", "dependent_starts_before_subscriber",
             "a dependent's coverage starts before the subscriber's")
    ends_after = ~np.isnat(sub_end) & (np.isnat(dep_end) | (dep_end > sub_end))
    add_rows(deps[in_plan][ends_after], "coverage_end", "dependent_ends_after_subscriber",
             "a dependent's coverage ends after the subscriber's (or is open while the subscriber's ended)")

    day = pd.Timestamp(as_of)
    limit = schema.dependent_age_limit
    dob, dob_u, end_d = columns.coded("dob"), dates["dob"], dates["coverage_end"]
    is_ch = relationship.spread(np.asarray(relationship.uniques == "CH", dtype=bool))
    add(is_ch & _past_age_limit(dob, dob_u, end, end_d, limit, schema.dependent_coverage_ends, day),
        "coverage_end", "dependent_age_limit",
        f"child's coverage runs past the dependent age limit ({limit}): it must end by "
        f"{_AGE_LIMIT_ENDS[schema.dependent_coverage_ends]} (schema setting dependent_coverage_ends), "
        "and have an end date once that birthday is reached")
    implausible = dob_u.notna() & ((dob_u > day) | (dob_u < pd.Timestamp("1900-01-01")))
    add(dob.spread(np.asarray(implausible, dtype=bool)), "dob",
        "dob_plausible", "date of birth is in the future or before 1900")

    ssn = columns.coded("ssn")
    has_ssn = ssn.codes != ssn.blank
    add(_within(has_ssn, _varies(ssn.codes[has_ssn], mc[has_ssn])), "ssn", "ssn_unique",
        "the same SSN appears on more than one member_id")
    return out


#: How the age-limit message names the last day a child's coverage may run, per dependent_coverage_ends.
_AGE_LIMIT_ENDS = {"birthday": "the birthday that reaches the limit",
                   "end_of_month": "the last day of the month of the birthday that reaches the limit",
                   "end_of_year": "the last day of the year of the birthday that reaches the limit"}


def _past_age_limit(dob: CodedColumn, dob_u: pd.Series, end: CodedColumn, end_u: pd.Series, limit: int, ends: str,
                    day: pd.Timestamp) -> np.ndarray:
    """Per row: coverage that runs past the last day it may at the dependent age limit.

    Judged on the coverage's own dates, not the run's: coverage ending by the allowed day (the birthday,
    or the end of its month or year, per ``ends``) passes on every day before it ends. Coverage ending
    after that day is refused whenever it is stated; open coverage once the birthday is reached (the
    employer must send the end). Worked out per distinct date of birth, then per row of codes.
    """
    born = dob_u.where(dob_u <= day)  # a date of birth in the future is dob_plausible's business
    birthday = born + pd.DateOffset(years=limit)  # 29 February: 28 February in a common year
    if ends == "end_of_month":
        allowed = birthday + pd.offsets.MonthEnd(0)
    elif ends == "end_of_year":
        allowed = birthday + pd.offsets.YearEnd(0)
    else:
        allowed = birthday
    birthday_row, allowed_row = birthday.to_numpy()[dob.codes], allowed.to_numpy()[dob.codes]
    end_row = end_u.to_numpy()[end.codes]
    is_open = np.isnat(end_row)
    limited = ~np.isnat(birthday_row)
    late: np.ndarray = limited & np.where(is_open, birthday_row <= day.to_datetime64(), end_row > allowed_row)
    return late


def plan_rule(plan: CodedColumn, plans: PlanCatalogue, rn: np.ndarray) -> tuple[list[RuleRows], dict[str, int]]:
    """Plan codes judged per distinct code: unknown ones are findings, known but unauthorised ones are
    counted as expected exclusions. A blank code is the not-null rule's business."""
    codes = plan.uniques.str.strip()  # as build_enrollment reads them
    blank = np.asarray(codes == "", dtype=bool)
    known = np.asarray(codes.isin(sorted(plans.known)), dtype=bool) & ~blank
    authorised = np.asarray(codes.isin(sorted(plans.authorised)), dtype=bool)
    unknown = plan.spread(~known & ~blank)
    raws = [RuleRows(rows=rn[unknown], column="plan_code", rule="unknown_plan",
                 message="plan code is listed by no carrier mapping and not authorised for this feed (a typo, "
                         "or an employer plan name the schema's plan_codes does not map)")] if unknown.any() else []
    left_out = int(np.count_nonzero(plan.spread(known & ~authorised)))
    return raws, ({"plan_not_authorized": left_out} if left_out else {})
#: Day numbers (days since 1970) of any census date fit below this, so key * span + day orders by key, then day.
_DAY_SPAN = 1 << 20


def _day_numbers(parsed: np.ndarray) -> np.ndarray:
    """Parsed dates (datetime64, NaT for blanks and non-dates) as days since 1970; -1 for NaT."""
    days = np.asarray(parsed, dtype="datetime64[D]").astype(np.int64)
    out: np.ndarray = np.where(np.isnat(parsed), -1, np.clip(days, 0, _DAY_SPAN - 2))
    return out


@dataclass(frozen=True)
class CarrierRules:
    """What the build will make of a census for one feed's carrier, so validation can refuse first
    whatever the build could not take (:func:`build_rules`).

    ``lines``: each plan code the build maps (authorised for the feed and in the mapping) to its
    insurance line (HD03); ``coverage_levels``: the levels the mapping knows; ``names``: the text rule
    and lengths names are folded to; ``columns``: the census fields the carrier may see (the build drops
    the others before it reads them); ``hire_date``: whether the build reads hire dates.
    """

    lines: dict[str, str]
    coverage_levels: frozenset[str]
    names: TextRule
    last_name_max: int
    first_name_max: int
    columns: frozenset[str]
    hire_date: bool
    #: A flat-file feed's code tables: per view field whose layout column has ``codes``, the values
    #: the table lists (the render refuses any other non-empty value). Empty for other outputs.
    layout_codes: tuple[tuple[str, frozenset[str]], ...] = ()
    #: What the view makes of census values for the coded fields: HD05 by coverage level (upper
    #: case), HD04 by plan code, INS02 by relationship (upper case).
    level_codes: tuple[tuple[str, str], ...] = ()
    plan_descriptions: tuple[tuple[str, str], ...] = ()
    ins02: tuple[tuple[str, str], ...] = ()

    @classmethod
    def for_feed(cls, mapping: CarrierMapping, authorised_plans: Iterable[str], *,
                 output_format: str = "x12-834") -> CarrierRules:
        """The rules for a feed sending ``mapping``'s carrier ``authorised_plans``; ``output_format``
        (the feed's ``output.format``) ``flatfile`` adds the layout's code tables."""
        from carrierfeeds.x12.sanitize import fold_text

        authorised = set(authorised_plans)
        limit = mapping.name_max_length
        layout = mapping.flatfile if output_format == "flatfile" else None
        coded = tuple((c.field, frozenset(c.codes)) for c in (layout.columns if layout is not None else ())
                      if c.field in _CODED_FIELDS and c.codes is not None)
        return cls(lines={code: plan.insurance_line for code, plan in mapping.plans.items() if code in authorised},
                   coverage_levels=frozenset(mapping.coverage_levels),
                   names=TextRule(mapping.charset, mapping.name_case),
                   last_name_max=mapping.last_name_max_length or min(limit, 60),
                   first_name_max=mapping.first_name_max_length or min(limit, 35),
                   columns=frozenset(mapping.allowlist), hire_date="hire" in mapping.dates_sent,
                   layout_codes=coded, level_codes=tuple(mapping.coverage_levels.items()),
                   plan_descriptions=tuple((k, fold_text(v.description, 50)) for k, v in mapping.plans.items()),
                   ins02=tuple(mapping.relationship_codes.items()))


#: View fields whose flat-file code table validation checks, each with the census column it comes from
#: (the others are identifiers, names, dates or the diff's maintenance codes, not code values).
_CODED_FIELDS = {"hd03": "plan_code", "hd04": "plan_code", "hd05": "coverage_level", "relationship": "relationship",
                 "ins02": "relationship", "gender": "gender"}
#: INS02 -> the flat file's relationship (outputs.flatfile renders other INS02 codes as "").
_FLAT_RELATIONSHIP = {"18": "EE", "01": "SP", "19": "CH"}


#: Census fields the build cannot do without (enrollment.build_enrollment).
_BUILD_COLUMNS = ("member_id", "subscriber_id", "relationship", "last_name", "first_name", "plan_code",
                  "coverage_level", "coverage_start")
_BUILD_ISO = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


def build_rules(census: pd.DataFrame, columns: EncodedColumns, carrier: CarrierRules | None,
                 found: list[RuleRows]) -> list[RuleRows]:
    """The rows the build would refuse, as findings: a census validation accepts is never refused later.

    The build (enrollment.build_enrollment, then the diff) maps only the rows whose plan the carrier
    gets (``carrier.lines``; every row without ``carrier``) and refuses: a missing column it needs, an
    identifier that folds to nothing, a relationship other than EE/SP/CH, a name with nothing left
    after the carrier's text rule, a coverage level the mapping does not know, a date that is not
    YYYY-MM-DD, and two periods of one member on one insurance line that overlap (which period
    counts on the run day would be ambiguous). A cell the suite already flagged in the same column is
    not reported again.
    """
    rn = census[ROW_NUMBER].to_numpy(dtype=np.int64)
    missing = [c for c in _BUILD_COLUMNS if c not in census.columns]
    if missing:
        return [RuleRows(rows=np.array([HEADER_ROW], dtype=np.int64), column=c, rule="required_column",
                     message="the build needs this column") for c in missing]

    def visible(column: str) -> bool:  # the build drops a column off the allowlist before reading it
        return column in census.columns and (carrier is None or column in carrier.columns)

    plan = columns.coded("plan_code")
    if carrier is not None:
        plan_line = plan.uniques.str.strip().map(carrier.lines)
        mapped = plan.spread(np.asarray(plan_line.notna(), dtype=bool))
    else:
        plan_line = plan.uniques.str.strip()
        mapped = np.ones(len(rn), dtype=bool)
    flagged: dict[str, set[int]] = {}
    for raw in found:
        flagged.setdefault(raw.column, set()).update(raw.rows.tolist())
    out: list[RuleRows] = []

    def add(per_value: np.ndarray, coded: CodedColumn, column: str, rule: str, message: str) -> None:
        if not per_value.any():
            return  # no distinct value breaks the rule: no row to look at
        rows = rn[coded.spread(per_value) & mapped]
        already = flagged.get(column)
        if already:
            rows = rows[~np.isin(rows, np.fromiter(already, dtype=np.int64, count=len(already)))]
        if len(rows):
            out.append(RuleRows(rows=rows, column=column, rule=rule, message=message))

    for c in ("member_id", "subscriber_id"):
        coded = columns.coded(c)
        empty = fold_column(coded.uniques, 50).values == ""
        add(np.asarray(empty, dtype=bool), coded, c, "empty_identifier", "has no usable identifier")
    relationship = columns.coded("relationship")
    if carrier is None:
        add(~np.asarray(relationship.uniques.str.strip().str.upper().isin(RELATIONSHIP_CODES), dtype=bool),
            relationship, "relationship", "relationship_code",
            "relationship must be a canonical code (EE, SP, CH, ...)")
    else:  # the build takes only the relationships the carrier's mapping lists (its relationship_codes)
        taken = [code for code, _ in carrier.ins02]
        add(~np.asarray(relationship.uniques.str.strip().str.upper().isin(taken), dtype=bool),
            relationship, "relationship", "relationship_code",
            f"relationship the carrier's mapping does not take (its relationship_codes: {', '.join(taken)})")
    if carrier is not None:
        for c, most in (("last_name", carrier.last_name_max), ("first_name", carrier.first_name_max)):
            if visible(c):
                coded = columns.coded(c)
                empty = fold_column(coded.uniques, most, carrier.names).values == ""
                add(np.asarray(empty, dtype=bool), coded, c, "empty_after_sanitize",
                    "nothing is left of the name after the carrier's character rule")
        if visible("coverage_level"):
            level = columns.coded("coverage_level")
            add(~np.asarray(level.uniques.str.strip().str.upper().isin(carrier.coverage_levels), dtype=bool),
                level, "coverage_level", "coverage_level", "coverage level the carrier's mapping does not know")
    dates = ["coverage_start", "coverage_end", "dob"]
    if carrier is None or carrier.hire_date:
        dates.append("hire_date")
    for c in dates:
        if not visible(c):
            continue
        coded = columns.coded(c)
        text = coded.uniques.str.strip()
        parsed = pd.to_datetime(text.where(text.str.match(_BUILD_ISO) & (text != "")), format="%Y-%m-%d",
                                errors="coerce")
        bad = np.asarray(parsed.isna() & ((text != "") | (c == "coverage_start")), dtype=bool)
        add(bad, coded, c, "iso_date", "not a date as YYYY-MM-DD" + (" (required)" if c == "coverage_start" else ""))
    if carrier is not None:
        for field, listed in carrier.layout_codes:
            coded = columns.coded(_CODED_FIELDS[field])
            view = _view_values(field, coded.uniques, carrier)
            add(np.asarray(view.notna() & (view != "") & ~view.isin(listed), dtype=bool), coded,
                _CODED_FIELDS[field], "layout_code",
                f"the carrier's flat-file layout has no code for this value's {field} (its codes table)")
    out += _overlapping(census, columns, plan, plan_line, mapped, rn)
    return out


def _view_values(field: str, uniques: pd.Series, carrier: CarrierRules) -> pd.Series:
    """What the build makes of each distinct census text for view ``field`` (None: the build refuses
    the value, which another rule reports)."""
    text = uniques.str.strip()
    if field == "hd03":
        return text.map(carrier.lines)
    if field == "hd04":
        return text.map(dict(carrier.plan_descriptions))
    if field == "hd05":
        return text.str.upper().map(dict(carrier.level_codes))
    if field == "gender":
        upper = text.str.upper()
        return upper.where(upper.isin({"M", "F", "U"}), "U")
    ins02 = text.str.upper().map(dict(carrier.ins02))
    return ins02 if field == "ins02" else ins02.map(_FLAT_RELATIONSHIP).fillna("")


def _overlapping(census: pd.DataFrame, columns: EncodedColumns, plan: CodedColumn, plan_line: pd.Series,
                 mapped: np.ndarray, rn: np.ndarray) -> list[RuleRows]:
    """Rows of one member (subscriber_id, member_id) on one insurance line whose periods overlap."""
    line_codes = pd.factorize(plan_line.fillna(""), use_na_sentinel=False)[0][plan.codes]
    # Only rows whose member id holds the line more than once can overlap (nearly always none).
    several = mapped & _repeated(columns.coded("member_id").codes, line_codes)
    if not several.any():
        return []
    start = columns.coded("coverage_start")
    start_day = _day_numbers(_parse_iso(start.uniques.str.strip()).to_numpy())[start.codes]
    if "coverage_end" in census.columns:
        end = columns.coded("coverage_end")
        end_text = end.uniques.str.strip()
        end_day = np.where(np.asarray(end_text == "", dtype=bool), _DAY_SPAN - 1,
                           _day_numbers(_parse_iso(end_text).to_numpy()))[end.codes]
    else:
        end_day = np.full(len(rn), _DAY_SPAN - 1, dtype=np.int64)
    rows = np.flatnonzero(several & (start_day >= 0) & (end_day >= 0))
    if len(rows) < 2:
        return []
    member = _pair_keys(columns.coded("subscriber_id").codes, columns.coded("member_id").codes)
    keys = pd.factorize(_pair_keys(member, line_codes)[rows])[0].astype(np.int64)
    order = np.lexsort((start_day[rows], keys))
    keys, begins, ends = keys[order], start_day[rows][order], end_day[rows][order]
    # Sorted by key then start: a period overlaps an earlier one of its key when it starts on or before
    # the latest end so far within the key (key * span + end makes that running maximum reset per key).
    reach = np.maximum.accumulate(keys * _DAY_SPAN + ends)
    hits = np.zeros(len(keys), dtype=bool)
    hits[1:] = (keys[1:] == keys[:-1]) & (keys[1:] * _DAY_SPAN + begins[1:] <= reach[:-1])
    if not hits.any():
        return []
    overlapping = np.isin(keys, keys[hits])  # every period of a line with an overlap
    return [RuleRows(rows=rn[rows[order][overlapping]], column="coverage_start", rule="overlapping_coverage",
                 message="two coverage periods of the member on the same insurance line overlap")]


def _at(n: int, positions: np.ndarray) -> np.ndarray:
    """A mask of ``n`` rows, True at ``positions``."""
    mask = np.zeros(n, dtype=bool)
    mask[positions] = True
    return mask


def index_in(values: pd.Series, of: pd.Series) -> np.ndarray:
    """For each text in ``values``, its position in ``of`` (distinct texts), or -1 when it is not there."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = pc.index_in(pa.array(values).cast(pa.large_string()), value_set=pa.array(of).cast(pa.large_string()))
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _pair_keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One int64 per (a, b) code pair, equal exactly when both codes are."""
    width = int(b.max()) + 1 if len(b) else 1
    keys: np.ndarray = a.astype(np.int64) * width + b
    return keys


def _varies(key: np.ndarray, value: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """Per row: does its ``key`` code occur with more than one distinct ``value`` code?

    Sorted by key, a key varies when two neighbours in its run differ; ``order`` (an argsort of ``key``)
    is shared by calls with the same key: cheaper than pandas' hash unique of the (key, value) pairs.
    """
    if not len(key):
        return np.zeros(0, dtype=bool)
    if order is None:
        order = np.argsort(key, kind="stable")
    keys, values = key[order], value[order]
    differs = (keys[1:] == keys[:-1]) & (values[1:] != values[:-1])
    flagged = np.zeros(int(key.max()) + 1, dtype=bool)
    flagged[keys[1:][differs]] = True
    varies: np.ndarray = flagged[key]
    return varies


def _repeated(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row: does its (a, b) pair occur on more than one row (pandas' duplicated(keep=False))?"""
    if not len(a):
        return np.zeros(0, dtype=bool)
    keys = _pair_keys(a, b)
    if int(keys.max()) < 4 * len(keys) + 1024:
        counts = np.bincount(keys)  # few enough possible pairs to count them directly
    else:
        keys, _ = pd.factorize(keys)
        counts = np.bincount(keys)
    repeated: np.ndarray = counts[keys] > 1
    return repeated


def _within(where: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """``flags`` computed on the rows ``where`` selects, spread back over every row (False elsewhere)."""
    full = np.zeros(len(where), dtype=bool)
    full[where] = flags
    return full


def _parse_iso(distinct: pd.Series) -> pd.Series:
    """Distinct texts as ISO dates (NaT for blanks and non-dates)."""
    parsed: pd.Series = pd.to_datetime(distinct.where(distinct != ""), format="%Y-%m-%d", errors="coerce")
    return parsed

