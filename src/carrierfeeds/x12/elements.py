"""Which canonical census column feeds which 834 element, under which mapping setting: a declaration read
from the writers (:mod:`carrierfeeds.enrollment`, :mod:`carrierfeeds.x12.render`, :mod:`carrierfeeds.changes`),
rendered as docs/census-to-834.md and held true by tests/x12/test_x12_field_reference.py.

Each :class:`Flow` is one census column into one 834 element (or a few that carry the same value): its
loop, segment and element, the :class:`Setting` of the carrier mapping that turns it on, the code table
that translates the value, and whether it only appears in change files. Every flow is gated by the
allowlist (a column off it is cut before anything reads it); the identity fields must be on every
allowlist. :func:`census_flows` resolves the declaration for one mapping: the flows that mapping sends.
:func:`render_field_reference` is pure: the declaration in, Markdown out; ``python -m
carrierfeeds.config.reference`` writes it beside docs/reference.md and checks both with one ``--check``.

Why a hand-written table rather than one derived from the writers: the writers are vectorised column
code with no per-element metadata to read; the test renders a census with each column changed and
compares the elements that moved with this table, so the table cannot drift from the bytes unnoticed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Final

from carrierfeeds.census.columns import CANONICAL_COLUMNS, IDENTITY_FIELDS
from carrierfeeds.config import CarrierMapping

#: Loops (and the header table) in the order the file has them, with what each holds.
LOOPS: Final[dict[str, str]] = {
    "header": "Table 1 header (BGN .. N1): totals the mapping asks for",
    "2000": "Loop 2000 member level detail (INS, REF, DTP)",
    "2100A": "Loop 2100A member name (NM1*IL, PER, N3, N4, DMG, ICM, HLH, LUI)",
    "2100B": "Loop 2100B incorrect member name (NM1*70, DMG): what the carrier holds",
    "2100C": "Loop 2100C member mailing address (NM1*31, N3, N4)",
    "2300": "Loop 2300 health coverage (HD, DTP, AMT, REF), one per plan line",
    "2310": "Loop 2310 provider information (LX, NM1*P3): the primary care provider",
    "2750": "Loop 2700/2750 member reporting categories (LX, N1*75, REF, DTP)",
}


@dataclass(frozen=True)
class Setting:
    """The carrier-mapping setting that turns a flow on: ``path`` a dotted field of
    :class:`~carrierfeeds.config.CarrierMapping` ("" always on) that is on when truthy, or for
    ``member_dates`` when ``value`` is among the dates the carrier gets (``CarrierMapping.dates_sent``)."""

    path: str = ""
    value: str | None = None

    def is_on(self, mapping: CarrierMapping) -> bool:
        if not self.path:
            return True
        if self.path == "member_dates":
            return self.value in mapping.dates_sent
        values = _values_at(mapping, self.path)
        return bool(values) and all(bool(v) for v in values)

    @property
    def text(self) -> str:
        if not self.path:
            return "always"
        return f"`{self.path}: {self.value}`" if self.value is not None else f"`{self.path}`"


ALWAYS: Final[Setting] = Setting()


def _values_at(obj: object, path: str) -> list[object]:
    """The values at a dotted ``path`` of ``obj``; a tuple of models on the way is read item by item; a
    None or an empty tuple ends that branch (no value)."""
    current: list[object] = [obj]
    for name in path.split("."):
        nxt: list[object] = []
        for item in current:
            value = getattr(item, name)
            if isinstance(value, tuple) and not all(isinstance(v, str) for v in value):
                nxt.extend(value)
            elif value is not None and value != ():
                nxt.append(value)
        current = nxt
    return current


@dataclass(frozen=True)
class Flow:
    """One census column into the 834: ``elements`` of ``segment`` (tag and qualifier, as ``REF*0F``)
    in ``loop`` carry its value, written when ``setting`` is on.

    ``column`` is "" when the mapping names the column (``named_by``, a dotted mapping field such as
    ``reporting_categories.field``). ``code_table`` says what translates the census value into the
    element's code; ``change_files`` flows appear only in change files (:mod:`carrierfeeds.changes`);
    ``held`` flows carry the value the carrier holds (the last delivered snapshot), not this census's;
    ``decides`` are elements, or whole segments (``"2000 REF*23"``), the column's value decides are written
    at all without carrying it;
    ``default`` is what the element holds when the flow is off ("" when it is not written).
    """

    column: str
    loop: str
    segment: str
    elements: tuple[str, ...]
    setting: Setting = ALWAYS
    code_table: str = ""
    note: str = ""
    named_by: str = ""
    change_files: bool = False
    held: bool = False
    decides: tuple[str, ...] = ()
    default: str = ""

    @property
    def refs(self) -> tuple[str, ...]:
        """Each element as ``"<loop> <segment> <element>"`` (``"2100A NM1*IL NM103"``)."""
        return tuple(f"{self.loop} {self.segment} {e}" for e in self.elements)

    def covers(self, ref: str) -> bool:
        """Whether ``ref`` is one of this flow's elements or lies in a segment (or is an element) it decides."""
        return ref in self.refs or any(ref == d or ref.startswith(d + " ") for d in self.decides)

    @property
    def allowlist(self) -> str:
        """``required`` for an identity field (every allowlist holds it), else ``gated``."""
        return "required" if self.column in IDENTITY_FIELDS else "gated"


_REL = "`relationship_codes` (census relationship -> INS02)"
_SUBSCRIBER_ONLY = ("2000 INS INS08", "2000 DTP*336", "2000 DTP*337")

#: Every flow of a canonical census column into the 834, loop by loop.
FLOWS: Final[tuple[Flow, ...]] = (
    # ---- header
    Flow("relationship", "header", "QTY*ET", ("QTY02",), Setting("file_header.control_totals"),
         note="count of employees (INS01 Y) in the transaction set, when `ET` is listed"),
    Flow("relationship", "header", "QTY*DT", ("QTY02",), Setting("file_header.control_totals"),
         note="count of dependents (INS01 N) in the transaction set, when `DT` is listed"),
    # ---- Loop 2000
    Flow("relationship", "2000", "INS", ("INS01",), code_table=_REL,
         note="Y when INS02 is 18 (EE), else N; decides REF*23 (dependents) and INS08, DTP*336, DTP*337 "
              "(subscribers)",
         decides=("2000 REF*23", *_SUBSCRIBER_ONLY)),
    Flow("relationship", "2000", "INS", ("INS02",), code_table=_REL,
         note="a relationship the mapping does not list is refused by row"),
    Flow("relationship", "2000", "INS", ("INS10",), Setting("member_status.handicap"),
         note="HD (handicapped dependent) is sent as INS10 Y whatever `handicap` says"),
    Flow("event_reason", "2000", "INS", ("INS04",), Setting("member_status.event_reasons"),
         code_table="`EVENT_REASONS` (birth, marriage, ... -> x12.codes.MaintenanceReason)",
         note="on an add, term, reinstatement, coverage or status change; else the diff's reason",
         change_files=True),
    Flow("employment_status", "2000", "INS", ("INS04",), code_table="TE -> 08, else 07",
         note="a term: 08 termination of employment when the subscriber is TE, else 07",
         change_files=True),
    Flow("benefit_status", "2000", "INS", ("INS05",), Setting("member_status.benefit_status"),
         code_table="x12.codes.BenefitStatus (A C S T)", note="A when off or empty", default="A"),
    Flow("medicare_plan", "2000", "INS", ("INS06-1",), Setting("member_status.medicare"),
         code_table="x12.codes.MedicarePlan (A B C D E)"),
    Flow("medicare_reason", "2000", "INS", ("INS06-2",), Setting("member_status.medicare"),
         code_table="x12.codes.MedicareEligibilityReason (0 1 2)", note="only with a Medicare plan"),
    Flow("cobra_event", "2000", "INS", ("INS07",), Setting("member_status.cobra"),
         code_table="x12.codes.CobraQualifyingEvent (1-10, ZZ)"),
    Flow("employment_status", "2000", "INS", ("INS08",),
         code_table="x12.codes.EmploymentStatus: FT PT TE RT, every TR3 code under "
                    "`member_status.employment_codes: all`; others left out",
         note="subscribers only"),
    Flow("student_status", "2000", "INS", ("INS09",), Setting("member_status.student"),
         code_table="x12.codes.StudentStatus (F P N)"),
    Flow("handicap", "2000", "INS", ("INS10",), Setting("member_status.handicap"),
         code_table="x12.codes.YesNo (Y N)"),
    Flow("death_date", "2000", "INS", ("INS12",), Setting("member_status.death"),
         note="CCYYMMDD, INS11 D8 with it"),
    Flow("subscriber_id", "2000", "REF*0F", ("REF02",), note="every member: the employee's id"),
    Flow("", "2000", "REF*17", ("REF02",), Setting("member_references.client_reporting_category"),
         named_by="member_references.client_reporting_category.field",
         note="upper-cased, folded, at most 50; or a fixed `value` (no census column)"),
    Flow("member_id", "2000", "REF*23", ("REF02",), note="dependents only (INS01 N)"),
    Flow("department", "2000", "REF*DX", ("REF02",), Setting("member_references.department"),
         note="upper-cased, folded, at most 50"),
    Flow("event_date", "2000", "DTP*303", ("DTP03",), Setting("member_status.maintenance_effective"),
         note="CCYYMMDD; the run's day when event_date is empty or not on the allowlist", change_files=True),
    Flow("hire_date", "2000", "DTP*336", ("DTP03",), Setting("member_dates", "hire"),
         note="subscribers only; `member_dates` null sends it when hire_date is on the allowlist"),
    Flow("employment_end_date", "2000", "DTP*337", ("DTP03",), Setting("member_status.employment_end"),
         note="subscribers only"),
    Flow("cobra_begin", "2000", "DTP*340", ("DTP03",), Setting("member_status.cobra")),
    Flow("cobra_end", "2000", "DTP*341", ("DTP03",), Setting("member_status.cobra")),
    Flow("coverage_start", "2000", "DTP*356", ("DTP03",), Setting("member_dates", "eligibility_begin"),
         note="the member's earliest coverage start"),
    Flow("coverage_end", "2000", "DTP*357", ("DTP03",), Setting("member_dates", "eligibility_end"),
         note="the member's latest coverage end, once every coverage ends"),
    # ---- Loop 2100A
    Flow("last_name", "2100A", "NM1*IL", ("NM103",),
         note="upper-cased (`name_case`), folded to `charset`, cut to `last_name_max_length`"),
    Flow("first_name", "2100A", "NM1*IL", ("NM104",),
         note="upper-cased (`name_case`), folded to `charset`, cut to `first_name_max_length`"),
    Flow("middle_initial", "2100A", "NM1*IL", ("NM105",), note="one character"),
    Flow("ssn", "2100A", "NM1*IL", ("NM109",), note="nine digits (hyphens dropped); NM108 34 with it"),
    Flow("phone", "2100A", "PER*IP", ("PER04",), Setting("contact.phone"), note="ten digits; PER03 TE"),
    Flow("email", "2100A", "PER*IP", ("PER04", "PER06"), Setting("contact.email"),
         note="PER05 EM and PER06 after a phone, else PER03 EM and PER04"),
    Flow("address1", "2100A", "N3", ("N301",), note="N3/N4 only with address1 and city; folded, at most 55"),
    Flow("address2", "2100A", "N3", ("N302",), note="folded, at most 55"),
    Flow("city", "2100A", "N4", ("N401",), note="folded, at most 30"),
    Flow("state", "2100A", "N4", ("N402",), note="a two-letter code, else left out"),
    Flow("zip", "2100A", "N4", ("N403",), note="five or nine digits, else left out"),
    Flow("dob", "2100A", "DMG", ("DMG02",), note="CCYYMMDD; DMG only with a birth date"),
    Flow("gender", "2100A", "DMG", ("DMG03",), code_table="M F U", note="U when unknown or not allowlisted"),
    Flow("salary_frequency", "2100A", "ICM", ("ICM01",), Setting("volumes.salary"),
         code_table="x12.codes.IncomeFrequency, by name (ANNUALLY -> 7, ...)", note="only with a salary"),
    Flow("salary", "2100A", "ICM", ("ICM02",), Setting("volumes.salary"), note="an amount, $ and , dropped"),
    Flow("tobacco_use", "2100A", "HLH", ("HLH01",), Setting("contact.tobacco_use"),
         code_table="Y -> T, N -> N, U -> U (x12.codes.HealthRelated)"),
    Flow("language", "2100A", "LUI*LE", ("LUI02",), Setting("contact.language"),
         note="an ISO 639 code, upper-cased"),
    # ---- Loop 2100B: an identity correction sends what the carrier holds
    *(Flow(column, "2100B", segment, (element,), Setting("member_status.identity_corrections"),
           note=note, change_files=True, held=True)
      for column, segment, element, note in (
          ("last_name", "NM1*70", "NM103", "with every identity correction"),
          ("first_name", "NM1*70", "NM104", "with every identity correction"),
          ("middle_initial", "NM1*70", "NM105", "with every identity correction"),
          ("ssn", "NM1*70", "NM109", "NM108 34 with it"),
          ("dob", "DMG", "DMG02", "when the birth date or gender changed"),
          ("gender", "DMG", "DMG03", "when the birth date or gender changed"))),
    # ---- Loop 2100C
    *(Flow(column, "2100C", segment, (element,), Setting("contact.mailing_address"), note=note)
      for column, segment, element, note in (
          ("mailing_address1", "N3", "N301", "NM1*31 N3 N4 only with mailing_address1 and mailing_city"),
          ("mailing_address2", "N3", "N302", ""),
          ("mailing_city", "N4", "N401", ""),
          ("mailing_state", "N4", "N402", "a two-letter code, else left out"),
          ("mailing_zip", "N4", "N403", "five or nine digits, else left out"))),
    # ---- Loop 2300
    Flow("plan_code", "2300", "HD", ("HD03",), code_table="`plans` (insurance_line)",
         note="a plan not authorised by the feed or not in `plans` is not sent; decides Loop 2310 (the plans "
              "`primary_care_provider.plans` names)", decides=("2310",)),
    Flow("plan_code", "2300", "HD", ("HD04",), code_table="`plans` (description)"),
    Flow("coverage_level", "2300", "HD", ("HD05",), code_table="`coverage_levels`"),
    Flow("coverage_start", "2300", "DTP*348", ("DTP03",), note="CCYYMMDD"),
    Flow("coverage_end", "2300", "DTP*349", ("DTP03",), note="CCYYMMDD, when the coverage ends"),
    Flow("coverage_amount", "2300", "AMT*FK", ("AMT02",), Setting("volumes.coverage_amount")),
    Flow("premium_amount", "2300", "AMT*P3", ("AMT02",), Setting("volumes.premium")),
    Flow("plan_code", "2300", "REF*1L", ("REF02",), code_table="`plans` (policy_number)",
         note="when the plan has a policy number"),
    # ---- Loop 2310
    Flow("pcp_npi", "2310", "NM1*P3", ("NM109",), Setting("primary_care_provider"),
         note="on the plans `primary_care_provider.plans` names; NM108 XX"),
    Flow("pcp_existing_patient", "2310", "NM1*P3", ("NM110",), Setting("primary_care_provider"),
         code_table="Y -> 25, N -> 26, empty -> 72 (x12.codes.ProviderRelationship)", note="only with an NPI"),
    # ---- Loop 2700/2750
    Flow("", "2750", "REF", ("REF02",), Setting("reporting_categories"), named_by="reporting_categories.field",
         note="REF01 the category's `qualifier`, after N1*75 with its `name`; upper-cased, folded, at most 50"),
    Flow("", "2750", "DTP*007", ("DTP03",), Setting("reporting_categories"),
         named_by="reporting_categories.date_field", note="CCYYMMDD, with the category's value"),
)

#: Canonical columns that decide what is sent without appearing in the file, and how.
NOT_SENT: Final[dict[str, str]] = {
    "eoi_pending": "`volumes.eoi_hold`: a line whose eoi_pending is Y (yes, true, 1) is held back, its "
                   "Loop 2300 not sent, until evidence of insurability is approved",
}


def census_flows(mapping: CarrierMapping) -> tuple[Flow, ...]:
    """The flows ``mapping`` sends: setting on, census column on its allowlist, a named column resolved."""
    allow = set(mapping.allowlist)
    return tuple(flow for flow in _resolved(mapping) if flow.setting.is_on(mapping) and flow.column in allow)


def _resolved(mapping: CarrierMapping) -> Iterator[Flow]:
    for flow in FLOWS:
        if not flow.named_by:
            yield flow
            continue
        for column in dict.fromkeys(_values_at(mapping, flow.named_by)):
            if isinstance(column, str):
                yield replace(flow, column=column)


def declared_columns() -> frozenset[str]:
    """Canonical columns a flow names itself (a named flow may carry any of them)."""
    return frozenset(flow.column for flow in FLOWS if flow.column)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_field_reference() -> str:
    """docs/census-to-834.md: the flows by loop, one table each, and the columns no element carries."""
    parts = [
        "# Census to 834 field reference",
        "",
        "Generated from `src/carrierfeeds/x12/elements.py` by `python -m carrierfeeds.config.reference`; do "
        "not edit by hand (a test fails when it is not current, and another renders a census with each "
        "column changed and checks that exactly the elements below move).",
        "",
        "Which canonical census column (`src/carrierfeeds/census/columns.py`) feeds which element of the "
        "005010X220A1 834, under which setting of the carrier's mapping (`mappings/<mapping_id>.yaml`, "
        "see [reference.md](reference.md#carriermapping)). **allowlist**: every column is cut before "
        "anything reads it unless the mapping's `allowlist` holds it (*gated*); the identity fields must be "
        "on every allowlist (*required*). A setting that needs its columns is refused at load when they are "
        "not on the allowlist. **code table**: what turns the census value into the element's code; "
        "free text is folded to the mapping's `charset` and freed of X12 delimiters "
        "(`carrierfeeds.x12.sanitize`). Names in backticks are mapping fields.",
        "",
        "In a change file (`mode: changes`), INS03 and HD01 (021 add, 001 change, 024 term, 025 reinstate) "
        "and INS04 unless the census gives the event come from the diff against what the carrier holds "
        "(`carrierfeeds.changes`): any column below that changes makes its member a change. Rows marked "
        "*change files* appear only there; *carrier's value* rows carry the value from the last delivered "
        "census (the snapshot), not this one's.",
        "",
    ]
    for loop, title in LOOPS.items():
        flows = [f for f in FLOWS if f.loop == loop]
        if not flows:
            continue
        parts += [f"## {title}", "",
                  "| census column | 834 element | setting | allowlist | code table | notes |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for f in flows:
            column = f"`{f.column}`" if f.column else f"the column `{f.named_by}` names"
            element = f"{f.loop} {f.segment} " + ", ".join(f.elements) if loop != "header" else \
                f"{f.segment} " + ", ".join(f.elements)
            notes = "; ".join(n for n in ("change files" if f.change_files else "",
                                          "carrier's value" if f.held else "", f.note) if n)
            allowlist = f.allowlist if f.column else "gated"
            parts.append(f"| {_cell(column)} | {_cell(element)} | {_cell(f.setting.text)} | {allowlist} | "
                         f"{_cell(f.code_table)} | {_cell(notes)} |")
        parts.append("")
    unused = [c for c in CANONICAL_COLUMNS if c not in declared_columns()]
    parts += ["## Columns no element carries", "",
              "| census column | what it does |", "| --- | --- |"]
    parts += [f"| `{c}` | {_cell(NOT_SENT.get(c, 'only as a column a mapping names (above)'))} |" for c in unused]
    parts.append("")
    return "\n".join(parts)
