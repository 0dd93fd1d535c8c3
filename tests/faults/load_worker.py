"""One worker process of the load test: takes feeds from a shared queue and runs each stage by stage,
retrying a stage as Airflow would.

Run as ``python load_worker.py SPEC.json WORKER_ID``. The queue is a folder of ticket files, one per
feed; a worker claims a ticket by renaming it into ``claimed/`` (atomic: exactly one worker wins it).
Two ways to run a feed (``mode`` in the spec):

- ``run_feed``: ``run.run_feed`` as the CLI does; a run that ends ``failed`` on a retriable error
  is run again (a CLI rerun), up to ``stage_tries`` times.
- ``stages``: each stage in a fresh ``open_run`` (``ephemeral``, like an Airflow task); a retriable
  error retries that stage, up to ``stage_tries`` tries; anything else, or the last try, ends the run
  in its recorded state (``end_run``), as ``carrierfeeds.airflow`` does.
 Writes one JSON line per feed to ``results/<worker>.jsonl`` (statuses, tries,
error codes: no member data) and a last line with the process's peak RSS (VmHWM) after its first feed
and at the end.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

STAGES = ("stage_census", "validate", "build", "conformance", "encrypt", "deliver", "confirm")


def vm_hwm_kb() -> int:
    """This process's peak resident set size so far (``VmHWM``), in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


@dataclass(frozen=True)
class Spec:
    settings: dict[str, Any]
    queue: Path
    results: Path
    day: date
    clock: datetime
    mode: str
    stage_tries: int
    transport_retries: int
    transport_backoff: float

    @classmethod
    def read(cls, path: Path) -> Spec:
        data = json.loads(path.read_text())
        return cls(settings=data["settings"], queue=Path(data["queue"]), results=Path(data["results"]),
                   day=date.fromisoformat(data["day"]), clock=datetime.fromisoformat(data["clock"]),
                   mode=data["mode"], stage_tries=int(data["stage_tries"]),
                   transport_retries=int(data["transport_retries"]), transport_backoff=float(data["transport_backoff"]))


def claim(queue: Path, worker: str) -> Iterator[str]:
    """Feed ids from the shared queue, each handed to exactly one worker."""
    claimed = queue / "claimed"
    while True:
        tickets = sorted(p for p in queue.iterdir() if p.is_file())
        if not tickets:
            return
        for ticket in tickets:
            try:
                os.rename(ticket, claimed / f"{ticket.name}@{worker}")
            except FileNotFoundError:
                continue  # another worker took it first
            yield ticket.name
            break


def _transport(spec: Spec, settings: Any, bundle: Any) -> Any:
    """The feed's SFTP transport as the pipeline builds it, with the spec's retries and backoff."""
    from carrierfeeds.credentials import load_sftp_endpoint
    from carrierfeeds.transport.sftp import SftpTransport

    target = bundle.feed.delivery
    endpoint = load_sftp_endpoint(settings.resolved_keys_dir, target.connection_id)
    return SftpTransport(endpoint, target.remote_dir, retries=spec.transport_retries,
                         backoff=spec.transport_backoff)


def run_whole(spec: Spec, settings: Any, feed_id: str, worker: str) -> dict[str, Any]:
    """One feed through ``run_feed``, run again while it ends failed on a retriable error."""
    from carrierfeeds import run
    from carrierfeeds.settings import load_bundle

    bundle = load_bundle(settings, feed_id)
    ref = run.RunRef.for_day(feed_id, spec.day)
    errors: list[str] = []
    tries = 0
    while True:
        tries += 1
        summary = run.run_feed(settings, ref, clock=lambda: spec.clock, actor=f"load:{worker}",
                                    transport=_transport(spec, settings, bundle))
        error = summary.error or {}
        if error:
            errors.append(f"{error.get('code')}:{str(error.get('message'))[:300]}")
        if tries == spec.stage_tries or summary.status != "failed" or error.get("code") != "transient":
            return {"feed_id": feed_id, "status": summary.status, "tries": {"run_feed": tries},
                    "errors": errors, "file_name": summary.file_name}


def run_stages(spec: Spec, settings: Any, ledger: Any, store: Any, feed_id: str, worker: str) -> dict[str, Any]:
    """Every stage of one feed's run, each retried on a retriable error; the worker's account of it."""
    from carrierfeeds import run
    from carrierfeeds.errors import CarrierFeedsError
    from carrierfeeds.settings import load_bundle

    bundle = load_bundle(settings, feed_id)
    ref = run.RunRef.for_day(feed_id, spec.day)
    tries: dict[str, int] = {}
    errors: list[str] = []
    for stage in STAGES:
        for attempt in range(1, spec.stage_tries + 1):
            tries[stage] = attempt
            ctx = run.open_run(settings, ref, clock=lambda: spec.clock, actor=f"load:{worker}",
                                    ledger=ledger, bundle=bundle, store=store, ephemeral=True)
            try:
                if stage == "stage_census":
                    run.stage_census(ctx)
                elif stage == "validate":
                    run.validate(ctx)
                elif stage == "build":
                    run.build(ctx)
                elif stage == "conformance":
                    run.conformance(ctx)
                elif stage == "encrypt":
                    run.encrypt(ctx)
                elif stage == "deliver":
                    run.deliver(ctx, transport=_transport(spec, settings, bundle))
                else:
                    summary = run.confirm(ctx)
                    return {"feed_id": feed_id, "status": summary.status, "tries": tries, "errors": errors,
                            "file_name": summary.file_name}
                break
            except CarrierFeedsError as exc:
                errors.append(f"{stage}:{exc.code}:{exc.message[:300]}")
                if exc.retriable and attempt < spec.stage_tries:
                    run.wipe_scratch(ctx)  # the retry re-reads the staging store
                    continue
                summary = run.end_run(ctx, exc)
                return {"feed_id": feed_id, "status": summary.status, "tries": tries, "errors": errors,
                        "file_name": summary.file_name}
    raise AssertionError("unreachable: confirm returns")


def main(spec_path: str, worker: str) -> None:
    from carrierfeeds.settings import Settings, open_ledger, open_store

    spec = Spec.read(Path(spec_path))
    settings = Settings(**spec.settings)
    ledger = open_ledger(settings)
    store = open_store(settings)
    out = spec.results / f"{worker}.jsonl"
    after_first: int | None = None
    done = 0
    try:
        with out.open("a") as fh:
            for feed_id in claim(spec.queue, worker):
                started = time.monotonic()
                account = (run_whole(spec, settings, feed_id, worker) if spec.mode == "run_feed" else
                           run_stages(spec, settings, ledger, store, feed_id, worker))
                account["seconds"] = round(time.monotonic() - started, 3)
                account["hwm_kb"] = vm_hwm_kb()
                done += 1
                if after_first is None:
                    after_first = vm_hwm_kb()
                fh.write(json.dumps({"worker": worker, **account}) + "\n")
                fh.flush()
            fh.write(json.dumps({"worker": worker, "feeds_run": done, "hwm_after_first_kb": after_first,
                                 "hwm_end_kb": vm_hwm_kb()}) + "\n")
    finally:
        ledger.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
