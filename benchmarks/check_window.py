"""The structural check alone on a rendered 834, by window size: CPU and peak RSS over the process.

    python -m benchmarks.check_window --file big.834 [--windows 1048576,4194304,16777216] [--repeat 3]
                                      [--reference] [--out benchmarks/results/check-window.json]

Each measurement runs in a fresh child process that maps the file, hashes it (as the gate does first)
and imports pandas, then resets its RSS high-water mark and runs ``check_834`` once: the figure is the
high-water mark over what the process held before the check. ``--reference`` adds the whole-file check
the windowed one replaced (tests/x12/check_834_reference.py), run the same way. Runs alternate between
the variants, so that each round sees one machine state; no assertion on time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import hashlib, json, os, resource, sys, time
from pathlib import Path
import pandas  # noqa: F401  (imported before the measurement, as in the pipeline's process)
from carrierfeeds.files import read_mapped
variant, path = sys.argv[1], Path(sys.argv[2])
if variant == "reference":
    sys.path.insert(0, sys.argv[3])
    from check_834_reference import check_834
    kwargs = {}
else:
    from carrierfeeds.x12.check import check_834
    kwargs = {"window_bytes": int(variant)}
def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
with read_mapped(path) as data:
    hashlib.sha256(data).hexdigest()
    Path("/proc/self/clear_refs").write_text("5")
    before = status("VmRSS")
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    report = check_834(data, **kwargs)
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"variant": variant, "wall_s": round(wall, 3), "user_s": round(r1.ru_utime - r0.ru_utime, 3),
                      "sys_s": round(r1.ru_stime - r0.ru_stime, 3), "rss_before_mb": round(before, 1),
                      "peak_over_mb": round(status("VmHWM") - before, 1), "ok": report.ok,
                      "segments": report.segment_count, "members": report.member_count,
                      "load_avg_1m": os.getloadavg()[0]}))
"""


def measure(variant: str, path: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _CHILD, variant, str(path), str(ROOT / "tests" / "x12")],
                          check=True, capture_output=True, text=True, env=env)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, required=True, help="a rendered 834 (e.g. the e2e run's payload)")
    parser.add_argument("--windows", default="1048576,4194304,16777216")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reference", action="store_true", help="also the whole-file check it replaced")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    variants = [w.strip() for w in args.windows.split(",") if w.strip()]
    if args.reference:
        variants.insert(0, "reference")
    runs = [measure(variant, args.file) for _ in range(args.repeat) for variant in variants]
    for run in runs:
        sys.stdout.write(json.dumps(run) + "\n")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"file_bytes": args.file.stat().st_size, "runs": runs}, indent=2) + "\n")
    return runs


if __name__ == "__main__":
    main()
