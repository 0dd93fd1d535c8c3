"""One reconciliation: read the carrier's return file, compare it with the expected roster, fold the
result into the ledger's worklist. The CLI and (later) the Airflow task call :func:`reconcile_file`."""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.changes import SnapshotStore
from carrierfeeds.config import CarrierMapping, ReconciliationSpec
from carrierfeeds.errors import ConfigError
from carrierfeeds.ledger.worklist import ComparisonRecord, record_comparison
from carrierfeeds.outputs.layouts import CsvFlatLayout, FixedWidthFlatLayout
from carrierfeeds.reconcile.compare import Discrepancy, compare_rosters, compare_with_census
from carrierfeeds.reconcile.expected import expected_roster
from carrierfeeds.reconcile.readers import read_return_file

if TYPE_CHECKING:
    from carrierfeeds.reconcile.census_view import CensusView

log = logging.getLogger(__name__)
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")


@dataclass(frozen=True)
class ReconcileResult:
    """What one comparison found (PHI-free: tokens, kinds, field names and counts)."""

    feed_id: str
    file_name: str
    file_sha256: str
    carrier_members: int
    expected_members: int
    discrepancies: tuple[Discrepancy, ...]
    awaiting_ack: int
    worklist: ComparisonRecord
    by_kind: dict[str, int] = field(default_factory=dict)
    #: With the current census as a third view: each discrepancy's side ("carrier", "ours", "both"), in
    #: the order of ``discrepancies``, and the census's changes the carrier was not sent yet.
    sides: tuple[str, ...] | None = None
    not_sent: tuple[Discrepancy, ...] = ()

    @property
    def by_side(self) -> dict[str, int]:
        if self.sides is None:
            return {}
        counts = Counter(self.sides)
        if self.not_sent:
            counts["not_sent"] = len(self.not_sent)
        return dict(sorted(counts.items()))

    @property
    def matched(self) -> bool:
        return not self.discrepancies

    def as_dict(self) -> dict[str, Any]:
        return {"feed_id": self.feed_id, "file_name": self.file_name, "file_sha256": self.file_sha256,
                "carrier_members": self.carrier_members, "expected_members": self.expected_members,
                "matched": self.matched, "by_kind": dict(sorted(self.by_kind.items())),
                "awaiting_ack": self.awaiting_ack, "worklist": self.worklist.as_dict(),
                "discrepancies": [d.as_dict() if self.sides is None else {**d.as_dict(), "side": side}
                                  for d, side in zip(self.discrepancies, self.sides or [None] * len(
                                      self.discrepancies), strict=True)],
                **({} if self.sides is None else {"by_side": self.by_side,
                                                  "not_sent": [d.as_dict() for d in self.not_sent]})}


def return_layout(spec: ReconciliationSpec, mapping: CarrierMapping) -> CsvFlatLayout | FixedWidthFlatLayout | None:
    """The layout a flat return file is read with: inline, or the carrier mapping's own flatfile."""
    if spec.layout != "mapping":
        return spec.layout
    if mapping.flatfile is None:
        raise ConfigError(f"reconciliation.layout is 'mapping' but mapping {mapping.mapping_id!r} has no "
                          "flatfile layout", field="reconciliation.layout")
    return mapping.flatfile


def reconcile_file(path: Path, *, feed_id: str, spec: ReconciliationSpec, mapping: CarrierMapping, ledger: Any,
                   store: SnapshotStore, tokenizer: MemberTokenizer, now: datetime,
                   actor: str = "carrierfeeds", census: CensusView | None = None) -> ReconcileResult:
    """Read ``path`` (refused whole if bad: nothing is recorded), compare on ``now``'s date, record.

    With ``census`` (the current census as the run would build it) each discrepancy is labelled with the
    side its fix is on, and the census's changes not sent yet are listed; the labels' counts are recorded
    with the comparison, the worklist rows stay keyed by discrepancy alone."""
    plan_lines = {p.description: p.insurance_line for p in mapping.plans.values()}
    carrier = read_return_file(path, fmt=spec.format, tokenizer=tokenizer, layout=return_layout(spec, mapping),
                               max_bytes=spec.max_bytes, plan_lines=plan_lines)
    with path.open("rb") as stream:  # never the whole file in memory (the reader streams it too)
        digest = hashlib.file_digest(stream, "sha256").hexdigest()
    expected = expected_roster(store, ledger, feed_id=feed_id, tokenizer=tokenizer)
    found = compare_rosters(expected.roster, carrier, as_of=now.date(),
                            skip_members=census.held_back if census is not None else ())
    sides: tuple[str, ...] | None = None
    not_sent: tuple[Discrepancy, ...] = ()
    if census is not None:
        labelled = compare_with_census(expected.roster, carrier, census.roster, as_of=now.date(),
                                       skip_members=census.held_back)
        side_of = {d.key(): side for d, side in labelled if side != "not_sent"}
        sides = tuple(side_of[d.key()] for d in found)
        not_sent = tuple(d for d, side in labelled if side == "not_sent")
    awaiting = sum(1 for d in found if d.member_token in expected.awaiting_ack)
    by_kind = dict(Counter(d.kind for d in found))
    counts: dict[str, Any] = {"carrier_members": carrier.members, "expected_members": expected.roster.members,
                              "awaiting_ack": awaiting}
    if census is not None:
        counts.update({"census_members": census.roster.members, "census_held_back": len(census.held_back),
                       **{f"side_{k}": n for k, n in Counter(sides or ()).items()}, "not_sent": len(not_sent)})
    record = record_comparison(ledger, feed_id=feed_id, findings=found, file_sha256=digest,
                               file_name=_safe_name(path.name), fmt=spec.format, now=now, actor=actor,
                               counts=counts)
    log.info("feed %s: return file %s compared: %d discrepancies (%d on members awaiting acknowledgment)",
             feed_id, digest[:12], len(found), awaiting)
    return ReconcileResult(feed_id, _safe_name(path.name), digest, carrier.members, expected.roster.members,
                           tuple(found), awaiting, record, by_kind, sides, not_sent)


def _safe_name(name: str) -> str:
    # A carrier names its own files; the ledger keeps the name only when it is a plain token.
    return name if _PLAIN_NAME.fullmatch(name) else "return-file"
