"""Many small feeds: N feeds of M members each (default 200 x 2,000), every one a real ``run_feed``
(GX validation, 834, pyx12, gpg, SFTP to a loopback OpenSSH sshd), run back to back in one process and
then spread over as many worker processes as the machine has cores.

    python -m benchmarks.many_feeds --feeds 200 --members 2000 [--workers 2] [--out benchmarks/results]
    python -m benchmarks.many_feeds --mode pyx12 --feeds 10 --members 2000 --repeat 3

``--mode pyx12`` pairs the gate's two ways of running pyx12, back to back in one process each: a child
process per file (``CARRIERFEEDS_PYX12_PERSISTENT=0``) and the pooled persistent workers, child first
then worker in each of ``--repeat`` rounds; each round's ratio is worker over child (warm feed median).
``--mode speedups`` pairs stock pyx12 (``CARRIERFEEDS_PYX12_SPEEDUPS=0``) and pyx12 with
:mod:`carrierfeeds.x12.pyx12_speedups` the same way, stock first then fast in each round; each round's
ratio is fast over stock.

    python -m benchmarks.many_feeds --mode speedups --feeds 6 --members 2000 --repeat 3

Each worker process is fresh (spawned) and keeps its own workspace and SQLite ledger, the way separate
Airflow workers would each import the libraries once; the first feed a process runs pays those imports,
so the figures separate it (``first_feed_s``) from the warm median. Wall time is the whole batch; CPU
(``cpu_s``) is the whole batch's, its process and that process's children (pyx12 workers, gpg, sftp).
No assertion on time anywhere.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DAY = date(2026, 11, 20)
TEMPLATE_FEED = "acme-sunrise-medical"


def _clock() -> datetime:
    return datetime(2026, 11, 21, 7, 0, tzinfo=UTC)


def prepare_batch(work: Path, feed_ids: list[str], *, members: int, keys: Any, sshd: Any) -> dict[str, Any]:
    """A workspace in ``work`` holding ``feed_ids`` (copies of the demo feed) and a census for each."""
    from carrierfeeds.census.generate import generate_census, write_census_csv
    from carrierfeeds.config import load_feed

    template = load_feed(ROOT / "feeds" / f"{TEMPLATE_FEED}.yaml")
    feeds_dir = work / "feeds"
    feeds_dir.mkdir(parents=True)
    keys_dir = work / "keys"
    sshd.write_keys_dir(keys_dir, "bench_sftp")
    censuses: dict[str, str] = {}
    for n, feed_id in enumerate(feed_ids):
        inbox = sshd.root / feed_id
        inbox.mkdir(exist_ok=True)
        feed = template.model_copy(update={
            "feed_id": feed_id,
            "encryption": template.encryption.model_copy(update={
                "recipient_fingerprint": keys.carrier_fingerprint, "signer_fingerprint": keys.signer_fingerprint}),
            "delivery": template.delivery.model_copy(update={"connection_id": "bench_sftp",
                                                             "remote_dir": str(inbox)}),
        })
        (feeds_dir / f"{feed_id}.yaml").write_text(yaml.safe_dump(feed.model_dump(mode="json"), sort_keys=False))
        census = work / "inbound" / f"{feed_id}.csv"
        census.parent.mkdir(exist_ok=True)
        write_census_csv(generate_census(members, 1000 + n, as_of=DAY), census)
        censuses[feed_id] = str(census)
    return {"work": str(work), "feeds_dir": str(feeds_dir), "keys_dir": str(keys_dir),
            "gnupg_home": str(keys.ours.home), "censuses": censuses}


def run_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """Run every feed of ``batch`` back to back in this process; seconds per feed and their statuses."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    if batch.get("pyx12") is not None:
        os.environ["CARRIERFEEDS_PYX12_PERSISTENT"] = "1" if batch["pyx12"] == "worker" else "0"
    if batch.get("speedups") is not None:
        # Read by every pyx12 run, here and in the pyx12 workers this process starts (they inherit it).
        os.environ["CARRIERFEEDS_PYX12_SPEEDUPS"] = "1" if batch["speedups"] == "fast" else "0"
    if batch.get("cpu") is not None and hasattr(os, "sched_setaffinity"):
        # A pool that fills every CPU pins each worker to one (gate.PYX12_PIECES_MIN_BYTES): the
        # gate then keeps pyx12 in the worker instead of starting children that compete for the CPUs.
        os.sched_setaffinity(0, {batch["cpu"]})
    from carrierfeeds import run
    from carrierfeeds.settings import Settings

    work = Path(batch["work"])
    settings = Settings(feeds_dir=Path(batch["feeds_dir"]), mappings_dir=ROOT / "mappings",
                        schemas_dir=ROOT / "schemas", data_dir=work / "data", keys_dir=Path(batch["keys_dir"]),
                        gnupg_home=Path(batch["gnupg_home"]))
    seconds: list[float] = []
    statuses: dict[str, int] = {}
    members = 0
    started = time.perf_counter()
    for feed_id, census in batch["censuses"].items():
        t0 = time.perf_counter()
        summary = run.run_feed(settings, run.RunRef.for_day(feed_id, DAY), clock=_clock,
                                    actor="benchmark", census_path=Path(census))
        seconds.append(time.perf_counter() - t0)
        statuses[summary.status] = statuses.get(summary.status, 0) + 1
        members += summary.members
    wall = time.perf_counter() - started
    return {"seconds": seconds, "statuses": statuses, "members": members, "wall_s": wall, **_batch_cpu()}


def _batch_cpu() -> dict[str, float]:
    """This process's CPU and that of its children (pyx12 workers, gpg, sftp), once the pyx12 workers
    are closed and reaped (a child's CPU is counted when it is waited for), and both peak RSS."""
    import resource

    from carrierfeeds.x12.pyx12_adapter import _WORKERS

    _WORKERS.close()
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu_self_s": me.ru_utime + me.ru_stime, "cpu_children_s": kids.ru_utime + kids.ru_stime,
            "peak_rss_self_mb": me.ru_maxrss / 1024, "peak_rss_children_mb": kids.ru_maxrss / 1024}


def _summarise(label: str, wall: float, results: list[dict[str, Any]], workers: int) -> dict[str, Any]:
    per_feed = [s for r in results for s in r["seconds"]]
    first = [r["seconds"][0] for r in results if r["seconds"]]
    warm = [s for r in results for s in r["seconds"][1:]]
    statuses: dict[str, int] = {}
    for r in results:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    members = sum(r["members"] for r in results)
    cpu = {key: round(sum(r.get(key, 0.0) for r in results), 3) for key in ("cpu_self_s", "cpu_children_s")}
    rss = {key: round(max(r.get(key, 0.0) for r in results), 1) for key in ("peak_rss_self_mb", "peak_rss_children_mb")}
    return {**cpu, "cpu_s": round(cpu["cpu_self_s"] + cpu["cpu_children_s"], 3), **rss,
            "mode": label, "workers": workers, "feeds": len(per_feed), "wall_s": round(wall, 3),
            "feeds_per_min": round(len(per_feed) / wall * 60, 1) if wall else None,
            "members_per_s": round(members / wall) if wall else None,
            "first_feed_s": [round(x, 3) for x in first],
            "warm_feed_median_s": round(statistics.median(warm), 3) if warm else None,
            "feed_max_s": round(max(per_feed), 3) if per_feed else None, "statuses": statuses}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--members", type=int, default=2_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes for the parallel run (default: the machine's cores)")
    parser.add_argument("--mode", choices=("both", "sequential", "parallel", "pyx12", "speedups"), default="both")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of the pyx12 mode (child, then worker) or the speedups mode (stock, then fast)")
    parser.add_argument("--out", type=Path, default=None, help="folder for <date>-<machine>.json results")
    args = parser.parse_args(argv)

    from benchmarks.e2e import machine, save_result
    from carrierfeeds.testing.gpg import make_keyring
    from carrierfeeds.testing.sshd import running_sshd

    pairs_of = {"pyx12": ("child", "worker"), "speedups": ("stock", "fast")}
    modes = (["sequential", "parallel"] if args.mode == "both" else
             [f"{v}-{r}" for r in range(args.repeat) for v in pairs_of[args.mode]] if args.mode in pairs_of
             else [args.mode])
    runs: list[dict[str, Any]] = []
    load_start = os.getloadavg()
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="cf-manyfeeds-") as tmp:
        base = Path(tmp)
        keys = make_keyring(base / "gnupg")
        try:
            with running_sshd(base / "sshd") as sshd:
                for mode in modes:
                    workers = max(1, args.workers) if mode == "parallel" else 1
                    ids = [f"bench-{mode[:3]}{mode[-1]}-{n:04d}" for n in range(args.feeds)]
                    batches = [prepare_batch(base / f"{mode}-{w}", ids[w::workers], members=args.members,
                                             keys=keys, sshd=sshd) for w in range(workers)]
                    if args.mode in pairs_of:
                        batches[0]["pyx12" if args.mode == "pyx12" else "speedups"] = mode.split("-")[0]
                    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
                    if workers > 1 and len(cpus) >= workers:
                        for w, batch in enumerate(batches):
                            batch["cpu"] = cpus[w]
                    started = time.perf_counter()
                    # Fresh processes in both modes: the sequential run pays its imports once too.
                    with spawn.Pool(workers) as pool:
                        results = pool.map(run_batch, batches, chunksize=1)
                    runs.append(_summarise(mode, time.perf_counter() - started, results, workers))
        finally:
            keys.stop_agents()

    by_mode = {r["mode"]: r for r in runs}
    result: dict[str, Any] = {
        "benchmark": "many_feeds", "date": datetime.now(UTC).date().isoformat(), "machine": machine(),
        "feeds": args.feeds, "members_per_feed": args.members, "runs": by_mode,
    }
    if args.mode in pairs_of:
        before, after = pairs_of[args.mode]
        name = f"pyx12_{after}_over_{before}"
        pairs = [(by_mode[f"{before}-{r}"], by_mode[f"{after}-{r}"]) for r in range(args.repeat)]
        result[f"{name}_warm"] = [round(w["warm_feed_median_s"] / c["warm_feed_median_s"], 3) for c, w in pairs]
        result[f"{name}_wall"] = [round(w["wall_s"] / c["wall_s"], 3) for c, w in pairs]
        # The whole batch's CPU (this process and its children, the first feed's imports included).
        result[f"{name}_cpu"] = [round(w["cpu_s"] / c["cpu_s"], 3) for c, w in pairs]
        result[f"{name}_warm_median"] = statistics.median(result[f"{name}_warm"])
        result["load_avg_start"] = load_start
        result["load_avg_end"] = os.getloadavg()
    if "sequential" in by_mode and "parallel" in by_mode and by_mode["parallel"]["wall_s"]:
        result["parallel_speedup"] = round(by_mode["sequential"]["wall_s"] / by_mode["parallel"]["wall_s"], 2)
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    if args.out:
        suffix = {"pyx12": "-pyx12-worker", "speedups": "-pyx12-speedups"}.get(args.mode, "")
        save_result(args.out, f"many_feeds-{args.feeds}x{args.members}{suffix}", result)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
