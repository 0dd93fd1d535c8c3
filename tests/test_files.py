"""Owner-only key files: what every key (member token, snapshot, staging) is read and created through."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from carrierfeeds.errors import ConfigError
from carrierfeeds.files import create_key_file, read_key_file


def test_created_owner_only_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "k.key"
    assert create_key_file(path, b"first", what="test key")
    assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    assert not create_key_file(path, b"second", what="test key")  # the loser of a race keeps the winner's key
    assert read_key_file(path, what="test key", error=ConfigError) == b"first"


def test_missing_is_none(tmp_path: Path) -> None:
    assert read_key_file(tmp_path / "nope.key", what="test key", error=ConfigError) is None


def test_group_readable_is_refused_with_the_mode_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    path.write_bytes(b"secret-bytes")
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600") as info:
        read_key_file(path, what="test key", error=ConfigError)
    assert info.value.details["mode"] == "0640"
    assert "secret-bytes" not in str(info.value)


def test_a_symlink_is_refused_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.key"
    target.write_bytes(b"x" * 32)
    target.chmod(0o600)
    link = tmp_path / "k.key"
    os.symlink(target, link)
    with pytest.raises(ConfigError, match="cannot open"):
        read_key_file(link, what="test key", error=ConfigError)


def test_a_directory_or_an_oversized_file_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "dir.key"
    folder.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="not a regular file"):
        read_key_file(folder, what="test key", error=ConfigError)
    big = tmp_path / "big.key"
    big.write_bytes(b"x" * 10_000)
    big.chmod(0o600)
    with pytest.raises(ConfigError, match="larger than 4096"):
        read_key_file(big, what="test key", error=ConfigError, max_bytes=4096)
