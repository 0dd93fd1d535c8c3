"""Manual hand-off: the private outbox, the ledger's pending -> handed_off lifecycle, and the CLI."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from carrierfeeds.cli import app
from carrierfeeds.errors import PermanentError, Refused
from carrierfeeds.ledger import DeliveryRecord, Ledger, LedgerError, UnknownRecord, sha256_hex
from carrierfeeds.transport.base import RemoteFileExists, Transport
from carrierfeeds.transport.manual import HANDED_OFF, PENDING_HANDOFF, ManualTransport

T0 = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
DAY = date(2026, 11, 20)
runner = CliRunner()


# ---------------------------------------------------------------------------------- the outbox
@pytest.fixture
def cipher(tmp_path: Path) -> Path:
    path = tmp_path / "run" / "doc.pdf.pgp"
    path.parent.mkdir()
    path.write_bytes(b"-----pretend ciphertext-----" * 100)
    return path


def test_manual_transport_places_the_file_privately(cipher: Path, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox" / "acme"
    transport = ManualTransport(outbox)
    assert isinstance(transport, Transport) and transport.name == "manual"
    assert transport.stat("acme_000000001_20261120.pdf.pgp") is None
    receipt = transport.deliver(cipher, "acme_000000001_20261120.pdf.pgp")
    placed = outbox / "acme_000000001_20261120.pdf.pgp"
    assert receipt.remote_path == str(placed) and receipt.size == cipher.stat().st_size
    assert receipt.host_key_fingerprint is None and receipt.attempts == 1
    assert placed.read_bytes() == cipher.read_bytes()
    assert stat.S_IMODE(outbox.stat().st_mode) == 0o700
    assert stat.S_IMODE(placed.stat().st_mode) == 0o600
    found = transport.stat(placed.name)
    assert found is not None and found.size == receipt.size
    assert sorted(p.name for p in outbox.iterdir()) == [placed.name]  # no temp file left behind


def test_manual_transport_never_overwrites(cipher: Path, tmp_path: Path) -> None:
    transport = ManualTransport(tmp_path / "outbox")
    transport.deliver(cipher, "f.pgp")
    other = tmp_path / "other.pgp"
    other.write_bytes(b"different")
    with pytest.raises(RemoteFileExists):
        transport.deliver(other, "f.pgp")
    assert (tmp_path / "outbox" / "f.pgp").read_bytes() == cipher.read_bytes()


def test_manual_transport_tightens_a_loose_outbox_and_refuses_a_symlink(cipher: Path, tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)  # noqa: S103 (the loose outbox under test)
    ManualTransport(loose).deliver(cipher, "f.pgp")
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700

    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(PermanentError, match="not a plain directory"):
        ManualTransport(link).deliver(cipher, "f.pgp")
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("name", ["../escape.pgp", ".hidden", "a/b.pgp", ""])
def test_manual_transport_refuses_names_that_are_not_plain(cipher: Path, tmp_path: Path, name: str) -> None:
    with pytest.raises(Refused):
        ManualTransport(tmp_path / "outbox").deliver(cipher, name)


# ---------------------------------------------------------------------------------- the ledger
@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    opened = Ledger.open(ledger_url)
    opened.upgrade()
    yield opened
    opened.close()


def _placed(ledger: Ledger, *, feed_id: str = "acme-paper", day: date = DAY, transport: str = "manual",
            outcome: str = PENDING_HANDOFF, n: int = 1) -> DeliveryRecord:
    """A run whose encrypted PDF was placed (or, with transport sftp, delivered) as the pipeline does it."""
    run = ledger.start_run(feed_id=feed_id, interval_start=day, interval_end=day + timedelta(days=1),
                           actor="test", now=T0)
    ic = ledger.allocate_control_numbers(run_id=run.run_id, sender_id="CARRIERFEEDS", receiver_id="PAPER",
                                         now=T0)
    intent = ledger.record_delivery_intent(
        run_id=run.run_id, feed_id=feed_id, interval_start=day, payload_sha256=sha256_hex(f"pdf {n}"),
        file_name=f"{feed_id}_{ic.isa13:09d}_{day:%Y%m%d}.pdf.pgp", isa13=ic.isa13, gs06=ic.gs06,
        st02=ic.st02, recipient_fingerprint="A" * 40, member_counts={"members": 12}, transport=transport,
        now=T0)
    ledger.record_delivery_outcome(intent.delivery_id, status=outcome, now=T0 + timedelta(seconds=1),
                                   ciphertext_sha256=sha256_hex(f"cipher {n}"), size=2048,
                                   remote_path=f"/var/outbox/{intent.file_name}")
    return intent


def test_handoff_lifecycle_is_recorded_and_audited(ledger: Ledger) -> None:
    intent = _placed(ledger)
    pending = ledger.pending_handoffs()
    assert [d.delivery_id for d in pending] == [intent.delivery_id]
    assert pending[0].status == PENDING_HANDOFF and pending[0].transport == "manual"

    when = T0 + timedelta(hours=3)
    confirmed = ledger.confirm_handoff(intent.delivery_id, by="jane.ops", method="courier",
                           received_by="carrier.desk", now=when)
    assert confirmed.status == HANDED_OFF and confirmed.updated_at == when
    assert confirmed.remote_path == f"/var/outbox/{intent.file_name}"  # placement facts stay folded in
    assert ledger.pending_handoffs() == []

    outcomes = ledger.delivery_outcomes(delivery_ids=[intent.delivery_id])
    assert [(o.status, o.actor, o.reason) for o in outcomes] == [
        (PENDING_HANDOFF, "system", None), (HANDED_OFF, "jane.ops", "courier")]
    events = ledger.audit_events(action="handoff_confirmed")
    assert [(e.actor, e.object_type, e.object_id, e.reason) for e in events] == [
        ("jane.ops", "delivery", intent.delivery_id, "courier")]
    assert events[0].detail == {"feed_id": "acme-paper", "isa13": intent.isa13}
    # A handed-off file is on the recipient's side: find_delivery prefers it, as it does a delivered one.
    found = ledger.find_delivery(feed_id="acme-paper", interval_start=DAY)
    assert found is not None and found.status == HANDED_OFF
    assert ledger.verify_chain().ok


def test_confirm_refuses_twice_unknown_ids_and_electronic_deliveries(ledger: Ledger) -> None:
    intent = _placed(ledger)
    ledger.confirm_handoff(intent.delivery_id, by="jane.ops", method="courier",
                           received_by="carrier.desk", now=T0 + timedelta(hours=1))
    with pytest.raises(LedgerError, match="already confirmed"):
        ledger.confirm_handoff(intent.delivery_id, by="bob.ops", method="in-person",
                           received_by="carrier.desk", now=T0 + timedelta(hours=2))
    with pytest.raises(UnknownRecord):
        ledger.confirm_handoff("f" * 32, by="jane.ops", method="courier", received_by="carrier.desk", now=T0)
    sent = _placed(ledger, feed_id="acme-sftp", transport="sftp", outcome="delivered", n=2)
    with pytest.raises(LedgerError, match="not pending a hand-off"):
        ledger.confirm_handoff(sent.delivery_id, by="jane.ops", method="courier", received_by="carrier.desk", now=T0)
    assert len(ledger.audit_events(action="handoff_confirmed")) == 1
    assert ledger.verify_chain().ok


def test_pending_handoffs_filter_by_feed(ledger: Ledger) -> None:
    a = _placed(ledger, feed_id="acme-paper", n=1)
    b = _placed(ledger, feed_id="globex-paper", n=2)
    assert [d.delivery_id for d in ledger.pending_handoffs(feed_id="globex-paper")] == [b.delivery_id]
    assert {d.delivery_id for d in ledger.pending_handoffs()} == {a.delivery_id, b.delivery_id}


# ------------------------------------------------------------------------------------- the CLI
def test_cli_lists_and_confirms_a_handoff(ledger: Ledger, ledger_url: str, tmp_path: Path) -> None:
    env = {"CARRIERFEEDS_LEDGER_URL": ledger_url, "CARRIERFEEDS_DATA_DIR": str(tmp_path)}
    intent = _placed(ledger)

    listed = runner.invoke(app, ["handoff", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)["pending"]
    assert [(r["delivery_id"], r["feed_id"], r["interval_start"], r["members"]) for r in rows] == [
        (intent.delivery_id, "acme-paper", "2026-11-20", 12)]
    table = runner.invoke(app, ["handoff", "list"], env=env)
    assert table.exit_code == 0 and intent.delivery_id in table.output

    missing = runner.invoke(app, ["handoff", "confirm", intent.delivery_id, "--by", "jane.ops",
                                  "--method", "courier"], env=env)
    assert missing.exit_code == 2 and "--received-by" in missing.output  # who took it is not optional
    done = runner.invoke(app, ["handoff", "confirm", intent.delivery_id, "--by", "jane.ops",
                               "--method", "courier", "--received-by", "R. Okafor, carrier mail room",
                               "--json"], env=env)
    assert done.exit_code == 0, done.output
    shown = json.loads(done.output)
    assert (shown["status"], shown["received_by"]) == (HANDED_OFF, "R. Okafor, carrier mail room")
    assert ledger.audit_events(action="handoff_confirmed")[0].actor == "jane.ops"
    (row,) = [o for o in ledger.delivery_outcomes(delivery_ids=[intent.delivery_id]) if o.status == HANDED_OFF]
    assert (row.actor, row.reason, row.received_by) == ("jane.ops", "courier", "R. Okafor, carrier mail room")
    assert ledger.verify_chain().ok

    again = runner.invoke(app, ["handoff", "confirm", intent.delivery_id, "--by", "jane.ops",
                                "--method", "courier", "--received-by", "someone"], env=env)
    assert again.exit_code == 5 and "already confirmed" in again.output
    unknown = runner.invoke(app, ["handoff", "confirm", "nope", "--by", "jane.ops", "--method", "courier",
                                  "--received-by", "someone"], env=env)
    assert unknown.exit_code == 2 and "no delivery 'nope'" in unknown.output
    empty = runner.invoke(app, ["handoff", "list"], env=env)
    assert empty.exit_code == 0 and "no hand-offs pending" in empty.output


# ------------------------------------------------- the pipeline keeps manual deliveries on the list
class _ProcessKilled(BaseException):
    """The worker dies after the file is in the outbox and before the ledger's outcome row."""


class _KilledAfterPlacing:
    name = "manual"

    def __init__(self, inner: ManualTransport) -> None:
        self.inner = inner

    def stat(self, remote_name: str) -> object:
        return self.inner.stat(remote_name)

    def sha256(self, remote_name: str) -> str | None:
        return self.inner.sha256(remote_name)

    def deliver(self, local: Path, remote_name: str, **kwargs: Any) -> object:
        self.inner.deliver(local, remote_name, **kwargs)
        raise _ProcessKilled


class _Counting:
    name = "manual"

    def __init__(self, inner: ManualTransport) -> None:
        self.inner = inner
        self.placed = 0

    def stat(self, remote_name: str) -> object:
        return self.inner.stat(remote_name)

    def sha256(self, remote_name: str) -> str | None:
        return self.inner.sha256(remote_name)

    def deliver(self, local: Path, remote_name: str, **kwargs: Any) -> object:
        self.placed += 1
        return self.inner.deliver(local, remote_name, **kwargs)


def _clock() -> datetime:
    return datetime(2026, 11, 22, 7, 30, tzinfo=UTC)


@pytest.fixture
def manual_ws(tmp_path: Path, demo_keys: object, ledger_url: str) -> object:
    from carrierfeeds.census.generate import generate_census, write_census_csv
    from carrierfeeds.config import ManualDelivery
    from carrierfeeds.demo import prepare_workspace

    ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=tmp_path / "keys", ledger_url=ledger_url,
                           config_root=Path(__file__).resolve().parents[1], feed_id="acme-northwind-dental",
                           delivery=ManualDelivery(outbox="outbox/northwind"))
    write_census_csv(generate_census(20, 9, as_of=DAY), ws.inbound / "census_20261120.csv")
    return ws


def _outbox(ws: object) -> Path:
    return ws.settings.data_dir / "outbox" / "northwind"  # type: ignore[attr-defined]


@pytest.mark.slow
def test_a_crash_after_placing_the_file_still_leaves_a_pending_handoff(manual_ws: object) -> None:
    from carrierfeeds.run.context import RunRef
    from carrierfeeds.run.stages import run_feed
    from carrierfeeds.settings import open_ledger

    ws = manual_ws
    ref = RunRef.for_day("acme-northwind-dental", DAY)
    with pytest.raises(_ProcessKilled):
        run_feed(ws.settings, ref, clock=_clock, actor="test",  # type: ignore[attr-defined]
                 transport=_KilledAfterPlacing(ManualTransport(_outbox(ws))))
    (placed,) = _outbox(ws).iterdir()
    counting = _Counting(ManualTransport(_outbox(ws)))
    rerun = run_feed(ws.settings, ref, clock=_clock, actor="test", transport=counting)  # type: ignore[attr-defined]
    assert rerun.status == "pending_handoff", rerun.error
    assert counting.placed == 0 and [p.name for p in _outbox(ws).iterdir()] == [placed.name]

    ledger = open_ledger(ws.settings)  # type: ignore[attr-defined]
    try:
        (pending,) = ledger.pending_handoffs(feed_id=ref.feed_id)
        assert pending.size == placed.stat().st_size
        outcomes = ledger.delivery_outcomes(delivery_ids=[pending.delivery_id])
        assert [o.status for o in outcomes] == [PENDING_HANDOFF]
        env = {"CARRIERFEEDS_LEDGER_URL": ws.settings.ledger_url,  # type: ignore[attr-defined]
               "CARRIERFEEDS_DATA_DIR": str(ws.settings.data_dir)}  # type: ignore[attr-defined]
        listed = runner.invoke(app, ["handoff", "list", "--json"], env=env)
        assert listed.exit_code == 0, listed.output
        assert [r["delivery_id"] for r in json.loads(listed.output)["pending"]] == [pending.delivery_id]
        ledger.confirm_handoff(pending.delivery_id, by="ops.jane", method="courier",
                           received_by="carrier.desk", now=_clock())
        assert run_feed(ws.settings, ref, clock=_clock, actor="test",  # type: ignore[attr-defined]
                        transport=counting).status == "already_delivered"
        assert counting.placed == 0
        assert ledger.verify_chain().ok
    finally:
        ledger.close()


@pytest.mark.slow
def test_a_forced_resend_of_a_manual_feed_waits_for_a_person_again(manual_ws: object) -> None:
    from carrierfeeds.run.context import RunRef
    from carrierfeeds.run.stages import run_feed
    from carrierfeeds.settings import open_ledger

    ws = manual_ws
    ref = RunRef.for_day("acme-northwind-dental", DAY)
    first = run_feed(ws.settings, ref, clock=_clock, actor="test")  # type: ignore[attr-defined]
    assert first.status == "pending_handoff", first.error
    ledger = open_ledger(ws.settings)  # type: ignore[attr-defined]
    try:
        (pending,) = ledger.pending_handoffs(feed_id=ref.feed_id)
        ledger.confirm_handoff(pending.delivery_id, by="ops.jane", method="courier",
                           received_by="carrier.desk", now=_clock())
        assert ledger.pending_handoffs(feed_id=ref.feed_id) == []

        # A resend is a new document under a new control id, pending a person, linked to the first.
        resent = run_feed(ws.settings, ref, clock=_clock, actor="ops.jane",  # type: ignore[attr-defined]
                          force_reason="the courier lost the envelope")
        assert resent.status == "pending_handoff", resent.error
        assert resent.isa13 != first.isa13 and f"{resent.isa13:09d}" in str(resent.file_name)
        assert sorted(p.name for p in _outbox(ws).iterdir()) == sorted([str(first.file_name), str(resent.file_name)])
        (again,) = ledger.pending_handoffs(feed_id=ref.feed_id)
        assert again.replaces_delivery_id == pending.delivery_id and str(again.remote_path).endswith(
            str(resent.file_name))
        ledger.confirm_handoff(again.delivery_id, by="ops.jane", method="registered mail",
                           received_by="carrier.desk", now=_clock())

        # A resend cut off after placing its file: the rerun finds it and it is pending again, not lost.
        with pytest.raises(_ProcessKilled):
            run_feed(ws.settings, ref, clock=_clock, actor="ops.jane",  # type: ignore[attr-defined]
                     force_reason="second envelope", transport=_KilledAfterPlacing(ManualTransport(_outbox(ws))))
        counting = _Counting(ManualTransport(_outbox(ws)))
        found = run_feed(ws.settings, ref, clock=_clock, actor="ops.jane",  # type: ignore[attr-defined]
                         force_reason="second envelope", transport=counting)
        assert found.status == "pending_handoff", found.error
        assert found.isa13 not in (first.isa13, resent.isa13)
        assert counting.placed == 0 and len(list(_outbox(ws).iterdir())) == 3
        (third,) = ledger.pending_handoffs(feed_id=ref.feed_id)
        assert third.replaces_delivery_id == again.delivery_id
        assert str(third.remote_path).endswith(str(found.file_name))
        statuses = {d.delivery_id: [o.status for o in ledger.delivery_outcomes(delivery_ids=[d.delivery_id])]
                    for d in ledger.deliveries(feed_id=ref.feed_id)}
        assert statuses == {pending.delivery_id: [PENDING_HANDOFF, HANDED_OFF],
                            again.delivery_id: ["forced_resend", PENDING_HANDOFF, HANDED_OFF],
                            third.delivery_id: [PENDING_HANDOFF]}
        # Every attempt a person forced is audited: the first resend, the cut-off one and its rerun.
        assert len(ledger.audit_events(action="forced_resend")) == 3
        assert ledger.verify_chain().ok
    finally:
        ledger.close()
