"""The staging store: round trips on a local folder and an fsspec URL, PHI never at rest in the clear,
tampering refused, keys guarded, a run's artifacts removed when it ends."""

from __future__ import annotations

import os
import stat
import uuid
from datetime import date
from pathlib import Path

import fsspec  # type: ignore[import-untyped]
import pytest

from carrierfeeds.errors import ConfigError, DataError
from carrierfeeds.staging import (
    CHUNK,
    KEY_FILE_NAME,
    StagingKey,
    StagingStore,
    StagingTampered,
    open_store,
)

DAY = date(2026, 11, 20)
FEED = "acme-sunrise-medical"
CANARY = b"123-45-6780,Quillonius,1971-03-14,4242 Canary Wharf Lane\n"


@pytest.fixture
def key() -> StagingKey:
    return StagingKey.generate()


def _census(rows: int) -> bytes:
    return b"ssn,first_name,dob,address1\n" + CANARY * rows


def _every_stored_byte(store: StagingStore) -> bytes:
    return b"".join(store.fs.cat_file(p) for p in store.fs.find(store.root))


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
def test_phi_round_trips_and_is_never_stored_in_the_clear(tmp_path: Path, key: StagingKey, size: int) -> None:
    store = StagingStore(tmp_path / "staging", key)
    data = (_census(size // len(CANARY) + 1))[:size]
    put = store.put_bytes(FEED, DAY, "census.csv", data)
    assert put.encrypted and put.plain_bytes == size and put.location.endswith("census.csv.enc")
    assert store.get_bytes(FEED, DAY, "census.csv") == data
    if size >= len(CANARY):
        assert b"Quillonius" not in _every_stored_byte(store)
    assert put.stored_bytes > size  # header and one tag per chunk


def test_local_store_is_private_and_files_round_trip(tmp_path: Path, key: StagingKey) -> None:
    store = StagingStore(tmp_path / "staging", key)
    source = tmp_path / "census.csv"
    source.write_bytes(_census(50))
    put = store.put_file(FEED, DAY, "census.csv", source)
    state = store.put_bytes(FEED, DAY, "state.json", b'{"counts": {"members": 50}}', phi=False)
    # PHI-free artifacts are sealed too: a forged or swapped one must not steer a worker.
    assert state.encrypted and b"members" not in Path(state.location).read_bytes()
    assert store.get_bytes(FEED, DAY, "state.json") == b'{"counts": {"members": 50}}'
    run_dir = Path(store.run_location(FEED, DAY))
    for path in [tmp_path / "staging", run_dir.parent, run_dir]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for path in run_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in run_dir.iterdir()) == ["census.csv.enc", "state.json.enc"]
    assert store.names(FEED, DAY) == ["census.csv", "state.json"]

    dest = tmp_path / "work" / "census.csv"
    got = store.get_file(FEED, DAY, "census.csv", dest)
    assert dest.read_bytes() == source.read_bytes() and got.sha256 == put.sha256
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600


def test_fsspec_url_store_for_distributed_workers(key: StagingKey) -> None:
    """Any fsspec URL works the same way; fsspec's in-memory filesystem stands in for a bucket."""
    url = f"memory://carrierfeeds-{uuid.uuid4().hex[:8]}/staging"
    store = open_store(url, key)
    store.put_bytes(FEED, DAY, "census.csv", _census(5))
    store.put_bytes(FEED, DAY, "file.834.pgp", b"\x85\x01gpg-ciphertext", phi=False)
    # A second worker opening the same URL with the shared key reads what the first wrote.
    other = open_store(url, StagingKey(key.secret))
    assert other.get_bytes(FEED, DAY, "census.csv") == _census(5)
    assert other.names(FEED, DAY) == ["census.csv", "file.834.pgp"]
    assert b"Quillonius" not in _every_stored_byte(store)
    assert other.remove_run(FEED, DAY) == 2
    assert other.names(FEED, DAY) == []
    fsspec.filesystem("memory").rm(store.root, recursive=True)


def test_wrong_key_tampering_truncation_and_moving_are_refused(tmp_path: Path, key: StagingKey) -> None:
    store = StagingStore(tmp_path / "staging", key)
    data = _census(CHUNK // len(CANARY) * 2)  # a little over two chunks
    put = store.put_bytes(FEED, DAY, "census.csv", data)
    stored = Path(put.location)
    original = stored.read_bytes()

    with pytest.raises(StagingTampered):
        StagingStore(tmp_path / "staging", StagingKey.generate()).get_bytes(FEED, DAY, "census.csv")

    flipped = bytearray(original)
    flipped[len(original) // 2] ^= 0x01
    stored.write_bytes(bytes(flipped))
    with pytest.raises(StagingTampered):
        store.get_bytes(FEED, DAY, "census.csv")

    # Dropping the last chunk leaves whole chunks that decrypt, but the new last one was not written last.
    stored.write_bytes(original[: 24 + 2 * (CHUNK + 16)])
    with pytest.raises(StagingTampered):
        store.get_bytes(FEED, DAY, "census.csv")

    # The object copied under another run's path (or name) does not decrypt there.
    stored.write_bytes(original)
    moved = Path(store.run_location(FEED, date(2026, 11, 21)))
    moved.mkdir(parents=True)
    (moved / "census.csv.enc").write_bytes(original)
    with pytest.raises(StagingTampered):
        store.get_bytes(FEED, date(2026, 11, 21), "census.csv")
    assert store.get_bytes(FEED, DAY, "census.csv") == data


def test_remove_run_keeps_only_what_a_retry_needs(tmp_path: Path, key: StagingKey) -> None:
    store = StagingStore(tmp_path / "staging", key)
    for name in ("census.csv", "census.parquet", "file.834"):
        store.put_bytes(FEED, DAY, name, _census(3))
    store.put_bytes(FEED, DAY, "file.834.pgp", b"ciphertext", phi=False)
    store.put_bytes(FEED, DAY, "state.json", b"{}", phi=False)
    assert store.remove_run(FEED, DAY, keep=("state.json", "file.834.pgp")) == 3
    assert store.names(FEED, DAY) == ["file.834.pgp", "state.json"]
    assert store.remove_run(FEED, DAY) == 2
    assert not Path(store.run_location(FEED, DAY)).exists()
    assert store.remove_run(FEED, DAY) == 0
    with pytest.raises(DataError):
        store.get_bytes(FEED, DAY, "census.csv")


def test_a_sealed_write_replaces_an_unsealed_object_of_the_same_name(tmp_path: Path, key: StagingKey) -> None:
    store = StagingStore(tmp_path / "staging", key)
    run_dir = Path(store.run_location(FEED, DAY))
    run_dir.mkdir(parents=True)
    (run_dir / "report.csv").write_bytes(b"plain, from an older version")
    store.put_bytes(FEED, DAY, "report.csv", b"secret")
    assert [p.name for p in run_dir.iterdir()] == ["report.csv.enc"]
    assert store.get_bytes(FEED, DAY, "report.csv") == b"secret"


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "x.enc", ""])
def test_names_must_be_plain(tmp_path: Path, key: StagingKey, name: str) -> None:
    store = StagingStore(tmp_path / "staging", key)
    with pytest.raises(ConfigError):
        store.put_bytes(FEED, DAY, name, b"x")


def test_key_file_is_created_private_and_refused_when_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "keys" / KEY_FILE_NAME
    made = StagingKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert StagingKey.load_or_create(path).secret == made.secret
    assert made.as_text() not in repr(made) and made.key_id in repr(made)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="600"):
        StagingKey.from_file(path)
    with pytest.raises(ConfigError):
        StagingKey.from_text("not base64!")
    with pytest.raises(ConfigError):
        StagingKey.from_text("c2hvcnQ=")
    assert StagingKey.from_text(made.as_text()).secret == made.secret
