"""The staging store is not trusted: every object is sealed to its run and name, names stay in the run's
folder, and deliver uploads only bytes that hash to the ciphertext the ledger recorded (checked while
they stream, before the rename). Whoever can write a shared store (S3, NFS) but holds no key can make a
worker refuse, never send something else. Real gpg, real sshd, the ledger on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from carrierfeeds import run
from carrierfeeds.errors import Refused
from carrierfeeds.run.context import RunRef, run_dir_for
from carrierfeeds.run.stages import run_feed
from carrierfeeds.settings import open_store
from carrierfeeds.staging import KEY_FILE_NAME

pytestmark = pytest.mark.slow

DAY = date(2026, 11, 20)


def _clock() -> datetime:
    return datetime(2026, 11, 21, 7, 30, tzinfo=UTC)


def _encrypted(ws: Any, *, seed: int = 3, ephemeral: bool = False) -> run.RunContext:
    census = ws.write_census(members=15, seed=seed, as_of=DAY)
    ctx = run.open_run(ws.settings, RunRef.for_day(ws.feed.feed_id, DAY), clock=_clock, actor="test",
                            ephemeral=ephemeral)
    run.stage_census(ctx, census)
    run.validate(ctx)
    run.build(ctx)
    run.conformance(ctx)
    run.encrypt(ctx)
    return ctx


def _carrier_side(ws: Any) -> list[str]:
    """Everything in the carrier's inbox, temporary uploads included."""
    return sorted(p.name for p in ws.inbox.iterdir())


def _failed_deliver(ctx: run.RunContext) -> Any:
    events = [e for e in ctx.ledger.run_events(ctx.run_id) if e.kind == "stage" and e.stage == "deliver"]
    assert events and events[-1].status == "failed", events
    return events[-1]


def _write_unsealed(ctx: run.RunContext, name: str, data: bytes) -> None:
    """What someone who can write the store but holds no key can do: put an object there in the clear."""
    folder = run_dir_for(ctx.settings, ctx.ref)
    (folder / f"{name}.enc").unlink(missing_ok=True)
    (folder / name).write_bytes(data)


def test_a_forged_state_naming_the_staging_key_is_refused_and_nothing_is_sent(sftp_workspace: Any) -> None:
    ws = sftp_workspace
    ctx = _encrypted(ws)
    key_file = ws.keys_dir / KEY_FILE_NAME
    assert key_file.is_file()
    forged = {**ctx.state().as_flat(), "cipher_name": str(key_file)}
    _write_unsealed(ctx, "state.json", json.dumps(forged).encode())
    with pytest.raises(Refused) as caught:
        run.deliver(ctx)
    assert caught.value.code == "staging_unsealed"
    assert _failed_deliver(ctx).error_code == "staging_unsealed"  # recorded
    assert _carrier_side(ws) == []
    assert ctx.ledger.find_delivery(feed_id=ctx.feed_id, interval_start=DAY) is None
    ctx.ledger.close()


def test_a_tampered_sealed_state_is_refused_fail_closed_and_recorded(sftp_workspace: Any) -> None:
    ws = sftp_workspace
    ctx = _encrypted(ws, seed=4)
    sealed = run_dir_for(ctx.settings, ctx.ref) / "state.json.enc"
    data = bytearray(sealed.read_bytes())
    data[len(data) // 2] ^= 0x01
    sealed.write_bytes(bytes(data))
    with pytest.raises(Refused) as caught:
        run.deliver(ctx)
    assert caught.value.code == "staging_tampered"
    assert _failed_deliver(ctx).error_code == "staging_tampered"
    assert _carrier_side(ws) == []
    ctx.ledger.close()


@pytest.mark.parametrize("where", ["absolute", "dotdot", "separator"])
def test_a_cipher_name_outside_the_run_folder_is_refused(sftp_workspace: Any, where: str) -> None:
    ws = sftp_workspace
    ctx = _encrypted(ws, seed=5)
    key_file = ws.keys_dir / KEY_FILE_NAME
    name = {"absolute": str(key_file),
            "dotdot": os.path.relpath(key_file, ctx.run_dir),
            "separator": f"sub/{ctx.state().encryption.cipher_name}"}[where]
    # Even a state sealed with the key (a bug, or a key holder) cannot name a file outside the run.
    ctx.save_state(encrypted=ctx.state().encryption.model_copy(update={"cipher_name": name}))
    with pytest.raises(Refused) as caught:
        run.deliver(ctx)
    assert caught.value.code == "artifact_name_refused"
    assert _failed_deliver(ctx).error_code == "artifact_name_refused"
    assert _carrier_side(ws) == []
    assert ctx.ledger.find_delivery(feed_id=ctx.feed_id, interval_start=DAY) is None
    ctx.ledger.close()


def test_a_symlink_in_the_scratch_folder_is_not_followed(sftp_workspace: Any) -> None:
    ws = sftp_workspace
    ctx = _encrypted(ws, seed=6)
    local = ctx.run_dir / ctx.state().encryption.cipher_name
    local.unlink()
    local.symlink_to(ws.keys_dir / KEY_FILE_NAME)
    with pytest.raises(Refused) as caught:
        run.deliver(ctx)
    assert caught.value.code == "artifact_name_refused"
    assert _carrier_side(ws) == []
    ctx.ledger.close()


def test_a_ciphertext_swapped_in_the_store_is_refused_and_nothing_reaches_the_carrier(sftp_workspace: Any) -> None:
    ws = sftp_workspace
    ctx = _encrypted(ws, seed=7, ephemeral=True)  # each stage its own worker: deliver reads the store
    name = ctx.state().encryption.cipher_name
    other = ws.keys.ours.encrypt_file(ws.write_census(members=5, seed=8, as_of=DAY, name="other.csv"),
                                      Path(ws.inbound) / "other.pgp", recipient=ws.keys.carrier_fingerprint,
                                      signer=ws.keys.signer_fingerprint, now=datetime.now(UTC))
    _write_unsealed(ctx, name, other.path.read_bytes())  # same name, other bytes
    with pytest.raises(Refused):
        run.deliver(ctx)
    assert _carrier_side(ws) == []
    ctx.ledger.close()


def test_a_ciphertext_swapped_after_it_was_fetched_is_refused_before_the_rename(sftp_workspace: Any) -> None:
    ws = sftp_workspace
    ctx = _encrypted(ws, seed=9)
    state = ctx.state()
    local = ctx.run_dir / state.encryption.cipher_name
    # Another whole ciphertext of the very same payload: the same size, other bytes; only its hash tells.
    again = ws.keys.ours.encrypt_file(ctx.run_dir / state.build.file_name, ctx.run_dir / "again.pgp",
                                      recipient=ws.keys.carrier_fingerprint, signer=ws.keys.signer_fingerprint,
                                      now=datetime.now(UTC))
    os.replace(again.path, local)
    assert again.sha256 != state.encryption.ciphertext_sha256
    with pytest.raises(Refused) as caught:
        run.deliver(ctx)
    assert caught.value.code == "ciphertext_mismatch"
    assert caught.value.details["expected_sha256"] == state.encryption.ciphertext_sha256
    assert _failed_deliver(ctx).error_code == "ciphertext_mismatch"
    delivery = ctx.ledger.find_delivery(feed_id=ctx.feed_id, interval_start=DAY)
    assert delivery is not None and delivery.status == "failed"
    assert _carrier_side(ws) == []  # nothing final, and the temporary upload removed
    ctx.ledger.close()


@pytest.mark.parametrize("kind", ["sftp", "local"])
def test_the_transport_refuses_bytes_that_are_not_the_expected_ciphertext(sftp_workspace: Any, tmp_path: Path,
                                                                          kind: str) -> None:
    from carrierfeeds.credentials import load_sftp_endpoint
    from carrierfeeds.demo import CONNECTION_ID
    from carrierfeeds.transport.base import CiphertextMismatch
    from carrierfeeds.transport.local import LocalTransport
    from carrierfeeds.transport.sftp import SftpTransport

    ws = sftp_workspace
    inbox = ws.inbox if kind == "sftp" else tmp_path / "inbox"
    transport: Any = (SftpTransport(load_sftp_endpoint(ws.keys_dir, CONNECTION_ID), str(inbox), retries=1)
                      if kind == "sftp" else LocalTransport(inbox))
    payload = tmp_path / "file.834.pgp"
    payload.write_bytes(os.urandom(300_000))
    with pytest.raises(CiphertextMismatch):
        transport.deliver(payload, "file.834.pgp", expect_sha256="0" * 64)
    assert sorted(p.name for p in inbox.iterdir()) == []
    receipt = transport.deliver(payload, "file.834.pgp", expect_sha256=hashlib.sha256(payload.read_bytes()).hexdigest())
    assert receipt.size == 300_000 and sorted(p.name for p in inbox.iterdir()) == ["file.834.pgp"]


def test_a_state_written_by_an_older_version_is_refused_with_the_way_out(sftp_workspace: Any) -> None:
    ws = sftp_workspace
    census = ws.write_census(members=15, seed=10, as_of=DAY)
    ref = RunRef.for_day(ws.feed.feed_id, DAY)
    first = run_feed(ws.settings, ref, clock=_clock, actor="test", census_path=census)
    assert first.status == "delivered", first.error
    # As an older carrierfeeds left it: state and ciphertext in the clear.
    store = open_store(ws.settings)
    state = store.get_bytes(ws.feed.feed_id, DAY, "state.json")
    cipher = store.get_bytes(ws.feed.feed_id, DAY, first.file_name or "")
    folder = run_dir_for(ws.settings, ref)
    for entry in folder.iterdir():
        entry.unlink()
    (folder / "state.json").write_bytes(state)
    (folder / (first.file_name or "")).write_bytes(cipher)

    refused = run_feed(ws.settings, ref, clock=_clock, actor="test", census_path=census)
    assert refused.status == "refused" and refused.error is not None
    assert refused.error["code"] == "staging_unsealed"
    assert "run it again" in refused.error["message"] and f"{ws.feed.feed_id}/{DAY}" in refused.error["message"]
    # The way out the message gives: remove the run's staging folder and run it again; nothing goes twice.
    store.remove_run(ws.feed.feed_id, DAY)
    again = run_feed(ws.settings, ref, clock=_clock, actor="test", census_path=census)
    assert again.status == "already_delivered", again.error
    assert _carrier_side(ws) == [first.file_name]
