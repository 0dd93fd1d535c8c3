"""Validate a canonical census (GX suite + cross-row rules) into a PHI-free report, and apply a policy.

Findings name a row number (as the employer sees it), a member token, a column and a rule, with a plain
English message; never a cell value. Great Expectations results carry cell values, so they are reduced
to (row numbers, column, rule) inside :mod:`carrierfeeds.validation.gx` and nothing else of them leaves it.

The GX suite file is what users edit and stays the source of truth. Its common expectation types (column
exists, not null, matches / does not match a regex, in a set, pair A >= B) are evaluated as vectorised
masks with GX's own pandas semantics (:mod:`~carrierfeeds.validation.masks`), without importing GX or
letting it copy and hash the whole frame; any other type or option in the suite runs through GX itself.
A test runs both ways on dirty censuses and requires the same findings (tests/validation/).

Modules: ``report`` (what comes out), ``suite`` (reading the suite file), ``columns`` (the shared column
codes), ``masks`` and ``gx`` (the two suite engines), ``rules`` (cross-row, plan and build rules),
``findings`` (rows to findings), ``policy`` (reject / quarantine).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from carrierfeeds.census.columns import READER_WARNINGS, ROW_NUMBER
from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.config import CensusSchema, PlanCatalogue
from carrierfeeds.threads import thread_count
from carrierfeeds.validation.columns import EncodedColumns
from carrierfeeds.validation.findings import to_findings
from carrierfeeds.validation.gx import check_suite
from carrierfeeds.validation.masks import run_suite
from carrierfeeds.validation.policy import apply_policy
from carrierfeeds.validation.report import (
    CODE_COLUMNS,
    CODE_DISTINCT_MAX,
    HEADER_ROW,
    ColumnCodes,
    Finding,
    PolicyOutcome,
    ValidationReport,
    shows_as_code,
)
from carrierfeeds.validation.rules import CROSS_ROW_COLUMNS, CarrierRules, build_rules, cross_row_rules, plan_rule
from carrierfeeds.validation.suite import encoded_by_suite, load_suite

__all__ = ["HEADER_ROW", "CarrierRules", "ColumnCodes", "Finding", "PolicyOutcome", "ValidationReport",
           "apply_policy", "check_suite", "validate_census", "validate_census_coded"]

log = logging.getLogger(__name__)


def validate_census(census: pd.DataFrame, suite_path: Path, schema: CensusSchema,
                    tokenizer: MemberTokenizer, *, as_of: date, source_name: str,
                    workers: int | None = None, plans: PlanCatalogue | None = None,
                    carrier: CarrierRules | None = None) -> ValidationReport:
    """Run the suite at ``suite_path`` and the cross-row rules over ``census``; collect every finding.

    ``plans`` (the feed's :class:`~carrierfeeds.config.PlanCatalogue`; every feed run, ``validate`` and
    ``preview`` pass it) adds the plan rule: a plan code no carrier mapping knows and the feed does not
    authorise is a finding (``unknown_plan``), a known one the feed does not authorise is counted in
    ``excluded``. Without it plan codes are not judged.

    ``carrier``: what the feed's carrier mapping makes of the rows (:class:`CarrierRules`); with it the
    report also holds every row the build would refuse, so a census validation accepts is never refused
    by the build. The columns the rules read are encoded on ``workers`` threads first (default: the CPUs
    this process may use, at most 4); the report and any error do not depend on ``workers``."""
    report, _ = validate_census_coded(census, suite_path, schema, tokenizer, as_of=as_of,
                                      source_name=source_name, workers=workers, plans=plans, carrier=carrier)
    return report


def validate_census_coded(census: pd.DataFrame, suite_path: Path, schema: CensusSchema,
                          tokenizer: MemberTokenizer, *, as_of: date, source_name: str,
                          workers: int | None = None, plans: PlanCatalogue | None = None,
                          carrier: CarrierRules | None = None, show_codes: bool = True,
                          ) -> tuple[ValidationReport, dict[str, ColumnCodes]]:
    """:func:`validate_census`, and the columns it factorised on the way (see :class:`ColumnCodes`) by
    name: the pipeline writes the accepted rows' low-cardinality columns as Arrow dictionaries from them
    instead of hashing them again (:mod:`carrierfeeds.census.accepted`).

    ``show_codes`` False: no finding shows its code (a chunk of a census: whether a code column shows
    them depends on the whole file; :mod:`carrierfeeds.validation.chunked` decides)."""
    warnings: list[str] = list(census.attrs.get(READER_WARNINGS, ()))
    if ROW_NUMBER not in census.columns:
        census = census.assign(**{ROW_NUMBER: np.arange(2, len(census) + 2, dtype=np.int64)})
        warnings.append("the census had no row numbers; rows are numbered from 2 in frame order")
    columns = EncodedColumns(census)
    started = time.perf_counter()
    cross_row = all(c in census.columns for c in CROSS_ROW_COLUMNS)
    columns.encode([*encoded_by_suite(load_suite(suite_path)),
                    *((*CROSS_ROW_COLUMNS, "hire_date") if cross_row else ())],
                   workers=thread_count(workers), joint=("subscriber_id", "member_id") if cross_row else None)
    raws, suite_warnings = run_suite(census, suite_path, columns=columns)
    warnings += suite_warnings
    gx_s = time.perf_counter() - started
    started = time.perf_counter()
    raws += cross_row_rules(census, schema, as_of, columns=columns)
    excluded: dict[str, int] = {}
    if plans is not None and "plan_code" in census.columns:
        plan_raws, excluded = plan_rule(columns.coded("plan_code"), plans,
                                         census[ROW_NUMBER].to_numpy(dtype=np.int64))
        raws += plan_raws
    raws += build_rules(census, columns, carrier, raws)
    cross_s = time.perf_counter() - started

    empty = pd.Series("", index=census.index, dtype="str")
    row_numbers = census[ROW_NUMBER].to_numpy(dtype=np.int64)

    findings, rows, rule_counts = to_findings(
        raws, row_numbers, columns.coded("member_id") if "member_id" in census.columns else None, tokenizer)
    if show_codes:
        findings = _with_codes(findings, census, columns)
    failed_mask = np.isin(row_numbers, np.unique(rows[rows != HEADER_ROW]))
    # distinct member ids (not blank) and families, from the codes the rules already made
    if "member_id" in census.columns:
        member_codes = columns.coded("member_id")
        members = len(member_codes.uniques) - (member_codes.blank >= 0)
    else:
        members = 0
    if "subscriber_id" in census.columns:
        family_codes = columns.coded("subscriber_id")
        families = len(family_codes.uniques)
        failed_families = int(np.count_nonzero(np.bincount(family_codes.codes[failed_mask],
                                                           minlength=families)))
    else:
        families, failed_families = int(empty.nunique()), int(empty[failed_mask].nunique())
    report = ValidationReport(
        source_name=source_name, rows=len(census), members=members, families=families,
        failed_rows=int(failed_mask.sum()), failed_families=failed_families, findings=tuple(findings),
        rule_counts=rule_counts, warnings=tuple(warnings), excluded=excluded,
        headers={c: h for c, h in schema.columns.items() if h != c},
        header_row=schema.header_row if schema.format != "fixed_width" else 1)
    log.info("%s: validated %d rows (suite %.2fs, cross-row %.2fs): %d findings in %d rows, %d families",
             source_name, report.rows, gx_s, cross_s, len(findings), report.failed_rows,
             report.failed_families)
    return report, columns.shared()



#: Personal text fields whose values a shown code must never equal: a shifted column in a small file could
#: otherwise put a surname or a street under a code header, few and code-shaped.
_PERSONAL_TEXT = ("last_name", "first_name", "middle_initial", "address1", "address2", "city", "email",
                  "mailing_address1", "mailing_address2", "mailing_city", "department")


def _personal_texts(census: pd.DataFrame) -> set[str]:
    """Every distinct value of the census's personal text fields, trimmed and upper-cased."""
    seen: set[str] = set()
    for column in _PERSONAL_TEXT:
        if column in census.columns:
            values = census[column]
            if isinstance(values.dtype, pd.CategoricalDtype):  # a coded census: its distinct texts
                values = pd.Series(values.cat.categories)
            seen.update(values.astype("str").str.strip().str.upper().unique().tolist())
    seen.discard("")
    return seen


def _with_codes(findings: list[Finding], census: pd.DataFrame, columns: EncodedColumns) -> list[Finding]:
    """``findings`` with the cell shown on those in a code column (:data:`CODE_COLUMNS`) whose text looks
    like a code (:func:`shows_as_code`), and only while the column holds few distinct values: a column
    with many is not holding codes in this file (shifted, or a personal field under a code header)."""
    wanted = [i for i, f in enumerate(findings) if f.column in CODE_COLUMNS and f.row != HEADER_ROW]
    if not wanted:
        return findings
    positions = pd.Index(census[ROW_NUMBER].to_numpy(dtype=np.int64)).get_indexer(
        np.array([findings[i].row for i in wanted], dtype=np.int64))
    out = list(findings)
    shown: dict[str, list[bool]] = {}
    personal: set[str] | None = None
    for i, at in zip(wanted, positions, strict=True):
        finding = findings[i]
        if at < 0 or finding.column not in census.columns:
            continue
        coded = columns.coded(finding.column)
        if finding.column not in shown:
            few = len(coded.uniques) <= CODE_DISTINCT_MAX and len(coded.uniques) < max(len(census), 2)
            if personal is None:
                personal = _personal_texts(census)
            shown[finding.column] = [few and shows_as_code(str(t)) and str(t).strip().upper() not in personal
                                     for t in coded.uniques.tolist()]
        code = int(coded.codes[at])
        if shown[finding.column][code]:
            out[i] = dataclasses.replace(finding, value=str(coded.uniques.iloc[code]))
    return out
