"""A printable PDF of an enrollment for carriers without electronic intake: pure, deterministic, allowlisted.

:func:`render_fallback_pdf` turns the 834 view (``Enrollment.table``, already cut to the carrier's
allowlist) into bytes: a cover page (employer, carrier, feed, interval, control id, counts) and then a
table of coverage lines grouped by family (subscriber first, then dependents), its header row repeated
on every page and ``page N of M`` in every footer, landscape letter. Only columns present in the view
are printed, so a field the carrier may not receive cannot appear. The same inputs give the same bytes:
no clock, no random document id, no environment (``SOURCE_DATE_EPOCH`` included) reaches the output.

:func:`write_fallback_pdf` is the one-line call for the pipeline: render, write privately and atomically.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from hashlib import md5
from pathlib import Path
from typing import Any, Final, cast

import pandas as pd
from reportlab.lib import colors
from reportlab.lib.pagesizes import landscape, letter
from reportlab.lib.utils import simpleSplit
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Table, TableStyle

from carrierfeeds.config import Feed
from carrierfeeds.enrollment import Enrollment
from carrierfeeds.files import open_private
from carrierfeeds.x12.codes import (
    CoverageLevel,
    EmploymentStatus,
    IndividualRelationship,
    InsuranceLine,
    MaintenanceType,
)

log = logging.getLogger(__name__)

PAGE_SIZE: Final[tuple[float, float]] = landscape(letter)
MARGIN: Final[float] = 36.0
FONT, BOLD = "Helvetica", "Helvetica-Bold"
#: Body text of the member table; 8.5 pt prints legibly and still fits about 30 lines on a page.
TABLE_FONT_SIZE: Final[float] = 8.5
LEADING: Final[float] = 10.5
CELL_PAD: Final[float] = 3.0
_BAND: Final[float] = 22.0  # room above and below the table for the running header and the footer

RELATIONSHIP_LABELS: Final[dict[str, str]] = {
    IndividualRelationship.SELF.value: "Subscriber",
    IndividualRelationship.SPOUSE.value: "Spouse",
    IndividualRelationship.CHILD.value: "Child",
}
MAINTENANCE_LABELS: Final[dict[str, str]] = {
    MaintenanceType.CHANGE.value: "Change",
    MaintenanceType.ADDITION.value: "Add",
    MaintenanceType.CANCELLATION.value: "Terminate",
    MaintenanceType.REINSTATEMENT.value: "Reinstate",
    MaintenanceType.AUDIT_OR_COMPARE.value: "Audit",
}
#: The maintenance types in words, for the legend.
MAINTENANCE_WORDS: Final[dict[str, str]] = {
    MaintenanceType.ADDITION.value: "add: a new member or coverage",
    MaintenanceType.CANCELLATION.value: "terminate: the coverage ends (TERMINATED lines are shaded and marked)",
    MaintenanceType.CHANGE.value: "change: the member's details or coverage changed",
    MaintenanceType.REINSTATEMENT.value: "reinstate: a terminated coverage is restored",
    MaintenanceType.AUDIT_OR_COMPARE.value: "audit: the full roster, every member as now covered",
}
#: The change kinds of the "changes since the last roster" section, in print order.
CHANGE_KINDS: Final[tuple[tuple[str, str], ...]] = (
    (MaintenanceType.ADDITION.value, "Add"), (MaintenanceType.CANCELLATION.value, "Termination"),
    (MaintenanceType.CHANGE.value, "Change"), (MaintenanceType.REINSTATEMENT.value, "Reinstatement"))
TERMINATED: Final[str] = "TERMINATED"
CHANGES_TITLE: Final[str] = "Changes since the last roster"
DEFAULT_TITLE: Final[str] = "Enrollment changes"
ROSTER_TITLE: Final[str] = "Full enrollment roster"


@dataclass(frozen=True)
class FallbackDocument:
    """A fallback PDF written to disk: where, its SHA-256 (hex), its size in bytes and its page count."""

    path: Path
    sha256: str
    size: int
    pages: int


# ------------------------------------------------------------------------------------ value formats
def _day(value: str) -> str:
    """CCYYMMDD as YYYY-MM-DD (what a person reads); anything else as it is."""
    return f"{value[:4]}-{value[4:6]}-{value[6:]}" if len(value) == 8 and value.isdigit() else value


def _ssn(value: str) -> str:
    return f"{value[:3]}-{value[3:5]}-{value[5:]}" if len(value) == 9 and value.isdigit() else value


def _zip(value: str) -> str:
    return f"{value[:5]}-{value[5:]}" if len(value) == 9 and value.isdigit() else value


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _join(*parts: str, sep: str = " ") -> str:
    return sep.join(p for p in parts if p)


@dataclass(frozen=True)
class _Column:
    """One printed column: which view columns feed it, how wide it is, how a row becomes its text.

    A column with a ``sample`` is exactly as wide as its sample or label (dates, codes: never wrapped);
    the others share what is left of the page by ``weight`` and wrap. ``person`` columns describe the
    member and print on the member's first coverage line only.
    """

    label: str
    sources: tuple[str, ...]
    person: bool
    text: Callable[[Mapping[str, str]], str]
    sample: str | None = None
    weight: float = 1.0
    least: str = ""  # a shared column is at least as wide as this text

    def least_width(self) -> float:
        return max(40.0, float(stringWidth(self.least, FONT, TABLE_FONT_SIZE)) + 2 * CELL_PAD + 1)

    def fixed_width(self) -> float | None:
        if self.sample is None:
            return None
        label = float(stringWidth(self.label, BOLD, TABLE_FONT_SIZE))
        sample = float(stringWidth(self.sample, FONT, TABLE_FONT_SIZE))
        return max(label, sample) + 2 * CELL_PAD + 1


def _name(r: Mapping[str, str]) -> str:
    given = _join(r.get("first_name", ""), r.get("middle_initial", ""))
    return _join(r.get("last_name", ""), given, sep=", ")


def _address(r: Mapping[str, str]) -> str:
    street = _join(r.get("address1", ""), r.get("address2", ""))
    place = _join(_join(r.get("city", ""), r.get("state", ""), sep=", "), _zip(r.get("zip", "")))
    return _join(street, place, sep="\n")


def _terminated(r: Mapping[str, str]) -> bool:
    """A termination: the member (INS03) or this coverage (HD01) ends."""
    return MaintenanceType.CANCELLATION.value in (r.get("ins03", ""), r.get("hd01", ""))


def _plan(r: Mapping[str, str]) -> str:
    # The word survives black-and-white printing, where the shading may not.
    plan = _join(r.get("hd03", ""), r.get("hd04", ""))
    return _join(TERMINATED, plan, sep="\n") if _terminated(r) else plan


def _words(name: str) -> str:
    return name.replace("_", " ").lower()


def _legend(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(what, codes in words) for the codes this document prints: maintenance types, coverage levels,
    insurance lines, employment statuses and roles."""
    def used(column: str) -> list[str]:
        return sorted(set(table[column].fillna("").astype(str)) - {""}) if column in table.columns else []

    levels = {m.value: _words(m.name) for m in CoverageLevel}
    lines = {m.value: _words(m.name) for m in InsuranceLine}
    statuses = {m.value: _words(m.name) for m in EmploymentStatus}
    kinds = sorted(set(used("ins03")) | set(used("hd01")))
    out = [("Action (maintenance type)", "; ".join(f"{c} {MAINTENANCE_WORDS.get(c, '')}" for c in kinds)),
           ("Level (coverage level)", "; ".join(f"{c} {levels.get(c, '')}" for c in used("hd05"))),
           ("Plan (insurance line)", "; ".join(f"{c} {lines.get(c, '')}" for c in used("hd03"))),
           ("Empl. (employment status)", "; ".join(f"{c} {statuses.get(c, '')}"
                                                   for c in used("employment_status"))),
           ("Role", "Subscriber: the employee; Spouse; Child; other dependents by their relationship"
            if "ins02" in table.columns else ""),
           ("Sex", "F female; M male; U unknown" if "gender" in table.columns else "")]
    return [(what, text) for what, text in out if text]


def _action(r: Mapping[str, str]) -> str:
    code = r.get("ins03", "")
    return _join(code, MAINTENANCE_LABELS.get(code, ""))


_DATE = "0000-00-00"
_ACTION_SAMPLE = max((_join(code, label) for code, label in MAINTENANCE_LABELS.items()),
                     key=lambda text: float(stringWidth(text, FONT, TABLE_FONT_SIZE)))

#: Every column the document knows, in print order.
COLUMNS: Final[tuple[_Column, ...]] = (
    _Column("Member ID", ("member_id",), True, lambda r: r.get("member_id", ""), weight=1.0),
    _Column("Role", ("ins02",), True, lambda r: RELATIONSHIP_LABELS.get(r.get("ins02", ""), ""),
            sample="Subscriber"),
    _Column("Name", ("last_name", "first_name", "middle_initial"), True, _name, weight=1.4),
    _Column("SSN", ("ssn",), True, lambda r: _ssn(r.get("ssn", "")), sample=_ssn("0" * 9)),
    _Column("Birth date", ("dob",), True, lambda r: _day(r.get("dob", "")), sample=_DATE),
    _Column("Sex", ("gender",), True, lambda r: r.get("gender", ""), sample="M"),
    _Column("Address", ("address1", "address2", "city", "state", "zip"), True, _address, weight=1.9),
    _Column("Empl.", ("employment_status",), True, lambda r: r.get("employment_status", ""), sample="FT"),
    _Column("Hire date", ("hire_date",), True, lambda r: _day(r.get("hire_date", "")), sample=_DATE),
    _Column("Action", ("ins03",), False, _action, sample=_ACTION_SAMPLE),
    _Column("Plan", ("hd03", "hd04"), False, _plan, weight=1.0, least=TERMINATED),
    _Column("Level", ("hd05",), False, lambda r: r.get("hd05", ""), sample="EMP1"),
    _Column("Start", ("coverage_start",), False, lambda r: _day(r.get("coverage_start", "")), sample=_DATE),
    _Column("End", ("coverage_end",), False, lambda r: _day(r.get("coverage_end", "")), sample=_DATE),
)


def printed_columns(table: pd.DataFrame) -> tuple[_Column, ...]:
    """The columns printed for ``table``: those fed by a view column it holds, unless all of them are
    blank (an allowlisted field nobody has, such as ``coverage_end`` in a roster, gets no room)."""
    out = []
    for column in COLUMNS:
        sources = [c for c in column.sources if c in table.columns]
        if not sources:
            continue
        values = table[sources].astype(str)
        if len(table) and not bool((values != "").to_numpy().any()):
            continue
        if sources == ["ins03"] and values["ins03"].nunique() == 1:
            continue  # one maintenance type throughout: the cover and every page header say which
        out.append(column)
    return tuple(out)


# ------------------------------------------------------------------------------------------ layout
def _widths(columns: Sequence[_Column], usable: float) -> list[float]:
    """Fixed columns at their own width; the rest share the remainder by weight (at least 40 pt each)."""
    fixed = [c.fixed_width() for c in columns]
    left = usable - sum(w for w in fixed if w is not None)
    weights = sum(c.weight for c, w in zip(columns, fixed, strict=True) if w is None)
    flex = [max(c.least_width(), left * c.weight / weights) if weights else 0.0 for c in columns]
    widths = [w if w is not None else f for w, f in zip(fixed, flex, strict=True)]
    # Only when the page cannot hold every fixed column at its width (never with today's columns).
    scale = min(1.0, usable / sum(widths))
    return [w * scale for w in widths]


@dataclass(frozen=True)
class _Line:
    """One printed table row (a coverage line): its cell texts, height, and where it sits in a family."""

    cells: tuple[str, ...]
    height: float
    family_start: bool
    member_start: bool
    subscriber: bool
    terminated: bool = False


def _wrap(text: str, width: float) -> str:
    """``text`` broken into lines that fit ``width`` at the table font (words first, then characters)."""
    out: list[str] = []
    for part in text.split("\n"):
        if stringWidth(part, FONT, TABLE_FONT_SIZE) <= width:
            out.append(part)
            continue
        for line in simpleSplit(part, FONT, TABLE_FONT_SIZE, width):
            # simpleSplit keeps an overlong word whole; cut it so it cannot spill into the next cell.
            while stringWidth(line, FONT, TABLE_FONT_SIZE) > width and len(line) > 1:
                cut = len(line) - 1
                while cut > 1 and stringWidth(line[:cut], FONT, TABLE_FONT_SIZE) > width:
                    cut -= 1
                out.append(line[:cut])
                line = line[cut:]
            out.append(line)
    return "\n".join(out)


def _lines(table: pd.DataFrame, columns: Sequence[_Column], widths: Sequence[float]) -> list[_Line]:
    present = [c for c in table.columns if any(c in col.sources for col in columns) or c in ("ins03", "hd01")]
    # Column names of the view are strings; pandas types record keys as Hashable.
    records = cast(list[dict[str, str]], table[present].astype(str).to_dict("records")) if present else [
        {} for _ in range(len(table))]
    members = table["member_id"].astype(str).tolist() if "member_id" in table else [""] * len(table)
    families = table["subscriber_id"].astype(str).tolist() if "subscriber_id" in table else [""] * len(table)
    ins01 = table["ins01"].astype(str).tolist() if "ins01" in table else [""] * len(table)
    out: list[_Line] = []
    previous: tuple[str, str] | None = None
    for i, record in enumerate(records):
        key = (families[i], members[i])
        member_start = key != previous
        family_start = previous is None or families[i] != previous[0]
        previous = key
        cells = tuple(_wrap(col.text(record), width - 2 * CELL_PAD) if member_start or not col.person else ""
                      for col, width in zip(columns, widths, strict=True))
        height = max(1, *(c.count("\n") + 1 for c in cells)) * LEADING + 2 * CELL_PAD
        out.append(_Line(cells, height, family_start, member_start, ins01[i] == "Y", _terminated(record)))
    return out


def _paginate(lines: Sequence[_Line], capacity: float) -> list[list[_Line]]:
    """Pages of lines: a family stays on one page when it fits on one, a member whenever it can."""
    units: list[list[list[_Line]]] = []  # families -> members -> lines
    for line in lines:
        if line.family_start or not units:
            units.append([])
        if line.member_start or not units[-1]:
            units[-1].append([])
        units[-1][-1].append(line)
    pages: list[list[_Line]] = [[]]
    used = 0.0

    def place(group: list[_Line]) -> None:
        nonlocal used
        need = sum(x.height for x in group)
        if used + need > capacity and pages[-1]:
            pages.append([])
            used = 0.0
        if need <= capacity:
            pages[-1].extend(group)
            used += need
            return
        for x in group:  # a member with more coverage lines than a page holds: break between lines
            if used + x.height > capacity and pages[-1]:
                pages.append([])
                used = 0.0
            pages[-1].append(x)
            used += x.height

    for family in units:
        flat = [x for member in family for x in member]
        if sum(x.height for x in flat) <= capacity:
            place(flat)
        else:
            for member in family:
                place(member)
    return [p for p in pages if p]


# ----------------------------------------------------------------------------------------- drawing
class _FixedCanvas(Canvas):  # type: ignore[misc]  # reportlab ships no type hints
    """A canvas whose PDF dates and document id come from ``created`` alone (not the clock, not the env)."""

    def __init__(self, buffer: io.BytesIO, *, created: datetime, title: str, subject: str) -> None:
        super().__init__(buffer, pagesize=PAGE_SIZE, invariant=1, pageCompression=1)
        doc = self._doc
        stamp = doc._timeStamp
        instant = created.astimezone(UTC)
        stamp.t = instant.timestamp()
        stamp.lt = instant.timetuple()
        stamp.YMDhms = tuple(stamp.lt)[:6]
        stamp.dhh = stamp.dmm = 0
        stamp.tzname = "UTC"
        # The id is a digest over the document; seed it with our instant instead of reportlab's.
        doc.signature = md5(usedforsecurity=False)
        doc.signature.update(f"carrierfeeds fallback {instant.isoformat()}".encode())
        self.setTitle(title)
        self.setSubject(subject)
        self.setAuthor("carrierfeeds")
        self.setCreator("carrierfeeds")
        self.setProducer("carrierfeeds (reportlab)")


def _frame(canvas: Canvas, header: str, page: int, pages: int) -> None:
    """Running header and the footer with ``page N of M`` on every page."""
    width, height = PAGE_SIZE
    canvas.setFont(FONT, 8.5)
    canvas.setFillColor(colors.black)
    canvas.drawString(MARGIN, height - MARGIN + 6, header)
    canvas.drawString(MARGIN, MARGIN - 14, "CONFIDENTIAL: contains protected health information. "
                                           "Hand over only by the agreed method.")
    canvas.drawRightString(width - MARGIN, MARGIN - 14, f"page {page} of {pages}")


def _draw_table(canvas: Canvas, data: list[list[str]], widths: Sequence[float], heights: Sequence[float],
                style: list[tuple[Any, ...]], top: float) -> None:
    table = Table(data, colWidths=list(widths), rowHeights=list(heights))
    table.setStyle(TableStyle(style))
    _, h = table.wrapOn(canvas, sum(widths), sum(heights))
    table.drawOn(canvas, MARGIN, top - h)


def _counts(enrollment: Enrollment) -> list[tuple[str, str]]:
    table = enrollment.table
    rows = [("Members", f"{enrollment.member_count:,}"),
            ("Subscribers", f"{enrollment.subscriber_count:,}"),
            ("Dependents", f"{enrollment.member_count - enrollment.subscriber_count:,}"),
            ("Coverage lines", f"{enrollment.coverage_count:,}")]
    if "ins03" in table.columns and len(table):
        keys = [c for c in ("subscriber_id", "member_id", "ins03") if c in table.columns]
        per_member = table[keys].drop_duplicates()["ins03"].astype(str).value_counts()
        per_line = table["ins03"].astype(str).value_counts()
        for code in sorted(per_line.index):
            label = _join(code, MAINTENANCE_LABELS.get(code, ""))
            rows.append((f"Maintenance {label}", f"{_count(int(per_member.get(code, 0)), 'member')}, "
                                                 f"{_count(int(per_line[code]), 'coverage line')}"))
    return rows


def _cover(canvas: Canvas, enrollment: Enrollment, *, feed: Feed, interval_start: date, control_id: str,
           created: datetime, title: str, columns: Sequence[_Column], pages: int,
           changes: tuple[str, str] | None, legend: Sequence[tuple[str, str]]) -> None:
    width, height = PAGE_SIZE
    canvas.setFont(BOLD, 22)
    canvas.drawString(MARGIN, height - MARGIN - 32, title)
    canvas.setFont(FONT, 11)
    canvas.drawString(MARGIN, height - MARGIN - 52,
                      f"{feed.employer.name} to {feed.carrier.name}: enrollment on paper, because this carrier "
                      "does not take electronic files.")
    facts = [
        ("Employer", f"{feed.employer.name} ({feed.employer.id})"),
        ("Carrier", f"{feed.carrier.name} ({feed.carrier.id})"),
        ("Feed", feed.feed_id),
        ("Data interval", interval_start.isoformat()),
        ("Control id", control_id),
        ("Generated", created.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        *_counts(enrollment),
        *([changes] if changes is not None else []),
        ("Pages", str(pages)),
    ]
    label_w, value_w = 170.0, 310.0
    data = [[k, _wrap(v, value_w - 2 * CELL_PAD)] for k, v in facts]
    heights = [(v.count("\n") + 1) * 14.0 + 6 for _, v in data]
    style: list[tuple[Any, ...]] = [
        ("FONT", (0, 0), (0, -1), BOLD, 11), ("FONT", (1, 0), (1, -1), FONT, 11),
        ("LEADING", (0, 0), (-1, -1), 14), ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.lightgrey),
    ]
    _draw_table(canvas, data, [label_w, value_w], heights, style, height - MARGIN - 72)
    _draw_legend(canvas, legend, top=height - MARGIN - 72 - sum(heights) - 22, width=label_w + value_w)

    # Right-hand column: what the table shows, and the hand-off record a person fills in.
    x = MARGIN + label_w + value_w + 30
    y = height - MARGIN - 84
    canvas.setFont(BOLD, 11)
    canvas.drawString(x, y, "Fields in this document")
    canvas.setFont(FONT, 10)
    shown = ", ".join(c.label for c in columns)
    for line in simpleSplit(shown, FONT, 10, width - MARGIN - x):
        y -= 13
        canvas.drawString(x, y, line)
    y -= 13
    for line in simpleSplit("Only fields this carrier is authorised to receive are printed. Members are "
                            "grouped by family: the subscriber first (shaded), then dependents.",
                            FONT, 10, width - MARGIN - x):
        y -= 13
        canvas.drawString(x, y, line)
    y -= 30
    canvas.setFont(BOLD, 11)
    canvas.drawString(x, y, "Hand-off record")
    canvas.setFont(FONT, 10)
    for label in ("Handed over by", "Received by", "Method", "Date"):
        y -= 26
        canvas.drawString(x, y, label)
        canvas.line(x + 90, y - 2, width - MARGIN, y - 2)


def _draw_legend(canvas: Canvas, legend: Sequence[tuple[str, str]], *, top: float, width: float) -> None:
    """The codes this document prints, in words, under the cover's facts."""
    if not legend:
        return
    y = top
    canvas.setFont(BOLD, 11)
    canvas.drawString(MARGIN, y, "What the codes mean")
    for what, text in legend:
        lines = simpleSplit(text, FONT, 9, width - 150)
        y -= 12
        canvas.setFont(BOLD, 9)
        canvas.drawString(MARGIN, y, what)
        canvas.setFont(FONT, 9)
        for i, line in enumerate(lines):
            if i:
                y -= 11
            canvas.drawString(MARGIN + 150, y, line)


def change_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a change view that are changes (add, termination, change, reinstatement), each with
    its kind in ``change`` (the member's INS03: a plan change stays together as one member's change, its
    ended coverage marked TERMINATED), in :data:`CHANGE_KINDS` order and otherwise in the view's
    (family) order."""
    if "ins03" not in table.columns or not len(table):
        return table.iloc[0:0].assign(change="")
    kind = table["ins03"].astype(str)
    order = {code: i for i, (code, _) in enumerate(CHANGE_KINDS)}
    rank = kind.map(order)
    keep = rank.notna()
    words = dict(CHANGE_KINDS)
    out = table[keep.to_numpy()].assign(change=kind[keep].map(words), _rank=rank[keep])
    return out.sort_values("_rank", kind="stable").drop(columns="_rank")


#: Columns of the changes section besides the kind of change: who, which coverage, from and to when.
_CHANGE_LABELS: Final[tuple[str, ...]] = ("Member ID", "Role", "Name", "Plan", "Level", "Start", "End")
_CHANGE_COLUMN = _Column("Change", ("change",), False, lambda r: r.get("change", ""), sample="Reinstatement")


def render_fallback_pdf(enrollment: Enrollment, *, feed: Feed, interval_start: date, control_id: str,
                        created: datetime, title: str = DEFAULT_TITLE,
                        changes: Enrollment | None = None) -> bytes:
    """The enrollment as a printable PDF (landscape letter): cover page with a legend of the codes, the
    family-grouped table (terminations shaded and marked TERMINATED), then the changes since the last
    roster (adds, terminations, changes, reinstatements) when there are any.

    The changes come from ``changes`` (the diff the run computed against the carrier's snapshot, for a
    full roster) or, without it, from the document's own change lines (a change file is that diff).
    Pure: no clock, no I/O; the same arguments give the same bytes. ``created`` (timezone-aware) is
    printed on the cover and stamped as the PDF's creation date.
    """
    return _render(enrollment, feed=feed, interval_start=interval_start, control_id=control_id,
                   created=created, title=title, changes=changes)[0]


def _render(enrollment: Enrollment, *, feed: Feed, interval_start: date, control_id: str,
            created: datetime, title: str, changes: Enrollment | None = None) -> tuple[bytes, int]:
    if created.tzinfo is None or created.utcoffset() is None:
        raise ValueError("created must be timezone-aware")
    columns = printed_columns(enrollment.table)
    if not columns:
        raise ValueError("the enrollment view has no printable columns")
    width, height = PAGE_SIZE
    widths = _widths(columns, width - 2 * MARGIN)
    header = [c.label for c in columns]
    header_h = LEADING + 2 * CELL_PAD + 2
    top = height - MARGIN - _BAND + 8
    capacity = top - (MARGIN + 4) - header_h

    lines = _lines(enrollment.table, columns, widths)
    pages = _paginate(lines, capacity)
    changed = change_rows((changes if changes is not None else enrollment).table)
    change_columns = (_CHANGE_COLUMN, *(c for c in printed_columns(changed) if c.label in _CHANGE_LABELS))
    change_widths = _widths(change_columns, width - 2 * MARGIN)
    change_pages = (_paginate(_lines(changed, change_columns, change_widths), capacity - _SECTION)
                    if len(changed) else [])
    page_count = 1 + len(pages) + len(change_pages)
    roster = set(enrollment.table.get("ins03", pd.Series(dtype=str)).astype(str)) <= {
        MaintenanceType.AUDIT_OR_COMPARE.value}
    by_kind = changed["change"].value_counts() if len(changed) else pd.Series(dtype=int)
    summary = ", ".join(f"{int(by_kind.get(word, 0)):,} {word.lower()}" for _, word in CHANGE_KINDS) + " lines"
    where = (f" (page {page_count})" if len(change_pages) == 1 else
             f" (pages {2 + len(pages)}-{page_count})" if change_pages else "")
    changes_fact = ((CHANGES_TITLE, summary + where if changes is not None or not roster else
                     "not compared: no earlier roster was given for this document"))

    buffer = io.BytesIO()
    canvas = _FixedCanvas(buffer, created=created, title=f"{title}: {feed.feed_id} {interval_start.isoformat()}",
                          subject=f"{feed.employer.name} to {feed.carrier.name}, control {control_id}")
    running = (f"{title}  |  {feed.employer.name} to {feed.carrier.name}  |  feed {feed.feed_id}  |  "
               f"interval {interval_start.isoformat()}  |  control {control_id}")
    section_running = running
    codes: list[str] = (sorted(set(enrollment.table["ins03"].astype(str)))
                        if "ins03" in enrollment.table.columns else [])
    if len(codes) == 1:
        running += f"  |  every line: {_action({'ins03': str(codes[0])})}"
    _cover(canvas, enrollment, feed=feed, interval_start=interval_start, control_id=control_id,
           created=created, title=title, columns=columns, pages=page_count, changes=changes_fact,
           legend=_legend(pd.concat([enrollment.table, changed], ignore_index=True)))
    _frame(canvas, running, 1, page_count)
    canvas.showPage()
    for number, page in enumerate(pages, start=2):
        _draw_page(canvas, header, header_h, page, widths, top)
        _frame(canvas, running, number, page_count)
        canvas.showPage()
    change_header = [c.label for c in change_columns]
    for number, page in enumerate(change_pages, start=2 + len(pages)):
        canvas.setFont(BOLD, 12)
        canvas.drawString(MARGIN, top - 12, f"{CHANGES_TITLE}: {summary}")
        _draw_page(canvas, change_header, header_h, page, change_widths, top - _SECTION)
        _frame(canvas, section_running, number, page_count)
        canvas.showPage()
    canvas.save()
    out = buffer.getvalue()
    log.info("fallback PDF for feed %s control %s: %d members, %d coverage lines, %d pages, %d bytes",
             feed.feed_id, control_id, enrollment.member_count, enrollment.coverage_count, page_count, len(out))
    return out, page_count


#: Room above a section's table for its title.
_SECTION: Final[float] = 22.0


def _draw_page(canvas: Canvas, header: list[str], header_h: float, page: Sequence[_Line],
               widths: Sequence[float], top: float) -> None:
    """One page of a table: header row, then its lines; subscribers shaded, terminations shaded red (and
    marked TERMINATED in the plan cell), a rule above each family."""
    data = [header, *[list(x.cells) for x in page]]
    heights = [header_h, *[x.height for x in page]]
    style: list[tuple[Any, ...]] = [
        ("FONT", (0, 0), (-1, 0), BOLD, TABLE_FONT_SIZE),
        ("FONT", (0, 1), (-1, -1), FONT, TABLE_FONT_SIZE),
        ("LEADING", (0, 0), (-1, -1), LEADING),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), CELL_PAD), ("RIGHTPADDING", (0, 0), (-1, -1), CELL_PAD),
        ("TOPPADDING", (0, 0), (-1, -1), CELL_PAD - 1), ("BOTTOMPADDING", (0, 0), (-1, -1), CELL_PAD),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#D9D9D9")),
        ("LINEBELOW", (0, 0), (-1, 0), 1, colors.black),
        ("BOX", (0, 0), (-1, -1), 0.5, colors.black),
    ]
    for i, x in enumerate(page, start=1):
        if x.terminated:
            style.append(("BACKGROUND", (0, i), (-1, i), colors.HexColor("#F2C4C4")))
        elif x.subscriber:
            style.append(("BACKGROUND", (0, i), (-1, i), colors.HexColor("#EAF0F8")))
        if x.family_start and i > 1:
            style.append(("LINEABOVE", (0, i), (-1, i), 1.2, colors.black))
        elif x.member_start and i > 1:
            style.append(("LINEABOVE", (0, i), (-1, i), 0.4, colors.grey))
    _draw_table(canvas, data, widths, heights, style, top)


def fallback_file_name(feed: Feed, interval_start: date, control_id: str) -> str:
    """A PHI-free file name: feed, control id and interval day."""
    return f"{feed.feed_id}_{control_id}_{interval_start:%Y%m%d}.pdf"


def write_fallback_pdf(enrollment: Enrollment, out: Path, *, feed: Feed, interval_start: date,
                       control_id: str, created: datetime, title: str | None = None,
                       changes: Enrollment | None = None) -> FallbackDocument:
    """Render and write ``out`` (0600, temp name then rename); the pipeline's one call for a ``pdf`` feed.

    Without ``title``: "Full enrollment roster" when every line is maintenance type 030, else
    "Enrollment changes".
    """
    if title is None:
        codes = set(enrollment.table["ins03"].astype(str)) if "ins03" in enrollment.table.columns else set()
        title = ROSTER_TITLE if codes <= {MaintenanceType.AUDIT_OR_COMPARE.value} else DEFAULT_TITLE
    data, pages = _render(enrollment, feed=feed, interval_start=interval_start, control_id=control_id,
                          created=created, title=title, changes=changes)
    with open_private(out) as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return FallbackDocument(path=out, sha256=hashlib.sha256(data).hexdigest(), size=len(data), pages=pages)
