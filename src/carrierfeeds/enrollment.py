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
row_number          census row, for error reports (never rendered)               (row_number)
==================  ===========================================================  ==================

A column whose census field is not on the carrier's allowlist is absent, not blank; so is a column
the mapping does not ask for (REF and DTP options). Every text value in the view is folded to the
carrier's character set (``charset``) and is free of X12 delimiters (see
:mod:`carrierfeeds.x12.sanitize`); how many values each step of that rule changed is
``Enrollment.normalised``, by rule name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Final

import numpy as np
import pandas as pd

from carrierfeeds.census.columns import ROW_NUMBER
from carrierfeeds.config import CarrierMapping, Feed
from carrierfeeds.errors import DataError, FieldNotAllowed, NotAuthorized
from carrierfeeds.x12.codes import (
    EmploymentStatus,
    IndividualRelationship,
    SubscriberIndicator,
)
from carrierfeeds.x12.sanitize import BASIC_UPPER, Charset, TextRule, fold_column, fold_series, fold_text

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
}

_RELATIONSHIP: Final[dict[str, tuple[str, str, int]]] = {
    "EE": (SubscriberIndicator.SUBSCRIBER.value, IndividualRelationship.SELF.value, 0),
    "SP": (SubscriberIndicator.DEPENDENT.value, IndividualRelationship.SPOUSE.value, 1),
    "CH": (SubscriberIndicator.DEPENDENT.value, IndividualRelationship.CHILD.value, 2),
}
_EMPLOYMENT: Final[frozenset[str]] = frozenset(e.value for e in EmploymentStatus)
_TEXT_LIMITS: Final[dict[str, int]] = {"address1": 55, "address2": 55, "city": 30}
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"


@dataclass(frozen=True)
class RenderOptions:
    """What the mapping tells the 834 writer beyond the view's columns.

    ``charset`` every value must fall in (the writer refuses a file holding anything else);
    ``max_members_per_transaction`` splits the interchange into ST/SE sets of whole families;
    ``sources`` census fields of config-dependent columns (``reporting_category``), for the writer's
    own allowlist check.
    """

    charset: Charset = "basic"
    max_members_per_transaction: int | None = None
    sources: tuple[tuple[str, str], ...] = ()

    @classmethod
    def for_mapping(cls, mapping: CarrierMapping) -> RenderOptions:
        reporting = mapping.member_references.client_reporting_category
        sources = (("reporting_category", reporting.field),) if reporting and reporting.field else ()
        return cls(charset=mapping.charset, max_members_per_transaction=mapping.max_members_per_transaction,
                   sources=sources)

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
    ``options`` what the mapping tells the 834 writer.
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

    def source_fields(self) -> list[str]:
        """The census fields the view's columns carry."""
        return sorted({src for col in self.table.columns if (src := self.options.source_of(col))})


def assert_allowlisted(columns: Iterable[str], mapping: CarrierMapping | Iterable[str]) -> None:
    """Raise FieldNotAllowed when any census field in ``columns`` is not on the allowlist."""
    allow = set(mapping.allowlist if isinstance(mapping, CarrierMapping) else mapping)
    extra = sorted(set(columns) - allow - {ROW_NUMBER})
    if extra:
        raise FieldNotAllowed(f"field(s) not on the carrier's allowlist: {extra}",
                              details={"fields": extra})


class _Columns(dict[str, pd.Series]):
    """The view's columns as they are made, each kept as Arrow-backed text at once, so the Python str
    objects of the vectorised steps (fold_series, map) die column by column instead of piling up."""

    def __setitem__(self, key: str, value: pd.Series) -> None:
        keep = value if key == ROW_NUMBER or value.dtype != object else value.astype("str")
        super().__setitem__(key, keep)


def _ccyymmdd(values: pd.Series, column: str, rows: pd.Series, *, required: bool) -> pd.Series:
    """ISO dates to CCYYMMDD; a malformed (or, when required, empty) value is a DataError by row."""
    text = values.astype(str).str.strip()
    empty = text == ""
    ok = text.str.match(_ISO_DATE)
    parsed = pd.to_datetime(text.where(ok & ~empty), format="%Y-%m-%d", errors="coerce")
    bad = (~empty & parsed.isna()) | (empty if required else False)
    if bool(bad.any()):
        raise DataError(f"{int(bad.sum())} value(s) are not ISO dates (YYYY-MM-DD)" +
                        (" or are missing" if required else ""),
                        row=int(rows[bad].iloc[0]), column=column, rule="iso_date",
                        details={"count": int(bad.sum())})
    return text.str.replace("-", "", regex=False)


def _require(frame: pd.DataFrame, column: str, bad: pd.Series, rule: str, what: str) -> None:
    if bool(bad.any()):
        raise DataError(f"{int(bad.sum())} row(s) {what}", row=int(frame.loc[bad, ROW_NUMBER].iloc[0]),
                        column=column, rule=rule, details={"count": int(bad.sum())})


def _eligibility(out: _Columns, mapping: CarrierMapping) -> None:
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


def build_enrollment(census: pd.DataFrame, feed: Feed, mapping: CarrierMapping, *,
                     as_of: date) -> Enrollment:
    """The 834 view of ``census`` for ``feed``'s carrier on ``as_of``; refuses when not authorised."""
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

    frame = census.copy()
    if ROW_NUMBER not in frame.columns:
        frame[ROW_NUMBER] = np.arange(2, len(frame) + 2)
    frame = frame.reset_index(drop=True)
    frame["_order"] = np.arange(len(frame))

    plan = frame["plan_code"].astype(str).str.strip()
    authorised = plan.isin(set(auth.plans))
    mapped = plan.isin(set(mapping.plans))
    excluded = {"plan_not_authorized": int((~authorised).sum()),
                "plan_not_mapped": int((authorised & ~mapped).sum())}
    excluded = {k: v for k, v in excluded.items() if v}
    if excluded.get("plan_not_mapped"):
        log.warning("feed %s: %d authorised row(s) have no plan in mapping %s", feed.feed_id,
                    excluded["plan_not_mapped"], mapping.mapping_id)
    frame = frame.loc[authorised & mapped]

    # Minimum necessary: drop every field the carrier may not see before anything else reads it.
    allow = set(mapping.allowlist)
    frame = frame[[c for c in frame.columns if c in allow or c in (ROW_NUMBER, "_order")]]
    frame = frame.reset_index(drop=True)
    rows = frame[ROW_NUMBER]

    def text(col: str) -> pd.Series:
        return frame[col].astype(str).str.strip() if col in frame.columns else pd.Series(
            [""] * len(frame), index=frame.index, dtype=object)

    out = _Columns()
    sanitized: dict[str, int] = {}
    normalised: dict[str, int] = {}

    def fold(col: str, values: pd.Series, max_len: int, rule: TextRule = BASIC_UPPER) -> pd.Series:
        result = fold_column(values, max_len, rule)
        if result.changed:
            sanitized[col] = result.changed
        for name, n in result.by_rule.items():
            normalised[name] = normalised.get(name, 0) + n
        return result.values

    member_id, subscriber_id = text("member_id"), text("subscriber_id")
    for col, series in (("member_id", member_id), ("subscriber_id", subscriber_id)):
        folded = fold(col, series, 50)
        _require(frame, col, folded == "", "empty_identifier", "have no usable identifier")
        out[col] = folded

    rel = text("relationship").str.upper()
    _require(frame, "relationship", ~rel.isin(set(_RELATIONSHIP)), "relationship_code",
             "have a relationship other than EE/SP/CH")
    out["ins01"] = rel.map({k: v[0] for k, v in _RELATIONSHIP.items()})
    out["ins02"] = rel.map({k: v[1] for k, v in _RELATIONSHIP.items()})
    rel_rank = rel.map({k: v[2] for k, v in _RELATIONSHIP.items()}).astype(int)
    out["ins03"] = pd.Series(mapping.full_file.maintenance_type, index=frame.index, dtype=object)

    if "employment_status" in frame.columns:
        status = text("employment_status").str.upper()
        status = status.where(status.isin(_EMPLOYMENT) & (out["ins01"] == "Y"), "")
        out["employment_status"] = status

    limit = mapping.name_max_length
    names = TextRule(mapping.charset, mapping.name_case)
    text_rule = TextRule(mapping.charset, "upper")
    for col, max_len in (("last_name", mapping.last_name_max_length or min(limit, 60)),
                         ("first_name", mapping.first_name_max_length or min(limit, 35)),
                         ("middle_initial", 1)):
        if col not in frame.columns:
            continue
        folded = fold(col, text(col), max_len, names)
        if col in ("last_name", "first_name"):
            _require(frame, col, folded == "", "empty_after_sanitize",
                     "have a name with no letters or digits left after the delimiter rule")
        out[col] = folded

    if "ssn" in frame.columns:
        ssn = text("ssn").str.replace("-", "", regex=False)
        out["ssn"] = ssn.where(ssn.str.fullmatch(r"\d{9}"), "")
    if "dob" in frame.columns:
        out["dob"] = _ccyymmdd(text("dob"), "dob", rows, required=False)
    if "gender" in frame.columns:
        gender = text("gender").str.upper()
        out["gender"] = gender.where(gender.isin({"M", "F", "U"}), "U")
    for col in ("address1", "address2", "city"):
        if col in frame.columns:
            out[col] = fold(col, text(col), _TEXT_LIMITS[col], text_rule)
    if "state" in frame.columns:
        state = text("state").str.upper()
        out["state"] = state.where(state.str.fullmatch(r"[A-Z]{2}"), "")
    if "zip" in frame.columns:
        zip_code = text("zip").str.replace("-", "", regex=False)
        out["zip"] = zip_code.where(zip_code.str.fullmatch(r"\d{5}(\d{4})?"), "")
    if "hire_date" in frame.columns and "hire" in mapping.dates_sent:
        hire = _ccyymmdd(text("hire_date"), "hire_date", rows, required=False)
        out["hire_date"] = hire.where(out["ins01"] == "Y", "")
    refs = mapping.member_references
    if refs.group_policy_number and mapping.group_number:
        out["group_policy_number"] = pd.Series(fold_text(mapping.group_number, 50), index=frame.index,
                                               dtype=object)
    reporting = refs.client_reporting_category
    if reporting is not None:
        if reporting.value is not None:
            out["reporting_category"] = pd.Series(fold_text(reporting.value, 50), index=frame.index,
                                                  dtype=object)
        elif reporting.field is not None and reporting.field in frame.columns:
            out["reporting_category"] = fold("reporting_category", text(reporting.field), 50, text_rule)
    if refs.department and "department" in frame.columns:
        out["department"] = fold("department", text("department"), 50, text_rule)

    plan = text("plan_code")
    out["hd03"] = plan.map({k: v.insurance_line for k, v in mapping.plans.items()})
    hd04, _ = fold_series(plan.map({k: v.description for k, v in mapping.plans.items()}), 50)
    out["hd04"] = hd04
    level = text("coverage_level").str.upper()
    _require(frame, "coverage_level", ~level.isin(set(mapping.coverage_levels)), "coverage_level",
             "have a coverage level the mapping does not know")
    out["hd05"] = level.map(dict(mapping.coverage_levels))
    out["coverage_start"] = _ccyymmdd(text("coverage_start"), "coverage_start", rows, required=True)
    if "coverage_end" in frame.columns:
        out["coverage_end"] = _ccyymmdd(text("coverage_end"), "coverage_end", rows, required=False)
    policies = {k: v.policy_number for k, v in mapping.plans.items() if v.policy_number}
    if policies:
        out["coverage_policy_number"] = plan.map(policies).fillna("").astype(object)
    _eligibility(out, mapping)
    out[ROW_NUMBER] = rows

    # Arrow-backed text, not Python objects: at 1M members (2.3M rows x 24 columns) an object table
    # held 2.4 GB of str objects; the renderer turns one chunk at a time into objects instead.
    table = pd.DataFrame({col: (s if col == ROW_NUMBER else s.astype("str")) for col, s in out.items()})
    # Families together in order of first appearance, subscriber first, then spouse, then children;
    # a member's coverages adjacent; otherwise census order (all keys are stable positions).
    order = frame["_order"]
    sort_keys = pd.DataFrame({
        "family": order.groupby(out["subscriber_id"]).transform("min"),
        "rank": rel_rank,
        "member": order.groupby(out["member_id"]).transform("min"),
        "order": order,
    })
    positions = np.lexsort((sort_keys["order"].to_numpy(), sort_keys["member"].to_numpy(),
                            sort_keys["rank"].to_numpy(), sort_keys["family"].to_numpy()))
    table = table.iloc[positions].reset_index(drop=True)

    options = RenderOptions.for_mapping(mapping)
    assert_allowlisted([options.source_of(c) or ROW_NUMBER for c in table.columns], mapping)
    member, family = table["member_id"].to_numpy(), table["subscriber_id"].to_numpy()
    # A member is a run of rows with one (member, subscriber) pair: exactly what becomes one Loop 2000.
    starts = int(len(table) > 0) + int(((member[1:] != member[:-1]) | (family[1:] != family[:-1])).sum())
    enrollment = Enrollment(
        table=table,
        member_count=starts,
        subscriber_count=int(table.loc[table["ins01"] == "Y", "member_id"].nunique()),
        coverage_count=len(table),
        excluded=excluded,
        sanitized=sanitized,
        allowlist=tuple(mapping.allowlist),
        normalised=normalised,
        options=options,
    )
    log.info("feed %s: %d members, %d subscribers, %d coverages, excluded %s", feed.feed_id,
             enrollment.member_count, enrollment.subscriber_count, enrollment.coverage_count, excluded)
    return enrollment
