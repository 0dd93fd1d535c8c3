"""The staging store's streaming writer: any way of feeding the same bytes stores the format that
``put_file`` always stored (objects written before the writer still read), and an abandoned or failed
write leaves no object behind."""

from __future__ import annotations

import hashlib
import io
import secrets
import uuid
from datetime import date
from pathlib import Path
from typing import IO

import pytest

from carrierfeeds.staging import (
    _HKDF_INFO,
    _MAGIC,
    CHUNK,
    ENCRYPTED_SUFFIX,
    KEY_BYTES,
    StagingKey,
    StagingStore,
    StagingTampered,
    open_store,
)

DAY = date(2026, 11, 20)
FEED = "acme-sunrise-medical"
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 17]


def _legacy_put(store: StagingStore, name: str, data: bytes) -> Path:
    """The encoder as it was before the streaming writer (1 MiB reads, the last one flagged), verbatim
    in what it stores: objects written by it must still decrypt."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    salt = secrets.token_bytes(16)
    header = _MAGIC + salt
    derived = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=_HKDF_INFO).derive(store.key.secret)
    aead = AESGCM(derived)
    aad = f"{FEED}/{DAY.isoformat()}/{name}".encode()
    source: IO[bytes] = io.BytesIO(data)
    out = bytearray(header)
    current = source.read(CHUNK)
    counter = 0
    while True:
        following = source.read(CHUNK)
        last = not following
        nonce = counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
        out += aead.encrypt(nonce, current, header + aad)
        if last:
            break
        current, counter = following, counter + 1
    where = Path(store.run_location(FEED, DAY))
    where.mkdir(parents=True, exist_ok=True)
    path = where / (name + ENCRYPTED_SUFFIX)
    path.write_bytes(bytes(out))
    return path


def _data(size: int) -> bytes:
    return (b"123-45-6780,Zo\xc3\xab,\xe2\x82\xac 1971-03-14,,\r\n" * (size // 30 + 1))[:size]


def _pieces(data: bytes, pattern: str) -> list[bytes]:
    if pattern == "whole":
        return [data]
    if pattern == "chunks":
        return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
    if pattern == "odd":  # pieces that straddle every chunk boundary, with empty ones between
        cuts, at, step = [], 0, 1
        while at < len(data):
            cuts += [data[at:at + step], b""]
            at += step
            step = step * 7 + 3
        return cuts
    if pattern == "big-then-bytes":
        head = data[: max(0, len(data) - 5)]
        return [head, *[data[i:i + 1] for i in range(len(head), len(data))]]
    raise AssertionError(pattern)


@pytest.mark.parametrize("size", SIZES)
def test_objects_written_before_the_writer_still_read(tmp_path: Path, size: int) -> None:
    store = StagingStore(tmp_path / "staging", StagingKey.generate())
    data = _data(size)
    legacy = _legacy_put(store, "census.csv", data)
    assert store.get_bytes(FEED, DAY, "census.csv") == data
    put = store.put_bytes(FEED, DAY, "again.csv", data)
    # The same layout: header, then one tag per 1 MiB chunk (at least one chunk).
    assert put.stored_bytes == legacy.stat().st_size


@pytest.mark.parametrize("pattern", ["whole", "chunks", "odd", "big-then-bytes"])
@pytest.mark.parametrize("size", SIZES)
def test_any_feeding_stores_what_put_file_stores(tmp_path: Path, size: int, pattern: str) -> None:
    store = StagingStore(tmp_path / "staging", StagingKey.generate())
    data = _data(size)
    source = tmp_path / "census.csv"
    source.write_bytes(data)
    reference = store.put_file(FEED, DAY, "reference.csv", source)
    with store.open_writer(FEED, DAY, "census.csv") as writer:
        for piece in _pieces(data, pattern):
            writer.write(piece)
        assert writer.sha256 == hashlib.sha256(data).hexdigest() and writer.plain_bytes == size
    put = writer.artifact
    assert (put.sha256, put.plain_bytes, put.stored_bytes, put.encrypted) == \
        (reference.sha256, reference.plain_bytes, reference.stored_bytes, True)
    assert store.get_bytes(FEED, DAY, "census.csv") == data


def test_phi_free_artifacts_stream_too_and_are_sealed(tmp_path: Path) -> None:
    store = StagingStore(tmp_path / "staging", StagingKey.generate())
    store.put_bytes(FEED, DAY, "x.834.pgp", b"old", phi=True)
    with store.open_writer(FEED, DAY, "x.834.pgp", phi=False) as writer:
        writer.write(b"cipher")
        writer.write(memoryview(b"text"))
    assert writer.artifact.encrypted and b"ciphertext" not in Path(writer.artifact.location).read_bytes()
    assert store.get_bytes(FEED, DAY, "x.834.pgp") == b"ciphertext"
    assert sorted(p.name for p in Path(store.run_location(FEED, DAY)).iterdir()) == ["x.834.pgp.enc"]


def test_an_abandoned_write_leaves_the_earlier_object_and_no_temporary(tmp_path: Path) -> None:
    store = StagingStore(tmp_path / "staging", StagingKey.generate())
    store.put_bytes(FEED, DAY, "census.csv", b"first")
    with pytest.raises(RuntimeError), store.open_writer(FEED, DAY, "census.csv") as writer:
        writer.write(_data(CHUNK + 5))
        raise RuntimeError("the source changed")
    assert store.get_bytes(FEED, DAY, "census.csv") == b"first"
    assert [p.name for p in Path(store.run_location(FEED, DAY)).iterdir()] == ["census.csv.enc"]
    with pytest.raises(ValueError, match="not stored"):
        _ = writer.artifact


def test_a_stored_writer_takes_no_more_bytes(tmp_path: Path) -> None:
    store = StagingStore(tmp_path / "staging", StagingKey.generate())
    with store.open_writer(FEED, DAY, "census.csv") as writer:
        writer.write(b"abc")
    with pytest.raises(ValueError, match="already stored"):
        writer.write(b"d")


def test_streamed_objects_are_bound_to_their_path(tmp_path: Path) -> None:
    store = StagingStore(tmp_path / "staging", StagingKey.generate())
    with store.open_writer(FEED, DAY, "census.csv") as writer:
        writer.write(_data(2 * CHUNK + 3))
    run_dir = Path(store.run_location(FEED, DAY))
    (run_dir / "census.csv.enc").rename(run_dir / "moved.csv.enc")
    with pytest.raises(StagingTampered):
        store.get_bytes(FEED, DAY, "moved.csv")


def test_the_writer_on_an_fsspec_url(tmp_path: Path) -> None:
    store = open_store(f"memory://carrierfeeds-{uuid.uuid4().hex[:8]}/staging", StagingKey.generate())
    data = _data(CHUNK + 9)
    with store.open_writer(FEED, DAY, "census.csv") as writer:
        writer.write(data[:10])
        writer.write(data[10:])
    assert store.get_bytes(FEED, DAY, "census.csv") == data
    assert writer.artifact.sha256 == hashlib.sha256(data).hexdigest()
