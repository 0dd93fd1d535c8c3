"""Retention: employee data purged after contract end unless held; ledger metadata purged after N years
with the chain still verifiable; authorisations recorded once; every purge audited and idempotent."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from carrierfeeds.errors import ConfigError
from carrierfeeds.ledger import Ledger, LedgerError, sha256_hex
from carrierfeeds.retention import (
    EMPLOYEE_DATA_KINDS,
    FeedParty,
    Holds,
    ledger_cutoff,
    plan_employee_data_purge,
    resolve_holds,
    run_purge,
    set_hold,
)

AS_OF = date(2026, 6, 1)
NOW = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
ENDED = FeedParty("acme-sunrise", "acme", "sunrise", contract_end=date(2026, 1, 31))  # due 2026-05-01
RECENT = FeedParty("globex-sunrise", "globex", "sunrise", contract_end=date(2026, 4, 1))  # due 2026-06-30
OPEN = FeedParty("initech-sunrise", "initech", "sunrise", contract_end=None)
HELD = FeedParty("umbrella-sunrise", "umbrella", "sunrise", contract_end=date(2025, 1, 1), legal_hold=True)
PARTIES = [ENDED, RECENT, OPEN, HELD]


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    opened = Ledger.open(ledger_url)
    opened.upgrade()
    yield opened
    opened.close()


def _employee_files(data_dir: Path, feeds: list[str]) -> None:
    """Synthetic employee-level files (placeholder bytes, never real data) in every kind of folder."""
    for kind in EMPLOYEE_DATA_KINDS:
        for feed in feeds:
            folder = data_dir / kind / feed / "2026-01-15"
            folder.mkdir(parents=True)
            (folder / "file-a.bin").write_bytes(b"synthetic" * 10)
            (folder / "file-b.bin").write_bytes(b"x")


def _cells(ledger: Ledger) -> str:
    from carrierfeeds.ledger.models import metadata

    with ledger.engine.connect() as conn:
        return "\n".join(str(v) for t in metadata.sorted_tables for row in conn.execute(sa.select(t)) for v in row)


def test_employee_data_is_purged_90_days_after_contract_end_unless_held(ledger: Ledger, tmp_path: Path) -> None:
    feeds = [p.feed_id for p in PARTIES] + ["orphan-feed"]
    _employee_files(tmp_path, feeds)

    report = run_purge(ledger, tmp_path, PARTIES, as_of=AS_OF, now=NOW, actor="housekeeping")

    for kind in EMPLOYEE_DATA_KINDS:
        assert not (tmp_path / kind / ENDED.feed_id).exists()
        for kept in (RECENT, OPEN, HELD):
            assert (tmp_path / kind / kept.feed_id / "2026-01-15" / "file-a.bin").is_file()
        assert (tmp_path / kind / "orphan-feed").is_dir()
    actions = {(i.kind, i.feed_id): i.action for i in report.employee_data.items}
    assert {k for k, a in actions.items() if a == "purge"} == {(k, ENDED.feed_id) for k in EMPLOYEE_DATA_KINDS}
    assert {k for k, a in actions.items() if a == "held"} == {(k, HELD.feed_id) for k in EMPLOYEE_DATA_KINDS}
    assert {k for k, a in actions.items() if a == "unknown_feed"} == {(k, "orphan-feed")
                                                                      for k in EMPLOYEE_DATA_KINDS}
    assert report.holds == Holds(employers=frozenset({"umbrella"}), feeds=frozenset({HELD.feed_id}))

    events = ledger.audit_events(action="purge_employee_data")
    assert sorted(e.detail["kind"] for e in events) == sorted(EMPLOYEE_DATA_KINDS)
    assert {(e.object_type, e.object_id, e.actor) for e in events} == {("feed", ENDED.feed_id, "housekeeping")}
    assert all(e.detail["files"] == 2 and e.detail["bytes"] == 91 and e.detail["employer_id"] == "acme"
               and e.detail["due"] == "2026-05-01" for e in events)
    assert "file-a" not in _cells(ledger) and "2026-01-15" not in _cells(ledger)
    assert ledger.verify_chain().ok

    # Idempotent: nothing left to purge, nothing more written.
    again = run_purge(ledger, tmp_path, PARTIES, as_of=AS_OF, now=NOW, actor="housekeeping")
    assert again.employee_data.purged == () and again.ledger.rows == 0
    assert len(ledger.audit_events(action="purge_employee_data")) == len(EMPLOYEE_DATA_KINDS)


def test_dry_run_lists_and_changes_nothing(ledger: Ledger, tmp_path: Path) -> None:
    _employee_files(tmp_path, [ENDED.feed_id])
    head = ledger.verify_chain().head_seq
    report = run_purge(ledger, tmp_path, PARTIES, as_of=AS_OF, now=NOW, actor="ops", dry_run=True)
    assert [(i.kind, i.feed_id, i.files, i.action) for i in report.employee_data.items] == [
        (k, ENDED.feed_id, 2, "purge") for k in EMPLOYEE_DATA_KINDS]
    assert all((tmp_path / k / ENDED.feed_id).is_dir() for k in EMPLOYEE_DATA_KINDS)
    assert ledger.verify_chain().head_seq == head == 0


def test_a_hold_recorded_in_the_ledger_blocks_until_cleared(ledger: Ledger, tmp_path: Path) -> None:
    _employee_files(tmp_path, [ENDED.feed_id])
    set_hold(ledger, feed_id=ENDED.feed_id, held=True, reason="matter 2026-17", actor="counsel", now=NOW)
    report = run_purge(ledger, tmp_path, PARTIES, as_of=AS_OF, now=NOW, actor="ops")
    assert {i.action for i in report.employee_data.items if i.feed_id == ENDED.feed_id} == {"held"}
    assert (tmp_path / "staging" / ENDED.feed_id).is_dir()

    # A hold on the employer covers every one of its feeds.
    set_hold(ledger, feed_id=ENDED.feed_id, held=False, reason="matter closed", actor="counsel", now=NOW)
    set_hold(ledger, employer_id="acme", held=True, reason="matter 2026-18", actor="counsel", now=NOW)
    assert resolve_holds(ledger, PARTIES).blocks(ENDED.feed_id)
    assert run_purge(ledger, tmp_path, PARTIES, as_of=AS_OF, now=NOW, actor="ops").employee_data.purged == ()

    set_hold(ledger, employer_id="acme", held=False, reason="matter closed", actor="counsel", now=NOW)
    assert [h.object_id for h in ledger.legal_holds()] == []
    report = run_purge(ledger, tmp_path, PARTIES, as_of=AS_OF, now=NOW, actor="ops")
    assert {i.feed_id for i in report.employee_data.purged} == {ENDED.feed_id}
    assert not (tmp_path / "staging" / ENDED.feed_id).exists()
    holds = [(e.action, e.object_type, e.object_id, e.reason) for e in ledger.audit_events()
             if e.action.startswith("legal_hold")]
    assert holds[0] == ("legal_hold_set", "feed", ENDED.feed_id, "matter 2026-17")
    assert len(holds) == 4


def test_hold_arguments_are_checked(ledger: Ledger) -> None:
    with pytest.raises(ConfigError):
        set_hold(ledger, held=True, reason="x", actor="a", now=NOW)
    with pytest.raises(ConfigError):
        set_hold(ledger, employer_id="acme", feed_id="f", held=True, reason="x", actor="a", now=NOW)
    with pytest.raises(LedgerError):
        set_hold(ledger, employer_id="acme", held=True, reason="  ", actor="a", now=NOW)


def test_symlinked_feed_folder_is_refused(tmp_path: Path) -> None:
    from carrierfeeds.retention import PurgeRefused

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / ENDED.feed_id).symlink_to(elsewhere)
    with pytest.raises(PurgeRefused):
        plan_employee_data_purge(tmp_path, PARTIES, Holds(), as_of=AS_OF)


def test_ledger_cutoff() -> None:
    assert ledger_cutoff(date(2026, 6, 1)) == datetime(2019, 6, 1, tzinfo=UTC)
    assert ledger_cutoff(date(2028, 2, 29), 1) == datetime(2027, 2, 28, tzinfo=UTC)
    with pytest.raises(ConfigError):
        ledger_cutoff(AS_OF, 0)


# ----------------------------------------------------------------------------------- ledger metadata
OLD = datetime(2018, 3, 1, 9, 0, tzinfo=UTC)
NEW = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def _run(ledger: Ledger, feed_id: str, day: date, at: datetime, *, outcome_at: datetime | None = None) -> str:
    """A delivered run written at ``at`` (its outcome at ``outcome_at``, default the same day)."""
    run = ledger.start_run(feed_id=feed_id, interval_start=day, interval_end=day + timedelta(days=1),
                           actor="airflow", now=at)
    ledger.record_stage(run.run_id, "build", "succeeded", now=at, detail={"members": 4})
    ic = ledger.allocate_control_numbers(run_id=run.run_id, sender_id="S", receiver_id=feed_id.upper()[:15],
                                         now=at)
    d = ledger.record_delivery_intent(
        run_id=run.run_id, feed_id=feed_id, interval_start=day, payload_sha256=sha256_hex(f"{feed_id}{day}"),
        file_name=f"{feed_id}_{ic.isa13:09d}.834.pgp", isa13=ic.isa13, gs06=ic.gs06, st02=ic.st02,
        recipient_fingerprint="A" * 40, member_counts={"members": 4}, transport="sftp", now=at)
    ledger.record_delivery_outcome(d.delivery_id, status="delivered", now=outcome_at or at, size=100)
    ledger.finish_run(run.run_id, "delivered", now=outcome_at or at, counts={"members": 4})
    return run.run_id


def _auth(ledger: Ledger, party: FeedParty, at: datetime, plans: tuple[str, ...] = ("MED",)) -> None:
    ledger.record_authorisation(feed_id=party.feed_id, employer_id=party.employer_id,
                                carrier_id=party.carrier_id, plans=plans, effective_from=date(2017, 1, 1),
                                effective_to=None, recorded_by="airflow", now=at)


def _count(ledger: Ledger, table: str) -> int:
    with ledger.engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608


def test_authorisations_are_recorded_once_per_content(ledger: Ledger) -> None:
    _auth(ledger, ENDED, OLD)
    _auth(ledger, ENDED, OLD + timedelta(days=1))
    first = ledger.authorisations(feed_id=ENDED.feed_id)
    assert len(first) == 1 and first[0].plans == ("MED",) and first[0].covers(date(2018, 1, 1))
    _auth(ledger, ENDED, NEW, plans=("DEN", "MED"))
    later = ledger.authorisations(feed_id=ENDED.feed_id)
    assert [a.plans for a in later] == [("MED",), ("DEN", "MED")]
    with pytest.raises(LedgerError):
        ledger.record_authorisation(feed_id="f", employer_id="e", carrier_id="c", plans=[],
                                    effective_from=date(2026, 1, 1), effective_to=None, recorded_by="t", now=NOW)
    with pytest.raises(LedgerError):
        ledger.record_authorisation(feed_id="f", employer_id="e", carrier_id="c", plans=["P"],
                                    effective_from=date(2026, 1, 1), effective_to=date(2025, 1, 1),
                                    recorded_by="t", now=NOW)
    assert ledger.verify_chain().ok


def test_ledger_metadata_is_purged_after_seven_years_and_the_chain_still_verifies(ledger: Ledger,
                                                                                 tmp_path: Path) -> None:
    _auth(ledger, ENDED, OLD)
    old_a = _run(ledger, ENDED.feed_id, date(2018, 2, 28), OLD)
    old_held = _run(ledger, HELD.feed_id, date(2018, 2, 28), OLD)
    # Sent in 2018, its outcome only recorded in 2025: the run stays whole.
    straddling = _run(ledger, OPEN.feed_id, date(2018, 2, 27), OLD, outcome_at=NEW)
    ledger.audit(actor="ops", action="note", object_type="run", object_id=old_a, now=OLD, reason="old note")
    ledger.audit(actor="ops", action="note", object_type="run", object_id=straddling, now=OLD,
                 reason="note on a kept run")
    _auth(ledger, ENDED, OLD + timedelta(days=30), plans=("DEN", "MED"))  # supersedes the first, pre cut-off
    new_a = _run(ledger, ENDED.feed_id, date(2025, 2, 28), NEW)
    before = ledger.verify_chain()
    assert before.ok

    report = run_purge(ledger, tmp_path, PARTIES, as_of=AS_OF, now=NOW, actor="housekeeping")
    counts = dict(report.ledger.counts)
    assert counts == {"audit_events": 1, "authorisations": 1, "delivery_outcomes": 1, "deliveries": 1,
                      "interchanges": 1, "run_events": 3, "runs": 1}
    assert report.ledger_cutoff == datetime(2019, 6, 1, tzinfo=UTC)
    assert ledger.get_run(old_a) is None
    for kept in (old_held, straddling, new_a):
        assert ledger.get_run(kept) is not None
    assert [a.plans for a in ledger.authorisations(feed_id=ENDED.feed_id)] == [("DEN", "MED")]
    assert [e.reason for e in ledger.audit_events(action="note")] == ["note on a kept run"]

    after = ledger.verify_chain()
    assert after.ok, after.first_broken
    assert after.rows_checked == before.rows_checked - 9 + 2  # plus the checkpoint and its audit event
    (checkpoint,) = ledger.purge_checkpoints()
    assert checkpoint.purged_rows == 9 and checkpoint.actor == "housekeeping"
    assert sum(g[1] - g[0] + 1 for g in checkpoint.gaps) == 9
    purge_event = ledger.audit_events(action="purge_ledger_metadata")[0]
    assert purge_event.detail["rows"] == 9 and purge_event.detail["runs"] == 1

    # Idempotent, and a later purge adds its own gaps next to the first ones.
    assert run_purge(ledger, tmp_path, PARTIES, as_of=AS_OF, now=NOW, actor="housekeeping").ledger.rows == 0
    later = run_purge(ledger, tmp_path, PARTIES, as_of=date(2033, 6, 1), now=NOW, actor="housekeeping")
    assert later.ledger.counts["runs"] == 2  # the 2025 run and the straddling one; the held run stays
    assert ledger.get_run(old_held) is not None and ledger.get_run(new_a) is None
    verdict = ledger.verify_chain()
    assert verdict.ok, verdict.first_broken
    assert len(ledger.purge_checkpoints()) == 2


def test_deletion_outside_a_purge_is_still_found(ledger: Ledger, tmp_path: Path) -> None:
    _run(ledger, ENDED.feed_id, date(2018, 2, 28), OLD)
    kept = _run(ledger, HELD.feed_id, date(2025, 2, 28), NEW)
    run_purge(ledger, tmp_path, PARTIES, as_of=AS_OF, now=NOW, actor="housekeeping")
    assert ledger.verify_chain().ok
    with ledger.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM run_events WHERE run_id = :r AND kind = 'stage'"), {"r": kept})
    verdict = ledger.verify_chain()
    assert not verdict.ok and verdict.first_broken is not None and "gap" in verdict.first_broken.reason


def test_an_edited_checkpoint_is_found(ledger: Ledger, tmp_path: Path) -> None:
    """Widening a recorded gap to hide a deleted row breaks the checkpoint's own hash."""
    _run(ledger, ENDED.feed_id, date(2018, 2, 28), OLD)  # seqs 1-7, purged
    kept = _run(ledger, HELD.feed_id, date(2025, 2, 28), NEW)  # its run row is seq 8
    run_purge(ledger, tmp_path, PARTIES, as_of=AS_OF, now=NOW, actor="housekeeping")
    with ledger.engine.begin() as conn:
        gaps = conn.execute(sa.text("SELECT gaps FROM purge_checkpoints")).scalar_one()
        conn.execute(sa.text("UPDATE purge_checkpoints SET gaps = :g"), {"g": gaps.replace("[1,", "[2,")})
    verdict = ledger.verify_chain()
    # No checkpoint now explains seq 1, so the walk stops at the first live row, before it ever reaches
    # the edited checkpoint (whose own hash no longer matches either).
    assert not verdict.ok and verdict.first_broken is not None
    assert (verdict.first_broken.table, verdict.first_broken.row_id, verdict.first_broken.seq) == ("runs", kept, 8)
    assert verdict.first_broken.reason.startswith("sequence gap: expected seq 1, found 8")
    assert verdict.rows_checked == 0


def test_held_feed_keeps_its_ledger_rows_and_audit_events(ledger: Ledger, tmp_path: Path) -> None:
    run_id = _run(ledger, HELD.feed_id, date(2018, 2, 28), OLD)
    ledger.audit(actor="ops", action="note", object_type="employer", object_id="umbrella", now=OLD)
    set_hold(ledger, feed_id=OPEN.feed_id, held=True, reason="matter 9", actor="counsel", now=OLD)
    _run(ledger, OPEN.feed_id, date(2018, 2, 28), OLD)
    report = run_purge(ledger, tmp_path, PARTIES, as_of=AS_OF, now=NOW, actor="housekeeping")
    assert report.ledger.rows == 0
    assert ledger.get_run(run_id) is not None
    assert [h.object_id for h in ledger.legal_holds()] == [OPEN.feed_id]


@pytest.mark.postgres
def test_least_privilege_role_cannot_purge(pg_database: str, tmp_path: Path) -> None:
    import uuid

    from carrierfeeds.ledger import grant_app_role

    owner = Ledger.open(pg_database)
    owner.upgrade()
    role = f"cf_app_{uuid.uuid4().hex[:10]}"
    grant_app_role(owner.engine, role)
    app = Ledger(sa.create_engine(pg_database, connect_args={"options": f"-c role={role}"}))
    try:
        _run(app, ENDED.feed_id, date(2018, 2, 28), OLD)
        assert run_purge(app, tmp_path, PARTIES, as_of=AS_OF, now=NOW, actor="x", dry_run=True).ledger.rows == 7
        with pytest.raises(LedgerError, match="owner"):
            run_purge(app, tmp_path, PARTIES, as_of=AS_OF, now=NOW, actor="x")
        assert app.verify_chain().ok
        assert run_purge(owner, tmp_path, PARTIES, as_of=AS_OF, now=NOW, actor="x").ledger.rows == 7
        assert app.verify_chain().ok
    finally:
        app.close()
        with owner.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")
        owner.close()


def test_acknowledgments_go_with_their_run_and_unmatched_ones_by_age(ledger: Ledger, tmp_path: Path) -> None:
    from carrierfeeds.ledger.records import AckRow

    old_run = _run(ledger, ENDED.feed_id, date(2018, 2, 28), OLD)
    (old_delivery,) = [d for d in ledger.deliveries() if d.run_id == old_run]
    ledger.record_acknowledgments(file_sha256=sha256_hex("ack-1"), source_id="sunrise", file_name="a1.999",
                                  rows=[AckRow(unit=1, kind="999", status="accepted",
                                               delivery_id=old_delivery.delivery_id)], now=OLD)
    ledger.record_acknowledgments(file_sha256=sha256_hex("ack-2"), source_id="sunrise", file_name="a2.999",
                                  rows=[AckRow(unit=1, kind="999", status="rejected")], now=OLD)
    ledger.record_acknowledgments(file_sha256=sha256_hex("ack-3"), source_id="sunrise", file_name="a3.999",
                                  rows=[AckRow(unit=1, kind="TA1", status="accepted")], now=NEW)
    report = run_purge(ledger, tmp_path, PARTIES, as_of=AS_OF, now=NOW, actor="housekeeping")
    assert report.ledger.counts["acknowledgments"] == 2 and report.ledger.counts["runs"] == 1
    assert [a.file_name for a in ledger.acknowledgments()] == ["a3.999"]
    assert ledger.verify_chain().ok


# ------------------------------------------------- outboxes, scratch, the staging store (auditor's findings)
MANUAL = FeedParty("acme-northwind", "acme", "northwind", contract_end=date(2026, 1, 31),
                   outbox="outbox/shared")  # due 2026-05-01
MANUAL_OPEN = FeedParty("initech-northwind", "initech", "northwind", contract_end=None, outbox="outbox/shared")


def _manual_delivery(ledger: Ledger, party: FeedParty, day: date, outbox: Path, *, confirm: bool) -> str:
    """A manual run whose (synthetic, encrypted-stand-in) file was placed in ``outbox``; its name."""
    at = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=6)
    run = ledger.start_run(feed_id=party.feed_id, interval_start=day, interval_end=day + timedelta(days=7),
                           actor="airflow", now=at)
    ic = ledger.allocate_control_numbers(run_id=run.run_id, sender_id="S", receiver_id="NORTHWIND", now=at)
    name = f"{party.feed_id}_{ic.isa13:09d}_{day:%Y%m%d}.pdf.gpg"
    d = ledger.record_delivery_intent(
        run_id=run.run_id, feed_id=party.feed_id, interval_start=day, payload_sha256=sha256_hex(name),
        file_name=name, isa13=ic.isa13, gs06=ic.gs06, st02=ic.st02, recipient_fingerprint="B" * 40,
        member_counts={"members": 3}, transport="manual", now=at)
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / name).write_bytes(b"-----BEGIN PGP MESSAGE----- synthetic")
    ledger.record_delivery_outcome(d.delivery_id, status="pending_handoff", now=at, size=37,
                                   remote_path=str(outbox / name))
    if confirm:
        ledger.confirm_handoff(d.delivery_id, by="ops-bob", method="courier",
                           received_by="carrier.desk", now=at + timedelta(hours=2))
    return name


def test_purge_takes_outbox_files_scratch_and_the_remote_staging_store(ledger: Ledger, tmp_path: Path) -> None:
    import fsspec

    outbox = tmp_path / "outbox" / "shared"
    pending = _manual_delivery(ledger, MANUAL, date(2026, 1, 5), outbox, confirm=False)
    handed = _manual_delivery(ledger, MANUAL, date(2026, 1, 12), outbox, confirm=True)
    resend = handed.replace(".pdf.gpg", "_resend1.pdf.gpg")
    (outbox / resend).write_bytes(b"synthetic resend")
    theirs = _manual_delivery(ledger, MANUAL_OPEN, date(2026, 1, 12), outbox, confirm=False)
    (outbox / "README.txt").write_bytes(b"not a feed's file")
    scratch = tmp_path / "scratch" / MANUAL.feed_id / "2026-01-12"
    scratch.mkdir(parents=True)
    (scratch / "accepted.parquet").write_bytes(b"plaintext stand-in")
    url = f"memory://cf-staging-{uuid.uuid4().hex[:8]}"
    fs, root = fsspec.core.url_to_fs(url)
    for feed_id in (MANUAL.feed_id, MANUAL_OPEN.feed_id):
        fs.pipe(f"{root}/{feed_id}/2026-01-12/census.csv.enc", b"0123456789")
    parties = [MANUAL, MANUAL_OPEN]

    dry = run_purge(ledger, tmp_path, parties, as_of=AS_OF, now=NOW, actor="ops", staging_url=url, dry_run=True)
    planned = {(i.kind, i.feed_id): (i.files, i.bytes, i.action, i.pending_handoffs) for i in dry.employee_data.items}
    assert planned == {("scratch", MANUAL.feed_id): (1, 18, "purge", 0),
                       ("staging_store", MANUAL.feed_id): (1, 10, "purge", 0),
                       ("outbox", MANUAL.feed_id): (3, 37 + 37 + 16, "purge", 1)}
    assert (outbox / pending).is_file() and fs.exists(f"{root}/{MANUAL.feed_id}")

    run_purge(ledger, tmp_path, parties, as_of=AS_OF, now=NOW, actor="housekeeping", staging_url=url)
    assert sorted(p.name for p in outbox.iterdir()) == ["README.txt", theirs]
    assert not (tmp_path / "scratch" / MANUAL.feed_id).exists()
    assert not fs.exists(f"{root}/{MANUAL.feed_id}") and fs.exists(f"{root}/{MANUAL_OPEN.feed_id}")
    events = {e.detail["kind"]: e.detail for e in ledger.audit_events(action="purge_employee_data")}
    assert set(events) == {"scratch", "staging_store", "outbox"}
    assert (events["outbox"]["files"], events["outbox"]["pending_handoffs"]) == (3, 1)
    # The purge's own records count; they never name a file.
    assert not any(n in str(e.detail) for e in ledger.audit_events(action="purge_employee_data")
                   for n in (pending, handed, resend, "census", "accepted"))
    assert ledger.verify_chain().ok
    again = run_purge(ledger, tmp_path, parties, as_of=AS_OF, now=NOW, actor="housekeeping", staging_url=url)
    assert again.employee_data.purged == ()


def test_a_hold_keeps_the_outbox_and_the_staging_store(ledger: Ledger, tmp_path: Path) -> None:
    import fsspec

    outbox = tmp_path / "outbox" / "shared"
    name = _manual_delivery(ledger, MANUAL, date(2026, 1, 5), outbox, confirm=False)
    url = f"memory://cf-staging-{uuid.uuid4().hex[:8]}"
    fs, root = fsspec.core.url_to_fs(url)
    fs.pipe(f"{root}/{MANUAL.feed_id}/2026-01-05/state.json", b"{}")
    set_hold(ledger, employer_id="acme", held=True, reason="matter 2026-40", actor="counsel", now=NOW)
    report = run_purge(ledger, tmp_path, [MANUAL], as_of=AS_OF, now=NOW, actor="ops", staging_url=url)
    assert {(i.kind, i.action) for i in report.employee_data.items} == {("outbox", "held"),
                                                                         ("staging_store", "held")}
    assert (outbox / name).is_file() and fs.exists(f"{root}/{MANUAL.feed_id}")


def test_a_staging_url_naming_the_local_staging_folder_is_counted_once(ledger: Ledger, tmp_path: Path) -> None:
    _employee_files(tmp_path, [ENDED.feed_id])
    url = (tmp_path / "staging").as_uri()
    report = run_purge(ledger, tmp_path, PARTIES, as_of=AS_OF, now=NOW, actor="ops", staging_url=url, dry_run=True)
    assert sorted(i.kind for i in report.employee_data.items) == sorted(EMPLOYEE_DATA_KINDS)


def test_a_symlinked_outbox_is_refused(ledger: Ledger, tmp_path: Path) -> None:
    from carrierfeeds.retention import PurgeRefused

    real = tmp_path / "elsewhere"
    _manual_delivery(ledger, MANUAL, date(2026, 1, 5), real, confirm=False)
    (tmp_path / "outbox").mkdir()
    (tmp_path / "outbox" / "shared").symlink_to(real)
    with pytest.raises(PurgeRefused):
        run_purge(ledger, tmp_path, [MANUAL], as_of=AS_OF, now=NOW, actor="ops")
    assert len(list(real.iterdir())) == 1


# ------------------------------------------------------------- retention periods from the settings
def _feed_file(feeds_dir: Path, *, feed_id: str, employer: str, contract_end: date | None,
               legal_hold: bool = False) -> None:
    """A copy of the demo feed with another id, employer, contract end and hold."""
    text = (Path(__file__).parents[1] / "feeds" / "acme-sunrise-medical.yaml").read_text()
    text = text.replace("feed_id: acme-sunrise-medical", f"feed_id: {feed_id}")
    text = text.replace("  id: acme\n", f"  id: {employer}\n", 1)
    end = contract_end.isoformat() if contract_end else "null"
    text = text.replace("contract_end: null", f"contract_end: {end}\n  legal_hold: {str(legal_hold).lower()}")
    feeds_dir.mkdir(parents=True, exist_ok=True)
    (feeds_dir / f"{feed_id}.yaml").write_text(text)


def test_purge_reads_its_retention_periods_from_the_settings(ledger: Ledger, ledger_url: str,
                                                             tmp_path: Path) -> None:
    from carrierfeeds.retention import parties_from_feeds_dir, purge_with_settings
    from carrierfeeds.settings import Settings

    feeds = tmp_path / "feeds"
    _feed_file(feeds, feed_id="acme-forty", employer="acme", contract_end=AS_OF - timedelta(days=40))
    assert [(p.feed_id, p.contract_end) for p in parties_from_feeds_dir(feeds)] == [
        ("acme-forty", date(2026, 4, 22))]
    _employee_files(tmp_path, ["acme-forty"])
    old = _run(ledger, "acme-forty", date(2024, 2, 28), datetime(2024, 3, 1, tzinfo=UTC))

    default = Settings(data_dir=tmp_path, feeds_dir=feeds, ledger_url=ledger_url)
    report = purge_with_settings(default, ledger, as_of=AS_OF, now=NOW, actor="ops", dry_run=True)
    assert report.employee_data.items == () and report.ledger.rows == 0  # 90 days and 7 years

    short = Settings(data_dir=tmp_path, feeds_dir=feeds, ledger_url=ledger_url, employee_data_retention_days=30,
                     ledger_retention_years=2)
    report = purge_with_settings(short, ledger, as_of=AS_OF, now=NOW, actor="ops", dry_run=True)
    assert {i.kind for i in report.employee_data.purged} == set(EMPLOYEE_DATA_KINDS)
    assert report.ledger_cutoff == datetime(2024, 6, 1, tzinfo=UTC) and report.ledger.counts["runs"] == 1
    # A value passed in (the CLI's --retention-days / --retention-years) overrides the setting.
    report = purge_with_settings(short, ledger, as_of=AS_OF, now=NOW, actor="ops", dry_run=True,
                                 retention_days=60, retention_years=3)
    assert report.employee_data.items == () and report.ledger.rows == 0
    purge_with_settings(short, ledger, as_of=AS_OF, now=NOW, actor="ops")
    assert ledger.get_run(old) is None
    assert {e.detail["retention_days"] for e in ledger.audit_events(action="purge_employee_data")} == {30}


def test_retention_settings_are_checked_when_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    import pydantic

    from carrierfeeds.settings import Settings

    monkeypatch.setenv("CARRIERFEEDS_EMPLOYEE_DATA_RETENTION_DAYS", "120")
    monkeypatch.setenv("CARRIERFEEDS_LEDGER_RETENTION_YEARS", "10")
    assert (Settings().employee_data_retention_days, Settings().ledger_retention_years) == (120, 10)
    monkeypatch.setenv("CARRIERFEEDS_LEDGER_RETENTION_YEARS", "0")
    with pytest.raises(pydantic.ValidationError):
        Settings()


def test_cli_purge_by_contract_end_with_holds_and_the_retention_setting(ledger: Ledger, ledger_url: str,
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`carrierfeeds purge` for real (no --dry-run): contracts ended 120 and 40 days ago go (the setting is
    30 days), a hold in a feed file and one placed with `hold set` keep theirs until lifted."""
    import json

    from typer.testing import CliRunner

    from carrierfeeds.cli import app

    data, feeds = tmp_path / "var", tmp_path / "feeds"
    monkeypatch.setenv("CARRIERFEEDS_DATA_DIR", str(data))
    monkeypatch.setenv("CARRIERFEEDS_FEEDS_DIR", str(feeds))
    monkeypatch.setenv("CARRIERFEEDS_LEDGER_URL", ledger_url)
    monkeypatch.setenv("CARRIERFEEDS_EMPLOYEE_DATA_RETENTION_DAYS", "30")
    ended = {"acme-ended": ("acme", 120, False), "hooli-ended": ("hooli", 40, False),
             "globex-held": ("globex", 200, True), "initech-held": ("initech", 150, False)}
    for feed_id, (employer, days, held) in ended.items():
        _feed_file(feeds, feed_id=feed_id, employer=employer, contract_end=AS_OF - timedelta(days=days),
                   legal_hold=held)
    _employee_files(data, list(ended))
    runner = CliRunner()
    assert runner.invoke(app, ["hold", "set", "--employer", "initech", "--reason", "matter 2026-51",
                               "--actor", "counsel"]).exit_code == 0

    def purge(*extra: str) -> dict[str, set[str]]:
        out = runner.invoke(app, ["purge", "--as-of", AS_OF.isoformat(), "--actor", "ops", "--json", *extra])
        assert out.exit_code == 0, out.output
        report = json.loads(out.output)
        assert report["dry_run"] is False
        actions: dict[str, set[str]] = {}
        for item in report["employee_data"]:
            actions.setdefault(item["action"], set()).add(item["feed_id"])
        return actions

    def left() -> set[str]:
        return {f for f in ended if all((data / k / f).is_dir() for k in EMPLOYEE_DATA_KINDS)}

    # The flag overrides the setting: 130 days keeps both ended contracts.
    assert purge("--retention-days", "130") == {"held": {"globex-held", "initech-held"}}
    assert left() == set(ended)
    assert purge() == {"purge": {"acme-ended", "hooli-ended"}, "held": {"globex-held", "initech-held"}}
    assert left() == {"globex-held", "initech-held"}
    assert not any((data / k / f).exists() for k in EMPLOYEE_DATA_KINDS for f in ("acme-ended", "hooli-ended"))
    assert purge() == {"held": {"globex-held", "initech-held"}}  # idempotent

    assert runner.invoke(app, ["hold", "clear", "--employer", "initech", "--reason", "matter closed",
                               "--actor", "counsel"]).exit_code == 0
    assert purge() == {"purge": {"initech-held"}, "held": {"globex-held"}}
    assert left() == {"globex-held"}
    events = ledger.audit_events(action="purge_employee_data")
    assert sorted((e.object_id, e.detail["kind"]) for e in events) == sorted(
        (f, k) for f in ("acme-ended", "hooli-ended", "initech-held") for k in EMPLOYEE_DATA_KINDS)
    assert {(e.actor, e.detail["retention_days"]) for e in events} == {("ops", 30)}
    assert ledger.verify_chain().ok


# ------------------------------------------------------------------- an aggregated carrier file
def _keystone_feeds(feeds_dir: Path, *, cedar_end: date | None, pinecrest_hold: bool = False) -> None:
    """The shipped aggregation example's two employer feeds, Cedar Grove's contract ending ``cedar_end``."""
    shipped = Path(__file__).resolve().parents[1] / "feeds"
    feeds_dir.mkdir(parents=True, exist_ok=True)
    for feed_id, end, hold in (("cedar-grove-keystone", cedar_end, False),
                               ("pinecrest-keystone", None, pinecrest_hold)):
        text = (shipped / f"{feed_id}.yaml").read_text()
        assert "contract_end: null" in text
        value = end.isoformat() if end else "null"
        text = text.replace("contract_end: null", f"contract_end: {value}\n  legal_hold: {str(hold).lower()}")
        (feeds_dir / f"{feed_id}.yaml").write_text(text)


def test_an_aggregated_files_folders_go_with_the_first_employer_whose_contract_ended(tmp_path: Path) -> None:
    from carrierfeeds.retention import parties_from_feeds_dir

    mappings = Path(__file__).resolve().parents[1] / "mappings"
    _employee_files(tmp_path, ["keystone-exchange"])  # the aggregate's own run folders (feed id: the mapping's)
    open_feeds = tmp_path / "feeds-open"
    _keystone_feeds(open_feeds, cedar_end=None)
    parties = parties_from_feeds_dir(open_feeds, mappings)
    aggregate = next(p for p in parties if p.feed_id == "keystone-exchange")
    assert aggregate.employer_feeds == (("cedar-grove-keystone", "cedar-grove"), ("pinecrest-keystone", "pinecrest"))
    # Both contracts open: the file's folders are neither due nor unknown.
    assert plan_employee_data_purge(tmp_path, parties, Holds(), as_of=AS_OF).items == ()

    ended = tmp_path / "feeds-ended"
    _keystone_feeds(ended, cedar_end=AS_OF - timedelta(days=120))
    parties = parties_from_feeds_dir(ended, mappings)
    plan = plan_employee_data_purge(tmp_path, parties, Holds(), as_of=AS_OF)
    mine = [i for i in plan.items if i.feed_id == "keystone-exchange"]
    assert {(i.kind, i.action, i.employer_id) for i in mine} == {
        (kind, "purge", "cedar-grove") for kind in EMPLOYEE_DATA_KINDS}

    # A hold on the other employer keeps the file's folders: they hold its members too.
    held = tmp_path / "feeds-held"
    _keystone_feeds(held, cedar_end=AS_OF - timedelta(days=120), pinecrest_hold=True)
    parties = parties_from_feeds_dir(held, mappings)
    holds = Holds(employers=frozenset({"pinecrest"}), feeds=frozenset({"pinecrest-keystone"}))
    plan = plan_employee_data_purge(tmp_path, parties, holds, as_of=AS_OF)
    assert {i.action for i in plan.items if i.feed_id == "keystone-exchange"} == {"held"}
