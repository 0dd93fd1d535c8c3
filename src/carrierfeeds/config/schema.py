"""A census schema (``schemas/<schema_id>.yaml``): how one employer's file maps onto the canonical census,
and the plan catalogue validation judges its plan codes by."""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from carrierfeeds.census.columns import CANONICAL_COLUMNS
from carrierfeeds.config.base import _ID, _Model

if TYPE_CHECKING:
    from carrierfeeds.config.feed import Feed
    from carrierfeeds.config.mapping import CarrierMapping

#: Census relationship and gender codes a schema maps the employer's own codes onto.
Relationship = Literal["EE", "SP", "CH", "DP", "SC", "FC", "AC", "WD", "SD", "HD", "XS", "GC", "CD", "OR"]
Gender = Literal["M", "F", "U"]
EmploymentStatusCode = Literal["FT", "PT", "TE", "RT", "AC", "AO", "AU", "L1"]
BenefitStatusCode = Literal["A", "C", "S", "T"]
#: Canonical census event_reason values (INS04 by meaning, see carrierfeeds.x12.codes.MaintenanceReason).
EventReason = Literal["birth", "marriage", "divorce", "death", "adoption", "retirement", "legal_separation",
                      "disability", "cobra", "surviving_spouse", "voluntary_withdrawal", "plan_change",
                      "leave_of_absence_with_benefits", "leave_of_absence_without_benefits",
                      "lay_off_with_benefits", "lay_off_without_benefits", "member_benefit_selection"]


class FixedWidthField(_Model):
    """One field of a fixed-width census record: 1-based ``start`` and ``width`` in characters."""

    column: str = Field(description="canonical census column")
    start: int = Field(ge=1, description="1-based position of the field's first character")
    width: int = Field(ge=1, description="the field's width in characters")

    @field_validator("column")
    @classmethod
    def _canonical(cls, v: str) -> str:
        if v not in CANONICAL_COLUMNS:
            close = difflib.get_close_matches(v, CANONICAL_COLUMNS, n=1)
            raise ValueError(f"unknown canonical column {v!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
        return v


class FixedWidthLayout(_Model):
    """A fixed-width census layout: fields by position; ``header_lines`` leading lines are skipped."""

    fields: tuple[FixedWidthField, ...] = Field(min_length=1)
    header_lines: int = Field(0, ge=0, le=10, description="leading lines skipped before the first record")
    record_length: int | None = Field(None, ge=1, description="when set, every record is exactly this long")

    @model_validator(mode="after")
    def _no_overlap(self) -> FixedWidthLayout:
        spans = sorted((f.start, f.start + f.width, f.column) for f in self.fields)
        for (_, end, a), (start, _, b) in itertools.pairwise(spans):
            if start < end:
                raise ValueError(f"fields {a!r} and {b!r} overlap")
        names = [f.column for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError("a column appears twice")
        if self.record_length is not None and spans[-1][1] - 1 > self.record_length:
            raise ValueError("a field ends after record_length")
        return self


class CensusSchema(_Model):
    """How one employer's file maps onto the canonical census, and which GX suite checks it."""

    schema_id: str = Field(pattern=_ID, description="the schema's id: the file name without .yaml")
    format: Literal["csv", "xlsx", "fixed_width"] = Field(
        "csv", description="csv, xlsx (a workbook's sheet) or fixed_width (with the fixed_width layout)")
    delimiter: str = Field(",", min_length=1, max_length=1, description="csv: the field separator (one character)")
    encoding: Literal["utf-8", "utf-8-sig", "cp1252", "utf-16", "auto"] = Field(
        "utf-8-sig", description="auto: by byte order mark (UTF-8, UTF-16), else strict UTF-8")
    sheet: str | None = Field(None, description="xlsx: the sheet to read; null: the first visible sheet")
    header_row: int = Field(
        1, ge=1, le=100, description="csv and xlsx: the 1-based row holding the headers (rows above it, such as "
                                     "a title, are skipped); findings keep the file's own row numbers")
    fixed_width: FixedWidthLayout | None = Field(None, description="fixed_width: the record layout")
    max_bytes: int = Field(1 << 30, ge=1, description="a census file (or zip member) larger than this is refused")
    allow_zip: bool = Field(False, description="accept a zip holding exactly one census file")
    max_cell_length: int = Field(
        1024, ge=1, le=1 << 20,
        description="a cell (after its surrounding blanks are stripped) longer than this many characters "
                    "makes the file a DataError (rule cell_too_long), before any per-cell check runs")
    columns: dict[str, str] = Field(
        default_factory=dict, description="canonical name -> the employer's header (identity if absent)")
    relationship_codes: dict[str, Relationship] = Field(
        default_factory=lambda: dict[str, Relationship]({"EE": "EE", "SP": "SP", "CH": "CH"}),
        description="the employer's relationship codes (any case) -> canonical EE, SP, CH, ...")
    gender_codes: dict[str, Gender] = Field(
        default_factory=lambda: dict[str, Gender]({"M": "M", "F": "F", "U": "U"}),
        description="the employer's gender codes (any case) -> M, F, U")
    plan_codes: dict[str, str] = Field(
        default_factory=dict, description="the employer's plan name -> canonical plan code (the code the "
                                          "feed's mapping names); a name not listed is kept as it is")
    # ---- employer code tables for coded fields beyond relationship and gender (keys match any case)
    coverage_level_codes: dict[str, str] = Field(
        default_factory=dict, description="the employer's coverage tier -> the canonical tier the mapping's "
                                          "coverage_levels name (EMP, ESP, ECH, FAM, ...)")
    employment_status_codes: dict[str, EmploymentStatusCode] = Field(
        default_factory=dict, description="the employer's employment status -> FT, PT, TE, RT, AC, AO, AU, L1")
    benefit_status_codes: dict[str, BenefitStatusCode] = Field(
        default_factory=dict, description="the employer's benefit status -> A, C, S, T (INS05)")
    event_reason_codes: dict[str, EventReason] = Field(
        default_factory=dict, description="the employer's event -> birth, marriage, divorce, ... (INS04)")
    date_format: str = Field(
        "%Y-%m-%d", description="strftime format of the census's dates (%m/%d/%Y, ...); validation warns when day "
                                "and month may be swapped")
    suite: str = Field(description="Great Expectations suite file in schemas/")
    dependent_age_limit: int = Field(
        26, ge=18, le=30, description="the age at which a child's coverage ends (see dependent_coverage_ends)")
    dependent_coverage_ends: Literal["birthday", "end_of_month", "end_of_year"] = Field(
        "end_of_month", description="the latest day a child's coverage may end at the age limit: the birthday "
                                    "itself, the last day of its month, or the last day of its year")
    salary_frequency_codes: dict[str, str] = Field(
        default_factory=dict, description="the employer's pay-frequency code -> a canonical frequency (the "
                                          "names of IncomeFrequency: ANNUALLY, MONTHLY, ...); matched in any case")
    plans_not_sent: tuple[str, ...] = Field(
        (), description="canonical plan codes the census may hold that no carrier mapping here lists (a plan "
                        "the employer runs elsewhere): known, so their rows are left out, not findings")

    @field_validator("columns")
    @classmethod
    def _canonical_keys(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = [k for k in v if k not in CANONICAL_COLUMNS]
        if unknown:
            raise ValueError(f"unknown canonical column(s) {unknown}")
        return v

    @field_validator("plan_codes")
    @classmethod
    def _plan_codes(cls, v: dict[str, str]) -> dict[str, str]:
        # entries are stripped like the cells they match; a blank one is a typo (a blank cell is missing)
        bad = [k for k, code in v.items() if not k or not code]
        if bad:
            raise ValueError(f"plan names and codes must not be blank: {bad}")
        return v

    @field_validator("salary_frequency_codes")
    @classmethod
    def _salary_frequencies(cls, v: dict[str, str]) -> dict[str, str]:
        from carrierfeeds.x12.codes import IncomeFrequency

        known = {m.name for m in IncomeFrequency}
        bad = {k: code for k, code in v.items() if code.upper() not in known}
        if bad:
            raise ValueError(f"unknown frequency {sorted(bad.values())}; known: {sorted(known)}")
        folded = {k.strip().upper(): code.upper() for k, code in v.items()}
        if len(folded) != len(v):
            raise ValueError("two employer codes differ only in case")
        return folded

    @field_validator("relationship_codes", "gender_codes", "coverage_level_codes", "employment_status_codes",
                     "benefit_status_codes", "event_reason_codes")
    @classmethod
    def _one_code_per_key(cls, v: dict[str, str]) -> dict[str, str]:
        # Keys match census cells in any case, so two keys that differ only in case must agree.
        seen: dict[str, str] = {}
        for key, code in v.items():
            folded = key.strip().upper()
            if not folded or not code:
                raise ValueError("codes must not be blank")
            if seen.setdefault(folded, code) != code:
                raise ValueError(f"keys {folded!r} (in any case) map to two codes")
        return v

    @model_validator(mode="after")
    def _format_needs(self) -> CensusSchema:
        if (self.format == "fixed_width") != (self.fixed_width is not None):
            raise ValueError("fixed_width (the layout) is required with format fixed_width, and only then")
        if self.sheet is not None and self.format != "xlsx":
            raise ValueError("sheet applies to format xlsx only")
        if self.header_row != 1 and self.format == "fixed_width":
            raise ValueError("header_row applies to csv and xlsx; fixed_width skips fixed_width.header_lines")
        return self

    def header_for(self, canonical: str) -> str:
        return self.columns.get(canonical, canonical)


@dataclass(frozen=True)
class PlanCatalogue:
    """The canonical plan codes a feed's census may hold, as validation judges them.

    ``authorised``: the feed's authorised plans (sent to its carrier). ``known``: every code some carrier
    mapping lists, the feed's authorised plans and the schema's ``plans_not_sent``; a known code that is
    not authorised is an expected exclusion (counted by reason), any other code is a finding
    (``unknown_plan``): its rows would otherwise reach no carrier, silently.
    """

    authorised: frozenset[str]
    known: frozenset[str]

    @classmethod
    def for_feed(cls, feed: Feed, schema: CensusSchema, mappings: Iterable[CarrierMapping]) -> PlanCatalogue:
        authorised = frozenset(feed.authorization.plans)
        known = set(authorised) | set(schema.plans_not_sent)
        for mapping in mappings:
            known.update(mapping.plans)
        return cls(authorised=authorised, known=frozenset(known))
