"""Validate a census chunk by chunk (families whole, see census.chunks) into the report and policy outcome
validating it whole gives, handing each chunk's accepted rows on as an Arrow table.

Every rule is answered within a chunk (census.chunks cuts only where no rule reaches across), so the
report is the chunks' reports put together: findings merged in (row, column, rule) order (a finding on
the header row comes from every chunk, and counts once), counts added up (families, members and failing
families never span chunks). What needs the whole census is taken from it: the reader's warnings, and
which code columns show their codes (few distinct texts across the file, none a personal text anywhere).
The policy's outcome is each chunk's quarantine put together, unless the whole report rejects the file.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from carrierfeeds.census.columns import ROW_NUMBER
from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.config import CensusSchema, PlanCatalogue, ValidationPolicy
from carrierfeeds.validation.policy import apply_policy
from carrierfeeds.validation.report import (
    CODE_COLUMNS,
    CODE_DISTINCT_MAX,
    HEADER_ROW,
    ColumnCodes,
    Finding,
    ValidationReport,
    shows_as_code,
)
from carrierfeeds.validation.rules import CarrierRules
from carrierfeeds.validation.suite import load_suite, suite_fast, vectorisable

log = logging.getLogger(__name__)

_QUARANTINE = ValidationPolicy(policy="quarantine")


@dataclass(frozen=True)
class ChunkedOutcome:
    """The report and the policy's outcome of a census validated in chunks (:func:`validate_chunks`): as
    :class:`~carrierfeeds.validation.report.PolicyOutcome`, without the accepted rows, which went to
    ``on_accepted`` chunk by chunk (to be discarded when ``rejected``)."""

    report: ValidationReport
    rejected: bool
    reason: str | None
    held_back_families: int
    held_back_members: int
    held_back_member_ids: frozenset[str]
    accepted_rows: int


def suite_by_rows(suite_path: Path) -> bool:
    """Whether every expectation of the suite is a rule of each row alone (the vectorised ones): a
    suite with any other runs through GX, whose expectations may read the whole column, so it is
    validated as one chunk."""
    data = load_suite(suite_path)
    return suite_fast(data) and all(vectorisable(e) for e in data["expectations"])


def validate_chunks(chunks: Iterable[pd.DataFrame], suite_path: Path, schema: CensusSchema,
                    tokenizer: MemberTokenizer, *, as_of: date, source_name: str, rows: int,
                    reader_warnings: list[str], code_texts: dict[str, list[str] | None],
                    policy: ValidationPolicy,
                    on_accepted: Callable[[pd.DataFrame, Mapping[str, ColumnCodes], np.ndarray | None, int], None],
                    plans: PlanCatalogue | None = None, carrier: CarrierRules | None = None) -> ChunkedOutcome:
    """Validate each chunk of a census of ``rows`` rows (``validate_census_coded``), apply the policy, and
    hand each chunk's accepted rows to ``on_accepted``: the accepted frame, the chunk's column codes, the
    accepted rows' positions in the chunk and the chunk's rows (``census.accepted.AcceptedWriter.
    add_accepted`` makes the accepted file's table of them: the pure core writes nothing).

    ``reader_warnings`` and ``code_texts`` (per code column its distinct texts across the census, None
    for more than a report shows) are the whole file's, from the read (census.chunks.CensusChunks)."""
    from carrierfeeds.validation import validate_census_coded

    candidates = {c: texts for c, texts in code_texts.items()
                  if texts is not None and len(texts) <= CODE_DISTINCT_MAX and len(texts) < max(rows, 2)}
    keys = {str(t).strip().upper() for texts in candidates.values() for t in texts}
    personal: set[str] = set()
    findings: list[Finding] = []
    suite_warnings: list[str] | None = None
    totals = dict.fromkeys(("rows", "members", "families", "failed_rows", "failed_families"), 0)
    excluded: dict[str, int] = {}
    held_families = held_members = accepted_rows = 0
    held_ids: set[str] = set()
    template: ValidationReport | None = None
    for chunk in chunks:
        report, codes = validate_census_coded(chunk, suite_path, schema, tokenizer, as_of=as_of,
                                              source_name=source_name, plans=plans, carrier=carrier,
                                              show_codes=False)
        template = template or report
        if suite_warnings is None:
            suite_warnings = list(report.warnings)
        findings += _tentative_codes(report.findings, chunk, candidates)
        if keys - personal:
            personal |= _personal_hits(chunk, keys - personal)
        for name in totals:
            totals[name] += getattr(report, name)
        for reason, n in report.excluded.items():
            excluded[reason] = excluded.get(reason, 0) + n
        if any(f.row == HEADER_ROW for f in report.findings):
            continue  # the whole file is rejected: nothing of it goes on
        outcome = apply_policy(chunk, report, _QUARANTINE)
        held_families += outcome.held_back_families
        held_members += outcome.held_back_members
        held_ids |= outcome.held_back_member_ids
        if len(outcome.accepted):
            accepted_rows += len(outcome.accepted)
            on_accepted(outcome.accepted, codes, outcome.rows, len(chunk))
            del outcome, codes
    if template is None:
        raise ValueError("validate_chunks needs at least one chunk")
    merged = _merged(findings, personal)
    counts: dict[str, int] = {}
    for f in merged:
        counts[f.rule] = counts.get(f.rule, 0) + 1
    report = dataclasses.replace(
        template, rows=totals["rows"], members=totals["members"], families=totals["families"],
        failed_rows=totals["failed_rows"], failed_families=totals["failed_families"], findings=tuple(merged),
        rule_counts={rule: counts[rule] for rule in sorted(counts)},
        warnings=tuple([*reader_warnings, *(suite_warnings or [])]), excluded=excluded)
    why = _rejection(report, policy, accepted_rows)
    if why is not None:
        return ChunkedOutcome(report=report, rejected=True, reason=why, held_back_families=report.families,
                              held_back_members=report.members, held_back_member_ids=frozenset(),
                              accepted_rows=0)
    return ChunkedOutcome(report=report, rejected=False, reason=None, held_back_families=held_families,
                          held_back_members=held_members, held_back_member_ids=frozenset(held_ids),
                          accepted_rows=accepted_rows)


def _rejection(report: ValidationReport, policy: ValidationPolicy, accepted_rows: int) -> str | None:
    """Why the policy rejects the whole census, as :func:`apply_policy` words it; None when it does not."""
    if report.ok:
        return None
    if any(f.row == HEADER_ROW for f in report.findings):
        return "the file as a whole failed a rule (for example a missing column)"
    if policy.policy == "reject":
        return f"{len(report.findings)} finding(s) in {report.failed_rows} row(s); policy is reject"
    if policy.policy == "threshold" and report.families:
        pct = report.failed_families / report.families * 100
        if pct > policy.threshold_pct:
            return f"{pct:.2f}% of families failed, above the {policy.threshold_pct}% threshold"
    if not accepted_rows:
        return "every family failed validation; nothing left to send"
    return None


def _personal_hits(chunk: pd.DataFrame, keys: set[str]) -> set[str]:
    """Those of ``keys`` (texts trimmed and upper-cased) that a personal text field of ``chunk`` holds
    (validation's ``_PERSONAL_TEXT``): a code equal to one is never shown."""
    from carrierfeeds.validation import _PERSONAL_TEXT

    wanted = pd.Series(sorted(keys), dtype="str")
    hits: set[str] = set()
    for column in _PERSONAL_TEXT:
        if column in chunk.columns:
            values = chunk[column]
            texts = pd.Series(values.cat.categories if isinstance(values.dtype, pd.CategoricalDtype)
                              else values.unique(), dtype="str").str.strip().str.upper()
            hits.update(texts[np.asarray(texts.isin(wanted), dtype=bool)].tolist())
    return hits


def _tentative_codes(findings: Iterable[Finding], chunk: pd.DataFrame,
                     candidates: dict[str, list[str]]) -> list[Finding]:
    """``findings`` with the cell on those in a code column whose column shows codes across the census
    and whose text looks like a code; :func:`_merged` takes it off again where the text is a personal
    text somewhere in the census (known once every chunk is read)."""
    out = list(findings)
    wanted = [i for i, f in enumerate(out) if f.column in candidates and f.row != HEADER_ROW
              and f.column in chunk.columns]
    if not wanted:
        return out
    positions = pd.Index(chunk[ROW_NUMBER].to_numpy(dtype=np.int64)).get_indexer(
        np.array([out[i].row for i in wanted], dtype=np.int64))
    for i, at in zip(wanted, positions, strict=True):
        if at < 0:
            continue
        text = str(chunk[out[i].column].iloc[at])
        if shows_as_code(text):
            out[i] = dataclasses.replace(out[i], value=text)
    return out


def _merged(findings: list[Finding], personal: set[str]) -> list[Finding]:
    """The chunks' findings in (row, column, rule) order, one per (row, column, rule) (the header row's
    come from every chunk), without the codes that are a personal text somewhere in the census."""
    findings.sort(key=lambda f: (f.row, f.column, f.rule))
    out: list[Finding] = []
    last: tuple[int, str, str] | None = None
    for f in findings:
        key = (f.row, f.column, f.rule)
        if key == last:
            continue
        last = key
        if f.value is not None and f.value.strip().upper() in personal:
            f = dataclasses.replace(f, value=None)
        out.append(f)
    return out


__all__ = ["CODE_COLUMNS", "ChunkedOutcome", "suite_by_rows", "validate_chunks"]
