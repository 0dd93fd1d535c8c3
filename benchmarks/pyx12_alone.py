"""pyx12 alone on one rendered 834, stock and with :mod:`carrierfeeds.x12.pyx12_speedups`, paired in one process.

    python -m benchmarks.pyx12_alone --members 2000 --repeat 5 [--out benchmarks/results]

Renders one 834 of ``--members`` generated members (the demo feed and mapping), then runs the adapter's
:func:`validate_with_pyx12` on it (maps loaded by pyx12 each run, as in a child of its own; 999 off, as
in the gate) ``--repeat`` times each way, alternating stock (``CARRIERFEEDS_PYX12_SPEEDUPS=0``) and fast,
after one unmeasured run of each. Records this process's CPU and wall seconds per run, each pair's
fast-over-stock ratio, and the load average; checks that both verdicts are the same. No assertion on time.
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
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DAY = date(2026, 11, 20)
CREATED = datetime(2026, 11, 21, 7, 30, tzinfo=UTC)
SPEEDUPS_ENV = "CARRIERFEEDS_PYX12_SPEEDUPS"


def render_file(members: int, path: Path) -> int:
    """Write an 834 of ``members`` generated members to ``path``; its size in bytes."""
    from carrierfeeds.census.generate import generate_census
    from carrierfeeds.config import Party, load_feed, load_mapping
    from carrierfeeds.enrollment import build_enrollment
    from carrierfeeds.x12.envelope import ControlNumbers, TransactionHeader
    from carrierfeeds.x12.render import render_834_bytes

    feed = load_feed(ROOT / "feeds" / "acme-sunrise-medical.yaml")
    mapping = load_mapping(ROOT / "mappings" / "sunrise-health.yaml")
    frame = generate_census(members, 1000, as_of=DAY)
    frame["row_number"] = range(2, len(frame) + 2)
    header = TransactionHeader(ids=mapping.envelope, created=CREATED, reference="CF000000042",
                               sponsor=Party(name=feed.employer.name, id_qualifier="FI", id=feed.employer.tax_id),
                               payer=mapping.payer, action=mapping.full_file.bgn08, group_number=mapping.group_number)
    data = render_834_bytes(build_enrollment(frame, feed, mapping, as_of=DAY), header,
                            ControlNumbers(isa13=42, gs06=42, st02=1))
    path.write_bytes(data)
    return len(data)


def _one(path: Path, mode: str) -> tuple[float, float, Any]:
    from carrierfeeds.x12.pyx12_adapter import validate_with_pyx12

    os.environ[SPEEDUPS_ENV] = "1" if mode == "fast" else "0"
    cpu, wall = time.process_time(), time.perf_counter()
    verdict = validate_with_pyx12(path, with_999=False)
    return time.process_time() - cpu, time.perf_counter() - wall, verdict


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=5, help="measured runs each way, alternating")
    parser.add_argument("--out", type=Path, default=None, help="folder for <date>-<machine>.json results")
    args = parser.parse_args(argv)

    from benchmarks.e2e import load_average, machine, save_result
    from carrierfeeds.x12.pyx12_speedups import refusal

    runs: dict[str, list[dict[str, float]]] = {"stock": [], "fast": []}
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="cf-pyx12-alone-") as tmp:
        path = Path(tmp) / f"generated-{args.members}.834"
        size = render_file(args.members, path)
        verdicts = {mode: _one(path, mode)[2] for mode in ("stock", "fast")}  # unmeasured warm-up
        for _ in range(args.repeat):
            for mode in ("stock", "fast"):
                cpu, wall, verdict = _one(path, mode)
                runs[mode].append({"cpu_s": round(cpu, 3), "wall_s": round(wall, 3)})
                if verdict != verdicts[mode]:
                    raise SystemExit(f"pyx12's verdict changed between two {mode} runs")
    same = verdicts["stock"] == verdicts["fast"]
    pairs = [round(f["cpu_s"] / s["cpu_s"], 3) for s, f in zip(runs["stock"], runs["fast"], strict=True)]
    result: dict[str, Any] = {
        "benchmark": "pyx12_alone", "date": datetime.now(UTC).date().isoformat(), "machine": machine(),
        "members": args.members, "bytes": size, "segments": verdicts["stock"].segments,
        "speedups_refused": refusal(), "same_verdict": same, "ok": verdicts["stock"].ok, "runs": runs,
        "cpu_median_s": {m: statistics.median(r["cpu_s"] for r in runs[m]) for m in runs},
        "wall_median_s": {m: statistics.median(r["wall_s"] for r in runs[m]) for m in runs},
        "fast_over_stock_cpu": pairs, "fast_over_stock_cpu_median": statistics.median(pairs),
        "load_avg_start": load_start, "load_avg_end": load_average(),
    }
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    if not same:
        raise SystemExit("stock and fast pyx12 gave different verdicts")
    if args.out:
        save_result(args.out, f"pyx12_alone-{args.members}", result)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
