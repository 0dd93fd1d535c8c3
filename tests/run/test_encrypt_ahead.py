"""The conformance stage encrypts ahead (gpg beside the gate's checks); the ciphertext is kept only when
the gate passes, and the encrypt stage checks it and uses it. Real gpg, real sshd, the demo feed."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from carrierfeeds import run
from carrierfeeds.errors import ConformanceFailed
from carrierfeeds.run.context import RunRef, run_dir_for

pytestmark = pytest.mark.slow

DAY = date(2026, 11, 20)


def _clock() -> datetime:
    return datetime(2026, 11, 21, 7, 30, tzinfo=UTC)


def _through_build(ws: Any, *, members: int = 15, seed: int = 3, settings: Any = None) -> run.RunContext:
    census = ws.write_census(members=members, seed=seed, as_of=DAY)
    ctx = run.open_run(settings or ws.settings, RunRef.for_day(ws.feed.feed_id, DAY), clock=_clock,
                            actor="test")
    run.stage_census(ctx, census)
    run.validate(ctx)
    run.build(ctx)
    return ctx


def _stage_detail(ctx: run.RunContext, stage: str) -> dict[str, Any]:
    events = [e for e in ctx.ledger.run_events(ctx.run_id) if e.kind == "stage" and e.stage == stage]
    assert events and events[-1].status == "succeeded", events
    detail: dict[str, Any] = events[-1].detail or {}
    return detail


def _ciphers(ctx: run.RunContext) -> list[str]:
    local = [p.name for p in ctx.run_dir.iterdir() if ".pgp" in p.name]
    staged = [p.name for p in run_dir_for(ctx.settings, ctx.ref).iterdir() if ".pgp" in p.name]
    return sorted(local + staged)


def test_the_gate_encrypts_ahead_and_the_encrypt_stage_uses_that_ciphertext(sftp_workspace: Any,
                                                                           tmp_path: Path) -> None:
    ws = sftp_workspace
    ctx = _through_build(ws)
    run.conformance(ctx)
    state = ctx.state().as_flat()
    assert state["encrypted_ahead"] is True and state["encrypted_payload"] == state["payload_sha256"]
    assert _stage_detail(ctx, "conformance")["encrypted_ahead"] is True
    cipher = ctx.run_dir / state["cipher_name"]
    made = cipher.stat().st_mtime_ns
    assert not any(p.name.startswith(".ahead.") for p in ctx.run_dir.iterdir())

    run.encrypt(ctx)
    detail = _stage_detail(ctx, "encrypt")
    assert detail["reused"] is True and detail["encrypted_in"] == "conformance"
    assert detail["ciphertext_sha256"] == state["ciphertext_sha256"]
    assert cipher.stat().st_mtime_ns == made  # gpg did not run again
    run.deliver(ctx)
    run.confirm(ctx)
    (sent,) = ws.inbox.iterdir()
    out = tmp_path / "received.834"
    result = ws.keys.carrier.decrypt_file(sent, out, require_signer=ws.keys.signer_fingerprint)
    assert result.valid_signature and result.sha256 == state["payload_sha256"]
    ctx.ledger.close()


def test_a_file_the_gate_refuses_leaves_no_ciphertext(sftp_workspace: Any) -> None:
    ws = sftp_workspace
    ctx = _through_build(ws, seed=5)
    plain = ctx.run_dir / ctx.state().build.file_name
    data = bytearray(plain.read_bytes())
    data[-3] = ord("X") if data[-3] != ord("X") else ord("Y")
    plain.write_bytes(bytes(data))
    with pytest.raises(ConformanceFailed):
        run.conformance(ctx)
    state = ctx.state().as_flat()
    assert "cipher_name" not in state and "encrypted_payload" not in state
    assert _ciphers(ctx) == []  # neither the ahead file nor a kept one
    ctx.ledger.close()


def test_a_changed_recipient_pin_is_encrypted_again_not_reused(sftp_workspace: Any) -> None:
    ws = sftp_workspace
    ctx = _through_build(ws, seed=7)
    run.conformance(ctx)
    ahead = ctx.state().encryption.ciphertext_sha256
    # The carrier's subkey is pinned after the gate ran: what was made ahead was not made under that pin.
    listing = ws.keys.ours.inspect(ws.keys.carrier_fingerprint, now=_clock())
    feed_file = ws.settings.feeds_dir / f"{ws.feed.feed_id}.yaml"
    doc = yaml.safe_load(feed_file.read_text())
    doc["encryption"]["recipient_encryption_subkey"] = listing.encryption_subkey
    feed_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    again = run.open_run(ws.settings, ctx.ref, clock=_clock, actor="test")
    run.encrypt(again)
    detail = _stage_detail(again, "encrypt")
    assert "reused" not in detail
    assert again.state().encryption.ciphertext_sha256 != ahead and again.state().encryption.encrypted_ahead is False
    ctx.ledger.close()
    again.ledger.close()


def test_armor_turned_on_after_the_gate_is_encrypted_again_not_reused(sftp_workspace: Any) -> None:
    ws = sftp_workspace
    ctx = _through_build(ws, seed=8)
    run.conformance(ctx)
    feed_file = ws.settings.feeds_dir / f"{ws.feed.feed_id}.yaml"
    doc = yaml.safe_load(feed_file.read_text())
    doc["encryption"]["armor"] = True
    feed_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    again = run.open_run(ws.settings, ctx.ref, clock=_clock, actor="test")
    run.encrypt(again)
    assert "reused" not in _stage_detail(again, "encrypt")
    armored = again.run_dir / again.state().encryption.cipher_name
    assert armored.read_bytes().startswith(b"-----BEGIN PGP MESSAGE-----")
    ctx.ledger.close()
    again.ledger.close()


def test_encrypt_ahead_off_leaves_gpg_to_the_encrypt_stage(sftp_workspace: Any) -> None:
    ws = sftp_workspace
    ctx = _through_build(ws, seed=9, settings=ws.settings.model_copy(update={"encrypt_ahead": False}))
    run.conformance(ctx)
    assert "encrypted_ahead" not in _stage_detail(ctx, "conformance")
    assert ctx.state().encrypted is None and _ciphers(ctx) == []
    run.encrypt(ctx)
    assert "reused" not in _stage_detail(ctx, "encrypt")
    assert ctx.state().encryption.encrypted_ahead is False
    ctx.ledger.close()


def test_a_stopped_encryption_writes_nothing(demo_keys: Any, tmp_path: Path) -> None:
    from carrierfeeds.crypto import EncryptionStopped

    src = tmp_path / "payload.x12"
    src.write_bytes(b"ST*834*0001~" * 200_000)
    stop = threading.Event()
    stop.set()
    with pytest.raises(EncryptionStopped):
        demo_keys.ours.encrypt_file(src, tmp_path / "out.pgp", recipient=demo_keys.carrier_fingerprint,
                                    signer=demo_keys.signer_fingerprint, now=_clock(), stop=stop)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["payload.x12"]
