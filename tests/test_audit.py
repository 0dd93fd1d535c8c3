"""Auditors' views: delivery lines with their authority, one run's history, the period report in HTML
and PDF (rendered to PNG and read back), the CLI commands, and no PHI anywhere they look."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from carrierfeeds.audit import (
    LOG_COLUMNS,
    AckInfo,
    build_report,
    delivery_lines,
    lines_to_csv,
    lines_to_json,
    lines_to_table,
    render_report_html,
    run_history,
    write_report,
)
from carrierfeeds.ledger import Ledger, UnsafeLedgerValue, sha256_hex

DAY0 = date(2026, 3, 2)
CANARY_SSN, CANARY_NAME = "123-45-6789", "Zebediah Canary"
PARTIES = {"acme-sunrise": ("acme", "sunrise"), "globex-sunrise": ("globex", "sunrise"),
           "acme-northwind": ("acme", "northwind")}


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    opened = Ledger.open(ledger_url)
    opened.upgrade()
    yield opened
    opened.close()


@dataclass
class Seeded:
    """Ids of the synthetic history, for assertions."""

    runs: dict[str, str]
    deliveries: dict[str, str]


def _at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, 2 + day, hour, minute, tzinfo=UTC)


def _deliver(ledger: Ledger, feed_id: str, day: int, *, outcomes: list[tuple[str, dict[str, Any]]],
             attempts: int = 1, transport: str = "sftp", run_status: str = "delivered",
             members: int = 10, by_type: dict[str, int] | None = None) -> tuple[str, str]:
    """One run of ``feed_id`` on DAY0+day with a delivery and the given outcomes; (run id, delivery id)."""
    interval = DAY0 + timedelta(days=day)
    run = None
    for attempt in range(attempts):
        run = ledger.start_run(feed_id=feed_id, interval_start=interval, interval_end=interval + timedelta(days=1),
                               actor="airflow", now=_at(day, 2, attempt * 10))
    assert run is not None
    ledger.record_stage(run.run_id, "build", "started", now=_at(day, 2, 30))
    ledger.record_stage(run.run_id, "build", "succeeded", now=_at(day, 2, 31), detail={"members": members})
    ic = ledger.allocate_control_numbers(run_id=run.run_id, sender_id="ACME", receiver_id=feed_id[-8:].upper(),
                                         now=_at(day, 2, 31))
    d = ledger.record_delivery_intent(
        run_id=run.run_id, feed_id=feed_id, interval_start=interval,
        payload_sha256=sha256_hex(f"{feed_id}-{day}"), file_name=f"{feed_id}_{ic.isa13:09d}.834.pgp",
        isa13=ic.isa13, gs06=ic.gs06, st02=ic.st02, recipient_fingerprint="C0FFEE" * 6 + "ABCD",
        member_counts={"members": members, **(by_type or {})}, transport=transport, now=_at(day, 2, 32))
    for i, (status, extra) in enumerate(outcomes):
        ledger.record_delivery_outcome(d.delivery_id, status=status, now=_at(day, 2, 40 + i), **extra)
    ledger.finish_run(run.run_id, run_status, now=_at(day, 3), counts={"members": members})
    return run.run_id, d.delivery_id


def _ok(actor: str = "airflow", **extra: Any) -> tuple[str, dict[str, Any]]:
    return ("delivered", {"ciphertext_sha256": sha256_hex("cipher"), "size": 2048, "remote_path": "/inbox/f.pgp",
                          "host_key_fingerprint": "SHA256:synthetichostkey", "actor": actor, **extra})


def seed(ledger: Ledger) -> Seeded:
    """Five days, three feeds, two carriers, two employers: failures, a retry, a forced resend, a manual
    hand-off, a pending delivery and a day with nothing."""
    for feed_id, (employer, carrier) in PARTIES.items():
        ledger.record_authorisation(feed_id=feed_id, employer_id=employer, carrier_id=carrier, plans=["MED"],
                                    effective_from=date(2026, 1, 1), effective_to=None, recorded_by="airflow",
                                    now=_at(0, 1))
    runs, dels = {}, {}
    runs["a1"], dels["a1"] = _deliver(ledger, "acme-sunrise", 0, outcomes=[_ok()])
    runs["g1"], dels["g1"] = _deliver(ledger, "globex-sunrise", 0, outcomes=[_ok()], members=7)
    runs["n1"], dels["n1"] = _deliver(ledger, "acme-northwind", 0, attempts=2, outcomes=[
        ("failed", {"error_code": "transient", "message": "connection reset after 3 attempts"}), _ok()])
    runs["a2"], dels["a2"] = _deliver(ledger, "acme-sunrise", 1, run_status="failed", outcomes=[
        ("failed", {"error_code": "permanent", "message": "authentication refused"})])
    runs["g2"], dels["g2"] = _deliver(ledger, "globex-sunrise", 1, outcomes=[_ok()])
    ledger.audit(actor="ops-jane", action="forced_resend", object_type="delivery", object_id=dels["g2"],
                 reason="carrier lost the file, ticket CF-12", now=_at(1, 9))
    ledger.record_delivery_outcome(dels["g2"], status="forced_resend", now=_at(1, 9, 1), actor="ops-jane",
                                   reason="carrier lost the file, ticket CF-12", size=2048)
    runs["n3"], dels["n3"] = _deliver(ledger, "acme-northwind", 2, transport="manual", run_status="handed_off",
                                      outcomes=[_ok(actor="ops-bob")])
    # day 3: nothing at all
    runs["a5"], dels["a5"] = _deliver(ledger, "acme-sunrise", 4, outcomes=[_ok()])
    runs["g5"], dels["g5"] = _deliver(ledger, "globex-sunrise", 4, outcomes=[], run_status="failed")
    ledger.set_legal_hold(object_type="employer", object_id="globex", held=True, reason="matter 2026-3",
                          actor="counsel", now=_at(4, 12))
    # Every attempt to slip member data in is refused (the canary scan below checks none got through).
    with pytest.raises(UnsafeLedgerValue):
        ledger.record_stage(runs["a5"], "validate", "failed", now=_at(4, 13), message=f"bad ssn {CANARY_SSN}")
    with pytest.raises(UnsafeLedgerValue):
        ledger.audit(actor="ops", action="note", object_type="run", object_id=runs["a5"], now=_at(4, 13),
                     detail={"who": CANARY_NAME})
    return Seeded(runs, dels)


# ------------------------------------------------------------------------------------------ log
def test_delivery_lines_answer_what_to_whom_when_under_whose_authority(ledger: Ledger) -> None:
    s = seed(ledger)
    lines = delivery_lines(ledger)
    assert [ln.delivery_id for ln in lines] == list(s.deliveries.values())
    by = {ln.delivery_id: ln for ln in lines}
    n1 = by[s.deliveries["n1"]]
    assert (n1.employer_id, n1.carrier_id, n1.status, n1.attempts, n1.failures) == ("acme", "northwind",
                                                                                    "delivered", 2, 1)
    assert n1.members == 10 and n1.host_key_fingerprint == "SHA256:synthetichostkey"
    auth = ledger.authorisations(feed_id="acme-northwind")[0]
    assert n1.authorisation_seq == auth.seq
    g2 = by[s.deliveries["g2"]]
    assert (g2.status, g2.actor, g2.forced_reason) == ("forced_resend", "ops-jane",
                                                       "carrier lost the file, ticket CF-12")
    assert by[s.deliveries["g5"]].status == "pending" and by[s.deliveries["g5"]].actor is None

    assert {ln.feed_id for ln in delivery_lines(ledger, carrier_id="northwind")} == {"acme-northwind"}
    assert {ln.feed_id for ln in delivery_lines(ledger, employer_id="acme")} == {"acme-sunrise", "acme-northwind"}
    assert [ln.delivery_id for ln in delivery_lines(ledger, feed_id="acme-sunrise", status="failed")] == [
        s.deliveries["a2"]]
    window = delivery_lines(ledger, since=_at(1, 0), until=_at(2, 0))
    assert {ln.delivery_id for ln in window} == {s.deliveries["a2"], s.deliveries["g2"]}
    acks = {s.deliveries["a1"]: AckInfo(s.deliveries["a1"], "accepted", _at(0, 6))}
    assert delivery_lines(ledger, feed_id="acme-sunrise", acks=acks)[0].ack_status == "accepted"


def test_unauthorised_delivery_has_no_authority(ledger: Ledger) -> None:
    """A delivery sent before any authorisation was recorded, or outside its dates, shows none."""
    _deliver(ledger, "acme-sunrise", 0, outcomes=[_ok()])
    ledger.record_authorisation(feed_id="acme-sunrise", employer_id="acme", carrier_id="sunrise", plans=["MED"],
                                effective_from=date(2026, 3, 10), effective_to=None, recorded_by="t",
                                now=_at(0, 1))
    _deliver(ledger, "acme-sunrise", 1, outcomes=[_ok()])
    assert [ln.authorisation_seq for ln in delivery_lines(ledger)] == [None, None]


def test_log_formats_carry_every_column(ledger: Ledger) -> None:
    seed(ledger)
    lines = delivery_lines(ledger)
    rows = list(csv.DictReader(io.StringIO(lines_to_csv(lines))))
    assert len(rows) == len(lines) == 8
    assert tuple(rows[0]) == LOG_COLUMNS
    assert rows[0]["sent_at"] == "2026-03-02T02:32:00Z" and rows[0]["employer_id"] == "acme"
    assert rows[0]["payload_sha256"] == sha256_hex("acme-sunrise-0")
    data = json.loads(lines_to_json(lines))
    assert data[0]["recipient_fingerprint"] == "C0FFEE" * 6 + "ABCD" and data[0]["interval_start"] == "2026-03-02"
    table = lines_to_table(lines).splitlines()
    assert table[0].split()[:4] == ["sent", "feed", "employer", "carrier"] and table[-1] == "8 deliveries"
    assert "forced_resend" in lines_to_table(lines)


def test_log_counts_members_by_maintenance_type(ledger: Ledger, cli_env: Path) -> None:
    """As the pipeline records them (``ins03_<code>`` in the delivery's member counts), in every format."""
    from typer.testing import CliRunner

    from carrierfeeds.cli import app

    _, changes = _deliver(ledger, "acme-sunrise", 0, outcomes=[_ok()], members=6,
                          by_type={"ins03_021": 3, "ins03_024": 2, "ins03_001": 1})
    _, full = _deliver(ledger, "acme-sunrise", 1, outcomes=[_ok()], members=4, by_type={"ins03_030": 4})
    _, bare = _deliver(ledger, "acme-sunrise", 2, outcomes=[_ok()], members=9)  # recorded without a breakdown
    lines = {ln.delivery_id: ln for ln in delivery_lines(ledger)}
    assert lines[changes].maintenance == {"001": 1, "021": 3, "024": 2}
    assert (lines[full].maintenance, lines[bare].maintenance) == ({"030": 4}, {})

    runner = CliRunner()
    out = runner.invoke(app, ["audit", "log", "--format", "csv"])
    assert out.exit_code == 0, out.output
    rows = {r["delivery_id"]: r for r in csv.DictReader(io.StringIO(out.output))}
    types = ("ins03_001", "ins03_021", "ins03_024", "ins03_025", "ins03_030")
    assert [rows[changes][t] for t in types] == ["1", "3", "2", "0", "0"]
    assert [rows[full][t] for t in types] == ["0", "0", "0", "0", "4"]
    assert [rows[bare][t] for t in types] == ["", "", "", "", ""] and rows[bare]["members"] == "9"
    data = {d["delivery_id"]: d for d in json.loads(runner.invoke(app, ["audit", "log", "--format", "json"]).output)}
    assert data[changes]["maintenance"] == {"001": 1, "021": 3, "024": 2} and data[bare]["maintenance"] == {}
    assert json.loads(runner.invoke(app, ["audit", "log", "--json"]).output) == list(data.values())
    assert runner.invoke(app, ["audit", "log", "--json", "--format", "csv"]).exit_code == 2
    table = runner.invoke(app, ["audit", "log"]).output.splitlines()
    header = table[0].split()
    by_type = header.index("by_type") + 1  # the "sent" cell holds a space: date and time
    assert [row.split()[by_type] for row in table[1:4]] == ["001:1,021:3,024:2", "030:4", "-"]


def test_run_history_shows_every_stage_outcome_and_audit_event(ledger: Ledger) -> None:
    s = seed(ledger)
    history = run_history(ledger, s.runs["g2"])
    assert history is not None
    text = "\n".join(line for _, _, line in history.timeline())
    for expected in ("attempt 1  run_attempt started by airflow", "build succeeded", "members=10",
                     "delivery " + s.deliveries["g2"] + " intent", "delivered by airflow",
                     "audit forced_resend on delivery", "carrier lost the file, ticket CF-12",
                     "forced_resend by ops-jane", "run_finished delivered"):
        assert expected in text, expected
    assert [t for _, t, _ in history.timeline()] == sorted(t for _, t, _ in history.timeline())
    retried = run_history(ledger, s.runs["n1"])
    assert retried is not None and retried.run.attempt == 2
    assert "connection reset after 3 attempts" in "\n".join(x for _, _, x in retried.timeline())
    assert json.loads(json.dumps(retried.as_dict()))["run"]["run_id"] == s.runs["n1"]
    assert run_history(ledger, "nope") is None


# --------------------------------------------------------------------------------------- report
def _report(ledger: Ledger, s: Seeded, acks: dict[str, AckInfo] | None = None) -> Any:
    return build_report(ledger, since=DAY0, until=DAY0 + timedelta(days=4), generated_at=_at(6, 8),
                        parties=PARTIES, acks=acks)


def test_report_counts_per_carrier_and_employer(ledger: Ledger) -> None:
    s = seed(ledger)
    acks = {s.deliveries["a1"]: AckInfo(s.deliveries["a1"], "accepted", _at(0, 5)),
            s.deliveries["g1"]: AckInfo(s.deliveries["g1"], "rejected", _at(0, 6)),
            s.deliveries["n1"]: AckInfo(s.deliveries["n1"], "accepted", _at(3, 6))}  # 3 days: late
    report = _report(ledger, s, acks)
    stats = {(p.carrier_id, p.employer_id): p for p in report.parties}
    assert set(stats) == {("sunrise", "acme"), ("sunrise", "globex"), ("northwind", "acme")}
    north = stats[("northwind", "acme")]
    assert (north.deliveries, north.delivered, north.failures, north.retries, north.manual_handoffs,
            north.forced_resends) == (2, 2, 1, 1, 1, 0)
    # n1 acked after three days: late; n3 was a manual hand-off, which no TA1/999 ever answers.
    assert (north.late_acks, north.rejected_acks) == (1, 0)
    globex = stats[("sunrise", "globex")]
    assert (globex.deliveries, globex.delivered, globex.forced_resends, globex.rejected_acks) == (3, 2, 1, 1)
    acme = stats[("sunrise", "acme")]
    assert (acme.deliveries, acme.delivered, acme.failures) == (3, 2, 1)
    assert report.per_day == ((DAY0, 3, 0), (DAY0 + timedelta(days=1), 1, 1), (DAY0 + timedelta(days=2), 1, 0),
                              (DAY0 + timedelta(days=3), 0, 0), (DAY0 + timedelta(days=4), 1, 1))
    kinds = [n.kind for n in report.notable]
    assert kinds.count("failed") == 2 and kinds.count("forced_resend") == 1 and "legal_hold_set" in kinds
    forced = next(n for n in report.notable if n.kind == "forced_resend")
    assert (forced.actor, forced.reason) == ("ops-jane", "carrier lost the file, ticket CF-12")
    # Every chained row the seed wrote was verified (counted per table, independently of the walker).
    assert report.chain_ok and report.chain_rows == _chained_rows(ledger) == report.chain_head_seq == 71
    untracked = _report(ledger, s)
    assert all(p.late_acks is None and p.rejected_acks is None for p in untracked.parties)


def _chained_rows(ledger: Ledger) -> int:
    """Rows in every table that links into the hash chain (a ``seq`` and a ``prev_hash``)."""
    from carrierfeeds.ledger.models import metadata

    with ledger.engine.connect() as conn:
        return sum(int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
                   for t in metadata.sorted_tables if "seq" in t.c and "prev_hash" in t.c)


def test_acknowledgments_come_from_the_ledger(ledger: Ledger) -> None:
    from carrierfeeds.acknowledgments import ack_infos
    from carrierfeeds.audit import acks_from_ledger
    from carrierfeeds.ledger.records import AckRow

    s = seed(ledger)
    ledger.record_acknowledgments(
        file_sha256=sha256_hex("ack-file-1"), source_id="sunrise", file_name="ack1.999", now=_at(0, 5),
        rows=[AckRow(unit=1, kind="TA1", status="accepted", delivery_id=s.deliveries["a1"]),
              AckRow(unit=2, kind="999", status="accepted", delivery_id=s.deliveries["g1"])])
    ledger.record_acknowledgments(
        file_sha256=sha256_hex("ack-file-2"), source_id="sunrise", file_name="ack2.999", now=_at(0, 7),
        rows=[AckRow(unit=1, kind="999", status="rejected", delivery_id=s.deliveries["g1"]),
              AckRow(unit=2, kind="999", status="rejected")])  # matches nothing: not anyone's ack
    # The carrier sent a rejecting 999 for a5, then a corrected accepting one: the latest 999 decides.
    ledger.record_acknowledgments(
        file_sha256=sha256_hex("ack-file-3"), source_id="sunrise", file_name="ack3.999", now=_at(4, 5),
        rows=[AckRow(unit=1, kind="999", status="rejected", delivery_id=s.deliveries["a5"])])
    ledger.record_acknowledgments(
        file_sha256=sha256_hex("ack-file-4"), source_id="sunrise", file_name="ack4.999", now=_at(4, 9),
        rows=[AckRow(unit=1, kind="999", status="accepted", delivery_id=s.deliveries["a5"]),
              AckRow(unit=2, kind="TA1", status="rejected", delivery_id=s.deliveries["g1"])])  # a 999 outranks
    acks = acks_from_ledger(ledger)
    assert acks == ack_infos(ledger)  # the same fold as `carrierfeeds acks status`
    assert set(acks) == {s.deliveries["a1"], s.deliveries["g1"], s.deliveries["a5"]}
    assert [(acks[s.deliveries[k]].status, acks[s.deliveries[k]].received_at) for k in ("a1", "g1", "a5")] == [
        ("accepted", _at(0, 5)), ("rejected", _at(0, 7)), ("accepted", _at(4, 9))]
    stats = {(p.carrier_id, p.employer_id): p for p in _report(ledger, s, acks).parties}
    assert stats[("sunrise", "globex")].rejected_acks == 1
    # a1 and a5 were acknowledged in time (a5's answer came 6 h 20 m after it); a2 was never delivered.
    assert (stats[("sunrise", "acme")].late_acks, stats[("sunrise", "acme")].rejected_acks) == (0, 0)


def test_report_uses_each_carriers_ack_window_and_counts_partial_acceptance_as_rejected(ledger: Ledger) -> None:
    s = seed(ledger)
    # a1 answered 33 h 20 m after delivery; a5 never (53 h 20 m by the report's time); g1 partially accepted.
    acks = {s.deliveries["a1"]: AckInfo(s.deliveries["a1"], "accepted", _at(1, 12)),
            s.deliveries["g1"]: AckInfo(s.deliveries["g1"], "partial", _at(0, 6)),
            s.deliveries["g2"]: AckInfo(s.deliveries["g2"], "accepted_with_errors", _at(1, 6))}

    def acme_and_globex(windows: dict[str, timedelta] | None) -> tuple[Any, ...]:
        report = build_report(ledger, since=DAY0, until=DAY0 + timedelta(days=4), generated_at=_at(6, 8),
                              parties=PARTIES, acks=acks, ack_windows=windows)
        stats = {(p.carrier_id, p.employer_id): p for p in report.parties}
        acme, globex = stats[("sunrise", "acme")], stats[("sunrise", "globex")]
        return acme.late_acks, acme.rejected_acks, globex.rejected_acks

    assert acme_and_globex(None) == (2, 0, 1)  # the mapping default: 24 h
    assert acme_and_globex({"acme-sunrise": timedelta(hours=36)}) == (1, 0, 1)
    assert acme_and_globex({"acme-sunrise": timedelta(hours=72)}) == (0, 0, 1)


def test_report_html_is_self_contained_with_a_chart(ledger: Ledger) -> None:
    s = seed(ledger)
    page = render_report_html(_report(ledger, s))
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert "<script" not in page.lower() and not re.search(r"(src|href)\s*=", page, re.I)
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    # One bar segment per non-zero (day, outcome): 3+0, 1+1, 1+0, 0+0, 1+1.
    assert page.count("<rect") - 2 == 6  # the two legend swatches are rects too
    assert "2026-03-03: 1 delivered, 1 not delivered" in page
    assert "carrier lost the file, ticket CF-12" in page and "northwind" in page
    assert "Acknowledgments were not tracked" in page
    assert "intact" in page


def _svg_to_png(svg: str, out: Path) -> Path:
    """Render SVG to a PNG on white with librsvg and cairo (the C libraries, through ctypes: no Python
    binding for either is in the lock; cairo comes with poppler-utils, librsvg2-2 with the base image)."""
    import ctypes
    import ctypes.util

    names = {lib: ctypes.util.find_library(lib) for lib in ("rsvg-2", "cairo")}
    if None in names.values():
        pytest.fail(f"rendering the report's chart needs librsvg and cairo (Debian librsvg2-2, libcairo2): {names}")
    rsvg, cairo = ctypes.CDLL(names["rsvg-2"]), ctypes.CDLL(names["cairo"])

    class Viewport(ctypes.Structure):
        _fields_ = [("x", ctypes.c_double), ("y", ctypes.c_double), ("width", ctypes.c_double),
                    ("height", ctypes.c_double)]

    ptr = ctypes.c_void_p
    rsvg.rsvg_handle_new_from_data.restype = ptr
    rsvg.rsvg_handle_new_from_data.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ptr]
    rsvg.rsvg_handle_render_document.argtypes = [ptr, ptr, ctypes.POINTER(Viewport), ptr]
    rsvg.g_object_unref.argtypes = [ptr]
    cairo.cairo_image_surface_create.restype = ptr
    cairo.cairo_image_surface_create.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    cairo.cairo_create.restype = ptr
    cairo.cairo_create.argtypes = [ptr]
    cairo.cairo_set_source_rgb.argtypes = [ptr, ctypes.c_double, ctypes.c_double, ctypes.c_double]
    cairo.cairo_paint.argtypes = [ptr]
    cairo.cairo_surface_write_to_png.argtypes = [ptr, ctypes.c_char_p]
    cairo.cairo_destroy.argtypes = [ptr]
    cairo.cairo_surface_destroy.argtypes = [ptr]

    width, height = (int(v) for v in re.search(r'<svg[^>]* width="(\d+)" height="(\d+)"', svg).groups())  # type: ignore[union-attr]
    data = svg.encode()
    error = ptr()
    handle = rsvg.rsvg_handle_new_from_data(data, len(data), ctypes.byref(error))
    assert handle and not error.value, "librsvg could not parse the chart"
    surface = cairo.cairo_image_surface_create(0, width, height)  # CAIRO_FORMAT_ARGB32
    cr = cairo.cairo_create(surface)
    try:
        cairo.cairo_set_source_rgb(cr, 1.0, 1.0, 1.0)
        cairo.cairo_paint(cr)
        assert rsvg.rsvg_handle_render_document(handle, cr, ctypes.byref(Viewport(0, 0, width, height)),
                                                ctypes.byref(error)) == 1
        assert cairo.cairo_surface_write_to_png(surface, str(out).encode()) == 0  # CAIRO_STATUS_SUCCESS
    finally:
        cairo.cairo_destroy(cr)
        cairo.cairo_surface_destroy(surface)
        rsvg.g_object_unref(handle)
    return out


def test_report_html_chart_renders_to_a_png_a_person_can_read(ledger: Ledger, tmp_path: Path) -> None:
    """The HTML report's inline SVG chart, rendered (librsvg) and read back pixel by pixel: one bar per
    day, as tall as that day's deliveries, green for delivered and red for not delivered, with text."""
    from PIL import Image

    s = seed(ledger)
    page = render_report_html(_report(ledger, s))
    svg = re.search(r"<svg.*?</svg>", page, re.S)
    assert svg is not None
    png = _svg_to_png(svg.group(0), tmp_path / "chart.png")
    assert png.read_bytes().startswith(b"\x89PNG")
    image = Image.open(png).convert("RGB")
    assert image.size == (900, 260)
    green, red = (46, 125, 50), (198, 40, 40)
    # The chart's layout: 44 px left of the plot, 12 right, 24 above, 48 below; five days, five slots.
    left, right, top, bottom, days = 44, 12, 24, 48, 5
    slot = (image.width - left - right) / days

    def bar(day: int, colour: tuple[int, int, int]) -> int:
        x = round(left + (day + 0.5) * slot)
        return sum(image.getpixel((x, y)) == colour for y in range(top, image.height - bottom))

    heights = [(bar(d, green), bar(d, red)) for d in range(days)]
    unit = heights[0][0] / 3  # day one: three delivered, none failed
    assert unit > 40
    expected = [(ln_ok, ln_bad) for _, ln_ok, ln_bad in _report(ledger, s).per_day]
    assert expected == [(3, 0), (1, 1), (1, 0), (0, 0), (1, 1)]
    for (g, r), (ok, bad) in zip(heights, expected, strict=True):
        assert abs(g - ok * unit) <= 2 and abs(r - bad * unit) <= 2, heights

    # The title, the axis labels and the legend are drawn as text: dark pixels above the plot and below it.
    def dark(box: tuple[int, int, int, int]) -> int:
        raw = image.crop(box).tobytes()
        return sum(raw[i] + raw[i + 1] + raw[i + 2] < 200 for i in range(0, len(raw), 3))

    assert dark((left, 0, left + 200, top - 6)) > 100  # "Deliveries per day (UTC)"
    # The legend's words: well above a blank strip's 0, whatever font the machine's librsvg picks.
    assert dark((left, image.height - 20, left + 250, image.height)) > 50
    assert dark((0, top, left - 2, image.height - bottom)) > 5  # the value axis ticks (a blank strip: 0)


def test_report_marks_a_broken_chain(ledger: Ledger) -> None:
    s = seed(ledger)
    with ledger.engine.begin() as conn:
        conn.execute(sa.text("UPDATE run_events SET status = 'succeeded' WHERE status = 'failed'"))
    report = _report(ledger, s)
    assert not report.chain_ok and report.chain_broken
    assert "BROKEN" in render_report_html(report)


def _pdf_text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True,
                          text=True, timeout=60).stdout


def test_report_pdf_renders_to_a_readable_page(ledger: Ledger, tmp_path: Path) -> None:
    s = seed(ledger)
    pdf = write_report(_report(ledger, s), tmp_path / "report.pdf")
    assert pdf.read_bytes().startswith(b"%PDF")
    subprocess.run(["pdftoppm", "-png", "-r", "80", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")],
                   check=True, capture_output=True, timeout=60)
    (png,) = tmp_path.glob("page*.png")
    image = png.read_bytes()
    assert image.startswith(b"\x89PNG")
    width, height = int.from_bytes(image[16:20], "big"), int.from_bytes(image[20:24], "big")
    assert width > height > 500  # landscape A4 at 80 dpi
    text = _pdf_text(pdf)
    for expected in ("Delivery audit report", "2026-03-02 to 2026-03-06", "Deliveries per day", "northwind",
                     "globex", "forced_resend", "ticket CF-12", "intact", "legal_hold_set"):
        assert expected in text, expected
    # The chart is drawn: solid green (delivered) and red (not delivered) bar pixels on the page.
    colours = _page_colours(pdf)
    assert colours[(46, 125, 50)] > 200 and colours[(198, 40, 40)] > 50


def _page_colours(pdf: Path) -> Counter[tuple[int, int, int]]:
    """How many pixels of each colour page 1 has, rendered by pdftoppm (PPM output)."""
    ppm = subprocess.run(["pdftoppm", "-r", "60", "-f", "1", "-l", "1", str(pdf)], check=True,
                         capture_output=True, timeout=60).stdout
    header = re.match(rb"P6\s+(\d+)\s+(\d+)\s+255\s", ppm)
    assert header is not None
    data = ppm[header.end():header.end() + int(header[1]) * int(header[2]) * 3]
    return Counter(zip(data[0::3], data[1::3], data[2::3], strict=True))


def test_write_report_refuses_other_suffixes(ledger: Ledger, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"html or \.pdf"):
        write_report(build_report(ledger, since=DAY0, until=DAY0, generated_at=_at(1, 0)), tmp_path / "r.txt")


# ------------------------------------------------------------------------------------------ PHI
def test_canaries_appear_nowhere_an_auditor_looks(ledger: Ledger, tmp_path: Path) -> None:
    s = seed(ledger)
    from carrierfeeds.ledger.models import metadata

    with ledger.engine.connect() as conn:
        cells = "\n".join(str(v) for t in metadata.sorted_tables for row in conn.execute(sa.select(t)) for v in row)
    lines = delivery_lines(ledger)
    report = _report(ledger, s)
    pdf = write_report(report, tmp_path / "r.pdf")
    history = run_history(ledger, s.runs["a5"])
    assert history is not None
    views = [cells, lines_to_csv(lines), lines_to_json(lines), lines_to_table(lines), render_report_html(report),
             _pdf_text(pdf), json.dumps(history.as_dict())]
    assert len(cells) > 2000
    for view in views:
        for canary in (CANARY_SSN, "123456789", CANARY_NAME, "Zebediah"):
            assert canary not in view


# ------------------------------------------------------------------------------------------ CLI
@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ledger_url: str) -> Path:
    monkeypatch.setenv("CARRIERFEEDS_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("CARRIERFEEDS_FEEDS_DIR", str(tmp_path / "feeds"))
    monkeypatch.setenv("CARRIERFEEDS_LEDGER_URL", ledger_url)
    (tmp_path / "feeds").mkdir()
    return tmp_path


def test_cli_audit_log_show_report_hold_and_purge(cli_env: Path, ledger: Ledger) -> None:
    from typer.testing import CliRunner

    from carrierfeeds.cli import app

    s = seed(ledger)
    runner = CliRunner()
    out = runner.invoke(app, ["audit", "log", "--employer", "acme", "--since", "2026-03-03", "--until",
                              "2026-03-04", "--format", "csv"])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.output)))
    assert [r["delivery_id"] for r in rows] == [s.deliveries["a2"], s.deliveries["n3"]]
    assert runner.invoke(app, ["audit", "log", "--format", "xml"]).exit_code == 2
    table = runner.invoke(app, ["audit", "log", "--carrier", "northwind"])
    assert table.exit_code == 0 and table.output.strip().endswith("2 deliveries")

    shown = runner.invoke(app, ["audit", "show", s.runs["n1"]])
    assert shown.exit_code == 0 and "connection reset after 3 attempts" in shown.output
    assert runner.invoke(app, ["audit", "show", "nope"]).exit_code == 2

    html_out = cli_env / "report.html"
    made = runner.invoke(app, ["audit", "report", "--since", "2026-03-02", "--until", "2026-03-06",
                               "--out", str(html_out)])
    assert made.exit_code == 0, made.output
    assert "8 deliveries" in made.output and "<svg" in html_out.read_text()

    held = runner.invoke(app, ["hold", "set", "--feed", "acme-sunrise", "--reason", "matter 7", "--actor", "counsel"])
    assert held.exit_code == 0, held.output
    listed = runner.invoke(app, ["hold", "list", "--json"])
    assert {h["object_id"] for h in json.loads(listed.output)["holds"]} == {"globex", "acme-sunrise"}
    assert runner.invoke(app, ["hold", "set", "--reason", "x"]).exit_code == 2

    dry = runner.invoke(app, ["purge", "--dry-run", "--as-of", "2026-06-01", "--json"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["ledger"]["rows"] == 0 and json.loads(dry.output)["dry_run"] is True


@pytest.mark.slow
def test_ledger_and_audit_views_hold_no_census_values_after_real_runs(sftp_workspace: Any,
                                                                       tmp_path: Path) -> None:
    """Real runs (gpg, sshd, pyx12): one delivered with canary names, one rejected with a canary SSN;
    then every ledger cell and every auditor's view is searched for every PHI value of both censuses."""
    import pandas as pd

    from carrierfeeds.ledger.models import metadata
    from carrierfeeds.run.context import RunRef
    from carrierfeeds.run.stages import run_feed
    from carrierfeeds.settings import open_ledger

    ws = sftp_workspace
    day1, day2 = date(2026, 11, 19), date(2026, 11, 20)
    good = ws.write_census(members=25, seed=3, as_of=day1, name="census_20261119.csv")
    frame = pd.read_csv(good, dtype=str, keep_default_na=False)
    person = frame["member_id"] == frame.loc[0, "member_id"]  # every row of one person: names must agree
    frame.loc[person, "first_name"], frame.loc[person, "last_name"] = "Zebediah", "Canaryfield"
    frame.to_csv(good, index=False)
    bad = ws.write_census(members=25, seed=4, as_of=day2, name="census_20261120.csv")
    bad_frame = pd.read_csv(bad, dtype=str, keep_default_na=False)
    bad_frame.loc[2, "ssn"] = "666123456"
    bad_frame.to_csv(bad, index=False)

    def clock() -> datetime:
        return datetime(2026, 11, 21, 7, 30, tzinfo=UTC)

    first = run_feed(ws.settings, RunRef.for_day(ws.feed.feed_id, day1), clock=clock, actor="test", census_path=good)
    second = run_feed(ws.settings, RunRef.for_day(ws.feed.feed_id, day2), clock=clock, actor="test", census_path=bad)
    assert (first.status, second.status) == ("delivered", "rejected"), (first.validation, first.error)

    ledger = open_ledger(ws.settings)
    (auth,) = ledger.authorisations(feed_id=ws.feed.feed_id)
    assert (auth.employer_id, auth.carrier_id) == (ws.feed.employer.id, ws.feed.carrier.id)
    (line,) = delivery_lines(ledger)
    assert line.authorisation_seq == auth.seq and line.employer_id == ws.feed.employer.id
    with ledger.engine.connect() as conn:
        cells = "\n".join(str(v) for t in metadata.sorted_tables for row in conn.execute(sa.select(t)) for v in row)
    report = build_report(ledger, since=day1, until=day2 + timedelta(days=1), generated_at=clock())
    pdf = write_report(report, tmp_path / "r.pdf")
    histories = [run_history(ledger, s.run_id) for s in (first, second)]
    views = [cells, lines_to_csv([line]), render_report_html(report), _pdf_text(pdf),
             *(json.dumps(h.as_dict()) + "\n".join(x for _, _, x in h.timeline()) for h in histories if h)]
    phi_columns = ("first_name", "last_name", "ssn", "dob", "address1", "city", "phone")
    values = {v for f in (frame, bad_frame) for c in phi_columns if c in f for v in f[c] if len(v) >= 5}
    assert "Zebediah" in values and "666123456" in values and len(values) > 50
    for view in views:
        leaked = [v for v in values if v in view]
        assert leaked == [], f"{len(leaked)} census values found in an audit view"


def test_cli_db_upgrade_from_empty_and_audit_verify(cli_env: Path, ledger_url: str) -> None:
    """`db upgrade` makes the schema in an empty database; `audit verify` exits 0 on an intact chain and
    5 naming the first broken link on an edited one."""
    from typer.testing import CliRunner

    from carrierfeeds.cli import app
    from carrierfeeds.outcomes import ExitCode

    engine = sa.create_engine(ledger_url)
    assert sa.inspect(engine).get_table_names() == []
    runner = CliRunner()
    for _ in range(2):  # and again: nothing left to migrate
        up = runner.invoke(app, ["db", "upgrade"])
        assert up.exit_code == 0 and "is up to date" in up.output, up.output
    tables = set(sa.inspect(engine).get_table_names())
    assert {"runs", "run_events", "deliveries", "delivery_outcomes", "audit_events", "authorisations",
            "acknowledgments", "purge_checkpoints", "chain_head"} <= tables

    ledger = Ledger.open(ledger_url)
    s = seed(ledger)
    ledger.close()
    intact = runner.invoke(app, ["audit", "verify", "--json"])
    assert intact.exit_code == 0, intact.output
    verdict = json.loads(intact.output)
    assert (verdict["ok"], verdict["rows_checked"], verdict["head_seq"], verdict["first_broken"]) == (True, 71, 71,
                                                                                                        None)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE deliveries SET file_name = 'renamed.pgp' WHERE delivery_id = :d"),
                     {"d": s.deliveries["g1"]})
    broken = runner.invoke(app, ["audit", "verify", "--json"])
    assert broken.exit_code == ExitCode.FAILED == 5
    link = json.loads(broken.output)["first_broken"]
    assert (link["table"], link["row_id"], link["reason"]) == ("deliveries", s.deliveries["g1"],
                                                               "row content does not match its hash (row edited)")
    text = runner.invoke(app, ["audit", "verify"])
    assert text.exit_code == 5 and "chain BROKEN" in text.output
    assert f"first broken link: deliveries row {s.deliveries['g1']}" in text.output
    engine.dispose()
