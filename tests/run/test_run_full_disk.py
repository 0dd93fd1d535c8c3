"""A full disk while encrypting: the stage fails as transient, nothing is kept or sent, the ledger says
why; once space is back the retry delivers a file the carrier decrypts. The run's data directory
(scratch and staging store) is a real tmpfs; real gpg, real sshd, the ledger on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from carrierfeeds import run
from carrierfeeds.errors import TransientError
from carrierfeeds.run.context import RunRef
from carrierfeeds.run.encrypt_ahead import encrypt_to_pins
from carrierfeeds.testing.tmpfs import fill, mounted_tmpfs, tmpfs_unavailable

pytestmark = pytest.mark.slow

DAY = date(2026, 11, 20)


def _clock() -> datetime:
    return datetime(2026, 11, 21, 7, 30, tzinfo=UTC)


def _small_disk(where: Path, size: int) -> Iterator[Path]:
    reason = tmpfs_unavailable()
    if reason:
        pytest.skip(f"no size-limited filesystem for a full disk: {reason}")
    try:
        mount = mounted_tmpfs(where, size=size)
        mounted = mount.__enter__()
    except OSError as exc:
        pytest.skip(f"no size-limited filesystem for a full disk: {exc}")
    try:
        yield mounted
    finally:
        mount.__exit__(None, None, None)


@pytest.fixture
def small_data_dir(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs as the run's data directory: scratch and the local staging store."""
    yield from _small_disk(tmp_path / "data", 64 << 20)


@pytest.fixture
def small_staging(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs as the staging store only (its own filesystem, as a shared mount would be)."""
    yield from _small_disk(tmp_path / "staging", 16 << 20)


def _last(ctx: run.RunContext, stage: str) -> Any:
    return [e for e in ctx.ledger.run_events(ctx.run_id) if e.kind == "stage" and e.stage == stage][-1]


def _ciphertexts(ctx: run.RunContext) -> list[str]:
    staged = [n for n in ctx.store.names(ctx.feed_id, ctx.ref.interval_start) if ".pgp" in n]
    local = [p.name for p in ctx.run_dir.iterdir() if ".pgp" in p.name or ".tmp" in p.name]
    return staged + local


def _built_and_measured(settings: Any, ws: Any, members: int, seed: int,
                        measure_to: Path) -> tuple[Any, Any, Any]:
    """A run staged, validated and built under ``settings``, and the size its ciphertext will have
    (encrypted once to ``measure_to``, outside the small filesystem)."""
    census = ws.write_census(members=members, seed=seed, as_of=DAY)
    ctx = run.open_run(settings, RunRef.for_day(ws.feed.feed_id, DAY), clock=_clock, actor="test")
    run.stage_census(ctx, census)
    run.validate(ctx)
    run.build(ctx)
    state = ctx.state().build
    measured = encrypt_to_pins(ctx, ctx.run_dir / state.file_name, measure_to, state.payload_sha256)
    return ctx, state, measured


@pytest.mark.parametrize("ahead", [True, False], ids=["encrypt-ahead", "encrypt-stage"])
def test_a_full_disk_while_encrypting_fails_as_transient_keeps_and_sends_nothing_then_delivers(
        sftp_workspace: Any, small_data_dir: Path, tmp_path: Path, ahead: bool) -> None:
    ws = sftp_workspace
    settings = ws.settings.model_copy(update={"data_dir": small_data_dir, "encrypt_ahead": ahead})
    ctx, state, measured = _built_and_measured(settings, ws, 400, 11, tmp_path / "measure.pgp")
    # Room for everything but the ciphertext's last blocks: gpg writes most of it, says END_ENCRYPTION
    # and exits 2, which python-gnupg reports as ok.
    filler = fill(small_data_dir, leave=(measured.size - 8192) // 4096 * 4096)

    run.conformance(ctx)  # gpg failing ahead never fails the gate; it says why
    gate = _last(ctx, "conformance")
    assert gate.status == "succeeded"
    if ahead:
        assert gate.detail["encrypted_ahead"] is False
        assert gate.detail["encrypt_ahead_error"] == "encryption_incomplete"
    with pytest.raises(TransientError) as caught:
        run.encrypt(ctx)
    assert caught.value.code == "encryption_incomplete"
    failed = _last(ctx, "encrypt")
    assert failed.status == "failed" and failed.error_code == "encryption_incomplete"
    assert ctx.state().encrypted is None and _ciphertexts(ctx) == []  # nothing kept, no partial file
    assert ctx.ledger.find_delivery(feed_id=ctx.feed_id, interval_start=DAY) is None  # nothing sent
    assert list(ws.inbox.iterdir()) == []

    filler.unlink()  # space is back: the retry encrypts whole, delivers, and the carrier reads it
    run.encrypt(ctx)
    run.deliver(ctx)
    summary = run.confirm(ctx)
    assert summary.status == "delivered"
    (sent,) = ws.inbox.iterdir()
    back = ws.keys.carrier.decrypt_file(sent, tmp_path / "received.834", require_signer=ws.keys.signer_fingerprint)
    assert back.valid_signature and back.sha256 == state.payload_sha256
    delivery = ctx.ledger.find_delivery(feed_id=ctx.feed_id, interval_start=DAY)
    assert delivery is not None and delivery.status == "delivered"
    ctx.ledger.close()


@pytest.mark.parametrize("ahead", [True, False], ids=["encrypt-ahead", "encrypt-stage"])
def test_a_full_staging_store_fails_as_transient_and_keeps_no_ciphertext(sftp_workspace: Any, small_staging: Path,
                                                                        tmp_path: Path, ahead: bool) -> None:
    """gpg's output fits on the scratch disk, the staging store has no room for it: nothing kept on either
    side, then the retry keeps and delivers."""
    ws = sftp_workspace
    settings = ws.settings.model_copy(update={"staging_url": str(small_staging), "encrypt_ahead": ahead})
    ctx, state, measured = _built_and_measured(settings, ws, 1000, 12, tmp_path / "m.pgp")
    room = 16 << 10  # the state's own writes fit; the sealed ciphertext does not
    assert measured.size > 2 * room
    filler = fill(small_staging, leave=room)

    run.conformance(ctx)
    if ahead:
        assert _last(ctx, "conformance").detail["encrypt_ahead_error"] == "staging_full"
    with pytest.raises(TransientError) as caught:
        run.encrypt(ctx)
    assert caught.value.code == "staging_full"
    assert _last(ctx, "encrypt").error_code == "staging_full"
    assert ctx.state().encrypted is None and _ciphertexts(ctx) == []
    assert not [p for p in small_staging.rglob("*") if ".tmp-" in p.name]

    filler.unlink()
    run.encrypt(ctx)
    run.deliver(ctx)
    assert run.confirm(ctx).status == "delivered"
    (sent,) = ws.inbox.iterdir()
    back = ws.keys.carrier.decrypt_file(sent, tmp_path / "received.834")
    assert back.sha256 == state.payload_sha256
    ctx.ledger.close()
