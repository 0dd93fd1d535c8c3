"""The packet's cover sheet for the carrier's implementation analyst: HTML and PDF from the manifest's data.

Pure: the manifest (scenarios, files, hashes, verdicts, signer fingerprint) in, text or bytes out. The
PDF is made as the audit report makes its own (reportlab's platypus) with ``invariant`` set, so the same
packet gives the same bytes.
"""

from __future__ import annotations

import html
import io
from typing import Any

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #bbb;padding:4px 8px;vertical-align:top;font-size:13px}th{background:#eee;text-align:left}
code{font-size:12px}.ok{color:#1a7f37;font-weight:bold}.bad{color:#b42318;font-weight:bold}.meta{color:#555}"""


def _verdict(v: dict[str, Any]) -> str:
    return "pass" if v.get("ok") else f"FAIL ({len(v.get('problems', []))} problem(s))"


def _rows(manifest: dict[str, Any]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for s in manifest["scenarios"]:
        counts = ", ".join(f"{n} x INS03 {k}" for k, n in sorted(s["members_by_ins03"].items()))
        out.append({"number": f"{s['number']:02d}", "title": s["title"], "story": s["story"], "file": s["file"],
                    "isa13": s["isa13"], "expected": counts, "structural": _verdict(s["structural_check"]),
                    "pyx12": _verdict(s["pyx12"]), "sha256": manifest["files"][s["file"]]})
    return out


def _intro(manifest: dict[str, Any]) -> list[str]:
    return [f"Feed {manifest['feed_id']}: employer {manifest['employer']} to carrier {manifest['carrier']} "
            f"(mapping {manifest['mapping_id']}, sha256 {manifest['mapping_sha256'][:16]}...).",
            f"Anchor day {manifest['as_of']}, seed {manifest['seed']}; every person in these files is fictional. "
            f"Files are ISA15 T (test), control numbers from the test range {manifest['isa13_range']}.",
            f"The manifest (manifest.json) lists every file's SHA-256 and is signed (manifest.json.asc, detached, "
            f"armored) by the key with fingerprint {manifest['signer_fingerprint']}.",
            "Verify: gpg --verify manifest.json.asc manifest.json, then sha256sum each file against the manifest "
            "(or carrierfeeds certify --verify DIR)."]


def render_cover_html(manifest: dict[str, Any]) -> str:
    esc = html.escape
    body = "".join(
        f"<tr><td>{r['number']}</td><td><b>{esc(r['title'])}</b><br>{esc(r['story'])}</td>"
        f"<td><code>{esc(r['file'])}</code><br>ISA13 {esc(r['isa13'])}<br>expected: "
        f"<a href=\"{esc(r['file'].replace('.834', '.md'))}\">words</a>, "
        f"<a href=\"{esc(r['file'].replace('.834', '.json'))}\">JSON</a></td><td>{esc(r['expected'])}</td>"
        f"<td class=\"{'ok' if r['structural'] == 'pass' else 'bad'}\">{esc(r['structural'])}</td>"
        f"<td class=\"{'ok' if r['pyx12'] == 'pass' else 'bad'}\">{esc(r['pyx12'])}</td>"
        f"<td><code>{esc(r['sha256'])}</code></td></tr>" for r in _rows(manifest))
    na = "".join(f"<li><b>{esc(n['title'])}</b>: {esc(n['reason'])}</li>" for n in manifest["not_applicable"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Certification packet: {esc(manifest['feed_id'])}</title>
<style>{_STYLE}</style></head><body>
<h1>834 certification packet</h1>
{"".join(f'<p class="meta">{esc(line)}</p>' for line in _intro(manifest))}
<table><tr><th>#</th><th>scenario</th><th>file</th><th>members sent</th><th>structural check</th><th>pyx12</th>
<th>SHA-256</th></tr>{body}</table>
{f"<h2>Not applicable to this mapping</h2><ul>{na}</ul>" if na else ""}
</body></html>
"""


def render_cover_pdf(manifest: dict[str, Any]) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    esc = html.escape
    cell = styles["BodyText"].clone("cell", fontSize=7.5, leading=9)
    mono = styles["BodyText"].clone("mono", fontName="Courier", fontSize=6, leading=7.5)
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=landscape(A4), leftMargin=12 * mm, rightMargin=12 * mm,
                            topMargin=12 * mm, bottomMargin=12 * mm,
                            title=f"834 certification packet {manifest['feed_id']}", author="carrierfeeds",
                            invariant=True)
    story: list[Any] = [Paragraph("834 certification packet", styles["Title"])]
    story += [Paragraph(esc(line), styles["Normal"]) for line in _intro(manifest)]
    story.append(Spacer(1, 4 * mm))
    data: list[list[Any]] = [["#", "scenario", "file", "members sent", "structural", "pyx12", "SHA-256"]]
    for r in _rows(manifest):
        data.append([r["number"], Paragraph(f"<b>{esc(r['title'])}</b><br/>{esc(r['story'])}", cell),
                     Paragraph(f"{esc(r['file'])}<br/>ISA13 {esc(r['isa13'])}", cell),
                     Paragraph(esc(r["expected"]), cell),
                     r["structural"], r["pyx12"], Paragraph(r["sha256"], mono)])
    table = Table(data, colWidths=[8 * mm, 88 * mm, 48 * mm, 34 * mm, 18 * mm, 14 * mm, 60 * mm], repeatRows=1,
                  hAlign="LEFT")
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                               ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
                               ("FONTSIZE", (0, 0), (-1, -1), 7.5), ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    story.append(table)
    if manifest["not_applicable"]:
        story.append(Paragraph("Not applicable to this mapping", styles["Heading2"]))
        story += [Paragraph(f"<b>{esc(n['title'])}</b>: {esc(n['reason'])}", styles["Normal"])
                  for n in manifest["not_applicable"]]
    doc.build(story)
    return buf.getvalue()


__all__ = ["render_cover_html", "render_cover_pdf"]
