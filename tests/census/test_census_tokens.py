"""Member tokens: stable, keyed, and the key file is created private and refused when it is not."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from carrierfeeds.census.tokens import MemberTokenizer, TokenKeyRefused
from carrierfeeds.errors import Refused


def test_token_is_hmac_sha256_prefix() -> None:
    key = b"k" * 32
    expected = "m_" + hmac.new(key, b"E0000123-01", hashlib.sha256).hexdigest()[:16]
    assert MemberTokenizer(key).token("E0000123-01") == expected


def test_tokens_match_token_and_keep_the_index() -> None:
    tok = MemberTokenizer(b"s" * 32)
    ids = pd.Series(["E1", "E2", "E1", None], index=[10, 11, 12, 13])
    out = tok.tokens(ids)
    assert list(out.index) == [10, 11, 12, 13]
    assert out[10] == out[12] == tok.token("E1") and out[11] == tok.token("E2") and out[13] == tok.token("")
    assert out[10] != out[11]


def test_different_keys_give_different_tokens() -> None:
    assert MemberTokenizer(b"a" * 32).token("E1") != MemberTokenizer(b"b" * 32).token("E1")


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "member-token.key"
    first = MemberTokenizer.from_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_bytes()) == 32
    assert MemberTokenizer.from_key_file(path).token("E1") == first.token("E1")
    assert "key=<hidden>" in repr(first)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_group_or_other_readable_key_file_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "member-token.key"
    path.write_bytes(os.urandom(32))
    path.chmod(mode)
    with pytest.raises(TokenKeyRefused, match="chmod 600") as info:
        MemberTokenizer.from_key_file(path)
    assert isinstance(info.value, Refused)


def test_short_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "member-token.key"
    path.write_bytes(b"short")
    path.chmod(0o600)
    with pytest.raises(TokenKeyRefused, match="expected at least 32"):
        MemberTokenizer.from_key_file(path)
