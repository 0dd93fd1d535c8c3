"""Map a validated canonical census through a carrier mapping into the 834 view: authorised plans only,
allowlisted fields only, codes and text already in X12 form (a pure, vectorised function).

The 834 view (``Enrollment.table``) has one row per member per coverage, sorted so that a family is
together, the subscriber first, then dependents (spouse, then children), each member's coverages
adjacent, otherwise in census order. Its columns:

==================  ===========================================================  ==================
column              value                                                        from census field
==================  ===========================================================  ==================
member_id           employer's member id (REF*23 on dependents)                  member_id
subscriber_id       employee's id (REF*0F)                                       subscriber_id
ins01               Y subscriber / N dependent                                   relationship
ins02               18 self / 01 spouse / 19 child                               relationship
ins03               maintenance type (INS03 and HD01), "030" in a full file      (mapping)
employment_status   INS08 FT/PT/TE/RT on subscriber rows, else ""                employment_status
last_name ...       NM103/NM104/NM105, upper-cased, folded, cut to length        last_name, ...
ssn                 nine digits or ""                                            ssn
dob                 CCYYMMDD or ""                                               dob
gender              M/F/U ("U" when unknown)                                     gender
address1 ... zip    N3/N4, folded                                                address1, ...
hire_date           CCYYMMDD or "" (DTP*336 on subscribers), when member_dates       hire_date
                    has ``hire``
eligibility_begin   CCYYMMDD, the member's earliest coverage start (DTP*356)     coverage_start
eligibility_end     CCYYMMDD once every coverage of the member ends, else ""     coverage_end
                    (DTP*357); each only when member_dates asks for it
group_policy_number the mapping's group_number (REF*1L in Loop 2000)              (mapping)
reporting_category  client reporting category (REF*17): fixed or a census field   (mapping) or field
department          department (REF*DX), folded                                   department
coverage_policy_    the plan's policy_number (REF*1L in Loop 2300), "" if none    plan_code
number
hd03, hd04          insurance line and plan description                          plan_code
hd05                coverage level                                               coverage_level
coverage_start/end  CCYYMMDD (DTP*348/349), end may be ""                        coverage_start/end
benefit_status      INS05 A/C/S/T ("A" when empty), under member_status           benefit_status
medicare_plan,      INS06-1 A-E and INS06-2 0-2 (the reason only with a plan)     medicare_plan,
medicare_reason                                                                  medicare_reason
cobra_event         INS07 1-10/ZZ; cobra_begin/end DTP*340/341 CCYYMMDD           cobra_event, ...
student_status      INS09 F/P/N                                                  student_status
handicap            INS10 Y/N; Y for a handicapped dependent (relationship HD)    handicap
death_date          INS12 CCYYMMDD (INS11 D8 with it)                            death_date
employment_end_date DTP*337 CCYYMMDD on subscribers                              employment_end_date
event_reason        INS04 of the change (carrierfeeds.changes), not stored        event_reason
event_date          DTP*303 of the change, CCYYMMDD, not stored                   event_date
row_number          census row, for error reports (never rendered)               (row_number)
icm01, salary       ICM01 frequency code, ICM02 amount (volumes.salary)          salary_frequency,
                                                                                 salary
coverage_amount     2300 AMT*FK, premium_amount 2300 AMT*P3 (volumes)            coverage_amount,
                                                                                 premium_amount
phone, email        PER*IP TE / EM (contact.phone, contact.email)                phone, email
hlh01, language     HLH01 T/N/U, LUI02 ISO 639 upper case (contact)              tobacco_use,
                                                                                 language
mailing_address1..  2100C N3/N4 (contact.mailing_address)                        mailing_*
pcp_npi,            2310 NM109 / NM110 25/26/72 on the plans                     pcp_npi,
pcp_relationship    primary_care_provider names                                  pcp_existing_patient
reporting_2750_k    2750 REF02 (and _date: DTP*007) of reporting category k      (mapping) field
==================  ===========================================================  ==================

A column whose census field is not on the carrier's allowlist is absent, not blank; so is a column
the mapping does not ask for (REF and DTP options, and the companion-guide settings: volumes, contact,
primary_care_provider, reporting_categories). A line whose eoi_pending is Y under volumes.eoi_hold is not
in the view at all (``excluded["eoi_pending"]``, ``Enrollment.held_lines``). Every text value in the
view is folded to the carrier's character set (``charset``) and is free of X12 delimiters (see
:mod:`carrierfeeds.x12.sanitize`); how many values each step of that rule changed is
``Enrollment.normalised``, by rule name.

Why one module: the view's columns are one table, documented above, and each column's mapping is a
few lines reading the same encoded census; splitting them by column would scatter that table's
definition. The function is pure; its length is the column-by-column rules.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from enum import StrEnum
from typing import Final, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from carrierfeeds.census.columns import ROW_NUMBER
from carrierfeeds.config import CarrierMapping, Feed
from carrierfeeds.errors import DataError, FieldNotAllowed, NotAuthorized
from carrierfeeds.threads import in_order, thread_count
from carrierfeeds.x12.codes import (
    BenefitStatus,
    CobraQualifyingEvent,
    EmploymentStatus,
    HealthRelated,
    IncomeFrequency,
    IndividualRelationship,
    MaintenanceReason,
    MedicareEligibilityReason,
    MedicarePlan,
    ProviderRelationship,
    StudentStatus,
    SubscriberIndicator,
    YesNo,
    values,
)
from carrierfeeds.x12.sanitize import Charset, Folded, TextRule, dictionary_of, fold_column, fold_text

log = logging.getLogger(__name__)

#: Which census field each 834-view column carries; None for columns derived from config alone.
VIEW_SOURCES: Final[dict[str, str | None]] = {
    "member_id": "member_id", "subscriber_id": "subscriber_id",
    "ins01": "relationship", "ins02": "relationship", "ins03": None,
    "employment_status": "employment_status",
    "last_name": "last_name", "first_name": "first_name", "middle_initial": "middle_initial",
    "ssn": "ssn", "dob": "dob", "gender": "gender",
    "address1": "address1", "address2": "address2", "city": "city", "state": "state", "zip": "zip",
    "hire_date": "hire_date",
    "hd03": "plan_code", "hd04": "plan_code", "hd05": "coverage_level",
    "coverage_start": "coverage_start", "coverage_end": "coverage_end",
    ROW_NUMBER: None,
}
#: 834-only view columns (Loop 2000 REF/DTP options, Loop 2300 REF*1L) and the census field each
#: carries; ``reporting_category`` carries the field the mapping names (see RenderOptions.sources).
X12_VIEW_SOURCES: Final[dict[str, str | None]] = {
    "group_policy_number": None, "reporting_category": None, "department": "department",
    "eligibility_begin": "coverage_start", "eligibility_end": "coverage_end",
    "coverage_policy_number": "plan_code",
    # volumes (mapping ``volumes``): 2100A ICM01/ICM02, 2300 AMT*FK and AMT*P3
    "icm01": "salary_frequency", "salary": "salary", "coverage_amount": "coverage_amount",
    "premium_amount": "premium_amount",
    # contact (mapping ``contact``): 2100A PER, LUI, HLH; 2100C N3/N4
    "phone": "phone", "email": "email", "language": "language", "hlh01": "tobacco_use",
    "mailing_address1": "mailing_address1", "mailing_address2": "mailing_address2",
    "mailing_city": "mailing_city", "mailing_state": "mailing_state", "mailing_zip": "mailing_zip",
    # primary care provider (mapping ``primary_care_provider``): 2310 NM109 and NM110
    "pcp_npi": "pcp_npi", "pcp_relationship": "pcp_existing_patient",
    # member status (mapping member_status): INS04-INS12 and DTP*303/337/340/341
    **{col: col for col in ("benefit_status", "medicare_plan", "medicare_reason", "cobra_event",
                            "student_status", "handicap", "death_date", "employment_end_date", "cobra_begin",
                            "cobra_end", "event_reason", "event_date")},
    "maintenance_effective": None,
    # Loop 2100B (identity corrections): what the carrier holds, from the snapshot (carrierfeeds.changes)
    **{f"prior_{col}": col for col in ("last_name", "first_name", "middle_initial", "ssn", "dob", "gender")},
    # A snapshot's own column (carrierfeeds.changes.RESUMED): the census start a 025 absorbed; never rendered,
    # but a view drawn from a snapshot (a reconcile correction) carries it
    "coverage_resumed": "coverage_start",
}

_RELATIONSHIP: Final[dict[str, tuple[str, str, int]]] = {
    "EE": (SubscriberIndicator.SUBSCRIBER.value, IndividualRelationship.SELF.value, 0),
    "SP": (SubscriberIndicator.DEPENDENT.value, IndividualRelationship.SPOUSE.value, 1),
    "CH": (SubscriberIndicator.DEPENDENT.value, IndividualRelationship.CHILD.value, 2),
}
_EMPLOYMENT: Final[frozenset[str]] = frozenset(e.value for e in (
    EmploymentStatus.FULL_TIME, EmploymentStatus.PART_TIME, EmploymentStatus.TERMINATED, EmploymentStatus.RETIRED))
#: Family order beyond self (0): a spouse or life partner (1) before children and other dependents (2).
_RELATIONSHIP_RANK: Final[dict[str, int]] = {IndividualRelationship.SELF.value: 0,
                                             IndividualRelationship.SPOUSE.value: 1,
                                             IndividualRelationship.LIFE_PARTNER.value: 1}


def relationships(mapping: CarrierMapping) -> dict[str, tuple[str, str, int]]:
    """Census relationship -> (INS01, INS02, family rank) for ``mapping``'s relationship_codes."""
    return {rel: (SubscriberIndicator.SUBSCRIBER.value if code == IndividualRelationship.SELF.value
                  else SubscriberIndicator.DEPENDENT.value, code, _RELATIONSHIP_RANK.get(code, 2))
            for rel, code in mapping.relationship_codes.items()}
_TEXT_LIMITS: Final[dict[str, int]] = {"address1": 55, "address2": 55, "city": 30}
#: Canonical salary frequencies (IncomeFrequency's names, any case) and their ICM01 codes.
_FREQUENCIES: Final[dict[str, str]] = {m.name: m.value for m in IncomeFrequency}
#: An amount as X12 writes it (type R, no sign): digits, at most two decimals, after "$" and "," go.
_AMOUNT = r"[0-9]{1,15}(?:\.[0-9]{1,2})?"
_YES: Final[frozenset[str]] = frozenset({"Y", "YES", "TRUE", "1"})
#: Census pcp_existing_patient (any case) -> NM110; empty is unknown.
_EXISTING_PATIENT: Final[dict[str, str]] = {"Y": ProviderRelationship.ESTABLISHED_PATIENT.value,
                                            "N": ProviderRelationship.NOT_ESTABLISHED_PATIENT.value,
                                            "": ProviderRelationship.UNKNOWN.value}
#: Census tobacco_use (any case) -> HLH01.
_TOBACCO: Final[dict[str, str]] = {"Y": HealthRelated.TOBACCO_USE.value, "N": HealthRelated.NONE.value,
                                   "U": HealthRelated.UNKNOWN.value}
_ISO_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


@dataclass(frozen=True)
class RenderOptions:
    """What the mapping tells the 834 writer beyond the view's columns.

    ``charset`` every value must fall in (the writer refuses a file holding anything else);
    ``max_members_per_transaction`` splits the interchange into ST/SE sets of whole families;
    ``sources`` census fields of config-dependent columns (``reporting_category``), for the writer's
    own allowlist check; ``maintenance_effective`` the diff dates every change with DTP*303;
    ``identity_corrections`` it sends what the carrier holds (Loop 2100B) with an identity correction.
    """

    charset: Charset = "basic"
    max_members_per_transaction: int | None = None
    sources: tuple[tuple[str, str], ...] = ()
    # File header (``file_header``): DTP*007 date (CCYYMMDD, "" for none), QTY qualifiers in order, and
    # the Loop 1000C parties as (N101, N102, N103, N104), text already folded.
    file_effective_date: str = ""
    control_totals: tuple[str, ...] = ()
    header_parties: tuple[tuple[str, str, str, str], ...] = ()

    # Loop 2700/2750: (N102 name, REF01 qualifier) of each category, in order; their values are the view
    # columns reporting_2750_1 ... (DTP*007: reporting_2750_1_date ...).
    reporting_categories: tuple[tuple[str, str], ...] = ()

    maintenance_effective: bool = False
    identity_corrections: bool = False

    @classmethod
    def for_mapping(cls, mapping: CarrierMapping, as_of: date | None = None) -> RenderOptions:
        reporting = mapping.member_references.client_reporting_category
        sources: tuple[tuple[str, str], ...] = (
            (("reporting_category", reporting.field),) if reporting and reporting.field else ())
        categories = mapping.reporting_categories
        for k, category in enumerate(categories, start=1):
            sources += ((f"reporting_2750_{k}", category.field),)
            if category.date_field is not None:
                sources += ((f"reporting_2750_{k}_date", category.date_field),)
        head = mapping.file_header
        effective = as_of.strftime("%Y%m%d") if head.file_effective_date and as_of is not None else ""
        parties = tuple((p.role, fold_text(p.name, 60), p.id_qualifier, fold_text(p.id, 80)) for p in head.parties)
        return cls(charset=mapping.charset, max_members_per_transaction=mapping.max_members_per_transaction,
                   sources=sources, file_effective_date=effective, control_totals=tuple(head.control_totals),
                   header_parties=parties,
                   reporting_categories=tuple((fold_text(c.name, 60), c.qualifier) for c in categories),
                   maintenance_effective=mapping.member_status.maintenance_effective,
                   identity_corrections=mapping.member_status.identity_corrections)

    def source_of(self, column: str) -> str | None:
        """The census field view ``column`` carries (None: config or diff alone)."""
        own = dict(self.sources)
        if column in own:
            return own[column]
        if column in X12_VIEW_SOURCES:
            return X12_VIEW_SOURCES[column]
        return VIEW_SOURCES.get(column, column)


@dataclass(frozen=True)
class Enrollment:
    """The 834 view of one feed's census (see the module docstring for ``table``'s columns).

    ``member_count`` distinct members, ``subscriber_count`` distinct subscribers among them,
    ``coverage_count`` rows (member x plan), ``excluded`` census rows left out by reason
    (``plan_not_authorized``, ``plan_not_mapped``), ``sanitized`` per column how many values the
    delimiter rule changed, ``normalised`` how many values each step of the character rule changed
    (by rule name, never by value), ``allowlist`` the carrier's allowlist the view was cut to,
    ``options`` what the mapping tells the 834 writer, ``held_lines`` the lines the EOI hold kept back.
    """

    table: pd.DataFrame
    member_count: int
    subscriber_count: int
    coverage_count: int
    excluded: dict[str, int] = field(default_factory=dict)
    sanitized: dict[str, int] = field(default_factory=dict)
    allowlist: tuple[str, ...] = ()
    normalised: dict[str, int] = field(default_factory=dict)
    options: RenderOptions = RenderOptions()
    #: Lines held back (evidence of insurability pending) as (subscriber_id, member_id, HD03), in view
    #: form: a change file carries what the carrier holds for them over, untouched.
    held_lines: tuple[tuple[str, str, str], ...] = ()
    #: The census end (CCYYMMDD) of held lines that have one, as (subscriber_id, member_id, HD03, end): the
    #: hold is for an increase, never an end, so a change file ends the coverage the carrier holds then.
    held_ends: tuple[tuple[str, str, str, str], ...] = ()
    #: The census rows (``row_number``) of the first kept row of the view's first and last family (families
    #: are ordered by it); None for an empty view. A chunked build checks its chunks by it.
    family_rows: tuple[int, int] | None = None

    def source_fields(self) -> list[str]:
        """The census fields the view's columns carry."""
        return sorted({src for col in self.table.columns if (src := self.options.source_of(col))})


def _differs_from_previous(column: pd.Series) -> np.ndarray:
    """Row i (i >= 1) differs from row i-1; compared in Arrow, without a Python str per row."""
    arr = pa.array(column, from_pandas=True)
    if len(arr) < 2:
        return np.zeros(max(len(arr) - 1, 0), dtype=bool)
    differs: np.ndarray = pc.not_equal(arr[1:], arr[:-1]).to_numpy(zero_copy_only=False)
    return differs


def member_starts(table: pd.DataFrame) -> np.ndarray:
    """For each view row, whether it starts a member: a run of rows with one (member, subscriber) pair,
    exactly what becomes one Loop 2000."""
    start = np.ones(len(table), dtype=bool)
    if len(table) > 1:
        start[1:] = _differs_from_previous(table["member_id"]) | _differs_from_previous(table["subscriber_id"])
    return start


def family_starts(table: pd.DataFrame) -> np.ndarray:
    """For each view row, whether it starts a family (a run of rows with one subscriber id)."""
    start = np.ones(len(table), dtype=bool)
    if len(table) > 1:
        start[1:] = _differs_from_previous(table["subscriber_id"])
    return start


def assert_allowlisted(columns: Iterable[str], mapping: CarrierMapping | Iterable[str]) -> None:
    """Raise FieldNotAllowed when any census field in ``columns`` is not on the allowlist."""
    allow = set(mapping.allowlist if isinstance(mapping, CarrierMapping) else mapping)
    extra = sorted(set(columns) - allow - {ROW_NUMBER})
    if extra:
        raise FieldNotAllowed(f"field(s) not on the carrier's allowlist: {extra}",
                              details={"fields": extra})


class _ArrowTextColumns(dict[str, pd.Series]):
    """The view's columns as they are made, each kept as Arrow-backed text at once, so the Python str
    objects of the vectorised steps (fold_series, map) die column by column instead of piling up."""

    def __setitem__(self, key: str, value: pd.Series) -> None:
        keep = value if key == ROW_NUMBER or value.dtype != object else value.astype("str")
        super().__setitem__(key, keep)


def _codes(values: pd.Series) -> pa.DictionaryArray:
    """``values`` ("" for a missing value) dictionary-encoded as one array: codes by first appearance."""
    arr = pa.array(values.astype("str").fillna(""), from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    encoded: pa.DictionaryArray = pc.dictionary_encode(pc.fill_null(arr, "") if arr.null_count else arr)
    return encoded


def _first_appearance(values: pd.Series) -> np.ndarray:
    """Each row's value numbered by its first appearance (pd.factorize's codes, by Arrow's hash)."""
    codes: np.ndarray = _codes(values).indices.to_numpy(zero_copy_only=False)
    return codes


def _rows_text(values: pd.Series, order: np.ndarray) -> pa.Array:
    """The rows ``order`` picks of a text column ("" when missing), trimmed, as one large_string array."""
    arr = pc.take(pa.array(values.astype("str").fillna(""), from_pandas=True), pa.array(order))
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_string())
    return pc.utf8_trim_whitespace(pc.fill_null(arr, "") if arr.null_count else arr)


def _digits(values: pd.Series, order: np.ndarray, lengths: tuple[int, ...]) -> pd.Series:
    """A digit code per row: the trimmed value less its hyphens when that is ``lengths`` ASCII digits,
    else "" (``[0-9]{n}`` by row, without a hash: SSNs and zips are nearly all distinct). A column given
    as distinct texts and codes (zips: far fewer texts than rows) is worked out per text and taken
    through the codes."""
    coded = dictionary_of(values)
    if coded is not None:
        dictionary, codes = coded
        per_text = _digit_codes(pc.utf8_trim_whitespace(dictionary), lengths)
        return pd.Series(pc.take(per_text, pa.array(codes[order])), dtype="str")
    return pd.Series(_digit_codes(_rows_text(values, order), lengths), dtype="str")


def _digit_codes(text: pa.Array, lengths: tuple[int, ...]) -> pa.Array:
    """Per trimmed text: less its hyphens when that is ``lengths`` ASCII digits, else ""."""
    digits = pc.replace_substring(text, "-", "")
    size = pc.binary_length(digits)
    fits = pc.is_in(size, pa.array(lengths, size.type))
    ok = pc.and_(fits, pc.ascii_is_decimal(digits))
    result: pa.Array = pc.if_else(ok, digits, "")
    return result


class _Distinct:
    """A text column factorised once: its distinct values and each row's code.

    Census columns repeat heavily (a member's name, address and birth date on every coverage row; a few
    plans, levels and dates for everyone), so each rule runs over the distinct values and is spread back
    by code: no regex, dictionary lookup or date parse runs per row.

    ``order`` picks and orders the rows (the view's kept rows in the view's order): codes are
    taken through it, so a spread column is born in view order and no census column is ever copied.
    """

    def __init__(self, values: pd.Series, order: np.ndarray | None = None) -> None:
        coded = dictionary_of(values)
        if coded is not None:
            # Factorised already (a Categorical column of the accepted census): its distinct texts and
            # codes as they are, with no hash; texts no row uses are harmless (only codes are counted).
            dictionary, codes = coded
            self.codes: np.ndarray = codes if order is None else codes[order]
            self.values: pd.Series = pd.Series(dictionary, dtype="str").str.strip()
            return
        # Arrow's own hash (pd.factorize over the same array adds its conversions; benchmarks/README.md);
        # codes are numbered by first appearance, as factorize numbers them.
        encoded = _codes(values)
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        self.codes = codes if order is None else codes[order]
        # Trimmed after factorising: "A" and "A " may both appear, and both give the same answer.
        self.values = pd.Series(encoded.dictionary, dtype="str").str.strip()

    @property
    def index(self) -> pd.RangeIndex:
        return pd.RangeIndex(len(self.codes))

    def reordered(self, order: np.ndarray) -> _Distinct:
        """The same distinct values, rows taken through ``order``."""
        other = copy.copy(self)
        other.codes = self.codes[order]
        return other

    def spread(self, per_value: pd.Series) -> pd.Series:
        """Row-level values from one value per distinct value (text stays Arrow-backed)."""
        if per_value.dtype == "str" or per_value.dtype == object:
            arr = pa.array(per_value.astype("str"), from_pandas=True)
            return pd.Series(pc.take(arr, pa.array(self.codes)), index=self.index, dtype="str")
        return pd.Series(per_value.to_numpy()[self.codes], index=self.index)

    def map(self, table: Mapping[str, object]) -> pd.Series:
        return self.spread(self.values.map(table))

    def rows_where(self, per_value: pd.Series) -> pd.Series:
        """A row mask from a mask over the distinct values."""
        return pd.Series(per_value.to_numpy(dtype=bool)[self.codes], index=self.index)


def _ccyymmdd(values: pd.Series, column: str, rows: pd.Series, *, required: bool,
              order: np.ndarray | None = None) -> pd.Series:
    """ISO dates to CCYYMMDD; a malformed (or, when required, empty) value is a DataError by row.

    ``rows`` are the census row numbers of the rows ``order`` picks (see :class:`_Distinct`)."""
    distinct = _Distinct(values, order)
    text = distinct.values
    empty = text == ""
    ok = text.str.match(_ISO_DATE)
    parsed = pd.to_datetime(text.where(ok & ~empty), format="%Y-%m-%d", errors="coerce")
    bad = distinct.rows_where((~empty & parsed.isna()) | (empty if required else False))
    if bool(bad.any()):
        raise DataError(f"{int(bad.sum())} value(s) are not ISO dates (YYYY-MM-DD)" +
                        (" or are missing" if required else ""),
                        row=int(rows[bad.to_numpy()].min()), column=column, rule="iso_date",
                        details={"count": int(bad.sum())})
    return distinct.spread(text.str.replace("-", "", regex=False))


def _require(rows: pd.Series, column: str, bad: pd.Series, rule: str, what: str) -> None:
    """Refuse when any row is ``bad``, naming the first such census row (``rows`` aligned with ``bad``)."""
    if bool(bad.any()):
        raise DataError(f"{int(bad.sum())} row(s) {what}", row=int(rows[bad.to_numpy()].min()),
                        column=column, rule=rule, details={"count": int(bad.sum())})


def _eligibility(out: _ArrowTextColumns, mapping: CarrierMapping) -> None:
    """DTP*356/357 per member from its coverages: the earliest start; the latest end once all end."""
    wanted = [d for d in ("eligibility_begin", "eligibility_end") if d in mapping.dates_sent]
    if not wanted:
        return
    member = out["subscriber_id"].astype(str) + "\x1f" + out["member_id"].astype(str)
    if "eligibility_begin" in wanted:
        out["eligibility_begin"] = out["coverage_start"].astype(object).groupby(member).transform("min")
    if "eligibility_end" in wanted and "coverage_end" in out:
        end = out["coverage_end"].astype(object)
        open_ended = (end == "").groupby(member).transform("any")
        out["eligibility_end"] = end.groupby(member).transform("max").where(~open_ended, "").astype(object)


def _periods_that_count(subscribers: np.ndarray, members: np.ndarray, lines: np.ndarray, start: pd.Series,
                        end: pd.Series | None, as_of: date) -> np.ndarray | None:
    """Which view row is each member's coverage on each insurance line, when the census gives a line
    several periods (history, a future election); None when every line has one row (nothing to drop).

    Per (subscriber, member, HD03): the period in effect on ``as_of`` (start <= as_of, no end or end >=
    as_of); else the earliest one starting after ``as_of`` (a future election); else the one that ended
    last. Validation refuses overlapping periods on a line (``overlapping_coverage``), so at most one is
    in effect. Rows are in view order: a member's rows are adjacent.
    """
    if len(lines) < 2:
        return None
    width = int(lines.max()) + 1
    new_member = np.ones(len(lines), dtype=bool)
    new_member[1:] = (subscribers[1:] != subscribers[:-1]) | (members[1:] != members[:-1])
    keys = (np.cumsum(new_member) - 1).astype(np.int64) * width + lines
    repeated: np.ndarray = np.bincount(keys)[keys] > 1
    if not repeated.any():
        return None
    at = np.flatnonzero(repeated)
    day = int(as_of.strftime("%Y%m%d"))
    begins = pd.to_numeric(start.iloc[at], errors="coerce").fillna(0).to_numpy(dtype=np.int64)
    ends = (pd.to_numeric(end.iloc[at].where(end.iloc[at] != ""), errors="coerce").fillna(0).to_numpy(dtype=np.int64)
            if end is not None else np.zeros(len(at), dtype=np.int64))
    in_effect = (begins <= day) & ((ends == 0) | (ends >= day))
    future = ~in_effect & (begins > day)
    kind = np.where(in_effect, 0, np.where(future, 1, 2))
    # Within a kind, the first wins: in effect, the latest start; future, the earliest; ended, the latest end.
    rank = np.where(in_effect, -begins, np.where(future, begins, -ends))
    order = at[np.lexsort((rank, kind, keys[at]))]
    first = np.ones(len(order), dtype=bool)
    first[1:] = keys[order][1:] != keys[order][:-1]
    counting: np.ndarray = ~repeated
    counting[order[first]] = True
    return counting


# ---- Companion-guide depth: volumes and the evidence-of-insurability hold ---------------------------


def _amounts(values: pd.Series, column: str, rows: pd.Series, order: np.ndarray) -> pd.Series:
    """Amounts as X12 writes them ("$" and "," dropped); anything else is a DataError by row."""
    distinct = _Distinct(values, order)
    text = distinct.values.str.replace(r"[$,]", "", regex=True)
    ok = (text == "") | text.str.fullmatch(_AMOUNT).fillna(False).astype(bool)
    _require(rows, column, distinct.rows_where(~ok), "amount_format",
             "have an amount that is not a plain number with at most two decimals")
    return distinct.spread(text)


def _salaries(salary: pd.Series, frequency: pd.Series, rows: pd.Series, order: np.ndarray,
              ) -> list[tuple[str, pd.Series | Folded]]:
    """ICM02 (salary) and ICM01 (its frequency code); a salary needs a known frequency."""
    amount = _amounts(salary, "salary", rows, order)
    freq = _Distinct(frequency, order)
    icm01 = freq.spread(freq.values.str.upper().map(_FREQUENCIES).fillna("").astype("str"))
    _require(rows, "salary_frequency", (amount != "") & (icm01 == ""), "salary_frequency",
             "have a salary without a known frequency (ANNUALLY, MONTHLY, WEEKLY, HOURLY, ...)")
    return [("icm01", icm01.where(amount != "", "")), ("salary", amount)]


def _emails(values: pd.Series, rows: pd.Series, order: np.ndarray) -> pd.Series:
    """E-mail addresses as given (extended character set); one that is not plainly an address is a
    DataError by row."""
    distinct = _Distinct(values, order)
    text = distinct.values
    ok = (text == "") | text.str.fullmatch(r"[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9.\-]{1,190}\.[A-Za-z]{2,24}").fillna(
        False).astype(bool)
    _require(rows, "email", distinct.rows_where(~ok), "email_format", "have an e-mail address that is not one")
    return distinct.spread(text)


def _languages(values: pd.Series, rows: pd.Series, order: np.ndarray) -> pd.Series:
    """ISO 639 codes (two or three letters), upper-cased for the basic character set."""
    distinct = _Distinct(values, order)
    text = distinct.values.str.upper()
    ok = (text == "") | text.str.fullmatch(r"[A-Z]{2,3}").fillna(False).astype(bool)
    _require(rows, "language", distinct.rows_where(~ok), "language_code",
             "have a language that is not an ISO 639 code")
    return distinct.spread(text)


def _tobacco(values: pd.Series, rows: pd.Series, order: np.ndarray) -> pd.Series:
    """HLH01 from Y / N / U (any case); anything else is a DataError by row."""
    distinct = _Distinct(values, order)
    code = distinct.values.str.upper().map(_TOBACCO)
    _require(rows, "tobacco_use", distinct.rows_where(code.isna() & (distinct.values != "")), "tobacco_use",
             "have a tobacco use other than Y, N or U")
    return distinct.spread(code.fillna("").astype("str"))


def _npi_ok(npi: str) -> bool:
    """Ten digits whose last is the Luhn check digit over "80840" and the first nine (the NPI standard)."""
    if len(npi) != 10 or not npi.isdigit():
        return False
    digits = [int(c) for c in "80840" + npi[:9]]
    total = sum(d if i % 2 else (2 * d if d < 5 else 2 * d - 9) for i, d in enumerate(reversed(digits)))
    return (10 - total % 10) % 10 == int(npi[9])


def _primary_care(npi: pd.Series, existing: pd.Series, plan: _Distinct, plans: set[str], rows: pd.Series,
                  order: np.ndarray) -> list[tuple[str, pd.Series | Folded]]:
    """NM109 (the NPI) and NM110 on the rows of the plans that carry a PCP; a malformed NPI or flag is a
    DataError by row; a row of such a plan without an NPI carries none."""
    on_plan = plan.rows_where(plan.values.isin(plans))
    ids = _Distinct(npi, order)
    text = ids.values.str.replace(r"[\s-]", "", regex=True)
    good = text.map(lambda v: v == "" or _npi_ok(v)).astype(bool)
    _require(rows, "pcp_npi", ids.rows_where(~good) & on_plan, "npi", "have a PCP NPI that is not a valid NPI")
    flag = _Distinct(existing, order)
    code = flag.values.str.upper().map(_EXISTING_PATIENT)
    _require(rows, "pcp_existing_patient", flag.rows_where(code.isna()) & on_plan, "pcp_existing_patient",
             "have an existing-patient flag other than Y, N or empty")
    npi_rows = ids.spread(text).where(on_plan, "")
    return [("pcp_npi", npi_rows), ("pcp_relationship", flag.spread(code.fillna("").astype("str")).where(
        npi_rows != "", ""))]


def _eoi_held(frame: pd.DataFrame, mapping: CarrierMapping) -> pd.Series:
    """Census rows the EOI hold keeps back: eoi_pending Y (yes, true, 1) when the mapping holds them."""
    if not mapping.volumes.eoi_hold or "eoi_pending" not in frame.columns:
        return pd.Series(False, index=frame.index)
    pending = _Distinct(frame["eoi_pending"])
    return pending.rows_where(pending.values.str.upper().isin(_YES))


def _held_lines(frame: pd.DataFrame, mapping: CarrierMapping, held: pd.Series
                ) -> tuple[tuple[str, str, str], ...]:
    """The held rows' (subscriber_id, member_id, HD03), folded as the view folds them (few rows)."""
    if not held.any():
        return ()
    rows = frame.loc[held.to_numpy(), ["subscriber_id", "member_id", "plan_code"]].astype("str")
    return tuple(sorted({(fold_text(sub, 50), fold_text(mem, 50), mapping.plans[plan.strip()].insurance_line)
                         for sub, mem, plan in rows.itertuples(index=False, name=None)}))


def _held_ends(frame: pd.DataFrame, mapping: CarrierMapping, held: pd.Series
               ) -> tuple[tuple[str, str, str, str], ...]:
    """The held rows that give an end: (subscriber_id, member_id, HD03, end CCYYMMDD), as the view folds
    and writes them (few rows)."""
    if not held.any() or "coverage_end" not in frame.columns:
        return ()
    rows = frame.loc[held.to_numpy(), ["subscriber_id", "member_id", "plan_code", "coverage_end"]].astype("str")
    rows = rows[~rows["coverage_end"].str.strip().isin(["", "nan", "NaT", "None", "<NA>"])]
    if rows.empty:
        return ()
    ends = pd.to_datetime(rows["coverage_end"].str.strip()).dt.strftime("%Y%m%d")
    return tuple(sorted({(fold_text(sub, 50), fold_text(mem, 50), mapping.plans[plan.strip()].insurance_line, end)
                         for (sub, mem, plan, _), end in zip(rows.itertuples(index=False, name=None), ends,
                                                             strict=True)}))


# ---- member status: INS04 (census events), INS05-INS12, DTP*337/340/341 (mapping member_status)
_EMPLOYMENT_ALL: Final[frozenset[str]] = values(EmploymentStatus)
#: Canonical event_reason (the schema's EventReason names) -> INS04.
EVENT_REASONS: Final[dict[str, str]] = {
    m.name.lower(): m.value for m in MaintenanceReason if m.name.lower() in {
        "birth", "marriage", "divorce", "death", "adoption", "retirement", "legal_separation", "disability",
        "cobra", "surviving_spouse", "voluntary_withdrawal", "plan_change", "leave_of_absence_with_benefits",
        "leave_of_absence_without_benefits", "lay_off_with_benefits", "lay_off_without_benefits",
        "member_benefit_selection"}}


def _coded(column: str, values: pd.Series, order: np.ndarray, rows: pd.Series, codes: Mapping[str, str],
           default: str = "") -> pd.Series:
    """A coded census column as its X12 codes (``codes``: canonical value in upper case -> code); an
    empty cell is ``default``, any other value without a code is refused by row."""
    distinct = _Distinct(values, order)
    upper = distinct.values.str.upper()
    _require(rows, column, distinct.rows_where(~upper.isin(set(codes)) & (upper != "")), f"{column}_code",
             f"have a {column.replace('_', ' ')} the 834 has no code for")
    return distinct.spread(upper.map(dict(codes)).fillna(default).astype("str"))


def _member_status(task: Callable[..., None], mapping: CarrierMapping, raw: Callable[[str], pd.Series],
                   present: Iterable[str], rows: pd.Series, order: np.ndarray, rel: _Distinct,
                   dates: Callable[..., list[tuple[str, pd.Series | Folded]]]) -> None:
    """Queue the view columns of the member_status settings that are on (each needs its census fields on
    the allowlist, which the mapping checked at load; a field the census lacks is empty)."""
    status = mapping.member_status
    have = set(present)

    def same(enum: type[StrEnum]) -> dict[str, str]:
        return {v: v for v in values(enum)}

    def coded(column: str, codes: Mapping[str, str], default: str = "") -> list[tuple[str, pd.Series | Folded]]:
        return [(column, _coded(column, raw(column), order, rows, codes, default))]

    def handicap() -> list[tuple[str, pd.Series | Folded]]:
        flag = _coded("handicap", raw("handicap"), order, rows, same(YesNo))
        return [("handicap", flag.where(~rel.rows_where(rel.values == "HD"), YesNo.YES.value))]

    def medicare() -> list[tuple[str, pd.Series | Folded]]:
        plan = _coded("medicare_plan", raw("medicare_plan"), order, rows, same(MedicarePlan))
        reason = _coded("medicare_reason", raw("medicare_reason"), order, rows, same(MedicareEligibilityReason))
        return [("medicare_plan", plan), ("medicare_reason", reason.where(plan != "", ""))]

    if status.benefit_status:
        task(coded, "benefit_status", same(BenefitStatus), BenefitStatus.ACTIVE.value)
    if status.medicare:
        task(medicare)
    if status.cobra:
        task(coded, "cobra_event", same(CobraQualifyingEvent))
    if status.student:
        task(coded, "student_status", same(StudentStatus))
    if status.handicap:
        task(handicap)
    if status.death:
        task(dates, "death_date", raw("death_date"), False)
    if status.employment_end:
        task(dates, "employment_end_date", raw("employment_end_date"), False, True)
    if status.cobra:
        for column in ("cobra_begin", "cobra_end"):
            task(dates, column, raw(column), False)
    if status.event_reasons:
        task(coded, "event_reason", {k.upper(): v for k, v in EVENT_REASONS.items()})
    if status.maintenance_effective and "event_date" in have:
        task(dates, "event_date", raw("event_date"), False)


def build_enrollment(census: pd.DataFrame, feed: Feed, mapping: CarrierMapping, *,
                     as_of: date, workers: int | None = None) -> Enrollment:
    """The 834 view of ``census`` for ``feed``'s carrier on ``as_of``; refuses when not authorised.

    The view's columns are made on ``workers`` threads (default: the CPUs this process may use, at
    most 4); the view, its counts and any error do not depend on ``workers``."""
    auth = feed.authorization
    if not auth.covers(as_of):
        raise NotAuthorized(
            f"feed {feed.feed_id}: authorisation runs {auth.effective_from.isoformat()} to "
            f"{auth.effective_to.isoformat() if auth.effective_to else 'open'}, not {as_of.isoformat()}",
            details={"feed_id": feed.feed_id, "as_of": as_of.isoformat()})
    missing = sorted({"member_id", "subscriber_id", "relationship", "last_name", "first_name",
                      "plan_code", "coverage_level", "coverage_start"} - set(census.columns))
    if missing:
        raise DataError(f"census lacks column(s) {missing}", rule="required_columns")

    frame = census.copy(deep=False)  # copy-on-write: the caller's frame is never changed
    if ROW_NUMBER not in frame.columns:
        frame[ROW_NUMBER] = np.arange(2, len(frame) + 2)
    frame = frame.reset_index(drop=True)

    census_plans = _Distinct(frame["plan_code"])
    authorised = census_plans.rows_where(census_plans.values.isin(set(auth.plans)))
    mapped = census_plans.rows_where(census_plans.values.isin(set(mapping.plans)))
    excluded = {"plan_not_authorized": int((~authorised).sum()),
                "plan_not_mapped": int((authorised & ~mapped).sum())}
    excluded = {k: v for k, v in excluded.items() if v}
    if excluded.get("plan_not_mapped"):
        log.warning("feed %s: %d authorised row(s) have no plan in mapping %s", feed.feed_id,
                    excluded["plan_not_mapped"], mapping.mapping_id)
    # The rows the view keeps, as positions: the census is never filtered or copied; every view column
    # is made from the kept rows only, straight in view order (see _Distinct).
    held = _eoi_held(frame, mapping) & authorised & mapped
    if held.any():
        excluded["eoi_pending"] = int(held.sum())
    held_lines = _held_lines(frame, mapping, held)
    held_ends = _held_ends(frame, mapping, held)
    kept = np.flatnonzero((authorised & mapped & ~held).to_numpy())

    # Minimum necessary: drop every field the carrier may not see before anything else reads it.
    allow = set(mapping.allowlist)
    frame = frame[[c for c in frame.columns if c in allow or c == ROW_NUMBER]]
    census_rows = frame[ROW_NUMBER].to_numpy()

    out = _ArrowTextColumns()
    sanitized: dict[str, int] = {}
    normalised: dict[str, int] = {}
    threads = thread_count(workers)

    def keep(parts: list[tuple[str, pd.Series | Folded]]) -> None:
        """View columns in order; a folded one's counts recorded as the rule reports them."""
        for col, part in parts:
            if isinstance(part, Folded):
                if part.changed:
                    sanitized[col] = part.changed
                for name, n in part.by_rule.items():
                    normalised[name] = normalised.get(name, 0) + n
                part = part.values
            out[col] = part

    def raw(col: str) -> pd.Series:
        """The census column as it is (fold_column and _Distinct trim each distinct value themselves)."""
        return frame[col] if col in frame.columns else pd.Series("", index=frame.index, dtype="str")

    # First the family keys, in census order: they decide the view's order.
    rows = pd.Series(census_rows[kept])
    keys: list[Callable[[], object]] = [functools.partial(fold_column, raw("member_id"), 50, order=kept),
                                        functools.partial(fold_column, raw("subscriber_id"), 50, order=kept),
                                        functools.partial(_Distinct, raw("relationship"), kept)]
    member_fold, subscriber_fold, rel = cast(tuple[Folded, Folded, _Distinct],
                                             tuple(in_order(keys, threads, name="enrollment")))
    ids = {"member_id": member_fold.values, "subscriber_id": subscriber_fold.values}
    for col, folded in ids.items():
        _require(rows, col, folded == "", "empty_identifier", "have no usable identifier")
    rel.values = rel.values.str.upper()
    related = relationships(mapping)
    _require(rows, "relationship", rel.rows_where(~rel.values.isin(set(related))), "relationship_code",
             f"have a relationship other than {'/'.join(related)}")
    rel_rank = rel.map({k: v[2] for k, v in related.items()}).to_numpy(dtype=np.int64)
    # Families together in order of first appearance, subscriber first, then spouse, then children;
    # a member's coverages adjacent; otherwise census order. Rows are in census order here, so a
    # factorisation's codes (numbered by first appearance) are exactly those first-appearance ranks.
    member_codes, subscriber_codes = in_order([functools.partial(_first_appearance, ids["member_id"]),
                                               functools.partial(_first_appearance, ids["subscriber_id"])],
                                              threads, name="enrollment")
    positions = np.lexsort((np.arange(len(kept)), member_codes, rel_rank, subscriber_codes))
    # Subscribers (INS01 "Y": relationship EE) by their member codes, without hashing the ids again.
    subscriber_count = int(np.count_nonzero(np.bincount(member_codes[rel_rank == 0])))
    order = kept[positions]
    rows = pd.Series(census_rows[order])
    keep([(col, replace(folded, values=folded.values.take(positions).reset_index(drop=True)))
          for col, folded in (("member_id", member_fold), ("subscriber_id", subscriber_fold))])
    rel = rel.reordered(positions)
    out["ins01"] = rel.map({k: v[0] for k, v in related.items()})
    out["ins02"] = rel.map({k: v[1] for k, v in related.items()})
    index = pd.RangeIndex(len(order))
    out["ins03"] = pd.Series(mapping.full_file.maintenance_type, index=index, dtype="str")
    subscriber = out["ins01"] == "Y"

    # Every other column from the census column(s) it carries and the view's order alone: each a task,
    # run on a few threads (Arrow's kernels release the GIL) and kept in this order, so the view's
    # columns, the counts and the first error raised are those of one thread.
    tasks: list[Callable[[], list[tuple[str, pd.Series | Folded]]]] = []

    def task(fn: Callable[..., list[tuple[str, pd.Series | Folded]]], *args: object) -> None:
        tasks.append(functools.partial(fn, *args))

    def fold(col: str, values: pd.Series, max_len: int, rule: TextRule) -> list[tuple[str, pd.Series | Folded]]:
        return [(col, fold_column(values, max_len, rule, order=order))]

    def name(col: str, values: pd.Series, max_len: int, rule: TextRule) -> list[tuple[str, pd.Series | Folded]]:
        folded = fold_column(values, max_len, rule, order=order)
        _require(rows, col, folded.values == "", "empty_after_sanitize",
                 "have a name with no letters or digits left after the delimiter rule")
        return [(col, folded)]

    def employment(values: pd.Series) -> list[tuple[str, pd.Series | Folded]]:
        status = _Distinct(values, order)
        upper = status.values.str.upper()
        sent = _EMPLOYMENT if mapping.member_status.employment_codes == "basic" else _EMPLOYMENT_ALL
        return [("employment_status", status.spread(upper.where(upper.isin(sent), "")).where(subscriber, ""))]

    def digits(col: str, values: pd.Series, lengths: tuple[int, ...]) -> list[tuple[str, pd.Series | Folded]]:
        return [(col, _digits(values, order, lengths))]

    def dates(col: str, values: pd.Series, required: bool, subscribers_only: bool = False,
              ) -> list[tuple[str, pd.Series | Folded]]:
        text = _ccyymmdd(values, col, rows, required=required, order=order)
        return [(col, text.where(subscriber, "") if subscribers_only else text)]

    def gender(values: pd.Series) -> list[tuple[str, pd.Series | Folded]]:
        codes = _Distinct(values, order)
        upper = codes.values.str.upper()
        return [("gender", codes.spread(upper.where(upper.isin({"M", "F", "U"}), "U")))]

    def state(values: pd.Series) -> list[tuple[str, pd.Series | Folded]]:
        codes = _Distinct(values, order)
        upper = codes.values.str.upper()
        return [("state", codes.spread(upper.where(upper.str.fullmatch(r"[A-Z]{2}"), "")))]

    def plans(plan: _Distinct) -> list[tuple[str, pd.Series | Folded]]:
        return [("hd03", plan.map({k: v.insurance_line for k, v in mapping.plans.items()})),
                ("hd04", plan.map({k: fold_text(v.description, 50) for k, v in mapping.plans.items()}))]

    def levels(values: pd.Series) -> list[tuple[str, pd.Series | Folded]]:
        level = _Distinct(values, order)
        level.values = level.values.str.upper()
        _require(rows, "coverage_level", level.rows_where(~level.values.isin(set(mapping.coverage_levels))),
                 "coverage_level", "have a coverage level the mapping does not know")
        return [("hd05", level.map(dict(mapping.coverage_levels)))]

    def policy_numbers(plan: _Distinct, policies: dict[str, str]) -> list[tuple[str, pd.Series | Folded]]:
        return [("coverage_policy_number", plan.map(policies).fillna(""))]

    def fixed(col: str, value: str) -> list[tuple[str, pd.Series | Folded]]:
        return [(col, pd.Series(fold_text(value, 50), index=index, dtype="str"))]

    if "employment_status" in frame.columns:
        task(employment, raw("employment_status"))
    limit = mapping.name_max_length
    names = TextRule(mapping.charset, mapping.name_case)
    text_rule = TextRule(mapping.charset, "upper")
    for col, max_len in (("last_name", mapping.last_name_max_length or min(limit, 60)),
                         ("first_name", mapping.first_name_max_length or min(limit, 35)),
                         ("middle_initial", 1)):
        if col in frame.columns:
            task(name if col in ("last_name", "first_name") else fold, col, raw(col), max_len, names)
    if "ssn" in frame.columns:
        task(digits, "ssn", raw("ssn"), (9,))
    if "dob" in frame.columns:
        task(dates, "dob", raw("dob"), False)
    if "gender" in frame.columns:
        task(gender, raw("gender"))
    for col in ("address1", "address2", "city"):
        if col in frame.columns:
            task(fold, col, raw(col), _TEXT_LIMITS[col], text_rule)
    if "state" in frame.columns:
        task(state, raw("state"))
    if "zip" in frame.columns:
        task(digits, "zip", raw("zip"), (5, 9))
    if "hire_date" in frame.columns and "hire" in mapping.dates_sent:
        task(dates, "hire_date", raw("hire_date"), False, True)
    refs = mapping.member_references
    if refs.group_policy_number and mapping.group_number:
        task(fixed, "group_policy_number", mapping.group_number)
    reporting = refs.client_reporting_category
    if reporting is not None:
        if reporting.value is not None:
            task(fixed, "reporting_category", reporting.value)
        elif reporting.field is not None and reporting.field in frame.columns:
            task(fold, "reporting_category", raw(reporting.field), 50, text_rule)
    if refs.department and "department" in frame.columns:
        task(fold, "department", raw("department"), 50, text_rule)
    _member_status(task, mapping, raw, frame.columns, rows, order, rel, dates)
    # Factorised once, when the plans were checked (unless the carrier may not see plan codes at all).
    plan = census_plans.reordered(order) if "plan_code" in frame.columns else _Distinct(raw("plan_code"), order)
    task(plans, plan)
    task(levels, raw("coverage_level"))
    task(dates, "coverage_start", raw("coverage_start"), True)
    if "coverage_end" in frame.columns:
        task(dates, "coverage_end", raw("coverage_end"), False)
    policies = {k: v.policy_number for k, v in mapping.plans.items() if v.policy_number}
    if policies:
        task(policy_numbers, plan, policies)
    # Volumes (2100A ICM, 2300 AMT*FK / AMT*P3), each only when the mapping asks for it.
    volumes = mapping.volumes

    def amount(col: str) -> list[tuple[str, pd.Series | Folded]]:
        return [(col, _amounts(raw(col), col, rows, order))]

    contact = mapping.contact
    if contact.phone and "phone" in frame.columns:
        task(digits, "phone", raw("phone"), (10,))
    if contact.email and "email" in frame.columns:
        task(lambda: [("email", _emails(raw("email"), rows, order))])
    if contact.language and "language" in frame.columns:
        task(lambda: [("language", _languages(raw("language"), rows, order))])
    if contact.tobacco_use and "tobacco_use" in frame.columns:
        task(lambda: [("hlh01", _tobacco(raw("tobacco_use"), rows, order))])
    if contact.mailing_address and "mailing_address1" in frame.columns:
        for col, src, max_len in (("mailing_address1", "mailing_address1", 55),
                                  ("mailing_address2", "mailing_address2", 55), ("mailing_city", "mailing_city", 30)):
            task(fold, col, raw(src), max_len, text_rule)
        task(lambda: [("mailing_state", state(raw("mailing_state"))[0][1])])
        task(digits, "mailing_zip", raw("mailing_zip"), (5, 9))
    for k, category in enumerate(mapping.reporting_categories, start=1):
        if category.field in frame.columns:
            task(fold, f"reporting_2750_{k}", raw(category.field), 50, text_rule)
        if category.date_field is not None and category.date_field in frame.columns:
            task(dates, f"reporting_2750_{k}_date", raw(category.date_field), False)
    pcp = mapping.primary_care_provider
    if pcp is not None and "pcp_npi" in frame.columns:
        task(lambda: _primary_care(raw("pcp_npi"), raw("pcp_existing_patient"), plan, set(pcp.plans), rows, order))
    if volumes.salary and "salary" in frame.columns:
        task(_salaries, raw("salary"), raw("salary_frequency"), rows, order)
    for on, col in ((volumes.coverage_amount, "coverage_amount"), (volumes.premium, "premium_amount")):
        if on and col in frame.columns:
            task(amount, col)
    for parts in in_order(tasks, threads, name="enrollment"):
        keep(parts)
    out[ROW_NUMBER] = rows
    line_of = plan.values.map({k: v.insurance_line for k, v in mapping.plans.items()})
    line_codes = pd.factorize(line_of, use_na_sentinel=False)[0][plan.codes]
    counting = _periods_that_count(subscriber_codes[positions], member_codes[positions], line_codes,
                                   out["coverage_start"], out.get("coverage_end"), as_of)
    if counting is not None:
        for col in list(out):
            out[col] = out[col][counting].reset_index(drop=True)
    _eligibility(out, mapping)

    # Arrow-backed text, not Python objects: an object table of the whole view would hold gigabytes of
    # str objects (benchmarks/README.md); the renderer turns one chunk at a time into objects instead.
    table = pd.DataFrame({col: (s if col == ROW_NUMBER else s.astype("str")) for col, s in out.items()})

    options = RenderOptions.for_mapping(mapping, as_of)
    assert_allowlisted([options.source_of(c) or ROW_NUMBER for c in table.columns], mapping)
    starts = int(member_starts(table).sum())
    # Codes number families by first appearance in census order: the last family's first row is the
    # first row with the largest code.
    family_rows = (None if not len(kept) else
                   (int(census_rows[kept[0]]),
                    int(census_rows[kept[int(np.argmax(subscriber_codes == subscriber_codes.max()))]])))
    enrollment = Enrollment(
        table=table,
        member_count=starts,
        subscriber_count=subscriber_count,
        coverage_count=len(table),
        excluded=excluded,
        sanitized=sanitized,
        allowlist=tuple(mapping.allowlist),
        normalised=normalised,
        options=options,
        held_lines=held_lines,
        held_ends=held_ends,
        family_rows=family_rows,
    )
    log.info("feed %s: %d members, %d subscribers, %d coverages, excluded %s", feed.feed_id,
             enrollment.member_count, enrollment.subscriber_count, enrollment.coverage_count, excluded)
    return enrollment


# ---- the view chunk by chunk ----------------------------------------------------------------------


class ChunksOutOfOrder(Exception):
    """A chunk's families come before an earlier chunk's in the view's order (a family's first census row
    left out, the family's rows far apart): the chunks' views concatenated would not be the whole view.
    The caller builds from the whole census instead."""


def build_enrollment_chunks(chunks: Iterable[pd.DataFrame], feed: Feed, mapping: CarrierMapping, *,
                            as_of: date, workers: int | None = None) -> Iterator[Enrollment]:
    """:func:`build_enrollment` of each family-whole chunk of the census (every row of a family in one
    chunk, chunks in the order of their families' first rows, ``row_number`` the census row), in order:
    each is that chunk's slice of the whole census's view, so the parts concatenated are the whole view.

    Raises :class:`ChunksOutOfOrder` when a chunk's families would come before an earlier chunk's
    (families are ordered by their first row the view keeps, chunks by their first row). An error in a
    chunk is raised as it comes; the whole census's build may name another row or rule first (callers
    that must give today's error build from the whole census then: :func:`carrierfeeds.run.stages.build`).
    """
    last: int | None = None
    for chunk in chunks:
        part = build_enrollment(chunk, feed, mapping, as_of=as_of, workers=workers)
        del chunk
        if part.family_rows is not None:
            if last is not None and part.family_rows[0] <= last:
                raise ChunksOutOfOrder(f"a chunk's first family (census row {part.family_rows[0]}) comes before "
                                       f"an earlier chunk's last (census row {last})")
            last = part.family_rows[1]
        yield part
        del part  # not held while the next chunk is mapped


def _summed(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in counts:
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total


def combine_enrollments(parts: Sequence[Enrollment], *, tables: bool = True) -> Enrollment:
    """The whole view from its chunks' views (:func:`build_enrollment_chunks`): tables concatenated (or,
    without ``tables``, the first part's empty table: counts alone), counts summed, held lines merged."""
    if not parts:
        raise ValueError("a view has at least one part")
    first = parts[0]
    # Without tables: a new empty frame of the same columns and dtypes (a slice of a part's table, even
    # an empty one, would keep that part's columns alive).
    table = (pd.concat([p.table for p in parts], ignore_index=True) if tables and len(parts) > 1
             else first.table if tables else
             pd.DataFrame({c: pd.Series([], dtype=t) for c, t in first.table.dtypes.items()}))
    rows = [p.family_rows for p in parts if p.family_rows is not None]
    return Enrollment(
        table=table,
        member_count=sum(p.member_count for p in parts),
        subscriber_count=sum(p.subscriber_count for p in parts),
        coverage_count=sum(p.coverage_count for p in parts),
        excluded=_summed(p.excluded for p in parts),
        sanitized=_summed(p.sanitized for p in parts),
        allowlist=first.allowlist,
        normalised=_summed(p.normalised for p in parts),
        options=first.options,
        held_lines=tuple(sorted({line for p in parts for line in p.held_lines})),
        held_ends=tuple(sorted({end for p in parts for end in p.held_ends})),
        family_rows=(rows[0][0], rows[-1][1]) if rows else None)
