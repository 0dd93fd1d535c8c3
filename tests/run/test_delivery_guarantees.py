"""Nothing lost, nothing twice, at the edges: forced resends, a crash after the carrier's rename, a retry
after a transient failure, a changed census for a delivered interval, and a carrier's rejection taking
the change snapshot back (real sshd, gpg, pyx12 and ledger on SQLite and PostgreSQL)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import shutil
import socket
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from carrierfeeds.run.context import RunRef
from carrierfeeds.run.stages import run_feed
from carrierfeeds.settings import open_ledger
from carrierfeeds.transport.base import Receipt, RemoteFile

pytestmark = pytest.mark.slow

DAY, DAY2, DAY3 = date(2026, 11, 19), date(2026, 11, 20), date(2026, 11, 21)
ROOT = Path(__file__).resolve().parents[2]
REASON = "carrier lost the file, ticket 7"


def _clock() -> datetime:
    return datetime(2026, 11, 22, 7, 30, tzinfo=UTC)


def _sftp(ws: Any, **kwargs: Any) -> Any:
    """The workspace's real SFTP transport (the same one the pipeline builds), optionally re-pointed."""
    from carrierfeeds.credentials import load_sftp_endpoint
    from carrierfeeds.demo import CONNECTION_ID
    from carrierfeeds.transport.sftp import SftpTransport

    endpoint = load_sftp_endpoint(ws.keys_dir, CONNECTION_ID)
    if kwargs:
        endpoint = dataclasses.replace(endpoint, **kwargs)
    return SftpTransport(endpoint, str(ws.inbox), retries=1, sleep=lambda _s: None)


class ProcessKilled(BaseException):
    """The worker dies (SIGKILL, OOM, a node lost): nothing of ours runs after it, no ``except`` sees it."""


class KilledAfterRename:
    """A real SFTP transport whose process dies right after the carrier's rename, before our outcome row."""

    name = "sftp"

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.delivered = 0

    def stat(self, remote_name: str) -> RemoteFile | None:
        found: RemoteFile | None = self.inner.stat(remote_name)
        return found

    def sha256(self, remote_name: str) -> str | None:
        digest: str | None = self.inner.sha256(remote_name)
        return digest

    def deliver(self, local: Path, remote_name: str, **kwargs: Any) -> Receipt:
        self.inner.deliver(local, remote_name, **kwargs)
        self.delivered += 1
        raise ProcessKilled


class Counting:
    """A real SFTP transport that counts uploads (the rerun must make none)."""

    name = "sftp"

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.delivered = 0

    def stat(self, remote_name: str) -> RemoteFile | None:
        found: RemoteFile | None = self.inner.stat(remote_name)
        return found

    def sha256(self, remote_name: str) -> str | None:
        digest: str | None = self.inner.sha256(remote_name)
        return digest

    def deliver(self, local: Path, remote_name: str, **kwargs: Any) -> Receipt:
        self.delivered += 1
        receipt: Receipt = self.inner.deliver(local, remote_name, **kwargs)
        return receipt


def _files(ws: Any) -> list[str]:
    return sorted(p.name for p in ws.inbox.iterdir())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _plain(ws: Any, name: str, tmp_path: Path) -> bytes:
    out = tmp_path / f"{name}.plain"
    result = ws.keys.carrier.decrypt_file(ws.inbox / name, out)
    assert result.valid_signature
    return out.read_bytes()


# --------------------------------------------------------------------------------- forced resend
def _envelope(plain: bytes) -> tuple[int, int, int]:
    """ISA13, GS06 and ST02 of a single-set 834 (the demo mapping's delimiters: ``*`` and ``~``)."""
    segments = {s.strip().split(b"*")[0]: s.strip().split(b"*") for s in plain.split(b"~") if s.strip()}
    return int(segments[b"ISA"][13]), int(segments[b"GS"][6]), int(segments[b"ST"][2])


def test_forced_resend_is_a_new_transmission_with_new_control_numbers_linked_to_the_one_it_replaces(
        sftp_workspace: Any, tmp_path: Path) -> None:
    ws = sftp_workspace
    ws.write_census(members=15, seed=21, as_of=DAY)
    ref = RunRef.for_day(ws.feed.feed_id, DAY)
    first = run_feed(ws.settings, ref, clock=_clock, actor="test")
    assert first.status == "delivered", first.error
    assert first.file_name is not None and first.isa13 is not None
    original = ws.inbox / first.file_name
    original_sha = _sha(original)
    first_plain = _plain(ws, first.file_name, tmp_path)
    assert _envelope(first_plain) == (first.isa13,) * 3

    # Without a reason a rerun is a no-op: nothing is sent twice.
    again = run_feed(ws.settings, ref, clock=_clock, actor="test")
    assert again.status == "already_delivered" and _files(ws) == [first.file_name]

    forced = run_feed(ws.settings, ref, clock=_clock, actor="ops.jane", force_reason=REASON)
    assert forced.status == "delivered", forced.error
    assert forced.isa13 is not None and forced.isa13 != first.isa13
    assert forced.file_name is not None and f"{forced.isa13:09d}" in forced.file_name
    assert _files(ws) == sorted([first.file_name, forced.file_name])
    assert _sha(original) == original_sha  # the first copy untouched
    resent_plain = _plain(ws, forced.file_name, tmp_path)
    # A new interchange, group and transaction set control number, so a new payload: the same members.
    assert _envelope(resent_plain) == (forced.isa13,) * 3
    assert forced.payload_sha256 == hashlib.sha256(resent_plain).hexdigest() != first.payload_sha256
    assert _members_sent(resent_plain) == _members_sent(first_plain)

    ledger = open_ledger(ws.settings)
    try:
        old, new = ledger.deliveries(feed_id=ref.feed_id)
        assert (old.isa13, old.status, old.replaces_delivery_id) == (first.isa13, "delivered", None)
        assert (new.isa13, new.gs06, new.st02) == (forced.isa13,) * 3
        assert new.status == "forced_resend" and new.replaces_delivery_id == old.delivery_id
        assert new.run_id == old.run_id and new.payload_sha256 == forced.payload_sha256
        assert new.remote_path is not None and new.remote_path.endswith("/" + forced.file_name)
        marker, outcome = ledger.delivery_outcomes(delivery_ids=[new.delivery_id])
        assert marker.status == "rename_sent"  # written just before the rename request
        assert (outcome.status, outcome.actor, outcome.reason) == ("forced_resend", "ops.jane", REASON)
        assert [o.status for o in ledger.delivery_outcomes(delivery_ids=[old.delivery_id])] == [
            "rename_sent", "delivered"]
        assert [(x.isa13, x.resend, x.replaces_delivery_id) for x in ledger.transmissions(new.run_id)] == [
            (first.isa13, 0, None), (forced.isa13, 1, old.delivery_id)]
        (event,) = ledger.audit_events(action="forced_resend")
        assert (event.actor, event.reason, event.object_id) == ("ops.jane", REASON, new.delivery_id)
        assert event.detail["replaces_delivery_id"] == old.delivery_id

        # A plain rerun afterwards sends nothing; a second forced resend replaces the first resend.
        assert run_feed(ws.settings, ref, clock=_clock, actor="test").status == "already_delivered"
        assert len(_files(ws)) == 2
        second = run_feed(ws.settings, ref, clock=_clock, actor="ops.jane", force_reason="ticket 8")
        assert second.status == "delivered", second.error
        assert second.isa13 not in (first.isa13, forced.isa13) and len(_files(ws)) == 3
        third = ledger.deliveries(feed_id=ref.feed_id)[-1]
        assert third.isa13 == second.isa13 and third.replaces_delivery_id == new.delivery_id
        assert run_feed(ws.settings, ref, clock=_clock, actor="test").status == "already_delivered"
        assert len(_files(ws)) == 3
        assert ledger.verify_chain().ok
    finally:
        ledger.close()


def test_a_retried_forced_resend_is_byte_identical_and_mints_no_new_numbers(sftp_workspace: Any) -> None:
    ws = sftp_workspace
    ws.write_census(members=15, seed=28, as_of=DAY)
    ref = RunRef.for_day(ws.feed.feed_id, DAY)
    first = run_feed(ws.settings, ref, clock=_clock, actor="test")
    assert first.status == "delivered", first.error

    unreachable = _sftp(ws, port=_dead_port())
    failed = run_feed(ws.settings, ref, clock=_clock, actor="ops.jane", force_reason=REASON, transport=unreachable)
    assert failed.status == "failed" and failed.error is not None and failed.error["code"] == "transient"
    assert failed.isa13 is not None and failed.isa13 != first.isa13
    assert _files(ws) == [first.file_name]

    # A plain rerun in between sends nothing and leaves the resend open.
    assert run_feed(ws.settings, ref, clock=_clock, actor="test").status == "already_delivered"

    retried = run_feed(ws.settings, ref, clock=_clock, actor="ops.jane", force_reason=REASON)
    assert retried.status == "delivered", retried.error
    assert (retried.isa13, retried.payload_sha256, retried.file_name) == (
        failed.isa13, failed.payload_sha256, failed.file_name)  # the same numbers, the same payload
    assert _files(ws) == sorted([str(first.file_name), str(retried.file_name)])
    ledger = open_ledger(ws.settings)
    try:
        old, new = ledger.deliveries(feed_id=ref.feed_id)
        assert new.replaces_delivery_id == old.delivery_id and new.isa13 == failed.isa13
        assert [(o.status, o.error_code) for o in ledger.delivery_outcomes(delivery_ids=[new.delivery_id])] == [
            ("failed", "transient"), ("rename_sent", None), ("forced_resend", None)]
        assert [x.isa13 for x in ledger.transmissions(new.run_id)] == [first.isa13, failed.isa13]  # minted once
        assert [e.action for e in ledger.audit_events(object_ids=[new.delivery_id])] == [
            "forced_resend", "forced_resend_failed", "forced_resend"]
        assert ledger.verify_chain().ok
    finally:
        ledger.close()


# ------------------------------------------------------------------ crash after the carrier's rename
def test_crash_after_the_rename_is_reconciled_by_name_and_size_and_nothing_is_resent(
        sftp_workspace: Any) -> None:
    ws = sftp_workspace
    ws.write_census(members=15, seed=22, as_of=DAY)
    ref = RunRef.for_day(ws.feed.feed_id, DAY)
    killer = KilledAfterRename(_sftp(ws))
    with pytest.raises(ProcessKilled):
        run_feed(ws.settings, ref, clock=_clock, actor="test", transport=killer)
    assert killer.delivered == 1
    (arrived,) = ws.inbox.iterdir()
    arrived_sha = _sha(arrived)

    ledger = open_ledger(ws.settings)
    try:
        intent = ledger.find_delivery(feed_id=ref.feed_id, interval_start=DAY)
        assert intent is not None and intent.status == "pending"  # an intent without an outcome
        assert ledger.delivery_outcomes(delivery_ids=[intent.delivery_id]) == []

        counting = Counting(_sftp(ws))
        rerun = run_feed(ws.settings, ref, clock=_clock, actor="test", transport=counting)
        assert rerun.status == "delivered", rerun.error
        assert counting.delivered == 0  # found by name and size: nothing sent
        assert _files(ws) == [arrived.name] and _sha(arrived) == arrived_sha
        assert rerun.ciphertext_sha256 == arrived_sha and rerun.isa13 == intent.isa13
        done = ledger.find_delivery(feed_id=ref.feed_id, interval_start=DAY)
        assert done is not None and done.delivery_id == intent.delivery_id
        assert done.status == "reconciled" and done.size == arrived.stat().st_size
        assert [o.status for o in ledger.delivery_outcomes(delivery_ids=[intent.delivery_id])] == ["reconciled"]
        # And once reconciled, it counts as delivered: a further rerun is a no-op.
        assert run_feed(ws.settings, ref, clock=_clock, actor="test", transport=counting).status == \
            "already_delivered"
        assert counting.delivered == 0
        assert ledger.verify_chain().ok
    finally:
        ledger.close()


class DatabaseDownAfterUpload:
    """A real SFTP transport, after whose upload the ledger database drops our session: the next ledger
    write (the outcome row) waits on the chain head, locked from an admin session, and that waiting
    backend is terminated (pg_terminate_backend), as when the server restarts under us."""

    name = "sftp"

    def __init__(self, inner: Any, admin_url: str, database: str) -> None:
        self.inner, self.admin_url, self.database = inner, admin_url, database
        self.terminated: list[int] = []

    def stat(self, remote_name: str) -> RemoteFile | None:
        found: RemoteFile | None = self.inner.stat(remote_name)
        return found

    def deliver(self, local: Path, remote_name: str, **kwargs: Any) -> Receipt:
        import sqlalchemy as sa

        receipt: Receipt = self.inner.deliver(local, remote_name, **kwargs)
        engine = sa.create_engine(sa.make_url(self.admin_url).set(database=self.database))
        locked = threading.Event()

        def hold_and_terminate() -> None:
            with engine.connect() as admin:
                admin.execute(sa.text("LOCK TABLE chain_head IN ACCESS EXCLUSIVE MODE"))
                locked.set()
                with engine.connect() as watcher:
                    while not self.terminated:
                        pids = watcher.execute(sa.text(
                            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                            "AND wait_event_type = 'Lock' AND query ILIKE '%chain_head%' "
                            "AND pid <> pg_backend_pid()")).scalars().all()
                        for pid in pids:
                            watcher.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                            self.terminated.append(pid)
                        watcher.commit()
                        time.sleep(0.01)
                admin.rollback()  # the database is back
            engine.dispose()

        threading.Thread(target=hold_and_terminate, daemon=True).start()
        locked.wait(timeout=30)
        return receipt


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_database_lost_between_upload_and_outcome_row_is_reconciled_by_hash_without_a_resend(
        sftp_workspace: Any, pg_admin_url: str) -> None:
    import sqlalchemy as sa

    ws = sftp_workspace
    ws.write_census(members=15, seed=32, as_of=DAY)
    ref = RunRef.for_day(ws.feed.feed_id, DAY)
    down = DatabaseDownAfterUpload(_sftp(ws), pg_admin_url, str(sa.make_url(ws.settings.ledger_url).database))
    with pytest.raises(sa.exc.OperationalError):
        run_feed(ws.settings, ref, clock=_clock, actor="test", transport=down)
    assert len(down.terminated) == 1
    (arrived,) = ws.inbox.iterdir()

    ledger = open_ledger(ws.settings)
    try:
        intent = ledger.find_delivery(feed_id=ref.feed_id, interval_start=DAY)
        assert intent is not None and intent.status == "pending"  # the intent row, no outcome
        counting = Counting(_sftp(ws))
        retry = run_feed(ws.settings, ref, clock=_clock, actor="test", transport=counting)
        assert retry.status == "delivered", retry.error
        assert counting.delivered == 0 and _files(ws) == [arrived.name]  # recovered, not sent again
        done = ledger.find_delivery(feed_id=ref.feed_id, interval_start=DAY)
        assert done is not None and done.delivery_id == intent.delivery_id and done.status == "reconciled"
        # Recognised by content, and the ledger says which bytes the carrier holds.
        assert done.ciphertext_sha256 == _sha(arrived) == retry.ciphertext_sha256
        assert ledger.verify_chain().ok
    finally:
        ledger.close()


def test_a_different_file_under_our_final_name_is_not_taken_for_ours(sftp_workspace: Any) -> None:
    ws = sftp_workspace
    ws.write_census(members=15, seed=23, as_of=DAY)
    ref = RunRef.for_day(ws.feed.feed_id, DAY)
    killer = KilledAfterRename(_sftp(ws))
    with pytest.raises(ProcessKilled):
        run_feed(ws.settings, ref, clock=_clock, actor="test", transport=killer)
    (arrived,) = ws.inbox.iterdir()
    arrived.write_bytes(arrived.read_bytes()[:-10])  # someone else's (or a truncated) file, same name

    rerun = run_feed(ws.settings, ref, clock=_clock, actor="test", transport=Counting(_sftp(ws)))
    assert rerun.status == "failed" and rerun.error is not None
    ledger = open_ledger(ws.settings)
    try:
        delivery = ledger.find_delivery(feed_id=ref.feed_id, interval_start=DAY)
        assert delivery is not None and delivery.status not in ("delivered", "reconciled")
    finally:
        ledger.close()


def test_a_same_size_foreign_file_under_our_final_name_is_refused_recorded_and_left_alone(
        sftp_workspace: Any) -> None:
    ws = sftp_workspace
    ws.write_census(members=15, seed=30, as_of=DAY)
    ref = RunRef.for_day(ws.feed.feed_id, DAY)
    with pytest.raises(ProcessKilled):
        run_feed(ws.settings, ref, clock=_clock, actor="test", transport=KilledAfterRename(_sftp(ws)))
    (arrived,) = ws.inbox.iterdir()
    foreign = bytes(b ^ 0x5A for b in arrived.read_bytes())  # someone else's file, exactly as long as ours
    arrived.write_bytes(foreign)

    counting = Counting(_sftp(ws))
    rerun = run_feed(ws.settings, ref, clock=_clock, actor="test", transport=counting)
    assert rerun.status == "failed" and rerun.error is not None and rerun.error["code"] == "remote_file_exists"
    assert counting.delivered == 0 and arrived.read_bytes() == foreign  # not sent again, never overwritten
    ledger = open_ledger(ws.settings)
    try:
        delivery = ledger.find_delivery(feed_id=ref.feed_id, interval_start=DAY)
        assert delivery is not None and delivery.status == "failed"
        (outcome,) = ledger.delivery_outcomes(delivery_ids=[delivery.delivery_id])
        assert (outcome.status, outcome.error_code) == ("failed", "remote_file_exists")
    finally:
        ledger.close()


# ------------------------------------------------- the carrier collects the file right after the rename
class _CutAfterRename:
    """A TCP relay to the sshd that cuts its first connection once our file was renamed into place (the
    final name exists, or the carrier already took it): the client never hears that the rename worked."""

    def __init__(self, target: tuple[str, int], renamed: Any) -> None:
        self.target, self.renamed = target, renamed
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.connections = self.cut = 0
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            first = self.connections == 1
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, first), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, cut: bool) -> None:
        try:
            while data := src.recv(65536):
                if cut and self.renamed():
                    self.cut += 1
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()


class _CarrierPickup:
    """The carrier's collector: moves every complete file out of the inbox as soon as it appears."""

    def __init__(self, inbox: Path, collected: Path) -> None:
        self.inbox, self.collected = inbox, collected
        collected.mkdir()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for path in self.inbox.iterdir():
                if not path.name.startswith("."):  # a temp name is not for the carrier yet
                    with contextlib.suppress(FileNotFoundError):
                        path.rename(self.collected / f"{len(list(self.collected.iterdir()))}-{path.name}")
            time.sleep(0.001)

    def taken(self) -> list[str]:
        return sorted(p.name for p in self.collected.iterdir())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def test_a_file_the_carrier_collects_right_after_the_rename_is_delivered_once_not_sent_again(
        sftp_workspace: Any, tmp_path: Path) -> None:
    from carrierfeeds.credentials import load_sftp_endpoint
    from carrierfeeds.demo import CONNECTION_ID
    from carrierfeeds.transport.sftp import SftpTransport

    ws = sftp_workspace
    ws.write_census(members=15, seed=31, as_of=DAY)
    ref = RunRef.for_day(ws.feed.feed_id, DAY)
    pickup = _CarrierPickup(ws.inbox, tmp_path / "collected")
    relay = _CutAfterRename(("127.0.0.1", load_sftp_endpoint(ws.keys_dir, CONNECTION_ID).port),
                            lambda: bool(pickup.taken()) or any(not p.name.startswith(".")
                                                                for p in ws.inbox.iterdir()))
    try:
        endpoint = load_sftp_endpoint(ws.keys_dir, CONNECTION_ID)
        line = endpoint.known_hosts.strip().split(" ", 1)[1]
        endpoint = dataclasses.replace(endpoint, port=relay.port, known_hosts=f"[127.0.0.1]:{relay.port} {line}\n")
        transport = SftpTransport(endpoint, str(ws.inbox), retries=3, backoff=0.1, sleep=lambda _s: None)
        summary = run_feed(ws.settings, ref, clock=_clock, actor="test", transport=transport)
        assert summary.status == "delivered", summary.error
        assert relay.cut == 1 and relay.connections == 2  # the reply to the rename was lost; one retry
        rerun = run_feed(ws.settings, ref, clock=_clock, actor="test", transport=Counting(_sftp(ws)))
        assert rerun.status == "already_delivered"
    finally:
        relay.close()
        pickup.stop()
    (taken,) = pickup.taken()  # exactly one copy reached the carrier
    assert _sha(tmp_path / "collected" / taken) == summary.ciphertext_sha256
    assert _files(ws) == []
    ledger = open_ledger(ws.settings)
    try:
        delivery = ledger.find_delivery(feed_id=ref.feed_id, interval_start=DAY)
        assert delivery is not None and delivery.status == "delivered"
        marker, outcome = ledger.delivery_outcomes(delivery_ids=[delivery.delivery_id])
        assert marker.status == "rename_sent"  # one rename request: the retry renamed nothing
        assert outcome.status == "delivered" and "not re-verified" in str(outcome.message)
    finally:
        ledger.close()


class KilledAfterRenameThenCollected:
    """A real SFTP transport whose process dies right after the rename, before our outcome row; the
    carrier collects the file before anything of ours looks again."""

    name = "sftp"

    def __init__(self, inner: Any, inbox: Path, collected: Path) -> None:
        self.inner, self.inbox, self.collected = inner, inbox, collected

    def stat(self, remote_name: str) -> RemoteFile | None:
        found: RemoteFile | None = self.inner.stat(remote_name)
        return found

    def temp_exists(self, remote_name: str) -> bool:
        found: bool = self.inner.temp_exists(remote_name)
        return found

    def deliver(self, local: Path, remote_name: str, **kwargs: Any) -> Receipt:
        self.inner.deliver(local, remote_name, **kwargs)
        self.collected.mkdir()
        (self.inbox / remote_name).rename(self.collected / remote_name)
        raise ProcessKilled


class CountingWithTemp(Counting):
    def temp_exists(self, remote_name: str) -> bool:
        found: bool = self.inner.temp_exists(remote_name)
        return found


def test_a_file_collected_after_a_crash_that_followed_the_rename_is_not_sent_again(
        sftp_workspace: Any, tmp_path: Path) -> None:
    ws = sftp_workspace
    ws.write_census(members=15, seed=33, as_of=DAY)
    ref = RunRef.for_day(ws.feed.feed_id, DAY)
    collected = tmp_path / "collected"
    with pytest.raises(ProcessKilled):
        run_feed(ws.settings, ref, clock=_clock, actor="test",
                 transport=KilledAfterRenameThenCollected(_sftp(ws), ws.inbox, collected))
    assert _files(ws) == [] and len(list(collected.iterdir())) == 1

    counting = CountingWithTemp(_sftp(ws))
    rerun = run_feed(ws.settings, ref, clock=_clock, actor="test", transport=counting)
    assert rerun.status == "delivered", rerun.error
    assert counting.delivered == 0 and _files(ws) == []  # the carrier has it: nothing sent again
    ledger = open_ledger(ws.settings)
    try:
        delivery = ledger.find_delivery(feed_id=ref.feed_id, interval_start=DAY)
        assert delivery is not None and delivery.status == "delivered"
        marker, outcome = ledger.delivery_outcomes(delivery_ids=[delivery.delivery_id])
        assert marker.status == "rename_sent" and "not re-verified" in str(outcome.message)
        assert outcome.ciphertext_sha256 == _sha(next(collected.iterdir()))
        assert run_feed(ws.settings, ref, clock=_clock, actor="test", transport=counting).status == \
            "already_delivered"
        assert counting.delivered == 0
    finally:
        ledger.close()


def test_an_upload_whose_rename_never_happened_is_sent_on_the_retry(sftp_workspace: Any, tmp_path: Path) -> None:
    """The control for the test above: the rename was asked for but did not happen (the temp file is still
    there), so the file never reached the carrier and the retry sends it."""
    from carrierfeeds.transport.base import temp_name

    ws = sftp_workspace
    ws.write_census(members=15, seed=34, as_of=DAY)
    ref = RunRef.for_day(ws.feed.feed_id, DAY)
    aside = tmp_path / "aside"
    with pytest.raises(ProcessKilled):
        run_feed(ws.settings, ref, clock=_clock, actor="test",
                 transport=KilledAfterRenameThenCollected(_sftp(ws), ws.inbox, aside))
    (name,) = [p.name for p in aside.iterdir()]
    # Undo the rename: the upload sits under its temp name, as if the rename request never went out.
    (aside / name).rename(ws.inbox / temp_name(name))
    counting = CountingWithTemp(_sftp(ws))
    rerun = run_feed(ws.settings, ref, clock=_clock, actor="test", transport=counting)
    assert rerun.status == "delivered", rerun.error
    assert counting.delivered == 1 and _files(ws) == [name]


# ------------------------------------------------------------------ retry after a transient failure
def _dead_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on exit: connecting is refused


def test_retry_after_a_transient_failure_sends_the_same_bytes_once_and_leaves_no_temp_file(
        sftp_workspace: Any) -> None:
    from carrierfeeds.transport.base import temp_name

    ws = sftp_workspace
    ws.write_census(members=15, seed=24, as_of=DAY)
    ref = RunRef.for_day(ws.feed.feed_id, DAY)
    unreachable = _sftp(ws, port=_dead_port())
    failed = run_feed(ws.settings, ref, clock=_clock, actor="test", transport=unreachable)
    assert failed.status == "failed" and failed.error is not None and failed.error["code"] == "transient"
    assert failed.file_name is not None and failed.ciphertext_sha256 is not None
    # What an upload cut off mid-way (an earlier attempt, a connection reset) leaves on the carrier's side.
    (ws.inbox / temp_name(failed.file_name)).write_bytes(b"\x85\x01half a file")

    retried = run_feed(ws.settings, ref, clock=_clock, actor="test")
    assert retried.status == "delivered", retried.error
    assert retried.isa13 == failed.isa13 and retried.payload_sha256 == failed.payload_sha256
    assert retried.ciphertext_sha256 == failed.ciphertext_sha256  # encrypted once, the same bytes resent
    assert _files(ws) == [failed.file_name]  # exactly one complete file, no temp file
    assert _sha(ws.inbox / failed.file_name) == failed.ciphertext_sha256

    ledger = open_ledger(ws.settings)
    try:
        delivery = ledger.find_delivery(feed_id=ref.feed_id, interval_start=DAY)
        assert delivery is not None and delivery.status == "delivered"
        assert delivery.ciphertext_sha256 == failed.ciphertext_sha256
        outcomes = ledger.delivery_outcomes(delivery_ids=[delivery.delivery_id])
        assert [(o.status, o.error_code) for o in outcomes] == [("failed", "transient"), ("rename_sent", None),
                                                                ("delivered", None)]
        assert len(ledger.deliveries(feed_id=ref.feed_id)) == 1
    finally:
        ledger.close()


# --------------------------------------------------------- a changed census for a delivered interval
def test_a_changed_census_for_a_delivered_interval_is_refused_and_nothing_is_sent(sftp_workspace: Any) -> None:
    ws = sftp_workspace
    census = ws.write_census(members=15, seed=25, as_of=DAY)
    ref = RunRef.for_day(ws.feed.feed_id, DAY)
    first = run_feed(ws.settings, ref, clock=_clock, actor="test")
    assert first.status == "delivered", first.error
    delivered_sha = _sha(ws.inbox / str(first.file_name))

    frame = pd.read_csv(census, dtype=str, keep_default_na=False)
    mover = frame.loc[frame["plan_code"].isin(ws.feed.authorization.plans), "member_id"].iloc[0]
    frame.loc[frame["member_id"] == mover, "address1"] = "2 Other Road"
    frame.to_csv(census, index=False)

    counting = Counting(_sftp(ws))
    changed = run_feed(ws.settings, ref, clock=_clock, actor="test", transport=counting)
    assert changed.status == "refused" and changed.error is not None and changed.error["code"] == "refused"
    assert changed.payload_sha256 != first.payload_sha256
    assert counting.delivered == 0
    assert _files(ws) == [first.file_name] and _sha(ws.inbox / str(first.file_name)) == delivered_sha
    ledger = open_ledger(ws.settings)
    try:
        (only,) = ledger.deliveries(feed_id=ref.feed_id)  # no intent recorded for the changed file
        assert only.payload_sha256 == first.payload_sha256 and only.status == "delivered"
    finally:
        ledger.close()


def test_a_forced_resend_of_a_changed_census_is_refused_and_mints_nothing(sftp_workspace: Any) -> None:
    ws = sftp_workspace
    census = ws.write_census(members=15, seed=29, as_of=DAY)
    ref = RunRef.for_day(ws.feed.feed_id, DAY)
    first = run_feed(ws.settings, ref, clock=_clock, actor="test")
    assert first.status == "delivered", first.error
    frame = pd.read_csv(census, dtype=str, keep_default_na=False)
    mover = frame.loc[frame["plan_code"].isin(ws.feed.authorization.plans), "member_id"].iloc[0]
    frame.loc[frame["member_id"] == mover, "address1"] = "4 Resent Road"
    frame.to_csv(census, index=False)

    counting = Counting(_sftp(ws))
    forced = run_feed(ws.settings, ref, clock=_clock, actor="ops.jane", force_reason=REASON, transport=counting)
    assert forced.status == "refused" and forced.error is not None and forced.error["code"] == "refused"
    assert counting.delivered == 0 and _files(ws) == [first.file_name]
    ledger = open_ledger(ws.settings)
    try:
        (only,) = ledger.deliveries(feed_id=ref.feed_id)
        assert [x.isa13 for x in ledger.transmissions(only.run_id)] == [first.isa13]  # nothing minted
    finally:
        ledger.close()


# -------------------------------------------------- a rejection takes the change snapshot back
def _changes_settings(ws: Any, tmp_path: Path) -> Any:
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    m = mappings / "sunrise-health.yaml"
    m.write_text(m.read_text().replace("# mode: full", "mode: changes"))
    return ws.settings.model_copy(update={"mappings_dir": mappings})


def _members_sent(x12: bytes) -> list[bytes]:
    """The member loops of an 834 (INS through the end of the transaction), without the envelope."""
    segments = [s.strip() for s in x12.split(b"~") if s.strip()]
    first = next(i for i, s in enumerate(segments) if s.startswith(b"INS*"))
    last = next(i for i, s in enumerate(segments) if s.startswith(b"SE*"))
    return segments[first:last]


def _rejecting_999(ws: Any, name: str, tmp_path: Path) -> bytes:
    """pyx12's own 999 for the file we sent with one INS03 broken: a rejected transaction set."""
    from carrierfeeds.x12.check import validate_with_pyx12

    plain = _plain(ws, name, tmp_path)
    broken = plain.replace(b"INS*Y*18*001*", b"INS*Y*18*ZQX*", 1)
    if broken == plain:
        broken = plain.replace(b"*001*", b"*ZQX*", 1)
    assert broken != plain
    path = tmp_path / "broken.834"
    path.write_bytes(broken)
    ack = validate_with_pyx12(path).ack_999
    assert ack is not None
    return ack


def test_rejected_change_file_reverts_the_snapshot_and_the_next_run_resends_the_changes(
        sftp_workspace: Any, tmp_path: Path) -> None:
    from carrierfeeds.acknowledgments import LocalAckInbox, collect_acks, snapshot_blocked
    from carrierfeeds.changes import SnapshotStore

    ws = sftp_workspace
    settings = _changes_settings(ws, tmp_path)
    store = SnapshotStore.for_settings(settings)
    feed_id = ws.feed.feed_id

    census = ws.write_census(members=20, seed=26, as_of=DAY)
    full = run_feed(settings, RunRef.for_day(feed_id, DAY), clock=_clock, actor="test")
    assert full.status == "delivered", full.error

    frame = pd.read_csv(census, dtype=str, keep_default_na=False)
    mover = frame.loc[frame["plan_code"].isin(ws.feed.authorization.plans), "member_id"].iloc[0]
    frame.loc[frame["member_id"] == mover, "address1"] = "1 Changed Street"
    census.unlink()
    day2_census = ws.inbound / f"census_{DAY2:%Y%m%d}.csv"
    frame.to_csv(day2_census, index=False)
    changes = run_feed(settings, RunRef.for_day(feed_id, DAY2), clock=_clock, actor="test")
    assert changes.status == "delivered", changes.error
    sent_day2 = _members_sent(_plain(ws, str(changes.file_name), tmp_path))
    assert sent_day2 and all(s.startswith((b"INS*", b"REF*", b"NM1*", b"N3*", b"N4*", b"DMG*", b"PER*", b"DTP*"))
                             for s in sent_day2)
    info = store.info(feed_id)
    assert info is not None and info.run_id == changes.run_id

    acks_in = tmp_path / "carrier-acks"
    acks_in.mkdir()
    (acks_in / "999_day2.x12").write_bytes(_rejecting_999(ws, str(changes.file_name), tmp_path))
    ledger = open_ledger(settings)
    try:
        now = _clock() + timedelta(hours=3)
        report = collect_acks(ledger, LocalAckInbox(acks_in), source_id="sunrise-health", now=now,
                              snapshots=store)
        assert report.count("recorded") == 1
        delivery = ledger.find_delivery(feed_id=feed_id, interval_start=DAY2)
        assert delivery is not None and snapshot_blocked(ledger, delivery.delivery_id)
        kinds = {a.kind: a for a in report.alerts}
        assert set(kinds) == {"rejected", "snapshot_reverted"}
        assert kinds["snapshot_reverted"].delivery_id == delivery.delivery_id
        info = store.info(feed_id)
        assert info is not None and info.run_id == full.run_id  # back to what the carrier holds
        (event,) = ledger.audit_events(action="snapshot_reverted")
        assert (event.object_type, event.object_id) == ("delivery", delivery.delivery_id)
        assert event.detail["isa13"] == delivery.isa13 and event.detail["run_id"] == changes.run_id
        assert event.detail["restored_run_id"] == full.run_id

        # Idempotent: the same file again is a duplicate, a second sweep does nothing.
        again = collect_acks(ledger, LocalAckInbox(acks_in), source_id="sunrise-health", now=now,
                             snapshots=store)
        assert again.count("duplicate") == 1 and again.alerts == ()
        assert len(ledger.audit_events(action="snapshot_reverted")) == 1

        # A rerun of the rejected interval finds its file delivered and must not re-advance the snapshot.
        rerun = run_feed(settings, RunRef.for_day(feed_id, DAY2), clock=_clock, actor="test")
        assert rerun.status == "already_delivered"
        info = store.info(feed_id)
        assert info is not None and info.run_id == full.run_id

        # The next interval diffs against what the carrier holds: the same changes go again.
        shutil.copyfile(day2_census, ws.inbound / f"census_{DAY3:%Y%m%d}.csv")
        day2_census.unlink()
        # The same bytes as day 2's census: processed once already, so forced.
        resent = run_feed(settings, RunRef.for_day(feed_id, DAY3), clock=_clock, actor="test", force_census=True)
        assert resent.status == "delivered", resent.error
        assert resent.isa13 != changes.isa13
        assert _members_sent(_plain(ws, str(resent.file_name), tmp_path)) == sent_day2
        info = store.info(feed_id)
        assert info is not None and info.run_id == resent.run_id
        assert ledger.verify_chain().ok
    finally:
        ledger.close()


def test_a_forced_resend_of_a_change_file_sends_the_same_changes_under_new_numbers(
        sftp_workspace: Any, tmp_path: Path) -> None:
    from carrierfeeds.changes import SnapshotStore

    ws = sftp_workspace
    settings = _changes_settings(ws, tmp_path)
    feed_id = ws.feed.feed_id
    census = ws.write_census(members=20, seed=35, as_of=DAY)
    assert run_feed(settings, RunRef.for_day(feed_id, DAY), clock=_clock, actor="test").status == "delivered"
    frame = pd.read_csv(census, dtype=str, keep_default_na=False)
    mover = frame.loc[frame["plan_code"].isin(ws.feed.authorization.plans), "member_id"].iloc[0]
    frame.loc[frame["member_id"] == mover, "address1"] = "5 Moved Mews"
    census.unlink()
    frame.to_csv(ws.inbound / f"census_{DAY2:%Y%m%d}.csv", index=False)
    changes = run_feed(settings, RunRef.for_day(feed_id, DAY2), clock=_clock, actor="test")
    assert changes.status == "delivered", changes.error

    resent = run_feed(settings, RunRef.for_day(feed_id, DAY2), clock=_clock, actor="ops.jane", force_reason=REASON)
    assert resent.status == "delivered", resent.error
    assert resent.isa13 != changes.isa13
    sent = _plain(ws, str(changes.file_name), tmp_path)
    again = _plain(ws, str(resent.file_name), tmp_path)
    assert _envelope(again) == (resent.isa13,) * 3
    assert _members_sent(again) == _members_sent(sent)  # the same changes, not a diff against themselves
    info = SnapshotStore.for_settings(settings).info(feed_id)
    assert info is not None and info.run_id == changes.run_id


def test_rejection_after_a_later_run_advanced_is_refused_and_alerted(sftp_workspace: Any, tmp_path: Path) -> None:
    from carrierfeeds.acknowledgments import LocalAckInbox, collect_acks
    from carrierfeeds.changes import SnapshotStore

    ws = sftp_workspace
    settings = _changes_settings(ws, tmp_path)
    store = SnapshotStore.for_settings(settings)
    feed_id = ws.feed.feed_id
    census = ws.write_census(members=20, seed=27, as_of=DAY)
    first = run_feed(settings, RunRef.for_day(feed_id, DAY), clock=_clock, actor="test")
    assert first.status == "delivered", first.error
    frame = pd.read_csv(census, dtype=str, keep_default_na=False)
    mover = frame.loc[frame["plan_code"].isin(ws.feed.authorization.plans), "member_id"].iloc[0]
    frame.loc[frame["member_id"] == mover, "address1"] = "3 Later Lane"
    census.unlink()
    frame.to_csv(ws.inbound / f"census_{DAY2:%Y%m%d}.csv", index=False)
    later = run_feed(settings, RunRef.for_day(feed_id, DAY2), clock=_clock, actor="test")
    assert later.status == "delivered", later.error

    # The carrier rejects the first (full) file only now, after the second run advanced the snapshot.
    acks_in = tmp_path / "carrier-acks"
    acks_in.mkdir()
    (acks_in / "ta1_day1.x12").write_bytes(
        (f"ISA*00*          *00*          *ZZ*{'SUNRISEHP':<15}*ZZ*{'CARRIERFEEDS':<15}*261122*0900*^*00501*"
         f"000000900*0*T*:~\nTA1*{first.isa13:09d}*261122*0800*R*006~\nIEA*0*000000900~\n").encode())
    ledger = open_ledger(settings)
    try:
        report = collect_acks(ledger, LocalAckInbox(acks_in), source_id="sunrise-health",
                              now=_clock() + timedelta(days=1), snapshots=store)
        kinds = sorted(a.kind for a in report.alerts)
        assert kinds == ["rejected", "snapshot_superseded"]
        info = store.info(feed_id)
        assert info is not None and info.run_id == later.run_id  # left alone
        (event,) = ledger.audit_events(action="snapshot_revert_refused")
        assert event.detail["current_run_id"] == later.run_id and event.detail["run_id"] == first.run_id
        assert collect_acks(ledger, LocalAckInbox(acks_in), source_id="sunrise-health",
                            now=_clock() + timedelta(days=1), snapshots=store).alerts == ()
    finally:
        ledger.close()


# ------------------------------------------------------------------------ the snapshot store itself
def _frame(tag: str) -> pd.DataFrame:
    return pd.DataFrame({"subscriber_id": ["S1"], "member_id": ["M1"], "address1": [tag]})


def test_snapshot_store_revert_is_idempotent_and_refuses_a_superseded_run(tmp_path: Path) -> None:
    from carrierfeeds.changes import SnapshotStore, SnapshotSuperseded

    store = SnapshotStore(tmp_path / "snap", tmp_path / "keys" / "snapshot.key")
    store.stage("feed-a", "run1", _frame("one"), full_file=True)
    assert store.advance("feed-a", "run1")
    store.stage("feed-a", "run2", _frame("two"))
    assert store.advance("feed-a", "run2")
    # A rerun of run2 (stage again, advance again) keeps run1 as the base behind it.
    store.stage("feed-a", "run2", _frame("two"))
    assert store.advance("feed-a", "run2")
    loaded = store.load_base("feed-a", "run2")
    assert loaded is not None and loaded["address1"].tolist() == ["one"]

    assert store.revert("feed-a", "run2") is True
    info = store.info("feed-a")
    assert info is not None and info.run_id == "run1"
    assert store.revert("feed-a", "run2") is False  # idempotent
    assert store.is_reverted("feed-a", "run2")
    # A rerun of the rejected run stages and confirms again: the snapshot stays where the carrier is.
    store.stage("feed-a", "run2", _frame("two"))
    assert store.advance("feed-a", "run2") is False
    info = store.info("feed-a")
    assert info is not None and info.run_id == "run1"
    assert not (tmp_path / "snap" / "feed-a" / "pending" / "run2.snap").exists()

    store.stage("feed-a", "run3", _frame("three"))
    assert store.advance("feed-a", "run3")
    with pytest.raises(SnapshotSuperseded):
        store.revert("feed-a", "run1")  # run3 advanced past it
    info = store.info("feed-a")
    assert info is not None and info.run_id == "run3"

    # Reverting the very first run leaves no snapshot: the next run sends a full file.
    other = SnapshotStore(tmp_path / "snap", tmp_path / "keys" / "snapshot.key")
    other.stage("feed-b", "first", _frame("x"), full_file=True)
    assert other.advance("feed-b", "first")
    assert other.revert("feed-b", "first") is True
    assert other.load("feed-b") is None and other.load_base("feed-b", "next") is None
