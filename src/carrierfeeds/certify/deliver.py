"""Send a certification packet's 834s to the carrier's test endpoint through the run's own stages.

Each scenario is one run of the feed (gate, encrypt, deliver, confirm: the ledger records every stage,
the delivery goes to ``delivery.test`` and is recorded with the ``:test`` transport), started by a build
stage of its own that takes no census: it re-makes the scenario from the packet's manifest (seed, anchor
day), checks that it still gives the certified bytes, and renders it under control numbers the ledger
allocates from the pair's one sequence (see :mod:`carrierfeeds.lifecycle`), ISA15 T, the mapping's test
marker before the name. The delivered copy therefore differs from the packet's file in its envelope only
(ISA09/ISA10, ISA13, GS04/GS05, GS06, BGN02/BGN03); the build stage records the packet file's SHA-256
beside the delivered payload's, and the carrier's 999 matches the delivery like any other.

Runs are one per feed and day, so scenario k runs on the day ``as_of + k - 1``. Before each, an audit
event ``certification_delivery`` claims that day for this manifest; a day that already has a run not so
claimed (a census run) is refused and nothing is sent. A rerun finds its own runs: the same numbers, the
same bytes, and the deliver stage sends nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from carrierfeeds.certify.packet import MANIFEST, verify_packet
from carrierfeeds.certify.scenarios import Scenario, build_scenarios
from carrierfeeds.crypto import Keyring
from carrierfeeds.errors import Refused
from carrierfeeds.run.context import RunContext, RunRef, open_run, recorded_stage
from carrierfeeds.run.render import render_file
from carrierfeeds.run.stages import (
    RunSummary,
    confirm,
    conformance,
    deliver,
    encrypt,
    run_to_a_recorded_end,
)
from carrierfeeds.run.state import BuildState
from carrierfeeds.settings import Settings, load_bundle, open_ledger
from carrierfeeds.transport.base import Transport

log = logging.getLogger(__name__)

CLAIMED = "certification_delivery"
DELIVERED = "certification_packet_delivered"


class PacketRefused(Refused):
    """The packet cannot be delivered as certified: it does not verify, belongs to another feed, no longer
    renders the certified bytes, or a day its runs need already has a census run."""

    code = "certification_refused"


@dataclass(frozen=True)
class PacketDelivery:
    manifest_sha256: str
    runs: list[RunSummary]

    @property
    def ok(self) -> bool:
        return all(r.status in ("delivered", "already_delivered") for r in self.runs)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def deliver_packet(settings: Settings, feed_id: str, folder: Path, *, clock: Callable[[], datetime], actor: str,
                   transport: Transport | None = None) -> PacketDelivery:
    """Deliver the verified packet in ``folder`` for ``feed_id``, one run per scenario, to the test endpoint."""
    from carrierfeeds.lifecycle import has_test_endpoint

    bundle = load_bundle(settings, feed_id)
    feed, mapping = bundle.feed, bundle.mapping
    if not has_test_endpoint(feed):
        raise PacketRefused(f"feed {feed_id} has no test endpoint (delivery.test): certification files go to the "
                            "carrier's test system only", details={"feed_id": feed_id})
    check = verify_packet(folder, Keyring(settings.resolved_gnupg_home),
                          signer=feed.encryption.signer_fingerprint, pyx12=False)
    if not check.ok:
        raise PacketRefused(f"the packet in {folder.name} does not verify ({len(check.problems)} problem(s); "
                            "carrierfeeds certify --verify)", details={"feed_id": feed_id})
    raw = (folder / MANIFEST).read_bytes()
    manifest: dict[str, Any] = json.loads(raw)
    manifest_sha = _sha256(raw)
    if manifest["feed_id"] != feed_id:
        raise PacketRefused(f"the packet is for feed {manifest['feed_id']}, not {feed_id}",
                            details={"feed_id": feed_id})
    as_of = date.fromisoformat(manifest["as_of"])
    built = {s.file_name: s for s in build_scenarios(feed, mapping, seed=int(manifest["seed"]), as_of=as_of).scenarios}
    wanted = [s["file"] for s in manifest["scenarios"]]
    if sorted(built) != sorted(wanted) or any(_sha256(built[n].data) != manifest["files"][n] for n in wanted):
        raise PacketRefused("the feed's mapping no longer gives the certified files; build and certify a new packet",
                            details={"feed_id": feed_id})
    ledger = open_ledger(settings)
    claims = {e.detail.get("day"): e.detail.get("manifest_sha256")
              for e in ledger.audit_events(action=CLAIMED, object_ids=[feed_id])}
    days = {name: as_of + timedelta(days=built[name].number - 1) for name in wanted}
    taken = {r.interval_start for r in ledger.list_runs(feed_id=feed_id)}
    for name, day in days.items():
        if day in taken and claims.get(day.isoformat()) != manifest_sha:
            raise PacketRefused(f"feed {feed_id} already has a run for {day.isoformat()}, which scenario {name} "
                                "needs; nothing sent", details={"feed_id": feed_id, "day": day.isoformat()})
    runs: list[RunSummary] = []
    for name in wanted:
        day = days[name]
        if claims.get(day.isoformat()) != manifest_sha:
            ledger.audit(actor=actor, action=CLAIMED, object_type="feed", object_id=feed_id, now=clock(),
                         detail={"day": day.isoformat(), "manifest_sha256": manifest_sha, "file": name})
        runs.append(_deliver_one(settings, feed_id, built[name], day, manifest_sha, manifest["files"][name],
                                 clock=clock, actor=actor, transport=transport))
    result = PacketDelivery(manifest_sha, runs)
    ledger.audit(actor=actor, action=DELIVERED, object_type="feed", object_id=feed_id, now=clock(),
                 detail={"manifest_sha256": manifest_sha, "files": len(runs),
                         "delivered": sum(r.status in ("delivered", "already_delivered") for r in runs)})
    return result


def _deliver_one(settings: Settings, feed_id: str, scenario: Scenario, day: date, manifest_sha: str,
                 packet_sha: str, *, clock: Callable[[], datetime], actor: str,
                 transport: Transport | None) -> RunSummary:
    """One scenario's run, shaped like ``run_feed``: every stage in order, a recorded end whatever happens."""
    ctx = open_run(settings, RunRef.for_day(feed_id, day), clock=clock, actor=actor)

    def stages() -> RunSummary:
        certification_build(ctx, scenario, manifest_sha=manifest_sha, packet_sha=packet_sha)
        conformance(ctx)
        encrypt(ctx)
        deliver(ctx, transport=transport)
        return confirm(ctx)

    return run_to_a_recorded_end(ctx, stages)


def certification_build(ctx: RunContext, scenario: Scenario, *, manifest_sha: str, packet_sha: str) -> None:
    """The run's build stage for a packet scenario: rendered under the run's own control numbers, ISA15 T,
    the test marker; recorded as a certification file with the packet file's hash."""
    mapping = ctx.bundle.mapping
    with recorded_stage(ctx, "build") as detail:
        state = ctx.state()
        if state.census is not None:
            raise PacketRefused(f"the run of {ctx.ref.interval_start.isoformat()} holds a census; a certification "
                                "file is never built into it", details={"feed_id": ctx.feed_id})
        interchange = ctx.ledger.allocate_control_numbers(
            run_id=ctx.run_id, sender_id=mapping.envelope.sender_id, receiver_id=mapping.envelope.receiver_id,
            now=ctx.now())

        def write(path: Path, chunks: Any) -> tuple[str, int]:
            with ctx.keeping(path) as out:
                for chunk in chunks:
                    out.write(chunk)
            return out.sha256, out.size

        rendered = render_file(ctx.bundle, scenario.enrollment, action=scenario.action, isa13=interchange.isa13,
                               gs06=interchange.gs06, st02=interchange.st02, created=interchange.created_at,
                               day=ctx.ref.interval_start, folder=ctx.run_dir, write=write, usage="T",
                               marker=mapping.test_marker)
        enrollment = scenario.enrollment
        from carrierfeeds.run.disclosure import stage_disclosure_of  # numpy/pandas: loaded when a file is built

        stage_disclosure_of(ctx, enrollment)
        counts = {"members": enrollment.member_count, "subscribers": enrollment.subscriber_count,
                  "coverages": enrollment.coverage_count}
        detail.update(counts, certification=True, scenario=scenario.slug, packet_file_sha256=packet_sha,
                      packet_manifest_sha256=manifest_sha, isa13=interchange.isa13,
                      payload_sha256=rendered.sha256, bytes=rendered.size, file_name=rendered.file_name,
                      lifecycle="certification", endpoint="test")
        ctx.save_state(built=BuildState(
            file_name=rendered.file_name, payload_sha256=rendered.sha256, payload_bytes=rendered.size,
            isa13=interchange.isa13, gs06=interchange.gs06, st02=interchange.st02, counts=counts,
            endpoint="test", usage="T"))


__all__ = ["CLAIMED", "DELIVERED", "PacketDelivery", "PacketRefused", "certification_build", "deliver_packet"]
