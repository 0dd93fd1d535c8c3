"""What every configuration model shares: frozen, no unknown keys, stripped strings; id and fingerprint patterns."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_FPR = r"^[0-9A-F]{40}$"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)
