"""Collecting the carrier's return files over a real sshd with real gpg: decrypted whole, signatures
pinned, caps, files kept aside, files seen before skipped, the carrier's outbox never changed."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from carrierfeeds.credentials import StaticConnections
from carrierfeeds.crypto import Keyring
from carrierfeeds.errors import ConfigError, HostKeyRefused, KeyRefused
from carrierfeeds.reconcile.intake import Reason, ReturnFile, ReturnSource, collect_returns
from carrierfeeds.testing.sshd import Sshd, write_ed25519_key

pytestmark = pytest.mark.slow

CANARY = "Quillonius"
CONNECTION = "sunrise-returns"


@dataclass(frozen=True)
class ReturnKeys:
    """Our keyring (our key pair, the carrier's public keys) and the carrier's (its signing keys)."""

    ours: Keyring
    carrier: Keyring
    our_fpr: str
    carrier_fpr: str
    stranger_fpr: str  # a key we know, which is not the carrier's pinned one
    revoked_fpr: str  # a carrier key since revoked, in both keyrings
    signed_before_revocation: bytes  # a return file it signed (encrypted to us) while it was good


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReturnKeys]:
    base = tmp_path_factory.mktemp("gpg-returns")
    ours, carrier = Keyring.create(base / "ours"), Keyring.create(base / "carrier")
    our_fpr = ours.generate_key("carrierfeeds returns", "returns@sender.example", usage="encrypt,sign")
    carrier_fpr = carrier.generate_key("Sunrise Eligibility", "eligibility@carrier.example", usage="sign")
    stranger_fpr = carrier.generate_key("Someone Else", "someone@elsewhere.example", usage="sign")
    revoked_fpr = carrier.generate_key("Sunrise Retired", "retired@carrier.example", usage="sign")
    carrier.import_keys(ours.export_public(our_fpr))
    for fpr in (carrier_fpr, stranger_fpr, revoked_fpr):
        ours.import_keys(carrier.export_public(fpr))
    plain, signed = base / "retired.plain", base / "retired.pgp"
    plain.write_bytes(_roster(2, "R"))
    carrier.encrypt_file(plain, signed, recipient=our_fpr, signer=revoked_fpr, now=_now())
    carrier.revoke(revoked_fpr)
    ours.import_keys(carrier.export_public(revoked_fpr))
    yield ReturnKeys(ours, carrier, our_fpr, carrier_fpr, stranger_fpr, revoked_fpr, signed.read_bytes())
    ours.stop_agent()
    carrier.stop_agent()


@pytest.fixture
def outbox(sshd_server: Sshd) -> Path:
    path = sshd_server.root / f"returns-{uuid.uuid4().hex[:10]}"
    path.mkdir()
    return path


def _now() -> datetime:
    return datetime.now(UTC)


def _roster(members: int, tag: str) -> bytes:
    lines = ["member_id,last_name,first_name,plan,coverage_start"]
    lines += [f"M{tag}{i:05d},{CANARY},Ada{i},GOLD,2026-01-01" for i in range(members)]
    return ("\n".join(lines) + "\n").encode()


def _put(keys: ReturnKeys, outbox: Path, name: str, plain: bytes, *, signers: tuple[str, ...] | None = None,
         mtime: int = 1_800_000_000, work: Path) -> Path:
    """``plain`` encrypted to us as the carrier would, signed by ``signers`` (default: the carrier; () none)."""
    signers = (keys.carrier_fpr,) if signers is None else signers
    src = work / f"{name}.plain"
    src.write_bytes(plain)
    dst = outbox / name
    if len(signers) == 1:
        keys.carrier.encrypt_file(src, dst, recipient=keys.our_fpr, signer=signers[0], now=_now())
    else:
        # The adapter always signs once; an unsigned or doubly signed file needs gpg itself.
        signing = [arg for fpr in signers for arg in ("--local-user", fpr)]
        subprocess.run(["gpg", "--homedir", str(keys.carrier.home), "--batch", "--yes", "--trusted-key",
                        keys.our_fpr[-16:], "--recipient", keys.our_fpr, *signing,
                        *(["--sign"] if signers else []), "--encrypt", "--output", str(dst), str(src)],
                       check=True, capture_output=True, timeout=60)
    os.utime(dst, (mtime, mtime))
    src.unlink()
    return dst


def _state(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry of the outbox with size, mtime and sha256: what "unchanged" means."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.iterdir())}


def _collect(keys: ReturnKeys, sshd: Sshd, outbox: Path, into: Path, *, signed_by: str | None = "carrier",
             max_bytes: int = 1 << 20, seen: Callable[[str], bool] = lambda _sha: False,
             endpoint: Any = None, clock: Callable[[], datetime] = _now,
             listed_before: Callable[[str, int, int], bool] | None = None) -> list[ReturnFile]:
    source = ReturnSource(connection=CONNECTION, remote_dir=str(outbox), pattern="*.pgp",
                          signed_by=keys.carrier_fpr if signed_by == "carrier" else signed_by, max_bytes=max_bytes)
    connections = StaticConnections(sftp={CONNECTION: endpoint or sshd.endpoint()})
    return collect_returns(source, connections=connections, keyring=keys.ours, into=into, seen=seen,
                           clock=clock, listed_before=listed_before, retries=1)


def _reasons(found: list[ReturnFile]) -> dict[str, str | None]:
    return {f.remote_name: f.reason for f in found}


def _no_phi_aside(aside: Path, caplog: pytest.LogCaptureFixture) -> None:
    for path in aside.glob("*.reason.json"):
        assert CANARY not in path.read_text()
        assert path.stat().st_mode & 0o077 == 0
    assert CANARY not in caplog.text


def test_signed_encrypted_files_are_collected_in_order_and_the_outbox_is_untouched(
        keys: ReturnKeys, sshd_server: Sshd, outbox: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    first, second = _roster(3, "A"), _roster(5, "B")
    _put(keys, outbox, "eligibility_20261130.csv.pgp", first, mtime=1_800_000_000, work=tmp_path)
    _put(keys, outbox, "eligibility_20261201.csv.pgp", second, mtime=1_800_000_500, work=tmp_path)
    (outbox / "readme.txt").write_text("not a return file")
    (outbox / ".eligibility_20261202.csv.pgp").write_bytes(b"still uploading")
    before = _state(outbox)
    into = tmp_path / "run" / "returns"

    found = _collect(keys, sshd_server, outbox, into)
    assert [(f.remote_name, f.outcome) for f in found] == [("eligibility_20261130.csv.pgp", "collected"),
                                                           ("eligibility_20261201.csv.pgp", "collected")]
    for got, plain in zip(found, (first, second), strict=True):
        assert got.path is not None and got.path.read_bytes() == plain
        assert got.path.parent == into and got.path.name == f"{got.plaintext_sha256}.plain"
        assert got.path.stat().st_mode & 0o777 == 0o600
        assert got.plaintext_sha256 == hashlib.sha256(plain).hexdigest() and got.size == len(plain)
        assert got.ciphertext_sha256 == hashlib.sha256((outbox / got.remote_name).read_bytes()).hexdigest()
        assert got.signer_fingerprint == keys.carrier_fpr and got.reason is None
        assert got.collected_at.tzinfo is not None
    assert into.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in into.iterdir()) == sorted(f.path.name for f in found if f.path)
    assert not list((tmp_path / "run" / "aside").iterdir())
    assert _state(outbox) == before, "the carrier's outbox is read, never changed"
    assert CANARY not in caplog.text

    # Imported before (by either hash): skipped, nothing new in the folder.
    imported = {f.ciphertext_sha256 for f in found[:1]} | {f.plaintext_sha256 for f in found[1:]}
    again = tmp_path / "run2" / "returns"
    assert _collect(keys, sshd_server, outbox, again, seen=imported.__contains__) == []
    assert not list(again.iterdir())
    # The carrier encrypts the same roster again under a new name: new ciphertext, same plaintext, skipped.
    _put(keys, outbox, "eligibility_20261201_resent.csv.pgp", second, mtime=1_800_000_900, work=tmp_path)
    assert _collect(keys, sshd_server, outbox, tmp_path / "run3" / "returns", seen=imported.__contains__) == []
    # And twice in one outbox within one collection: one plaintext.
    once = _collect(keys, sshd_server, outbox, tmp_path / "run4" / "returns")
    assert [f.remote_name for f in once] == ["eligibility_20261130.csv.pgp", "eligibility_20261201.csv.pgp"]

    # Known by the listing alone (name, size, time recorded earlier): not even downloaded.
    listed = {(f.remote_name, f.remote_size, f.remote_mtime) for f in once}
    caplog.clear()
    rest = _collect(keys, sshd_server, outbox, tmp_path / "run5" / "returns",
                    listed_before=lambda *entry: entry in listed)
    assert [f.remote_name for f in rest] == ["eligibility_20261201_resent.csv.pgp"]
    assert "fetched eligibility_20261130" not in caplog.text and "fetched eligibility_20261201.csv" not in caplog.text
    assert json.loads(json.dumps([f.as_dict() for f in once]))[0]["signer_fingerprint"] == keys.carrier_fpr


def test_a_pinned_signer_refuses_unsigned_other_and_extra_signers_and_keeps_them_aside(
        keys: ReturnKeys, sshd_server: Sshd, outbox: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    good = _roster(2, "G")
    _put(keys, outbox, "a_good.pgp", good, work=tmp_path, mtime=1_800_000_001)
    _put(keys, outbox, "b_unsigned.pgp", _roster(2, "U"), signers=(), work=tmp_path, mtime=1_800_000_002)
    _put(keys, outbox, "c_stranger.pgp", _roster(2, "S"), signers=(keys.stranger_fpr,), work=tmp_path,
         mtime=1_800_000_003)
    _put(keys, outbox, "d_cosigned.pgp", _roster(2, "C"), signers=(keys.carrier_fpr, keys.stranger_fpr),
         work=tmp_path, mtime=1_800_000_004)
    (outbox / "e_revoked_key.pgp").write_bytes(keys.signed_before_revocation)
    os.utime(outbox / "e_revoked_key.pgp", (1_800_000_005, 1_800_000_005))
    (outbox / "f_not_pgp.pgp").write_bytes(_roster(2, "P"))
    os.utime(outbox / "f_not_pgp.pgp", (1_800_000_006, 1_800_000_006))
    before = _state(outbox)
    into = tmp_path / "run" / "returns"
    aside = tmp_path / "run" / "aside"

    found = _collect(keys, sshd_server, outbox, into)
    assert _reasons(found) == {"a_good.pgp": None, "b_unsigned.pgp": Reason.UNSIGNED,
                               "c_stranger.pgp": Reason.WRONG_SIGNER, "d_cosigned.pgp": Reason.WRONG_SIGNER,
                               "e_revoked_key.pgp": Reason.WRONG_SIGNER, "f_not_pgp.pgp": Reason.UNDECRYPTABLE}
    collected = [f for f in found if f.collected]
    assert len(collected) == 1 and collected[0].path is not None and collected[0].path.read_bytes() == good
    assert [p.name for p in into.iterdir()] == [collected[0].path.name], "nothing of a refused file in into"
    for refused in (f for f in found if not f.collected):
        assert refused.outcome == "refused" and refused.plaintext_sha256 is None
        assert refused.path is not None and refused.path.parent == aside
        assert refused.path.read_bytes() == (outbox / refused.remote_name).read_bytes(), "kept as received"
        assert refused.reason_path is not None
        record = json.loads(refused.reason_path.read_text())
        assert record["reason"] == refused.reason and record["remote_name"] == refused.remote_name
        assert record["ciphertext_sha256"] == refused.ciphertext_sha256 and record["signed_by"] == keys.carrier_fpr
    assert json.loads((aside / f"{found[2].ciphertext_sha256}.reason.json").read_text())["signer"] == \
        keys.stranger_fpr
    _no_phi_aside(aside, caplog)
    assert _state(outbox) == before

    # Refused again on the next collection (ops fix the keys or the carrier replaces the file); the reason
    # file keeps the first refusal.
    first_at = json.loads(found[1].reason_path.read_text())["first_refused_at"]  # type: ignore[union-attr]
    later = _collect(keys, sshd_server, outbox, tmp_path / "run" / "returns-2",
                     clock=lambda: _now() + timedelta(hours=1))
    assert _reasons(later) == _reasons(found)
    assert json.loads(found[1].reason_path.read_text())["first_refused_at"] == first_at  # type: ignore[union-attr]

    # A carrier that does not sign: every file that decrypts is collected, a valid signer reported.
    unpinned = _collect(keys, sshd_server, outbox, tmp_path / "unpinned" / "returns", signed_by=None)
    signers = {f.remote_name: (f.outcome, f.signer_fingerprint) for f in unpinned}
    # gpg reports the last of two signatures; either is a valid one.
    assert signers.pop("d_cosigned.pgp") in {("collected", keys.carrier_fpr), ("collected", keys.stranger_fpr)}
    assert signers == {
        "a_good.pgp": ("collected", keys.carrier_fpr), "b_unsigned.pgp": ("collected", None),
        "c_stranger.pgp": ("collected", keys.stranger_fpr), "e_revoked_key.pgp": ("collected", None),
        "f_not_pgp.pgp": ("refused", None)}


def test_files_over_the_cap_are_kept_aside_unread_and_the_rest_go_on(
        keys: ReturnKeys, sshd_server: Sshd, outbox: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cap = 64 * 1024
    big = outbox / "a_big.pgp"
    big.write_bytes(os.urandom(cap + 1))
    os.utime(big, (1_800_000_001, 1_800_000_001))
    # Compresses to a few hundred bytes, decrypts to four times the cap.
    _put(keys, outbox, "b_bomb.pgp", b"0" * (4 * cap), work=tmp_path, mtime=1_800_000_002)
    small = _roster(3, "S")
    _put(keys, outbox, "c_small.pgp", small, work=tmp_path, mtime=1_800_000_003)
    before = _state(outbox)
    into = tmp_path / "run" / "returns"
    aside = tmp_path / "run" / "aside"

    found = _collect(keys, sshd_server, outbox, into, max_bytes=cap)
    assert _reasons(found) == {"a_big.pgp": Reason.TOO_LARGE, "b_bomb.pgp": Reason.DECOMPRESSED_TOO_LARGE,
                               "c_small.pgp": None}
    too_big, bomb, ok = found
    # Over the cap as listed: never downloaded, so only the reason is kept.
    assert too_big.path is None and too_big.ciphertext_sha256 is None and too_big.size == cap + 1
    record = json.loads(too_big.reason_path.read_text())  # type: ignore[union-attr]
    assert (record["reason"], record["bytes"], record["max_bytes"]) == ("too_large", cap + 1, cap)
    assert bomb.path == aside / f"{bomb.ciphertext_sha256}.pgp"
    assert bomb.path.read_bytes() == (outbox / "b_bomb.pgp").read_bytes()
    assert ok.path is not None and ok.path.read_bytes() == small
    assert [p.name for p in into.iterdir()] == [ok.path.name]
    assert sorted(p.name for p in aside.iterdir()) == sorted(
        [f"{bomb.ciphertext_sha256}.pgp", bomb.reason_path.name, too_big.reason_path.name])  # type: ignore[union-attr]
    _no_phi_aside(aside, caplog)
    assert _state(outbox) == before


def test_an_unpinned_or_changed_host_key_is_refused_before_anything_is_read(
        keys: ReturnKeys, sshd_server: Sshd, outbox: Path, tmp_path: Path) -> None:
    _put(keys, outbox, "eligibility.pgp", _roster(2, "H"), work=tmp_path)
    before = _state(outbox)
    other = write_ed25519_key(tmp_path / "impostor_host_key")
    changed = f"[{sshd_server.host}]:{sshd_server.port} {other}\n"
    unpinned = f"[carrier.example]:22 {other}\n"
    for known_hosts in (changed, unpinned):
        into = tmp_path / uuid.uuid4().hex / "returns"
        with pytest.raises(HostKeyRefused):
            _collect(keys, sshd_server, outbox, into, endpoint=sshd_server.endpoint(known_hosts=known_hosts))
        assert not list(into.iterdir()) and not list((into.parent / "aside").iterdir())
    assert _state(outbox) == before


def test_a_pinned_signer_that_is_expired_revoked_or_missing_stops_the_collection(
        keys: ReturnKeys, sshd_server: Sshd, outbox: Path, tmp_path: Path) -> None:
    _put(keys, outbox, "eligibility.pgp", _roster(2, "K"), work=tmp_path)
    into = tmp_path / "run" / "returns"
    cases: list[dict[str, Any]] = [
        {"signed_by": keys.revoked_fpr},
        # The carrier's key expires in a year; by our clock two years on, it signs nothing we accept.
        {"clock": lambda: _now() + timedelta(days=800)},
        {"signed_by": "0" * 40},
    ]
    for case in cases:
        with pytest.raises(KeyRefused):
            _collect(keys, sshd_server, outbox, into, **case)
        assert not into.parent.exists(), "checked before anything is made or fetched"
    with pytest.raises(KeyRefused):  # a key id is never a pin
        _collect(keys, sshd_server, outbox, into, signed_by=keys.carrier_fpr[-16:])


def test_the_collection_folder_must_be_private(keys: ReturnKeys, sshd_server: Sshd, outbox: Path,
                                               tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(ConfigError):
        _collect(keys, sshd_server, outbox, shared)
    with pytest.raises(ConfigError):
        collect_returns(replace(ReturnSource(CONNECTION, str(outbox), "*", None, 1), max_bytes=0),
                        connections=StaticConnections(sftp={CONNECTION: sshd_server.endpoint()}),
                        keyring=keys.ours, into=tmp_path / "x", seen=lambda _s: False, clock=_now)


def test_a_collection_that_fails_part_way_leaves_no_plaintext_behind(
        keys: ReturnKeys, sshd_server: Sshd, outbox: Path, tmp_path: Path) -> None:
    _put(keys, outbox, "a.pgp", _roster(2, "X"), work=tmp_path, mtime=1_800_000_001)
    _put(keys, outbox, "b.pgp", _roster(3, "Y"), work=tmp_path, mtime=1_800_000_002)
    asked: list[str] = []

    def seen(sha: str) -> bool:
        asked.append(sha)
        if len(asked) > 2:  # the second file's ciphertext: the caller's index went away
            raise ConnectionError("index unavailable")
        return False

    into = tmp_path / "run" / "returns"
    with pytest.raises(ConnectionError):
        _collect(keys, sshd_server, outbox, into, seen=seen)
    assert len(asked) == 3 and not list(into.iterdir()), "the first file's plaintext went with the failure"


def test_a_file_gone_or_swapped_after_listing_is_deferred_or_refused_and_the_rest_go_on(
        keys: ReturnKeys, sshd_server: Sshd, outbox: Path, tmp_path: Path) -> None:
    for i, name in enumerate(("a_removed.pgp", "b_swapped.pgp", "c_good.pgp")):
        _put(keys, outbox, name, _roster(2, name[0]), work=tmp_path, mtime=1_800_000_001 + i)

    def carrier_acts(name: str, _size: int, _mtime: int) -> bool:
        # Between the listing and the download: the carrier removes one file, swaps another for a link.
        if name == "a_removed.pgp":
            (outbox / name).unlink()
        elif name == "b_swapped.pgp":
            (outbox / name).unlink()
            (outbox / name).symlink_to(outbox / "c_good.pgp")
        return False

    into = tmp_path / "run" / "returns"
    found = _collect(keys, sshd_server, outbox, into, listed_before=carrier_acts)
    assert [(f.remote_name, f.outcome, f.reason) for f in found] == [
        ("a_removed.pgp", "deferred", Reason.FETCH_FAILED),
        ("b_swapped.pgp", "refused", Reason.NOT_REGULAR_FILE),
        ("c_good.pgp", "collected", None)]
    assert found[1].path is None and found[1].reason_path is not None and found[1].reason_path.exists()
    assert [p.name for p in into.iterdir()] == [f"{found[2].plaintext_sha256}.plain"]
