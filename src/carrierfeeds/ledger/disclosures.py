"""What each delivery disclosed: its fields, the config it ran under, and which members (by token) it carried.

A disclosure is written with its delivery's intent, in the same transaction (``Ledger.record_delivery_intent``),
so a file never leaves without the record of what was in it. It holds the carrier's allowlist in effect, the
census fields the rendered file actually carries, and the sha256 of the feed, mapping, schema and suite files.

The member index answers "which deliveries carried this member" from member tokens alone (``m_`` + 16 hex,
the keyed hash of ``census.tokens``; never a member id). Each member is one 9-byte entry: the token's 8
bytes and its INS03 maintenance code (001, 021, 024, 025, 030 fit in a byte). Entries are sorted and split
by the token's leading ``bits`` into at most 2**bits buckets of about ``BUCKET_TARGET`` entries, one
base64 row per non-empty bucket; a look-up reads one bucket per delivery and bisects it, so its cost is
bounded by the bucket size however large the file, and a small change file is a single row.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa

from carrierfeeds.ledger import models as m
from carrierfeeds.ledger.base import LedgerBase, Tx
from carrierfeeds.ledger.chain import canonical_json
from carrierfeeds.ledger.records import LedgerError, check_count, check_sha256, check_token

#: Entries per bucket the index aims at; ``MAX_BITS`` bounds the number of buckets (2**MAX_BITS).
BUCKET_TARGET = 4096
MAX_BITS = 12
_ENTRY = np.dtype([("token", ">u8"), ("code", "u1")])
_TOKEN_PREFIX = "m_"  # noqa: S105 - a label, not a secret
_TOKEN_HEX = 16


def _token_int(token: str) -> int:
    if not isinstance(token, str) or len(token) != len(_TOKEN_PREFIX) + _TOKEN_HEX \
            or not token.startswith(_TOKEN_PREFIX):
        raise LedgerError("a member token is m_ followed by 16 hex digits", details={"field": "member_token"})
    try:
        return int(token[len(_TOKEN_PREFIX):], 16)
    except ValueError:
        raise LedgerError("a member token is m_ followed by 16 hex digits",
                          details={"field": "member_token"}) from None


def _token_ints(tokens: Sequence[str]) -> np.ndarray:
    """Many tokens as unsigned 64-bit integers, each checked for its shape."""
    width = len(_TOKEN_PREFIX) + _TOKEN_HEX
    if not all(isinstance(t, str) and len(t) == width and t.startswith(_TOKEN_PREFIX) for t in tokens):
        raise LedgerError("a member token is m_ followed by 16 hex digits", details={"field": "member_token"})
    try:
        raw = bytes.fromhex("".join(t[len(_TOKEN_PREFIX):] for t in tokens))
    except ValueError:
        raise LedgerError("a member token is m_ followed by 16 hex digits",
                          details={"field": "member_token"}) from None
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64)


def _code(code: str) -> int:
    """An INS03 maintenance type code (three digits) as the byte the index keeps."""
    if not isinstance(code, str) or len(code) != 3 or not code.isdigit():
        raise LedgerError("a maintenance type code is three digits", details={"field": "ins03"})
    return int(code)


def is_member_token(value: str) -> bool:
    try:
        _token_int(value)
    except LedgerError:
        return False
    return True


@dataclass(frozen=True)
class MemberIndex:
    """A delivery's members packed for the ledger: bucket number -> base64 entries, under ``bits``."""

    bits: int
    buckets: Mapping[int, str]
    members: int

    @classmethod
    def pack(cls, tokens: Sequence[str], codes: Sequence[str]) -> MemberIndex:
        """Pack (token, INS03 code) pairs; duplicates collapse to one entry."""
        return cls.from_entries([cls.entries(tokens, codes)])

    @staticmethod
    def entries(tokens: Sequence[str], codes: Sequence[str]) -> np.ndarray:
        """(token, INS03 code) pairs as the index's packed entries, sorted, duplicates collapsed: 9 bytes a
        member, so a view rendered part by part keeps its parts' entries instead of their strings."""
        if len(tokens) != len(codes):
            raise LedgerError("member index: one maintenance code per token", details={"field": "members"})
        keys = _token_ints(tokens)
        values = {c: _code(c) for c in set(codes)}
        code_arr = np.fromiter((values[c] for c in codes), dtype=np.uint8, count=len(codes))
        return _sorted_unique(keys, code_arr)

    @classmethod
    def from_entries(cls, groups: Sequence[np.ndarray]) -> MemberIndex:
        """The index of several :meth:`entries` arrays together (as :meth:`pack` of all their pairs)."""
        if len(groups) == 1:
            arr = groups[0]
        else:
            joined = np.concatenate(groups) if groups else np.empty(0, dtype=_ENTRY)
            arr = _sorted_unique(joined["token"].astype(np.uint64), joined["code"])
        bits = 0
        while bits < MAX_BITS and len(arr) > BUCKET_TARGET << bits:
            bits += 1
        if bits == 0:
            parts = {0: arr} if len(arr) else {}
        else:
            heads = (arr["token"] >> np.uint64(64 - bits)).astype(np.int64)
            edges = np.searchsorted(heads, np.arange(1 << bits))
            bounds = [*edges.tolist(), len(arr)]
            parts = {b: arr[bounds[b]:bounds[b + 1]] for b in range(1 << bits) if bounds[b + 1] > bounds[b]}
        return cls(bits=bits, buckets={b: base64.b64encode(p.tobytes()).decode("ascii") for b, p in parts.items()},
                   members=int(np.count_nonzero(np.diff(arr["token"].astype(np.uint64)) != 0) + 1) if len(arr) else 0)

    def as_json(self) -> dict[str, Any]:
        return {"bits": self.bits, "members": self.members, "buckets": {str(k): v for k, v in self.buckets.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MemberIndex:
        return cls(bits=int(data["bits"]), members=int(data["members"]),
                   buckets={int(k): str(v) for k, v in data["buckets"].items()})


def _sorted_unique(keys: np.ndarray, code_arr: np.ndarray) -> np.ndarray:
    order = np.lexsort((code_arr, keys))  # by token, then code
    keys, code_arr = keys[order], code_arr[order]
    keep = np.ones(len(keys), dtype=bool)
    keep[1:] = (keys[1:] != keys[:-1]) | (code_arr[1:] != code_arr[:-1])
    arr = np.empty(int(keep.sum()), dtype=_ENTRY)
    arr["token"], arr["code"] = keys[keep], code_arr[keep]
    return arr


def bucket_of(token: str, bits: int) -> int:
    return 0 if bits == 0 else _token_int(token) >> (64 - bits)


def codes_in(entries: str, token: str) -> list[str]:
    """The INS03 codes one bucket's entries hold for ``token`` (bisected; empty when absent)."""
    arr = np.frombuffer(base64.b64decode(entries), dtype=_ENTRY)
    want = np.uint64(_token_int(token))
    lo, hi = np.searchsorted(arr["token"], want, "left"), np.searchsorted(arr["token"], want, "right")
    return [f"{int(c):03d}" for c in arr["code"][lo:hi]]


@dataclass(frozen=True)
class Disclosure:
    """What a delivery disclosed, to record with its intent."""

    allowlist: tuple[str, ...]
    fields: tuple[str, ...]
    feed_sha256: str
    mapping_sha256: str
    schema_sha256: str
    suite_sha256: str
    members: MemberIndex

    def as_json(self) -> dict[str, Any]:
        return {"allowlist": list(self.allowlist), "fields": list(self.fields), "feed_sha256": self.feed_sha256,
                "mapping_sha256": self.mapping_sha256, "schema_sha256": self.schema_sha256,
                "suite_sha256": self.suite_sha256, "members": self.members.as_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Disclosure:
        return cls(allowlist=tuple(data["allowlist"]), fields=tuple(data["fields"]),
                   feed_sha256=data["feed_sha256"], mapping_sha256=data["mapping_sha256"],
                   schema_sha256=data["schema_sha256"], suite_sha256=data["suite_sha256"],
                   members=MemberIndex.from_json(data["members"]))


@dataclass(frozen=True)
class DisclosureRecord:
    """A delivery's disclosure as recorded (without its member index)."""

    seq: int
    delivery_id: str
    allowlist: tuple[str, ...]
    fields: tuple[str, ...]
    feed_sha256: str
    mapping_sha256: str
    schema_sha256: str
    suite_sha256: str
    members: int
    at: datetime

    @property
    def hashes(self) -> dict[str, str]:
        return {"feed": self.feed_sha256, "mapping": self.mapping_sha256, "schema": self.schema_sha256,
                "suite": self.suite_sha256}


def _fields(name: str, values: Iterable[str]) -> list[str]:
    return sorted({str(check_token(name, v, limit=64)) for v in values})


def write_disclosure(tx: Tx, delivery_id: str, disclosure: Disclosure, now: datetime) -> None:
    """Append a delivery's disclosure and its member index (inside the intent's transaction)."""
    for name in ("feed_sha256", "mapping_sha256", "schema_sha256", "suite_sha256"):
        check_sha256(name, getattr(disclosure, name))
    index = disclosure.members
    if not 0 <= index.bits <= MAX_BITS:
        raise LedgerError("member index bits out of range", details={"field": "index_bits"})
    check_count("members", index.members)
    tx.append(m.disclosures, {
        "delivery_id": delivery_id, "allowlist": canonical_json(_fields("allowlist", disclosure.allowlist)),
        "fields": canonical_json(_fields("fields", disclosure.fields)), "feed_sha256": disclosure.feed_sha256,
        "mapping_sha256": disclosure.mapping_sha256, "schema_sha256": disclosure.schema_sha256,
        "suite_sha256": disclosure.suite_sha256, "members": index.members, "index_bits": index.bits, "at": now})
    for bucket, entries in sorted(index.buckets.items()):
        if not 0 <= bucket < 1 << index.bits:
            raise LedgerError("member index bucket out of range", details={"field": "bucket"})
        base64.b64decode(entries, validate=True)  # base64 only: nothing else reaches the column
        tx.append(m.disclosed_members, {"delivery_id": delivery_id, "bits": index.bits, "bucket": bucket,
                                        "entries": entries, "at": now})


def _record(r: Any) -> DisclosureRecord:
    return DisclosureRecord(seq=r.seq, delivery_id=r.delivery_id, allowlist=tuple(json.loads(r.allowlist)),
                            fields=tuple(json.loads(r.fields)), feed_sha256=r.feed_sha256,
                            mapping_sha256=r.mapping_sha256, schema_sha256=r.schema_sha256,
                            suite_sha256=r.suite_sha256, members=r.members, at=r.at)


class Disclosures(LedgerBase):
    """The ``Ledger``'s disclosure reads: per delivery, and by member token."""

    def disclosures(self, *, delivery_ids: Collection[str] | None = None) -> dict[str, DisclosureRecord]:
        """delivery id -> its disclosure (deliveries recorded before disclosures were kept have none)."""
        t = m.disclosures
        out: dict[str, DisclosureRecord] = {}
        with self._read() as conn:
            if delivery_ids is None:
                return {r.delivery_id: _record(r) for r in conn.execute(sa.select(t).order_by(t.c.seq))}
            wanted = sorted(set(delivery_ids))
            for i in range(0, len(wanted), 500):
                for r in conn.execute(sa.select(t).where(t.c.delivery_id.in_(wanted[i:i + 500]))):
                    out[r.delivery_id] = _record(r)
        return out

    def deliveries_of_member(self, token: str) -> dict[str, tuple[str, ...]]:
        """delivery id -> the INS03 codes the member had in it, for every delivery that carried ``token``."""
        _token_int(token)
        t = m.disclosed_members
        cond = sa.or_(*[sa.and_(t.c.bits == bits, t.c.bucket == bucket_of(token, bits))
                        for bits in range(MAX_BITS + 1)])
        found: dict[str, tuple[str, ...]] = {}
        with self._read() as conn:
            for r in conn.execute(sa.select(t.c.delivery_id, t.c.entries).where(cond).order_by(t.c.seq)):
                codes = codes_in(r.entries, token)
                if codes:
                    found[r.delivery_id] = tuple(sorted({*found.get(r.delivery_id, ()), *codes}))
        return found


__all__ = ["Disclosure", "DisclosureRecord", "Disclosures", "MemberIndex", "is_member_token", "write_disclosure"]
