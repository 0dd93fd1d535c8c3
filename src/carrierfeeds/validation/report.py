"""What validation hands on: findings and the PHI-free report (+ CSV/HTML), the policy's outcome, column codes."""

from __future__ import annotations

import csv
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Row number used for findings about the file as a whole (a missing column): the header row.
HEADER_ROW = 1


#: Census columns holding codes (plan, coverage tier, relationship, statuses), not facts about a person:
#: a finding on one shows the cell, so the employer sees which code was not mapped. Never a personal field.
CODE_COLUMNS: tuple[str, ...] = ("plan_code", "coverage_level", "relationship", "employment_status",
                                 "benefit_status")
#: What a shown code may look like: short text, at most a few digits, no date, e-mail or number shapes
#: (a column shifted in the file could otherwise put a name, an SSN or a date where a code belongs).
_CODE_TEXT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._/&+()-]{0,39}$")
_DATE_LIKE = re.compile(r"[0-9]{1,4}[-/.][0-9]{1,2}[-/.][0-9]{1,4}")
#: A code column with more distinct values than this (or one per row) is not holding codes in this file.
CODE_DISTINCT_MAX = 40


def shows_as_code(text: str) -> bool:
    """Whether ``text`` from a code column may be shown in a report: it looks like a code, not like an
    identifier, a date or a name run together with digits."""
    return (bool(_CODE_TEXT.match(text)) and sum(ch.isdigit() for ch in text) <= 5
            and not _DATE_LIKE.search(text))


@dataclass(frozen=True)
class Finding:
    """One rule one row broke: where and which rule; never a value, except the code in a code column
    (:data:`CODE_COLUMNS`, ``value``) when it looks like one."""

    row: int
    member_token: str
    column: str
    rule: str
    message: str
    value: str | None = None


@dataclass(frozen=True)
class ValidationReport:
    """Everything validation found in one census file; safe to log, store and send to the employer."""

    source_name: str
    rows: int
    members: int
    families: int
    failed_rows: int
    failed_families: int
    findings: tuple[Finding, ...]
    rule_counts: dict[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    #: Rows left out on purpose, by reason (``plan_not_authorized``: a plan some carrier mapping knows
    #: that this feed is not authorised to send); not findings, and never a reason to hold a row back.
    excluded: dict[str, int] = field(default_factory=dict)
    #: The employer's own header of each canonical column the schema renames (canonical -> header).
    headers: dict[str, str] = field(default_factory=dict)
    #: The file's header row (1-based): findings keep the file's own row numbers.
    header_row: int = 1

    @property
    def ok(self) -> bool:
        return not self.findings

    def label(self, column: str) -> str:
        """The column as the employer knows it: ``Coverage Tier (coverage_level)``, or the canonical name."""
        header = self.headers.get(column)
        return f"{header} ({column})" if header and header != column else column

    def by_rule(self) -> list[tuple[str, str, int]]:
        """(rule, columns as labelled, findings) per rule, most findings first: the per-rule summary."""
        columns: dict[str, dict[str, None]] = {}
        for f in self.findings:
            columns.setdefault(f.rule, {})[self.label(f.column)] = None
        return sorted(((rule, ", ".join(columns.get(rule, {})), n) for rule, n in self.rule_counts.items()),
                      key=lambda item: (-item[2], item[0]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (``--json``)."""
        return {
            "source_name": self.source_name, "ok": self.ok, "rows": self.rows, "members": self.members,
            "families": self.families, "failed_rows": self.failed_rows,
            "failed_families": self.failed_families, "rule_counts": dict(self.rule_counts),
            "excluded": dict(self.excluded), "warnings": list(self.warnings),
            "header_row": self.header_row, "headers": dict(self.headers),
            "by_rule": [{"rule": r, "columns": c, "findings": n} for r, c, n in self.by_rule()],
            "findings": [{"row": f.row, "member_token": f.member_token, "column": f.column,
                          "header": self.headers.get(f.column, f.column), "rule": f.rule, "message": f.message,
                          **({"value": f.value} if f.value is not None else {})} for f in self.findings],
        }

    def write_csv(self, path: Path) -> None:
        """One line per finding: row, member_token, column, rule, message, the employer's header and the
        code shown (code columns only; cells starting like a formula are neutralised)."""
        with _private_open(path) as fh:
            writer = csv.writer(fh)
            writer.writerow(["row", "member_token", "column", "rule", "message", "header", "value"])
            writer.writerows((f.row, f.member_token, f.column, f.rule, f.message,
                              _cell(self.headers.get(f.column, f.column)), _cell(f.value or ""))
                             for f in self.findings)

    def write_html(self, path: Path) -> None:
        """A page for the employer: summary counts, counts by rule, and every finding by row."""
        e = html.escape
        summary = [("File", self.source_name), ("Rows", self.rows), ("Members", self.members),
                   ("Families", self.families), ("Rows with findings", self.failed_rows),
                   ("Families with findings", self.failed_families), ("Findings", len(self.findings)),
                   ("Result", "passed" if self.ok else "failed")]
        parts = [
            "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
            f"<title>Census validation: {e(self.source_name)}</title>",
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
            "td,th{border:1px solid #bbb;padding:.3em .6em;text-align:left}th{background:#eee}"
            ".failed{color:#a00}.passed{color:#070}</style></head><body>",
            f"<h1>Census validation: {e(self.source_name)}</h1>",
            f"<p>Rows are numbered as in a spreadsheet: the header is row {self.header_row}, the first member row "
            f"is row {self.header_row + 1}. Columns are named by your header, with the name the census schema "
            "gives it in brackets. This report shows values only in code columns (plan, coverage tier, "
            "relationship, statuses), never a person's details; open the file at the row and column named.</p>",
            "<h2>Summary</h2><table>",
            *(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in summary), "</table>",
        ]
        if self.warnings:
            parts += ["<h2>Warnings</h2><ul>", *(f"<li>{e(w)}</li>" for w in self.warnings), "</ul>"]
        if self.excluded:
            parts += ["<h2>Rows left out (expected, not findings)</h2><table><tr><th>Reason</th><th>Rows</th></tr>",
                      *(f"<tr><td>{e(r)}</td><td>{n}</td></tr>" for r, n in self.excluded.items()),
                      "</table>"]
        if self.rule_counts:
            parts += ["<h2>Findings by rule</h2><table><tr><th>Rule</th><th>Columns</th><th>Findings</th></tr>",
                      *(f"<tr><td>{e(r)}</td><td>{e(c)}</td><td>{n}</td></tr>" for r, c, n in self.by_rule()),
                      "</table>"]
        parts += ["<h2>Findings by row</h2>"]
        if self.findings:
            parts += ["<table><tr><th>Row</th><th>Member token</th><th>Column</th><th>Rule</th>"
                      "<th>Code in the file</th><th>What to fix</th></tr>",
                      *(f"<tr><td>{f.row}</td><td>{e(f.member_token)}</td><td>{e(self.label(f.column))}</td>"
                        f"<td>{e(f.rule)}</td><td>{e(f.value or '')}</td><td>{e(f.message)}</td></tr>"
                        for f in self.findings),
                      "</table>"]
        else:
            parts += ['<p class="passed">No findings.</p>']
        parts += ["</body></html>"]
        with _private_open(path) as fh:
            fh.write("\n".join(parts) + "\n")


@dataclass(frozen=True)
class PolicyOutcome:
    """What a feed's validation policy made of a report.

    ``accepted`` holds the rows of the families that go on (empty when rejected); the held-back counts
    are the families and members not in ``accepted``. ``held_back_member_ids`` names the member ids
    (never blank) on held-back rows that no accepted row carries: the members a change file must carry
    over untouched (:func:`carrierfeeds.changes.diff_against_snapshot`). PHI: never logged or stored
    in plaintext.
    """

    accepted: pd.DataFrame
    held_back_families: int
    held_back_members: int
    rejected: bool
    reason: str | None
    #: Positions in the census of the ``accepted`` rows, in order; None when every row is accepted.
    rows: np.ndarray | None = None
    held_back_member_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ColumnCodes:
    """A census column as validation factorised it: per census row a code into ``distinct``, the
    column's distinct texts in order of first appearance (equal text, equal code). Kept so that a
    later stage need not hash the column again; a subset of the rows may use only some of ``distinct``.

    Holds PHI (the distinct texts): never logged or stored beside the report."""

    codes: np.ndarray
    distinct: pd.Series


def _cell(text: str) -> str:
    """A CSV cell a spreadsheet shows as text: one starting like a formula gets a leading apostrophe."""
    return "'" + text if text.startswith(("=", "+", "-", "@", "\t", "\r")) else text


def _private_open(path: Path) -> Any:
    """Open ``path`` for writing text, created owner-only (reports sit next to PHI in run folders)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return open(fd, "w", encoding="utf-8", newline="")  # the caller closes it
