"""The hash chain: intact after real use and under concurrent writers; edits, deletions and reorders found."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from ledger_helpers import JAN, Clock, payload, start

from carrierfeeds.ledger import GENESIS, Ledger
from carrierfeeds.ledger.chain import ChainRow, row_hash, walk_chain
from carrierfeeds.ledger.models import AUDIT_TABLES


def _history(ledger: Ledger, clock: Clock) -> str:
    """A run with every kind of audit row; returns the run id."""
    run = start(ledger, clock)
    ledger.record_stage(run.run_id, "validate", "succeeded", now=clock(), detail={"members": 3})
    ic = ledger.allocate_control_numbers(run_id=run.run_id, sender_id="S", receiver_id="R", now=clock())
    d = ledger.record_delivery_intent(
        run_id=run.run_id, feed_id="acme-medical", interval_start=JAN[0], payload_sha256=payload(1),
        file_name="f.x12.pgp", isa13=ic.isa13, gs06=ic.gs06, st02=ic.st02, recipient_fingerprint="ABCDEF",
        member_counts={"members": 3}, transport="local", now=clock())
    ledger.record_delivery_outcome(d.delivery_id, status="delivered", now=clock(), size=10)
    ledger.audit(actor="ops", action="legal_hold", object_type="run", object_id=run.run_id, now=clock(),
                 reason="ticket 42")
    ledger.record_authorisation(feed_id="acme-medical", employer_id="acme", carrier_id="sunrise", plans=("MED",),
                                effective_from=JAN[0], effective_to=None, recorded_by="ops", now=clock())
    ledger.record_stage(run.run_id, "confirm", "succeeded", now=clock(), detail={"removed": 3})
    ledger.finish_run(run.run_id, "delivered", now=clock(), counts={"members": 3})
    return run.run_id


def _seq_rows(raw: sa.Engine) -> list[tuple[int, str]]:
    with raw.connect() as conn:
        return sorted((int(seq), name) for name in AUDIT_TABLES
                      for (seq,) in conn.execute(sa.text(f"SELECT seq FROM {name}")))  # noqa: S608


def test_intact_chain_covers_every_audit_row_once(ledger: Ledger, raw: sa.Engine, clock: Clock) -> None:
    _history(ledger, clock)
    verdict = ledger.verify_chain()
    rows = _seq_rows(raw)
    assert verdict.ok and verdict.first_broken is None
    assert verdict.rows_checked == len(rows) == 10
    assert [seq for seq, _ in rows] == list(range(1, 11))
    # Every audit table a delivery day writes; acknowledgments, purge checkpoints, resends and the
    # reconciliation worklist and notice sends have their own tests.
    assert {name for _, name in rows} == set(AUDIT_TABLES) - {"acknowledgments", "purge_checkpoints", "resends",
                                                              "reconciliations", "discrepancies",
                                                              "discrepancy_events", "disclosures",
                                                              "disclosed_members", "feed_lifecycle",
                                                              "notice_sends"}
    with raw.connect() as conn:
        assert conn.execute(sa.text("SELECT prev_hash FROM runs")).scalar_one() == GENESIS
        assert conn.execute(sa.text("SELECT row_hash FROM chain_head")).scalar_one() == verdict.head_hash


@pytest.mark.parametrize(("table", "column", "value"), [
    ("run_events", "detail", '{"members":4}'),
    ("deliveries", "payload_sha256", "f" * 64),
    ("delivery_outcomes", "status", "failed"),
    ("runs", "actor", "someone-else"),
    ("audit_events", "reason", "nothing to see"),
])
def test_an_edited_row_is_named(ledger: Ledger, raw: sa.Engine, clock: Clock, table: str, column: str,
                                value: str) -> None:
    _history(ledger, clock)
    with raw.begin() as conn:
        seq = conn.execute(sa.text(f"SELECT min(seq) FROM {table}")).scalar_one()  # noqa: S608
        conn.execute(sa.text(f"UPDATE {table} SET {column} = :v WHERE seq = :s"), {"v": value, "s": seq})  # noqa: S608
    verdict = ledger.verify_chain()
    assert not verdict.ok and verdict.first_broken is not None
    assert (verdict.first_broken.table, verdict.first_broken.seq) == (table, seq)
    assert "edited" in verdict.first_broken.reason
    assert verdict.rows_checked == seq - 1


def test_an_edited_time_is_found(ledger: Ledger, raw: sa.Engine, clock: Clock) -> None:
    _history(ledger, clock)
    with raw.begin() as conn:
        conn.execute(sa.text("UPDATE run_events SET at = :t WHERE seq = 2"), {"t": clock()})
    broken = ledger.verify_chain().first_broken
    assert broken is not None and (broken.table, broken.seq) == ("run_events", 2)


def test_a_deleted_row_is_found(ledger: Ledger, raw: sa.Engine, clock: Clock) -> None:
    _history(ledger, clock)
    with raw.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_events"))
    verdict = ledger.verify_chain()
    assert not verdict.ok and verdict.first_broken is not None
    assert "gap" in verdict.first_broken.reason


def test_a_deleted_last_row_is_found_through_the_head(ledger: Ledger, raw: sa.Engine, clock: Clock) -> None:
    _history(ledger, clock)
    with raw.begin() as conn:
        conn.execute(sa.text("DELETE FROM run_events WHERE seq = (SELECT max(seq) FROM run_events)"))
    verdict = ledger.verify_chain()
    assert not verdict.ok and verdict.first_broken is not None
    assert verdict.first_broken.table == "chain_head" and verdict.rows_checked == 9


def test_swapped_sequence_numbers_are_found(ledger: Ledger, raw: sa.Engine, clock: Clock) -> None:
    run_id = _history(ledger, clock)
    with raw.begin() as conn:
        a, b = conn.execute(sa.text("SELECT seq FROM run_events WHERE run_id = :r AND kind = 'stage' "
                                    "ORDER BY seq"), {"r": run_id}).scalars().all()[:2]
        # Through a free value so the unique constraint on seq holds at each step.
        conn.execute(sa.text("UPDATE run_events SET seq = -1 WHERE seq = :a"), {"a": a})
        conn.execute(sa.text("UPDATE run_events SET seq = :a WHERE seq = :b"), {"a": a, "b": b})
        conn.execute(sa.text("UPDATE run_events SET seq = :b WHERE seq = -1"), {"b": b})
    verdict = ledger.verify_chain()
    assert not verdict.ok and verdict.first_broken is not None
    assert (verdict.first_broken.table, verdict.first_broken.seq) == ("run_events", a)


def test_a_forged_row_rehashed_on_its_own_still_breaks_the_next_link(ledger: Ledger, raw: sa.Engine,
                                                                    clock: Clock) -> None:
    """A tamperer who recomputes the edited row's hash must also rewrite every later row and the head."""
    _history(ledger, clock)
    with raw.begin() as conn:
        row = conn.execute(sa.text("SELECT * FROM run_events WHERE seq = 2")).one()._asdict()
        row["detail"] = '{"members":4}'
        content = {k: v for k, v in row.items() if k not in ("id", "seq", "prev_hash", "row_hash")}
        content["at"] = ledger.run_events(row["run_id"])[0].at
        forged = row_hash("run_events", 2, content, row["prev_hash"])
        conn.execute(sa.text("UPDATE run_events SET detail = :d, row_hash = :h WHERE seq = 2"),
                     {"d": row["detail"], "h": forged})
    broken = ledger.verify_chain().first_broken
    assert broken is not None and broken.seq == 3 and "prev_hash" in broken.reason


def test_concurrent_writers_never_fork_the_chain(ledger: Ledger, raw: sa.Engine, clock: Clock) -> None:
    runs = [start(ledger, clock, feed_id=f"feed-{i}").run_id for i in range(4)]
    url = ledger.engine.url.render_as_string(hide_password=False)
    now = clock()
    barrier = threading.Barrier(len(runs))
    errors: list[BaseException] = []

    def writer(run_id: str) -> None:
        own = Ledger.open(url)
        try:
            barrier.wait()
            for i in range(10):
                own.record_stage(run_id, f"stage_{i}", "succeeded", now=now, detail={"i": i})
        except BaseException as exc:  # asserted on below
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=writer, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    verdict = ledger.verify_chain()
    assert verdict.ok and verdict.rows_checked == 4 * 2 + 40
    assert [seq for seq, _ in _seq_rows(raw)] == list(range(1, 49))


def test_walk_chain_on_hand_built_rows() -> None:
    rows, prev = [], GENESIS
    for seq in (1, 2, 3):
        content = {"n": seq}
        h = row_hash("t", seq, content, prev)
        rows.append(ChainRow("t", str(seq), seq, prev, h, content))
        prev = h
    assert walk_chain(rows, head_seq=3, head_hash=prev).ok
    assert not walk_chain(rows[:2], head_seq=3, head_hash=prev).ok
    assert walk_chain([rows[0], rows[2]], head_seq=3, head_hash=prev).first_broken.seq == 3  # type: ignore[union-attr]
    assert walk_chain([], head_seq=0, head_hash=GENESIS).ok
