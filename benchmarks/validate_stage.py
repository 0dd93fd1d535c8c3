"""The validate stage alone, in this (fresh) process: its peak RSS and CPU, then optionally build's 834 hash.

    python -m benchmarks.validate_stage CENSUS.csv [--build] [--chunk-families N]

Stages ``CENSUS.csv`` into a fresh demo workspace (local delivery, no keys: nothing is encrypted), resets
the RSS high-water mark, runs ``run.validate`` and prints one JSON line: rows, wall seconds, user and sys
CPU seconds, the stage's peak RSS (VmHWM) and the load average; with ``--build`` also the 834's sha256
(the same clock and a fresh ledger: the same control numbers on any version). Run it with the source tree
to measure on ``PYTHONPATH`` (``PYTHONPATH=/work/main/src:.`` for main), alternating versions. No
assertion on time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from benchmarks.e2e import DAY, ROOT, _cpu, _hwm_mb, _reset_peak_rss


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("census", type=Path)
    parser.add_argument("--build", action="store_true", help="also build the 834 and print its sha256")
    parser.add_argument("--chunk-families", type=int, default=None, help="CARRIERFEEDS_CHUNK_FAMILIES")
    args = parser.parse_args(argv)
    if args.chunk_families is not None:
        os.environ["CARRIERFEEDS_CHUNK_FAMILIES"] = str(args.chunk_families)

    import carrierfeeds
    from carrierfeeds import run
    from carrierfeeds.config import LocalDelivery
    from carrierfeeds.demo import prepare_workspace
    from carrierfeeds.run.context import release_memory

    with tempfile.TemporaryDirectory(prefix="validate-stage-") as tmp:
        work = Path(tmp)
        keys = SimpleNamespace(carrier_fingerprint="A" * 40, signer_fingerprint="B" * 40,
                               ours=SimpleNamespace(home=work / "gnupg"))
        ws = prepare_workspace(work / "ws", keys=keys, keys_dir=work / "keys", config_root=ROOT,
                               delivery=LocalDelivery(path=str(work / "out")))
        census = ws.inbound / "census_bench.csv"
        os.link(args.census, census) if args.census.stat().st_dev == census.parent.stat().st_dev else \
            census.write_bytes(args.census.read_bytes())

        def clock() -> datetime:
            return datetime(2026, 11, 21, 7, 0, tzinfo=UTC)

        ctx = run.open_run(ws.settings, run.RunRef.for_day(ws.feed.feed_id, DAY), clock=clock, actor="benchmark")
        run.stage_census(ctx, census)
        release_memory()
        _reset_peak_rss()
        before, wall = _cpu(), time.perf_counter()
        counts = run.validate(ctx)
        wall = time.perf_counter() - wall
        after = _cpu()
        out: dict[str, object] = {
            "source": str(Path(carrierfeeds.__file__).parents[1]), "rows": counts["rows"],
            "wall_s": round(wall, 2), "user_s": round(after["user"] - before["user"], 2),
            "sys_s": round(after["sys"] - before["sys"], 2), "peak_rss_mb": _hwm_mb(),
            "accepted_bytes": (ctx.run_dir / "accepted.arrow").stat().st_size, "load": os.getloadavg()[0]}
        if args.build:
            run.build(ctx)
            payload = ctx.run_dir / ctx.state().build.file_name
            out["sha256_834"] = hashlib.sha256(payload.read_bytes()).hexdigest()
        ctx.ledger.close()
    sys.stdout.write(json.dumps(out) + "\n")
    return out


if __name__ == "__main__":
    main()
