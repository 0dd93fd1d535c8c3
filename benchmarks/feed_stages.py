"""Where a warm feed's time goes: N feeds of M members back to back in one process, each stage timed.

    python -m benchmarks.feed_stages --feeds 5 --members 2000 [--speedups 0|1] [--out benchmarks/results]

The same feeds as ``benchmarks.many_feeds`` (copies of the demo feed, a generated census each, real GX,
pyx12 in its pooled workers, gpg and SFTP to a loopback sshd). Each of ``run_feed``'s stages is wrapped
to record its wall and this process's CPU seconds (pyx12's workers and gpg are other processes: their
CPU is not in it); the figures are the mean over the warm feeds (all but the first). ``--speedups``
sets ``CARRIERFEEDS_PYX12_SPEEDUPS`` for the run. No assertion on time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: run_feed's stages, as carrierfeeds.run.stages names them.
STAGES = ("stage_census", "validate", "build", "conformance", "encrypt", "deliver", "purge_plaintext", "confirm",
          "anchor_run")


@contextmanager
def timed_stages(seconds: dict[str, list[tuple[float, float]]]) -> Iterator[None]:
    """Within the block, every stage function appends (wall s, this process's CPU s) to ``seconds``."""
    from carrierfeeds.run import stages

    originals = {name: getattr(stages, name) for name in STAGES}

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def stage(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds.setdefault(name, []).append((time.perf_counter() - wall, time.process_time() - cpu))
        return stage

    for name, fn in originals.items():
        setattr(stages, name, wrap(name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(stages, name, fn)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=5)
    parser.add_argument("--members", type=int, default=2_000)
    parser.add_argument("--speedups", choices=("0", "1"), default=None,
                        help="CARRIERFEEDS_PYX12_SPEEDUPS for the run (default: as set, else on)")
    parser.add_argument("--out", type=Path, default=None, help="folder for <date>-<machine>.json results")
    args = parser.parse_args(argv)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    if args.speedups is not None:
        os.environ["CARRIERFEEDS_PYX12_SPEEDUPS"] = args.speedups

    from benchmarks.e2e import load_average, machine, save_result
    from benchmarks.many_feeds import DAY, ROOT, _clock, prepare_batch
    from carrierfeeds import run
    from carrierfeeds.settings import Settings
    from carrierfeeds.testing.gpg import make_keyring
    from carrierfeeds.testing.sshd import running_sshd

    seconds: dict[str, list[tuple[float, float]]] = {}
    feeds: list[dict[str, Any]] = []
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="cf-feedstages-") as tmp:
        base = Path(tmp)
        keys = make_keyring(base / "gnupg")
        try:
            with running_sshd(base / "sshd") as sshd:
                batch = prepare_batch(base / "w", [f"stages-{n:03d}" for n in range(args.feeds)],
                                      members=args.members, keys=keys, sshd=sshd)
                settings = Settings(feeds_dir=Path(batch["feeds_dir"]), mappings_dir=ROOT / "mappings",
                                    schemas_dir=ROOT / "schemas", data_dir=base / "w" / "data",
                                    keys_dir=Path(batch["keys_dir"]), gnupg_home=Path(batch["gnupg_home"]))
                with timed_stages(seconds):
                    for feed_id, census in batch["censuses"].items():
                        wall, cpu = time.perf_counter(), time.process_time()
                        summary = run.run_feed(settings, run.RunRef.for_day(feed_id, DAY), clock=_clock,
                                               actor="benchmark", census_path=Path(census))
                        feeds.append({"wall_s": round(time.perf_counter() - wall, 3),
                                      "cpu_s": round(time.process_time() - cpu, 3), "status": summary.status})
        finally:
            keys.stop_agents()

    def warm_mean(values: list[float]) -> float:
        return round(statistics.fmean(values[1:] or values), 3)

    result: dict[str, Any] = {
        "benchmark": "feed_stages", "date": datetime.now(UTC).date().isoformat(), "machine": machine(),
        "feeds": args.feeds, "members_per_feed": args.members,
        "speedups": os.environ.get("CARRIERFEEDS_PYX12_SPEEDUPS", "1"), "per_feed": feeds,
        "warm_feed_wall_s": warm_mean([f["wall_s"] for f in feeds]),
        "warm_stage_wall_s": {name: warm_mean([w for w, _ in v]) for name, v in seconds.items()},
        "warm_stage_cpu_s": {name: warm_mean([c for _, c in v]) for name, v in seconds.items()},
        "load_avg_start": load_start, "load_avg_end": load_average(),
    }
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    if args.out:
        save_result(args.out, f"feed_stages-{args.feeds}x{args.members}-speedups{result['speedups']}", result)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
