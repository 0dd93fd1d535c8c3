"""The reconciliation report: per feed and carrier, open discrepancies by kind and age, the oldest open
items; as JSON, self-contained HTML (the audit report's style) or PDF (reportlab, like the audit report)."""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from carrierfeeds.ledger.worklist import OPEN_STATUSES, WorkItem

#: Age buckets of open items, by days since first seen: (label, lower bound inclusive).
AGE_BUCKETS: Final[tuple[tuple[str, int], ...]] = (("0-7d", 0), ("8-30d", 8), ("31-90d", 31), (">90d", 91))
OLDEST: Final[int] = 20


@dataclass(frozen=True)
class FeedSection:
    feed_id: str
    carrier: str
    open: int
    acknowledged: int
    resolved: int
    auto_closed: int
    by_kind_age: dict[str, dict[str, int]]
    oldest: tuple[WorkItem, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"feed_id": self.feed_id, "carrier": self.carrier, "open": self.open,
                "acknowledged": self.acknowledged, "resolved": self.resolved, "auto_closed": self.auto_closed,
                "by_kind_age": self.by_kind_age, "oldest_open": [i.as_dict() for i in self.oldest]}


@dataclass(frozen=True)
class ReconcileReport:
    generated_at: datetime
    sections: tuple[FeedSection, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"generated_at": self.generated_at.isoformat(), "feeds": [s.as_dict() for s in self.sections]}


def _bucket(days: int) -> str:
    label = AGE_BUCKETS[0][0]
    for name, low in AGE_BUCKETS:
        if days >= low:
            label = name
    return label


def build_reconcile_report(items: Sequence[WorkItem], *, generated_at: datetime,
                           carriers: Mapping[str, str]) -> ReconcileReport:
    """Sections per feed (``carriers`` maps a feed id to its carrier's name), in feed order."""
    sections = []
    for feed_id in sorted({i.feed_id for i in items} | set(carriers)):
        mine = [i for i in items if i.feed_id == feed_id]
        open_items = [i for i in mine if i.status in OPEN_STATUSES]
        grid: dict[str, dict[str, int]] = {}
        for i in open_items:
            row = grid.setdefault(i.kind, {name: 0 for name, _ in AGE_BUCKETS})
            row[_bucket((generated_at - i.first_seen).days)] += 1
        oldest = tuple(sorted(open_items, key=lambda i: (i.first_seen, i.discrepancy_id))[:OLDEST])
        count = {s: sum(1 for i in mine if i.status == s) for s in ("open", "acknowledged", "resolved", "auto_closed")}
        sections.append(FeedSection(feed_id, carriers.get(feed_id, ""), count["open"], count["acknowledged"],
                                    count["resolved"], count["auto_closed"], dict(sorted(grid.items())), oldest))
    return ReconcileReport(generated_at, tuple(sections))


def render_reconcile_html(report: ReconcileReport) -> str:
    """One self-contained page: no scripts, no external assets."""
    from carrierfeeds.audit import _HTML_STYLE

    esc = html.escape
    parts = [f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>carrierfeeds reconciliation report</title>
<style>{_HTML_STYLE}</style></head><body>
<h1>Reconciliation report</h1>
<p class="meta">Generated {esc(report.generated_at.isoformat())}. Members appear as tokens only.</p>"""]
    for s in report.sections:
        head = "".join(f"<th>{esc(name)}</th>" for name, _ in AGE_BUCKETS)
        rows = "".join(f"<tr><td>{esc(kind)}</td>"
                       + "".join(f"<td class=n>{ages[name]}</td>" for name, _ in AGE_BUCKETS) + "</tr>"
                       for kind, ages in s.by_kind_age.items())
        rows = rows or f'<tr><td colspan="{len(AGE_BUCKETS) + 1}">nothing open</td></tr>'
        oldest = "".join(f"<tr><td><code>{esc(i.discrepancy_id)}</code></td><td>{esc(i.kind)}</td>"
                         f"<td><code>{esc(i.member_token)}</code></td><td>{esc(i.field)}</td>"
                         f"<td>{esc(i.coverage_line)}</td><td>{esc(i.status)}</td>"
                         f"<td>{esc(i.first_seen.isoformat())}</td><td>{esc(i.last_seen.isoformat())}</td></tr>"
                         for i in s.oldest) or '<tr><td colspan="8">nothing open</td></tr>'
        parts.append(f"""<h2>{esc(s.feed_id)} ({esc(s.carrier)})</h2>
<p><b>{s.open}</b> open, <b>{s.acknowledged}</b> acknowledged, <b>{s.resolved}</b> resolved,
<b>{s.auto_closed}</b> auto-closed.</p>
<table><tr><th>open by kind and age</th>{head}</tr>{rows}</table>
<h3>Oldest open items</h3>
<table><tr><th>id</th><th>kind</th><th>member</th><th>field</th><th>line</th><th>status</th><th>first seen</th>
<th>last seen</th></tr>{oldest}</table>""")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def render_reconcile_pdf(report: ReconcileReport) -> bytes:
    """The same content as a PDF (reportlab, deterministic like the audit report's)."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    esc = html.escape
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=landscape(A4), leftMargin=15 * mm, rightMargin=15 * mm,
                            topMargin=15 * mm, bottomMargin=15 * mm, title="carrierfeeds reconciliation report",
                            author="carrierfeeds", invariant=True)
    grid = TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                       ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
                       ("FONTSIZE", (0, 0), (-1, -1), 8), ("VALIGN", (0, 0), (-1, -1), "TOP")])
    story: list[Any] = [Paragraph("Reconciliation report", styles["Title"]),
                        Paragraph(f"Generated {esc(report.generated_at.isoformat())}. Members appear as tokens "
                                  "only.", styles["Normal"])]
    for s in report.sections:
        story += [Spacer(1, 4 * mm), Paragraph(esc(f"{s.feed_id} ({s.carrier})"), styles["Heading2"]),
                  Paragraph(f"{s.open} open, {s.acknowledged} acknowledged, {s.resolved} resolved, "
                            f"{s.auto_closed} auto-closed.", styles["Normal"])]
        ages = [["open by kind and age", *(name for name, _ in AGE_BUCKETS)],
                *([kind, *(str(a[name]) for name, _ in AGE_BUCKETS)] for kind, a in s.by_kind_age.items())]
        if len(ages) == 1:
            ages.append(["nothing open", *([""] * len(AGE_BUCKETS))])
        table = Table(ages, repeatRows=1, hAlign="LEFT")
        table.setStyle(grid)
        oldest = [["id", "kind", "member", "field", "line", "status", "first seen", "last seen"],
                  *([i.discrepancy_id, i.kind, i.member_token, i.field, i.coverage_line, i.status,
                     i.first_seen.strftime("%Y-%m-%d %H:%M"), i.last_seen.strftime("%Y-%m-%d %H:%M")]
                    for i in s.oldest)]
        old = Table(oldest, repeatRows=1, hAlign="LEFT")
        old.setStyle(grid)
        story += [table, Spacer(1, 3 * mm), Paragraph("Oldest open items", styles["Heading3"]), old]
    doc.build(story)
    return buf.getvalue()


def write_reconcile_report(report: ReconcileReport, out: Path, fmt: str) -> Path:
    """Write ``report`` as html, pdf or json to ``out``."""
    import json

    if fmt == "html":
        out.write_text(render_reconcile_html(report), encoding="utf-8")
    elif fmt == "pdf":
        out.write_bytes(render_reconcile_pdf(report))
    else:
        out.write_text(json.dumps(report.as_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out
