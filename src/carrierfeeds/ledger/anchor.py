"""Anchors: HMAC-signed checkpoints of the chain head kept outside the database, and the check against them.

The hash chain alone proves only that the rows agree with each other. Whoever owns the database can
delete the newest rows and set the head back, or edit a row and recompute every hash after it with this
very code: the chain still verifies. An anchor is a line in an append-only JSON-lines file outside the
database (``<anchor_dir>/ledger-anchors.jsonl``) saying "row ``seq`` of the chain had hash ``head`` at
``at``", signed with HMAC-SHA256 under a key that also lives outside the database
(``<keys_dir>/ledger-anchor.key``, 0600, made on first use like the staging key). ``check_anchors``
then requires the chain to still hold every anchored head: row ``seq`` present with exactly that hash.
A truncation below an anchor leaves the anchored row missing; a rehash changes its hash.

Why an HMAC key rather than our PGP signing key: anchors are written after every run and by every
``audit verify``, in processes that hold the keys folder but not necessarily gpg or the signing key's
passphrase; verifying needs no gpg either, and a one-line file format cannot be got wrong by a gpg
upgrade. The key holder can forge anchors, so the key must stay off the database host (the same trust
the staging key already has); the DBA the anchors guard against has neither the key nor the file.

Retention deletes stretches of old rows (``Ledger.purge_metadata``). Before its transaction commits, the
purge appends a signed ``purge`` line listing the gaps it cut (``sign_purge``), so an anchored row
inside a purged stretch is "retired", not "missing". A checkpoint row in the database that no signed
line lists is honoured only when an anchor taken after it still holds (the anchor vouches for
everything before it); otherwise a forged checkpoint appended after the newest anchor could hide rows
deleted by hand. Lines are written under ``flock`` with ``O_APPEND`` and fsynced.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carrierfeeds.errors import ConfigError
from carrierfeeds.files import create_key_file, read_key_file
from carrierfeeds.ledger.chain import GENESIS, ChainVerdict, canonical_json
from carrierfeeds.ledger.records import LedgerError

if TYPE_CHECKING:
    from carrierfeeds.ledger.records import LedgerPurge
    from carrierfeeds.ledger.store import Ledger
    from carrierfeeds.settings import Settings

log = logging.getLogger(__name__)

ANCHOR_FILE_NAME = "ledger-anchors.jsonl"
KEY_FILE_NAME = "ledger-anchor.key"
KEY_BYTES = 32
_VERSION = 1


@dataclass(frozen=True)
class HeadAnchor:
    """A signed statement: the chain's row ``seq`` had hash ``head`` at ``at`` (written for ``reason``)."""

    line: int
    seq: int
    head: str
    at: str
    reason: str


@dataclass(frozen=True)
class PurgeAnchor:
    """A signed statement: the purge whose checkpoint is row ``checkpoint_seq`` cut these gaps."""

    line: int
    checkpoint_seq: int
    gaps: tuple[tuple[int, int, str, str], ...]
    at: str


@dataclass(frozen=True)
class AnchorVerdict:
    """Whether the ledger still holds every anchored head; the first problem when it does not."""

    ok: bool
    anchors: int
    latest_seq: int | None
    latest_head: str | None
    latest_at: str | None
    problem: str | None = None
    retired: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "anchors": self.anchors, "latest_seq": self.latest_seq,
                "latest_head": self.latest_head, "latest_at": self.latest_at, "problem": self.problem,
                "retired_by_purge": self.retired}

    def __str__(self) -> str:
        if not self.ok:
            return f"anchor check FAILED: {self.problem}"
        if not self.anchors:
            return "no anchors yet"
        return (f"{self.anchors} anchor(s) held ({self.retired} retired by purges); latest seq "
                f"{self.latest_seq} {self.latest_head} at {self.latest_at}")


@dataclass(frozen=True)
class LedgerVerdict:
    """The chain's own verdict and the anchors' verdict: ``ok`` only when both hold."""

    chain: ChainVerdict
    anchors: AnchorVerdict
    anchored: HeadAnchor | None = field(default=None)

    @property
    def ok(self) -> bool:
        return self.chain.ok and self.anchors.ok


class AnchorLog:
    """The anchor file and its key: append signed lines, read them back checked."""

    def __init__(self, directory: Path, key_file: Path) -> None:
        self.directory = directory
        self.key_file = key_file

    @classmethod
    def for_settings(cls, settings: Settings) -> AnchorLog:
        return cls(settings.resolved_ledger_anchor_dir, settings.resolved_keys_dir / KEY_FILE_NAME)

    @property
    def path(self) -> Path:
        return self.directory / ANCHOR_FILE_NAME

    # ------------------------------------------------------------------------------------ key
    def _key(self, *, create: bool) -> bytes | None:
        raw = read_key_file(self.key_file, what="ledger anchor key", error=ConfigError)
        if raw is None and create:
            if self.path.exists() and self.path.stat().st_size:
                # A fresh key would make every existing line look forged: say what is really wrong.
                raise ConfigError("the ledger anchor key file is missing but anchors exist; restore it",
                                  file=str(self.key_file))
            create_key_file(self.key_file, secrets.token_bytes(KEY_BYTES), what="ledger anchor key")
            raw = read_key_file(self.key_file, what="ledger anchor key", error=ConfigError)
        if raw is not None and len(raw) != KEY_BYTES:
            raise ConfigError(f"a ledger anchor key is {KEY_BYTES} bytes", file=str(self.key_file))
        return raw

    @staticmethod
    def _mac(key: bytes, body: Mapping[str, Any]) -> str:
        return hmac.new(key, canonical_json(dict(body)).encode("ascii"), hashlib.sha256).hexdigest()

    # ---------------------------------------------------------------------------------- write
    def _append(self, body: dict[str, Any]) -> None:
        key = self._key(create=True)
        if key is None:  # cannot happen: created above
            raise ConfigError("the ledger anchor key could not be created", file=str(self.key_file))
        line = canonical_json({**body, "mac": self._mac(key, body)}) + "\n"
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            # A line torn by a crash stays a line of its own (read() skips it) instead of spoiling this one.
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = "\n" + line
            os.write(fd, line.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def anchor_head(self, ledger: Ledger, *, reason: str, now: datetime) -> HeadAnchor:
        """Append a signed line naming the chain head as it is now (seq and hash read together)."""
        seq, head = ledger.chain_head()
        at = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self._append({"v": _VERSION, "kind": "head", "seq": seq, "head": head, "at": at, "reason": reason})
        log.info("ledger anchored at seq %d (%s)", seq, reason)
        return HeadAnchor(line=0, seq=seq, head=head, at=at, reason=reason)

    def sign_purge(self, purge: LedgerPurge, *, now: datetime) -> None:
        """Append a signed line listing a purge's gaps; called before the purge commits."""
        if purge.checkpoint_seq is None:
            return
        at = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self._append({"v": _VERSION, "kind": "purge", "checkpoint_seq": purge.checkpoint_seq,
                      "gaps": [list(g) for g in purge.gaps], "at": at})

    # ----------------------------------------------------------------------------------- read
    def read(self) -> tuple[list[HeadAnchor], list[PurgeAnchor]]:
        """Every line, its signature checked; LedgerError names the first line that is not ours."""
        if not self.path.exists():
            return [], []
        key = self._key(create=False)
        text = self.path.read_text(encoding="ascii", errors="replace")
        if not text.strip():
            return [], []
        if key is None:
            raise ConfigError("the ledger anchor key file is missing but anchors exist; restore it",
                              file=str(self.key_file))
        heads: list[HeadAnchor] = []
        purges: list[PurgeAnchor] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            if not raw.rstrip().endswith("}"):
                # A write a crash cut short. Skipping it grants nothing: whoever could write the file
                # could as well delete a line, and a deleted anchor only narrows what is checked.
                log.warning("anchor file line %d is incomplete (a write cut short); skipped", number)
                continue
            try:
                data = json.loads(raw)
                body = {k: v for k, v in data.items() if k != "mac"}
                if not hmac.compare_digest(str(data.get("mac", "")), self._mac(key, body)):
                    raise ValueError("signature")
                if data["kind"] == "head":
                    heads.append(HeadAnchor(number, int(data["seq"]), str(data["head"]), str(data["at"]),
                                            str(data.get("reason", ""))))
                elif data["kind"] == "purge":
                    purges.append(PurgeAnchor(number, int(data["checkpoint_seq"]),
                                              tuple((int(f), int(last), str(p), str(h))
                                                    for f, last, p, h in data["gaps"]), str(data["at"])))
                else:
                    raise ValueError("kind")
            except (ValueError, KeyError, TypeError, AttributeError):
                raise LedgerError(f"anchor file line {number} is not a line this deployment signed "
                                  "(edited, forged or signed with another key)",
                                  details={"anchor_line": number}) from None
        return heads, purges


def _in_gap(seq: int, gaps: Iterable[tuple[int, int, str, str]]) -> tuple[int, int, str, str] | None:
    return next((g for g in gaps if g[0] <= seq <= g[1]), None)


def check_anchors(ledger: Ledger, heads: Sequence[HeadAnchor], purges: Sequence[PurgeAnchor]) -> AnchorVerdict:
    """Every anchored head still in the chain (or retired by a vouched purge); every purge vouched.

    Run after the chain walk passed: the walk proves the rows link, this proves they are the rows the
    anchors saw.
    """
    latest = max(heads, key=lambda a: (a.seq, a.line), default=None)

    def verdict(ok: bool, problem: str | None = None, retired: int = 0) -> AnchorVerdict:
        return AnchorVerdict(ok, len(heads), latest.seq if latest else None, latest.head if latest else None,
                             latest.at if latest else None, problem=problem, retired=retired)

    hashes = ledger.chain_hashes({a.seq for a in heads if a.seq > 0})
    checkpoints = ledger.purge_checkpoints()
    signed = {(g[0], g[1], g[2], g[3]) for p in purges for g in p.gaps}

    def fail(problem: str) -> AnchorVerdict:
        log.error("ledger anchor check failed: %s", problem)
        return verdict(False, problem)

    # Anchors whose row is still there must match it exactly: that is what catches a rehash.
    held = 0
    for a in heads:
        if a.seq == 0:
            if a.head != GENESIS:
                return fail(f"anchor line {a.line} names seq 0 with a hash other than genesis")
            continue
        found = hashes.get(a.seq)
        if found is not None and found != a.head:
            return fail(f"row seq {a.seq} no longer has the hash anchored on line {a.line} at {a.at} "
                        "(the chain was rewritten)")
        if found is not None:
            held = max(held, a.seq)
    # A checkpoint is vouched for by a signed purge line, or by an anchor taken after it that still holds.
    vouched: list[tuple[int, int, str, str]] = []
    for cp in checkpoints:
        for g in cp.gaps:
            gap = (int(g[0]), int(g[1]), str(g[2]), str(g[3]))
            if gap in signed or cp.seq <= held:
                vouched.append(gap)
            else:
                return fail(f"purge checkpoint seq {cp.seq} records a gap {gap[0]}..{gap[1]} no signed "
                            "purge line lists and no later anchor vouches for (rows deleted by hand?)")
    retired = 0
    for a in heads:
        if a.seq == 0 or a.seq in hashes:
            continue
        hole = _in_gap(a.seq, vouched)
        if hole is None:
            return fail(f"row seq {a.seq}, anchored on line {a.line} at {a.at}, is gone and no purge "
                        "removed it (the newest rows were deleted)")
        if hole[1] == a.seq and hole[3] != a.head:
            return fail(f"the purge gap ending at seq {a.seq} records a hash other than the one anchored "
                        f"on line {a.line}")
        retired += 1
    return verdict(True, retired=retired)


def verify_ledger(ledger: Ledger, anchors: AnchorLog, *, now: datetime | None = None,
                  reason: str = "verify") -> LedgerVerdict:
    """Walk the chain, check it against every anchor, and (when both hold and ``now`` is given) anchor
    the head as it is now. A broken chain or anchor is never anchored over."""
    chain = ledger.verify_chain()
    if not chain.ok:
        skipped = AnchorVerdict(False, 0, None, None, None, problem="not checked: the chain itself is broken")
        return LedgerVerdict(chain, skipped)
    try:
        heads, purges = anchors.read()
    except LedgerError as exc:
        return LedgerVerdict(chain, AnchorVerdict(False, 0, None, None, None, problem=exc.message))
    verdict = check_anchors(ledger, heads, purges)
    anchored = None
    if verdict.ok and now is not None:
        anchored = anchors.anchor_head(ledger, reason=reason, now=now)
    return LedgerVerdict(chain, verdict, anchored)


def anchor_quietly(ledger: Ledger, anchors: AnchorLog, *, reason: str, now: datetime) -> HeadAnchor | None:
    """Anchor the head after a run; a failure is logged, never raised: the run's outcome stands, and the
    next run or ``audit verify`` anchors again."""
    import sqlalchemy as sa

    try:
        return anchors.anchor_head(ledger, reason=reason, now=now)
    except (OSError, ConfigError, LedgerError, sa.exc.SQLAlchemyError) as exc:
        log.error("could not anchor the ledger head (%s): %s", type(exc).__name__,
                  getattr(exc, "message", exc.strerror if isinstance(exc, OSError) else ""))
        return None
