"""Member tokens: a keyed, stable, non-reversible stand-in for a member id in reports, logs and ledgers."""

from __future__ import annotations

import hashlib
import logging
import secrets
from pathlib import Path

import pandas as pd

from carrierfeeds.errors import ConfigError, Refused
from carrierfeeds.files import create_key_file, read_key_file

log = logging.getLogger(__name__)

KEY_BYTES = 32
TOKEN_PREFIX = "m_"  # noqa: S105 - a label, not a secret
TOKEN_HEX_CHARS = 16


class TokenKeyRefused(Refused):
    """The member-token key file is unsafe (readable by group or others) or malformed."""

    code = "token_key_refused"


class MemberTokenizer:
    """HMAC-SHA256 of the member id under a secret key: ``m_`` + the first 16 hex characters.

    Without the key a token cannot be linked back to a member id (no dictionary attack over the small
    space of employee ids), and with it the same member always gets the same token, so an employer and
    the ops team can talk about a row without either of them quoting member data.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < KEY_BYTES:
            raise ConfigError(f"member-token key must be at least {KEY_BYTES} bytes")
        self._key = bytes(key)
        # HMAC (RFC 2104) by hand from precomputed inner/outer SHA-256 states: the same digest as
        # hmac.digest, about twice as fast per member id because the key pads are hashed once.
        block = self._key if len(self._key) <= 64 else hashlib.sha256(self._key).digest()
        block = block.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def __repr__(self) -> str:  # never show the key
        return "MemberTokenizer(key=<hidden>)"

    @classmethod
    def from_key_file(cls, path: Path) -> MemberTokenizer:
        """Load the key at ``path``, creating a random one (mode 0600) when the file does not exist.

        Refuses a key file that group or others can read or write, or that is not a regular file.
        """
        key = read_key_file(path, what="member-token key", error=TokenKeyRefused)
        if key is None:
            create_key_file(path, secrets.token_bytes(KEY_BYTES), what="member-token key")
            key = read_key_file(path, what="member-token key", error=TokenKeyRefused)  # ours, or a racer's
            if key is None:
                raise TokenKeyRefused(f"member-token key file {path} vanished while being created")
        if len(key) < KEY_BYTES:
            raise TokenKeyRefused(f"member-token key file {path} holds {len(key)} bytes; "
                                  f"expected at least {KEY_BYTES}")
        return cls(key)

    def token(self, member_id: str) -> str:
        """The token for one member id."""
        inner = self._inner.copy()
        inner.update(member_id.encode("utf-8"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return TOKEN_PREFIX + outer.hexdigest()[:TOKEN_HEX_CHARS]

    def tokens(self, series: pd.Series) -> pd.Series:
        """Tokens for a column of member ids, same index; each distinct id is hashed once."""
        values = series.astype("str").fillna("")
        codes, uniques = pd.factorize(values, sort=False)
        token = self.token
        hashed = [token(u) for u in uniques.tolist()]
        out = pd.Series(hashed, dtype="str").take(codes) if len(codes) else pd.Series([], dtype="str")
        return pd.Series(out.to_numpy(), index=series.index, dtype="str", name=series.name)


