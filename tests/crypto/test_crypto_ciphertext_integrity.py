"""A ciphertext is whole or it does not exist: gpg's exit status and END_ENCRYPTION, fsync, and a packet
walk before it is kept. Real gpg, a real size-limited filesystem (tmpfs) for the full disk."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from carrierfeeds.crypto import EncryptionIncomplete
from carrierfeeds.errors import TransientError
from carrierfeeds.openpgp import CiphertextMalformed, check_openpgp_message
from carrierfeeds.testing.tmpfs import fill, mounted_tmpfs, tmpfs_unavailable


def _now() -> datetime:
    return datetime.now(UTC)  # the demo keys were made at the real time; gpg judges by it too


def _payload(path: Path, size: int, seed: int = 1) -> Path:
    """834-like bytes that compress about as a census does (numbers that do not repeat)."""
    rng = random.Random(seed)
    segment = b"INS*Y*18*021*XN*A*E**FT~REF*0F*%09d~"
    path.write_bytes(b"".join(segment % rng.randrange(10**9) for _ in range(size // 36)))
    return path


def _encrypt(keys: Any, src: Path, dst: Path, *, armor: bool = False) -> Any:
    return keys.ours.encrypt_file(src, dst, recipient=keys.carrier_fingerprint, signer=keys.signer_fingerprint,
                                  armor=armor, compress_level=1, now=_now())


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs: the place gpg writes its output to."""
    reason = tmpfs_unavailable()
    if reason:
        pytest.skip(f"no size-limited filesystem for a full disk: {reason}")
    try:
        with mounted_tmpfs(tmp_path / "small", size=8 << 20) as where:
            yield where
    except OSError as exc:
        pytest.skip(f"no size-limited filesystem for a full disk: {exc}")


def test_a_full_disk_gpg_reports_as_encrypted_is_an_incomplete_encryption_and_leaves_nothing(
        demo_keys: Any, tmp_path: Path, small_disk: Path) -> None:
    src = _payload(tmp_path / "payload.834", 1_500_000)
    size = _encrypt(demo_keys, src, tmp_path / "measure.pgp").size
    # A little less room than the ciphertext needs: gpg writes all but its last blocks, says
    # END_ENCRYPTION, and exits 2 ("No space left on device"); python-gnupg still calls that ok.
    filler = fill(small_disk, leave=(size - 8192) // 4096 * 4096)
    with pytest.raises(EncryptionIncomplete) as caught:
        _encrypt(demo_keys, src, small_disk / "payload.834.pgp")
    assert isinstance(caught.value, TransientError)  # the stage is retried
    assert caught.value.details["gpg_exit"] == 2 and caught.value.details["end_encryption"] is True
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]  # no partial file, no temp

    filler.unlink()  # space is back: the next try makes a whole ciphertext the carrier decrypts
    made = _encrypt(demo_keys, src, small_disk / "payload.834.pgp")
    back = demo_keys.carrier.decrypt_file(made.path, tmp_path / "back.834",
                                          require_signer=demo_keys.signer_fingerprint)
    assert back.path.read_bytes() == src.read_bytes()


def test_a_full_disk_that_stops_gpg_reading_is_an_incomplete_encryption(demo_keys: Any, tmp_path: Path,
                                                                       small_disk: Path) -> None:
    src = _payload(tmp_path / "payload.834", 6_000_000)
    # So little room that gpg exits while its input is still being fed (python-gnupg: a broken pipe).
    fill(small_disk, leave=64 << 10)
    with pytest.raises(EncryptionIncomplete) as caught:
        _encrypt(demo_keys, src, small_disk / "payload.834.pgp")
    assert caught.value.details.get("gpg_exit") != 0
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
def test_every_truncation_of_a_real_ciphertext_is_found(demo_keys: Any, tmp_path: Path, armor: bool) -> None:
    src = _payload(tmp_path / "payload.834", 200_000)
    made = _encrypt(demo_keys, src, tmp_path / "payload.834.pgp", armor=armor)
    whole = made.path.read_bytes()
    subkey = demo_keys.ours.inspect(demo_keys.carrier_fingerprint, now=_now()).encryption_subkey
    assert check_openpgp_message(io.BytesIO(whole), armor=armor) == (subkey[-16:],)
    # Every cut in the headers and the last kilobytes, and a stride through the partial-length body.
    # (An armored file without its final newline is still whole.)
    end = len(whole) - 1 if armor else len(whole)
    cuts = sorted({*range(end - 1200, end), *range(0, 1200), *range(0, end, 61)})
    for cut in cuts:
        with pytest.raises(CiphertextMalformed):
            check_openpgp_message(io.BytesIO(whole[:cut]), armor=armor)
    with pytest.raises(CiphertextMalformed):
        check_openpgp_message(io.BytesIO(whole + (b"\n-----BEGIN PGP MESSAGE-----\n" if armor else b"\xcb\x01X")),
                              armor=armor)
