"""Interchange envelope values for one 834: delimiters, control numbers and the transaction header."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from carrierfeeds.config import EnvelopeIds, Party
from carrierfeeds.errors import ConfigError


@dataclass(frozen=True)
class Delimiters:
    """The separators declared in ISA; ``suffix`` follows each segment terminator (pyx12 accepts "\\n")."""

    element: str = "*"
    component: str = ":"
    repetition: str = "^"
    segment: str = "~"
    suffix: str = "\n"

    def __post_init__(self) -> None:
        seps = (self.element, self.component, self.repetition, self.segment)
        if any(len(s) != 1 for s in seps) or len(set(seps)) != 4:
            raise ConfigError("X12 delimiters must be four distinct single characters")
        if any(s.isalnum() or s == " " for s in seps):
            raise ConfigError("X12 delimiters must not be letters, digits or spaces")
        if self.suffix not in ("", "\n", "\r\n"):
            raise ConfigError("segment suffix must be empty, LF or CRLF")

    @property
    def reserved(self) -> str:
        """Characters no data value may hold: the four separators, CR and LF."""
        return self.element + self.component + self.repetition + self.segment + "\r\n"

    @property
    def terminator(self) -> str:
        """What ends each segment on the wire: the terminator plus the readability suffix."""
        return self.segment + self.suffix


#: The usual delimiters, one segment per line.
DEFAULT_DELIMITERS = Delimiters()


@dataclass(frozen=True)
class ControlNumbers:
    """ISA13, GS06 and ST02, allocated once per file by the ledger and reused by every retry."""

    isa13: int
    gs06: int
    st02: int

    def __post_init__(self) -> None:
        if not 0 < self.isa13 <= 999_999_999:
            raise ConfigError("ISA13 must be 1..999999999")
        if not 0 < self.gs06 <= 999_999_999:
            raise ConfigError("GS06 must be 1..999999999")
        if not 0 < self.st02 <= 999_999_999:
            raise ConfigError("ST02 must be 1..999999999")

    @property
    def isa13_text(self) -> str:
        """ISA13: exactly nine digits, zero padded."""
        return f"{self.isa13:09d}"

    @property
    def gs06_text(self) -> str:
        return str(self.gs06)

    @property
    def st02_text(self) -> str:
        """ST02/SE02: at least four digits."""
        return f"{self.st02:04d}"


@dataclass(frozen=True)
class TransactionHeader:
    """What the 834 says about itself: ids, creation time (tz-aware), BGN reference, parties."""

    ids: EnvelopeIds
    created: datetime
    reference: str
    sponsor: Party
    payer: Party
    action: str = "4"
    group_number: str | None = None

    def __post_init__(self) -> None:
        if self.created.tzinfo is None or self.created.utcoffset() is None:
            raise ConfigError("TransactionHeader.created must be timezone-aware")
        if not self.reference or len(self.reference) > 50:
            raise ConfigError("BGN02 reference must be 1..50 characters")

    @property
    def created_utc(self) -> datetime:
        """The creation time in UTC: every envelope date and time is written in UTC (BGN05 "UT")."""
        return self.created.astimezone(UTC)
