"""The hash chain: canonical row content, ``row_hash = sha256(canonical JSON + prev_hash)``, and the walk.

One chain runs through every audit row of every audit table, ordered by a global ``seq`` taken from
the ``chain_head`` row. One chain rather than one per table because the auditor's question is about
the whole history ("was anything removed or reordered between these two deliveries?"), a single head
is a single value to anchor outside the database, and ledger writes are rare enough that serialising
them on one lock costs nothing. The hashed content names the table and the ``seq``, so a row moved to
another place in the chain, or to another table, no longer matches its hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

GENESIS = "0" * 64


def sha256_hex(data: bytes | str) -> str:
    """Hex SHA-256 of bytes, or of a string's UTF-8 encoding."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def canonical_value(value: Any) -> Any:
    """A value as the chain sees it: instants in UTC with microseconds, dates in ISO form."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime in a ledger row")
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, date):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | str):
        return value
    raise TypeError(f"unhashable ledger value of type {type(value).__name__}")


def canonical_json(data: Any) -> str:
    """Compact, key-sorted, ASCII JSON: the same bytes for the same data on every platform."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def row_hash(table: str, seq: int, content: Mapping[str, Any], prev_hash: str) -> str:
    """The hash of one audit row, binding its table, its place in the chain and its predecessor."""
    body = canonical_json({"table": table, "seq": seq,
                           "content": {k: canonical_value(v) for k, v in content.items()}})
    return sha256_hex(body + prev_hash)


@dataclass(frozen=True)
class ChainRow:
    """One audit row as read back for verification."""

    table: str
    row_id: str
    seq: int
    prev_hash: str
    row_hash: str
    content: Mapping[str, Any]


@dataclass(frozen=True)
class BrokenLink:
    """Where the chain first stops matching: the table, the row's id, its seq and why."""

    table: str
    row_id: str | None
    seq: int | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "row_id": self.row_id, "seq": self.seq, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.table} row {self.row_id} (seq {self.seq}): {self.reason}"


@dataclass(frozen=True)
class ChainVerdict:
    """``ok`` when every link holds and the head matches the last row; else the first broken link."""

    ok: bool
    rows_checked: int
    first_broken: BrokenLink | None
    head_seq: int
    head_hash: str


def walk_chain(rows: Iterable[ChainRow], *, head_seq: int, head_hash: str,
               gaps: Mapping[int, list[tuple[int, str, str]]] | None = None) -> ChainVerdict:
    """Check rows given in ``seq`` order: contiguous seqs from 1, each hash recomputed, each link, the head.

    A deleted row shows as a gap (or a head that runs past the last row), an edited row as a hash that
    no longer matches, swapped seqs as hashes that no longer match, a forged row as a broken link.
    Purged seqs are stepped over only where a checkpoint recorded that exact gap (``gaps``: first seq ->
    [(last seq, prev_hash into the gap, row_hash of its last row)]).

    A recorded gap is taken only when it starts at the next expected seq and its recorded prev_hash is
    the hash the walk holds, so the live rows on both sides of every purge still link; a row deleted
    without a checkpoint is a gap no checkpoint explains.
    """
    gaps = gaps or {}
    expected, prev, checked = 1, GENESIS, 0

    def step_over(until: int) -> bool:
        nonlocal expected, prev
        while expected < until:
            hop = next(((last, h) for last, p, h in gaps.get(expected, []) if p == prev and last < until),
                       None)
            if hop is None:
                return False
            expected, prev = hop[0] + 1, hop[1]
        return True

    for row in rows:
        broken = None
        if row.seq > expected and not step_over(row.seq):
            broken = (f"sequence gap: expected seq {expected}, found {row.seq} (row deleted or reordered; "
                      "no purge checkpoint records this gap)")
        elif row.seq != expected:
            broken = f"duplicate seq {row.seq}" if row.seq < expected else f"sequence gap at seq {row.seq}"
        elif row.prev_hash != prev:
            broken = "prev_hash does not match the previous row's hash (row deleted, inserted or reordered)"
        elif row_hash(row.table, row.seq, row.content, row.prev_hash) != row.row_hash:
            broken = "row content does not match its hash (row edited)"
        if broken is not None:
            return ChainVerdict(False, checked, BrokenLink(row.table, row.row_id, row.seq, broken),
                                head_seq, head_hash)
        checked += 1
        prev = row.row_hash
        expected += 1
    step_over(head_seq + 1)
    if head_seq != expected - 1 or head_hash != prev:
        reason = (f"chain head says {head_seq} rows but the chain ends at {expected - 1} "
                  "(trailing rows deleted)" if head_seq != expected - 1
                  else "chain head hash does not match the last row")
        link = BrokenLink("chain_head", "1", head_seq, reason)
        return ChainVerdict(False, checked, link, head_seq, head_hash)
    return ChainVerdict(True, checked, None, head_seq, head_hash)
