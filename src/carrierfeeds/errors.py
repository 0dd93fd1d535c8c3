"""Every error carrierfeeds raises, grouped by what the caller should do next.

    CarrierFeedsError                 base; ``code`` is machine-readable, ``details`` is PHI-free
    ├── ConfigError                   fix the configuration (file, field path, expected); never retry
    ├── DataError                     fix the data: names file, row and column, never a cell value
    │   ├── CensusRejected            the census failed the feed's validation policy
    │   ├── census.sources.NoNewCensus  the newest census was already processed (an outcome; see outcomes.py)
    │   └── changes.OutsideRetroWindow  a change dates before the carrier's retroactive window
    ├── Refused                       fail closed: security or policy said no; never retry
    │   ├── NotAuthorized             the employer has not authorised this carrier or plan
    │   ├── FieldNotAllowed           a field is not on the carrier's allowlist
    │   ├── KeyRefused                PGP key unpinned, missing, expired, revoked or mismatched
    │   ├── HostKeyRefused            SFTP host key unknown or changed
    │   ├── ConformanceFailed         the rendered file failed the conformance gate
    │   ├── lifecycle.LifecycleRefused  the feed's lifecycle state forbids it (P before production, suspended)
    │   ├── certify.deliver.PacketRefused  a certification packet cannot go out as certified
    │   ├── crypto.PlaintextChanged   the plaintext handed to gpg is not the one the caller hashed
    │   ├── console.auth.ConsoleKeyRefused  the console's session key or users file is exposed or malformed
    │   ├── census.tokens.TokenKeyRefused  the member-token key file is exposed or malformed
    │   ├── changes.SnapshotRefused   the snapshot store cannot be trusted (key, tampering, other feed)
    │   │   └── changes.SnapshotSuperseded  a revert came after a later run advanced the snapshot
    │   ├── ledger.records.UnsafeLedgerValue  a value headed for the ledger looks like member data
    │   ├── retention.PurgeRefused    a purge would touch something it cannot vouch for
    │   ├── run.notices.NoticeMismatch  the notice files found do not describe the delivered file
    │   ├── staging.StagingTampered   a staged object does not open (wrong key, edited, truncated, moved)
    │   ├── staging.StagingUnsealed   a staged object in the clear (an older version's, or forged)
    │   ├── staging.ArtifactNameRefused  a name leaving the run's folder, or a symlink in scratch
    │   └── transport.base.CiphertextMismatch  bytes uploaded are not the ciphertext the ledger recorded
    ├── TransientError                a retry with backoff may succeed (network, timeouts)
    │   ├── crypto.EncryptionIncomplete   gpg wrote no whole ciphertext (full disk, I/O error); none kept
    │   ├── staging.StagingFull       the staging store (or its disk) is full; nothing was stored
    │   └── transport.notice.NoticeNotAccepted  the carrier's notice endpoint or mail server did not take it
    ├── PermanentError                an outside system refused for good (auth, permission, exists)
    │   ├── acknowledgments.collect.AcksNeedAttention  a poll found alerts ops must act on
    │   ├── crypto.EncryptionStopped  ``encrypt_file`` was told to stop; nothing was written
    │   ├── ledger.records.LedgerError  the ledger refused a call (unknown id, status outside its vocabulary)
    │   │   └── ledger.records.UnknownRecord  no such run, delivery or discrepancy
    │   ├── run.notices.NoticeMissing  a delivery's notice files are not in the staging store
    │   ├── transport.base.RemoteFileExists  the final name is taken on the far side; never overwritten
    │   └── transport.notice.NoticeRefused  the carrier's notice endpoint or mail server refused it
    └── changes.NoChanges             nothing to send for this interval (an outcome; see outcomes.py)

Names without a module live here; the others where they are raised (``changes.NoChanges`` is
``carrierfeeds.changes.NoChanges``). ``tests/test_errors.py`` fails when a subclass is missing here.

Messages and ``details`` carry ids, counts, row numbers, column names, rule names, hashes and
fingerprints only. Callers may log them as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class CarrierFeedsError(Exception):
    """Base of every carrierfeeds error."""

    code: str = "error"
    retriable: bool = False

    def __init__(self, message: str, *, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def as_dict(self) -> dict[str, Any]:
        """A PHI-free, JSON-friendly form for ledgers, reports and ``--json`` output."""
        return {"error": type(self).__name__, "code": self.code, "message": self.message, **self.details}


class ConfigError(CarrierFeedsError):
    """A configuration file or setting is wrong; names the file and the field path."""

    code = "config"

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None,
                 details: Mapping[str, Any] | None = None) -> None:
        where = ": ".join(p for p in (file, field) if p)
        super().__init__(f"{where}: {message}" if where else message,
                         details={"file": file, "field": field, **(details or {})})
        self.file = file
        self.field = field


class DataError(CarrierFeedsError):
    """The input data cannot be used; names file, row and column, never a value."""

    code = "data"

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 column: str | None = None, rule: str | None = None,
                 details: Mapping[str, Any] | None = None) -> None:
        parts = [p for p in (file, f"row {row}" if row is not None else None,
                             f"column {column!r}" if column else None) if p]
        prefix = ", ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message,
                         details={"file": file, "row": row, "column": column, "rule": rule,
                                  **(details or {})})
        self.file, self.row, self.column, self.rule = file, row, column, rule


class CensusRejected(DataError):
    """The census failed validation under the feed's policy; the report says what to fix."""

    code = "census_rejected"


class Refused(CarrierFeedsError):
    """A fail-closed refusal: a security or policy check said no."""

    code = "refused"


class NotAuthorized(Refused):
    code = "not_authorized"


class FieldNotAllowed(Refused):
    code = "field_not_allowed"


class KeyRefused(Refused):
    code = "key_refused"


class HostKeyRefused(Refused):
    code = "host_key_refused"


class ConformanceFailed(Refused):
    code = "conformance_failed"


class TransientError(CarrierFeedsError):
    """Worth retrying with backoff: a dropped connection, a timeout, a busy server."""

    code = "transient"
    retriable = True


class PermanentError(CarrierFeedsError):
    """An outside system refused for good: authentication, permission, a file already there."""

    code = "permanent"
