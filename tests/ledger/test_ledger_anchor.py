"""Anchors outside the database: a rewrite by whoever owns the ledger (truncation, or an edit with every
hash after it recomputed by our own chain code) is found by ``carrierfeeds audit verify``; retention
purges keep verifying; a forged checkpoint or an edited anchor line is found too.

The tampering runs as the database superuser (PostgreSQL user ``postgres``; SQLite's file owner), the
attacker the least-privilege role cannot stop, and each time the plain chain walk is shown to pass: the
anchors are what catch it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from ledger_helpers import Clock, payload, start
from typer.testing import CliRunner

from carrierfeeds.cli import app
from carrierfeeds.ledger import Ledger
from carrierfeeds.ledger.anchor import ANCHOR_FILE_NAME, KEY_FILE_NAME, AnchorLog, verify_ledger
from carrierfeeds.ledger.base import Tx
from carrierfeeds.ledger.chain import canonical_json, row_hash
from carrierfeeds.ledger.models import AUDIT_TABLES, chain_head, purge_checkpoints, row_content
from carrierfeeds.outcomes import ExitCode
from carrierfeeds.retention import FeedParty, run_purge

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    data = tmp_path / "var"
    data.mkdir()
    monkeypatch.setenv("CARRIERFEEDS_DATA_DIR", str(data))
    monkeypatch.setenv("CARRIERFEEDS_LEDGER_URL", ledger_url)
    monkeypatch.setenv("CARRIERFEEDS_FEEDS_DIR", str(tmp_path / "no-feeds"))
    return {"data": data, "anchors": AnchorLog(data / "anchors", data / "keys" / KEY_FILE_NAME)}


@pytest.fixture
def superuser(ledger_url: str) -> Iterator[Ledger]:
    """The ledger opened as its owner (PostgreSQL: the superuser ``postgres``), the tamperer's view."""
    opened = Ledger.open(ledger_url)
    opened.upgrade()
    yield opened
    opened.close()


def _day(ledger: Ledger, clock: Clock, n: int) -> str:
    """One delivered run: run, attempt, intent, outcome, finish (and a stage event)."""
    run = start(ledger, clock, interval=(date(2026, 1, n), date(2026, 1, n)))
    ledger.record_stage(run.run_id, "validate", "succeeded", now=clock(), detail={"members": 3})
    ic = ledger.allocate_control_numbers(run_id=run.run_id, sender_id="S", receiver_id="R", now=clock())
    d = ledger.record_delivery_intent(
        run_id=run.run_id, feed_id="acme-medical", interval_start=date(2026, 1, n), payload_sha256=payload(n),
        file_name=f"f{n}.x12.pgp", isa13=ic.isa13, gs06=ic.gs06, st02=ic.st02, recipient_fingerprint="ABCDEF",
        member_counts={"members": 3}, transport="sftp", now=clock())
    ledger.record_delivery_outcome(d.delivery_id, status="delivered", now=clock(), size=10)
    ledger.finish_run(run.run_id, "delivered", now=clock(), counts={"members": 3})
    return run.run_id


def _verify() -> Any:
    return runner.invoke(app, ["audit", "verify", "--json"])


def _rows(conn: sa.Connection) -> list[tuple[int, str, sa.Table, dict[str, Any]]]:
    out = []
    for name, (table, _) in AUDIT_TABLES.items():
        for r in conn.execute(sa.select(table)):
            out.append((int(r.seq), name, table, row_content(table, r._mapping)))
    return sorted(out, key=lambda x: x[0])


def _rehash_from(conn: sa.Connection, first: int) -> None:
    """What an attacker with our code does after editing a row: recompute every hash from ``first`` on,
    relink every row, move the head."""
    prev = None
    for seq, name, table, content in _rows(conn):
        if seq < first:
            prev = conn.execute(sa.select(table.c.row_hash).where(table.c.seq == seq)).scalar_one()
            continue
        assert prev is not None
        digest = row_hash(name, seq, content, prev)
        conn.execute(sa.update(table).where(table.c.seq == seq).values(prev_hash=prev, row_hash=digest))
        prev = digest
    last = max(seq for seq, *_ in _rows(conn))
    conn.execute(sa.update(chain_head).where(chain_head.c.id == 1).values(seq=last, row_hash=prev))


def test_deleting_the_newest_rows_is_found(env: dict[str, Any], superuser: Ledger) -> None:
    clock = Clock()
    _day(superuser, clock, 1)
    first = _verify()
    assert first.exit_code == ExitCode.OK, first.output
    anchored = json.loads(first.output)["anchored_now"]
    _day(superuser, clock, 2)
    assert _verify().exit_code == ExitCode.OK  # anchors the second day too
    # The superuser deletes the second day and sets the head back to where the first anchor saw it.
    with superuser.engine.begin() as conn:
        for _, (table, _) in reversed(AUDIT_TABLES.items()):
            conn.execute(sa.delete(table).where(table.c.seq > anchored["seq"]))
        conn.execute(sa.update(chain_head).where(chain_head.c.id == 1)
                     .values(seq=anchored["seq"], row_hash=anchored["head"]))
    assert superuser.verify_chain().ok  # the chain alone cannot tell
    result = _verify()
    assert result.exit_code == ExitCode.FAILED, result.output
    data = json.loads(result.output)
    assert data["chain_ok"] and not data["ok"] and data["anchored_now"] is None
    assert "is gone and no purge removed it" in data["anchors"]["problem"]


def test_a_full_rehash_after_editing_a_row_is_found(env: dict[str, Any], superuser: Ledger) -> None:
    clock = Clock()
    run_id = _day(superuser, clock, 1)
    _day(superuser, clock, 2)
    assert _verify().exit_code == ExitCode.OK
    # Edit the first run's delivery (a different payload hash), then rehash everything after it.
    with superuser.engine.begin() as conn:
        d = AUDIT_TABLES["deliveries"][0]
        seq = conn.execute(sa.select(d.c.seq).where(d.c.run_id == run_id)).scalar_one()
        conn.execute(sa.update(d).where(d.c.seq == seq).values(payload_sha256="f" * 64))
        _rehash_from(conn, seq)
    assert superuser.verify_chain().ok  # the rewritten chain is internally consistent
    result = _verify()
    assert result.exit_code == ExitCode.FAILED, result.output
    assert "no longer has the hash anchored" in json.loads(result.output)["anchors"]["problem"]


def test_runs_and_verify_append_signed_lines_and_an_edited_line_is_refused(env: dict[str, Any],
                                                                        superuser: Ledger) -> None:
    clock = Clock()
    _day(superuser, clock, 1)
    assert _verify().exit_code == ExitCode.OK
    anchors: AnchorLog = env["anchors"]
    assert (anchors.key_file.stat().st_mode & 0o777) == 0o600
    lines = anchors.path.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["seq"] == superuser.chain_head()[0]
    # Moving a signed anchor back (to hide later rows) breaks its signature.
    forged = json.loads(lines[0]) | {"seq": 1}
    anchors.path.write_text(json.dumps(forged) + "\n")
    result = _verify()
    assert result.exit_code == ExitCode.FAILED
    assert "line 1 is not a line this deployment signed" in json.loads(result.output)["anchors"]["problem"]


OLD = datetime(2018, 3, 1, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PARTY = FeedParty(feed_id="acme-medical", employer_id="acme", carrier_id="sunrise")


class _OldClock(Clock):
    def __init__(self, t: datetime) -> None:
        self.t = t


def test_purges_keep_verifying_and_retire_the_anchors_they_remove(env: dict[str, Any], superuser: Ledger,
                                                                 tmp_path: Path) -> None:
    anchors: AnchorLog = env["anchors"]
    old = _OldClock(OLD)
    _day(superuser, old, 1)
    assert verify_ledger(superuser, anchors, now=OLD + timedelta(hours=1)).ok  # anchors a row the purge takes
    _day(superuser, Clock(), 2)
    report = run_purge(superuser, tmp_path / "data", [PARTY], as_of=date(2026, 6, 1), now=NOW, actor="test",
                       anchors=anchors)
    assert report.ledger.rows > 0
    kinds = [json.loads(x)["kind"] for x in anchors.path.read_text().splitlines()]
    assert kinds == ["head", "purge", "head"]
    result = _verify()
    assert result.exit_code == ExitCode.OK, result.output
    assert json.loads(result.output)["anchors"]["retired_by_purge"] == 1


def test_a_forged_checkpoint_hiding_deleted_rows_is_found(env: dict[str, Any], superuser: Ledger) -> None:
    """Deleting old rows by hand and appending a checkpoint that "explains" the gap, after the newest
    anchor: the chain walk accepts it, no signed purge line lists it."""
    clock = Clock()
    run_id = _day(superuser, clock, 1)
    _day(superuser, clock, 2)
    assert _verify().exit_code == ExitCode.OK
    with superuser.engine.begin() as conn:
        ev = AUDIT_TABLES["run_events"][0]
        victim = conn.execute(sa.select(ev).where(ev.c.run_id == run_id, ev.c.kind == "stage")).one()
        conn.execute(sa.delete(ev).where(ev.c.seq == victim.seq))
    # The attacker appends a checkpoint row through our own chain code.
    with superuser.engine.begin() as conn:
        head = conn.execute(sa.select(chain_head)).one()
        tx = Tx(conn, int(head.seq), str(head.row_hash))
        gap = [victim.seq, victim.seq, victim.prev_hash, victim.row_hash]
        tx.append(purge_checkpoints, {"cutoff": NOW, "purged_rows": 1, "gaps": canonical_json([gap]),
                                      "counts": canonical_json({"run_events": 1}), "actor": "x", "at": NOW})
        conn.execute(sa.update(chain_head).values(seq=tx.seq, row_hash=tx.head))
    assert superuser.verify_chain().ok
    result = _verify()
    assert result.exit_code == ExitCode.FAILED, result.output
    assert "no signed purge line lists" in json.loads(result.output)["anchors"]["problem"]


def test_a_lost_anchor_key_is_a_configuration_error_not_a_fresh_key(env: dict[str, Any],
                                                                   superuser: Ledger) -> None:
    _day(superuser, Clock(), 1)
    assert _verify().exit_code == ExitCode.OK
    anchors: AnchorLog = env["anchors"]
    anchors.key_file.unlink()
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == ExitCode.USAGE
    assert "key file is missing but anchors exist" in result.output
    assert not anchors.key_file.exists()
    assert (env["data"] / "anchors" / ANCHOR_FILE_NAME).is_file()


def test_the_audit_report_prints_the_anchors_and_fails_on_a_rewrite(env: dict[str, Any], superuser: Ledger,
                                                                   tmp_path: Path) -> None:
    clock = Clock()
    _day(superuser, clock, 1)
    out = tmp_path / "report.html"
    args = ["audit", "report", "--since", "2026-01-01", "--until", "2026-12-31", "--out", str(out)]
    ok = runner.invoke(app, args)
    assert ok.exit_code == ExitCode.OK, ok.output
    seq, head = superuser.chain_head()
    assert "Anchors outside the database" in out.read_text() and "no anchors yet" in out.read_text()
    again = runner.invoke(app, args)
    assert again.exit_code == ExitCode.OK
    assert f"latest seq {seq} {head}" in out.read_text()
    with superuser.engine.begin() as conn:
        ev = AUDIT_TABLES["run_events"][0]
        conn.execute(sa.delete(ev).where(ev.c.seq == seq))
    (prev,) = superuser.chain_hashes([seq - 1]).values()
    with superuser.engine.begin() as conn:
        conn.execute(sa.update(chain_head).values(seq=seq - 1, row_hash=prev))
    assert superuser.verify_chain().ok
    broken = runner.invoke(app, args)
    assert broken.exit_code == ExitCode.FAILED
    assert "intact" in out.read_text() and "anchor check FAILED: row seq" in out.read_text()


def test_a_line_torn_by_a_crash_is_skipped_and_the_next_one_stays_whole(env: dict[str, Any],
                                                                       superuser: Ledger) -> None:
    _day(superuser, Clock(), 1)
    assert _verify().exit_code == ExitCode.OK
    anchors: AnchorLog = env["anchors"]
    whole = anchors.path.read_text()
    anchors.path.write_text(whole + whole[: len(whole) // 2])  # a second line cut short
    assert _verify().exit_code == ExitCode.OK
    lines = anchors.path.read_text().splitlines()
    assert len(lines) == 3 and lines[2].endswith("}")
    assert _verify().exit_code == ExitCode.OK
