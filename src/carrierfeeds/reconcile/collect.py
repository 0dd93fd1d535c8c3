"""Collect a feed's return files from the carrier's outbox and compare each: the one function the CLI's
``reconcile collect`` and the Airflow reconcile task call.

    collect_and_reconcile(feed, ...)   intake.collect_returns, then service.reconcile_file per new file
    collect_feed(settings, feed_id, ...)   the same with the deployment's settings (CLI and Airflow)
    collect_all(settings, ...)         every feed with a reconciliation.source (the housekeeping task)

With ``reconciliation.census_view`` the feed's current census is read as the third view (as
``reconcile import --census`` does) once per collection that has a file to compare.

"Imported before" is the ledger's answer, so a second machine (or a rerun) skips what the first took:
a ciphertext sha256 with a ``return_collected`` audit event, or a plaintext sha256 a comparison
recorded. Every file that is not compared leaves a ``return_refused`` audit event (reason code, hashes,
no PHI) once per file, not once per collection. Plaintext lives only for the comparison: each file is
removed from the collection folder once compared or refused.
"""

from __future__ import annotations

import logging
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.changes import SnapshotStore
from carrierfeeds.config import CarrierMapping, Feed
from carrierfeeds.credentials import Connections
from carrierfeeds.crypto import Keyring
from carrierfeeds.errors import ConfigError, DataError
from carrierfeeds.ledger.worklist import reconciliations
from carrierfeeds.reconcile.intake import ReturnFile, ReturnSource, collect_returns
from carrierfeeds.reconcile.service import ReconcileResult, reconcile_file
from carrierfeeds.settings import FeedBundle, Settings

if TYPE_CHECKING:
    from carrierfeeds.reconcile.census_view import CensusView

log = logging.getLogger(__name__)

COLLECTED, REFUSED = "return_collected", "return_refused"
OBJECT_TYPE = "return_file"
_CODE = re.compile(r"[a-z0-9_]{1,64}")


@dataclass(frozen=True)
class CollectedReturn:
    """One listed file: what intake made of it and, when it was compared, the comparison's result."""

    file: ReturnFile
    result: ReconcileResult | None = None
    refused_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = self.file.as_dict()
        out.pop("path", None)  # the plaintext is gone once compared; the aside path stays in reason_path
        out["refused_reason"] = self.refused_reason
        out["comparison"] = self.result.as_dict() if self.result is not None else None
        return out


@dataclass(frozen=True)
class CollectResult:
    """Every new file of one collection, oldest first; counts by outcome; the open count after it."""

    feed_id: str
    files: tuple[CollectedReturn, ...]
    alerted: bool = False

    @property
    def compared(self) -> list[ReconcileResult]:
        return [f.result for f in self.files if f.result is not None]

    @property
    def refused(self) -> list[CollectedReturn]:
        return [f for f in self.files if f.refused_reason is not None]

    @property
    def open_after(self) -> int | None:
        """Open discrepancies after the last comparison (None when nothing was compared)."""
        compared = self.compared
        return compared[-1].worklist.open_after if compared else None

    def as_dict(self) -> dict[str, Any]:
        return {"feed_id": self.feed_id, "compared": len(self.compared), "refused": len(self.refused),
                "deferred": sum(f.file.outcome == "deferred" for f in self.files),
                "open_after": self.open_after, "alerted": self.alerted,
                "files": [f.as_dict() for f in self.files]}


def return_source(feed: Feed) -> ReturnSource:
    """The intake's source from ``feed.reconciliation.source``; a ConfigError when the feed has none."""
    spec = feed.reconciliation
    if spec is None or spec.source is None:
        raise ConfigError("the feed has no reconciliation.source (the carrier's outbox)",
                          file=f"{feed.feed_id}.yaml", field="reconciliation.source")
    src = spec.source
    return ReturnSource(connection=src.connection, remote_dir=src.remote_dir, pattern=src.pattern,
                        signed_by=src.signed_by, max_bytes=spec.max_bytes)


def imported_before(ledger: Any, feed_id: str) -> set[str]:
    """Every sha256 the ledger knows this feed imported: collected ciphertexts and compared plaintexts."""
    shas = {e.object_id for e in ledger.audit_events(action=COLLECTED, object_type=OBJECT_TYPE)
            if e.detail.get("feed_id") == feed_id}
    shas |= {e.object_id for e in ledger.audit_events(action=REFUSED, object_type=OBJECT_TYPE)
             if e.detail.get("feed_id") == feed_id and e.detail.get("stage") == "read"}
    with ledger._read() as conn:
        shas |= set(conn.execute(sa.select(reconciliations.c.file_sha256)
                                 .where(reconciliations.c.feed_id == feed_id)).scalars())
    return shas


def _refused_before(ledger: Any, feed_id: str) -> set[str]:
    return {e.object_id for e in ledger.audit_events(action=REFUSED, object_type=OBJECT_TYPE)
            if e.detail.get("feed_id") == feed_id}


def collect_and_reconcile(feed: Feed, *, mapping: CarrierMapping, ledger: Any, store: SnapshotStore,
                          tokenizer: MemberTokenizer, keyring: Keyring,
                          connections: Connections, work_dir: Path,
                          clock: Callable[[], datetime], actor: str = "carrierfeeds",
                          census: Callable[[], CensusView | None] | None = None) -> CollectResult:
    """Collect ``feed``'s new return files into ``work_dir`` (refused ones aside next to it) and compare
    each, oldest first. ``connections`` resolves the source's connection id (and the alert's webhook) as
    for :func:`~carrierfeeds.reconcile.intake.collect_returns`. ``census`` gives the third view, asked
    once and only when a file is to be compared."""
    source = return_source(feed)
    spec = feed.reconciliation
    assert spec is not None  # noqa: S101 - return_source checked it
    known = imported_before(ledger, feed.feed_id)
    refused_known = _refused_before(ledger, feed.feed_id)
    into = Path(work_dir) / f"collect-{uuid.uuid4().hex}"
    found = collect_returns(source, connections=connections, keyring=keyring, into=into,
                            seen=known.__contains__, clock=clock)
    out: list[CollectedReturn] = []
    view: list[CensusView | None] = []
    try:
        for item in found:
            if item.outcome == "refused":
                _audit_refusal(ledger, feed.feed_id, item, str(item.reason), stage="intake", actor=actor,
                               now=clock(), known=refused_known)
                out.append(CollectedReturn(item, refused_reason=str(item.reason)))
                continue
            if not item.collected or item.path is None:
                out.append(CollectedReturn(item))
                continue
            if census is not None and not view:
                view.append(census())
            out.append(_compare_one(item, feed=feed, mapping=mapping, ledger=ledger, store=store,
                                    tokenizer=tokenizer, clock=clock, actor=actor, known=refused_known,
                                    census=view[0] if view else None))
    finally:
        for item in found:
            if item.collected and item.path is not None:
                item.path.unlink(missing_ok=True)
        if into.exists() and not any(into.iterdir()):
            into.rmdir()
    result = CollectResult(feed.feed_id, tuple(out), alerted=_alert(feed, out, connections))
    log.info("feed %s: %d return files compared, %d refused", feed.feed_id, len(result.compared),
             len(result.refused))
    return result


def _alert(feed: Feed, out: list[CollectedReturn], connections: Connections) -> bool:
    """The feed's threshold alert (as ``reconcile import`` sends it), judged on the last comparison."""
    from carrierfeeds.reconcile.alert import alert_payload, needs_alert, send_alert

    last = next((f.result for f in reversed(out) if f.result is not None), None)
    spec = feed.reconciliation
    if last is None or spec is None or spec.alert_threshold is None:
        return False
    record = last.worklist
    if not needs_alert(feed, record.open_after):
        return False
    return send_alert(feed, alert_payload(feed.feed_id, open_count=record.open_after, threshold=spec.alert_threshold,
                                          comparison_id=record.comparison_id, by_kind=record.by_kind),
                      connections=connections)


def _compare_one(item: ReturnFile, *, feed: Feed, mapping: CarrierMapping, ledger: Any, store: SnapshotStore,
                 tokenizer: MemberTokenizer, clock: Callable[[], datetime], actor: str,
                 known: set[str], census: CensusView | None = None) -> CollectedReturn:
    spec = feed.reconciliation
    assert spec is not None and item.path is not None  # noqa: S101 - the caller checked both
    try:
        result = reconcile_file(item.path, feed_id=feed.feed_id, spec=spec, mapping=mapping, ledger=ledger,
                                store=store, tokenizer=tokenizer, now=clock(), actor=actor, census=census)
    except DataError as exc:
        # A file the reader refuses is refused whole; its bytes will not change, so it is not retried.
        reason = exc.rule if exc.rule and _CODE.fullmatch(exc.rule) else "unreadable"
        _audit_refusal(ledger, feed.feed_id, item, reason, stage="read", actor=actor, now=clock(), known=known)
        return CollectedReturn(item, refused_reason=reason)
    ledger.audit(actor=actor, action=COLLECTED, object_type=OBJECT_TYPE,
                 object_id=item.ciphertext_sha256 or result.file_sha256, now=clock(),
                 detail={"feed_id": feed.feed_id, "plaintext_sha256": item.plaintext_sha256,
                         "comparison_id": result.worklist.comparison_id, "bytes": item.size,
                         "signer": item.signer_fingerprint})
    return CollectedReturn(item, result=result)


def _audit_refusal(ledger: Any, feed_id: str, item: ReturnFile, reason: str, *, stage: str, actor: str,
                   now: datetime, known: set[str]) -> None:
    ident = item.ciphertext_sha256 or (item.reason_path.name.split(".")[0] if item.reason_path else None)
    if ident is None or ident in known:
        return
    known.add(ident)
    ledger.audit(actor=actor, action=REFUSED, object_type=OBJECT_TYPE, object_id=ident, now=now,
                 reason=f"return file refused: {reason}",
                 detail={"feed_id": feed_id, "reason": reason, "stage": stage, "bytes": item.size,
                         "plaintext_sha256": item.plaintext_sha256})


def collect_feed(settings: Settings, feed_id: str, ledger: Any, *, connections: Connections,
                 clock: Callable[[], datetime], actor: str = "carrierfeeds") -> CollectResult:
    """:func:`collect_and_reconcile` for ``feed_id`` with the deployment's snapshots, token key, GNUPGHOME
    and ``<data_dir>/reconcile/<feed>`` as the collection folder: ``reconcile collect`` and the Airflow
    task both call this, each with its own ``connections`` (keys directory, Airflow connections)."""
    from carrierfeeds.settings import load_bundle

    bundle = load_bundle(settings, feed_id)
    tokenizer = MemberTokenizer.from_key_file(settings.resolved_token_key_file)
    work_dir = settings.data_dir / "reconcile" / feed_id
    spec = bundle.feed.reconciliation

    def census() -> CensusView | None:
        return current_census_view(settings, bundle, tokenizer, connections=connections, work_dir=work_dir,
                                   as_of=clock().date())

    return collect_and_reconcile(
        bundle.feed, mapping=bundle.mapping, ledger=ledger, store=SnapshotStore.for_settings(settings),
        tokenizer=tokenizer, keyring=Keyring(settings.resolved_gnupg_home), connections=connections,
        work_dir=work_dir, clock=clock, actor=actor,
        census=census if spec is not None and spec.census_view else None)


def current_census_view(settings: Settings, bundle: FeedBundle, tokenizer: MemberTokenizer, *,
                        connections: Connections, work_dir: Path, as_of: date) -> CensusView | None:
    """The feed's current census (its source's newest file, processed or not) as the third view, read
    into a private folder and deleted after. None, logged by error code only, when the source has no
    census or its policy would reject it: the comparison then goes on with two views."""
    from carrierfeeds.census.sources import fetch_census
    from carrierfeeds.errors import CarrierFeedsError
    from carrierfeeds.reconcile.census_view import census_view

    private = work_dir / f"census-{uuid.uuid4().hex}"
    try:
        pick = fetch_census(bundle.feed.census.source, feed_id=bundle.feed.feed_id, schema=bundle.schema,
                            data_dir=settings.data_dir, keys_dir=settings.resolved_keys_dir, work_dir=private,
                            force=True, connections=connections)
        return census_view(settings, bundle, pick.path, tokenizer, as_of=as_of)
    except CarrierFeedsError as exc:
        log.warning("feed %s: compared without the census view (%s)", bundle.feed.feed_id, exc.code)
        return None
    finally:
        shutil.rmtree(private, ignore_errors=True)


def collect_all(settings: Settings, ledger: Any, *, connections: Connections,
                clock: Callable[[], datetime], actor: str = "carrierfeeds") -> dict[str, Any]:
    """Every feed with a ``reconciliation.source``, one after the other; PHI-free counts (for XCom).

    A feed that fails does not stop the others; the first error is raised at the end (Airflow retries a
    retriable one), once every feed had its turn."""
    from carrierfeeds.config import load_feed
    from carrierfeeds.errors import CarrierFeedsError
    from carrierfeeds.settings import feed_paths

    counts: dict[str, Any] = {"feeds": 0, "compared": 0, "refused": 0, "open": 0, "failed": 0}
    first: CarrierFeedsError | None = None
    for path in feed_paths(settings):
        feed = load_feed(path)
        if feed.reconciliation is None or feed.reconciliation.source is None:
            continue
        counts["feeds"] += 1
        try:
            result = collect_feed(settings, feed.feed_id, ledger, connections=connections, clock=clock,
                                  actor=actor)
        except CarrierFeedsError as exc:
            log.warning("feed %s: return files not collected (%s)", feed.feed_id, exc.code)
            counts["failed"] += 1
            first = first or exc
            continue
        counts["compared"] += len(result.compared)
        counts["refused"] += len(result.refused)
        counts["open"] += result.open_after or 0
    if first is not None:
        raise first
    return counts


__all__ = ["CollectResult", "CollectedReturn", "collect_all", "collect_and_reconcile", "collect_feed",
           "imported_before", "return_source"]
