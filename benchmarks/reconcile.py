"""Reconciliation at scale: an N-member carrier 834 (030) against an N-member snapshot, next to reading
both with the primitives (the project's 834 reader on the same bytes, pyarrow on the same parquet), in
one process and one run. Peak RSS is the process's.

    python -m benchmarks.reconcile --members 1000000 [--repeat 1] [--out benchmarks/results]

The carrier file is written by the project's 834 writer from the snapshot with 0.1% of members dropped,
0.1% with another plan and 0.1% with another start date, so the comparison finds work to do. No
assertion on time anywhere.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

AS_OF = date(2026, 11, 20)


def make_snapshot(members: int, seed: int = 1) -> pd.DataFrame:
    """A snapshot-shaped 834 view: families of one to four, one health line each, synthetic values."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"E{i:08d}" for i in range(members)], dtype=object)
    family = np.minimum(rng.integers(1, 5, members), 4).cumsum()
    head = np.r_[0, family[:-1]]
    sub_idx = np.searchsorted(head, np.arange(members), side="right") - 1
    subscriber = ids[np.clip(sub_idx, 0, members - 1)]
    is_sub = subscriber == ids
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    names = ["".join(w) for w in letters[rng.integers(0, 26, (members, 7))]]
    return pd.DataFrame({
        "member_id": ids, "subscriber_id": subscriber,
        "ins01": np.where(is_sub, "Y", "N"), "ins02": np.where(is_sub, "18", "19"),
        "last_name": names, "first_name": names[::-1], "middle_initial": "",
        "ssn": [f"{n:09d}" for n in rng.integers(100_000_000, 899_999_999, members)],
        "dob": [f"{y}{m:02d}{d:02d}" for y, m, d in zip(rng.integers(1950, 2020, members),
                                                         rng.integers(1, 13, members),
                                                         rng.integers(1, 29, members), strict=True)],
        "gender": rng.choice(["M", "F", "U"], members), "address1": "1 MAIN ST", "address2": "",
        "city": "BURLINGTON", "state": "VT", "zip": "05401", "employment_status": np.where(is_sub, "FT", ""),
        "hd03": "HLT", "hd04": rng.choice(["HDHP SILVER", "PPO GOLD"], members),
        "hd05": rng.choice(["EMP", "FAM", "ESP"], members), "coverage_start": "20250101", "coverage_end": "",
    }).astype(object)


def carrier_834(snapshot: pd.DataFrame, seed: int = 2) -> bytes:
    from carrierfeeds.config import load_mapping
    from carrierfeeds.enrollment import Enrollment
    from carrierfeeds.x12.envelope import ControlNumbers, TransactionHeader
    from carrierfeeds.x12.render import render_834_bytes

    root = Path(__file__).resolve().parents[1]
    mapping = load_mapping(root / "mappings" / "sunrise-health.yaml")
    rng = np.random.default_rng(seed)
    n = len(snapshot)
    k = max(1, n // 1000)
    pick = rng.choice(n, 3 * k, replace=False)
    table = snapshot.drop(index=pick[:k]).copy()
    table.loc[table.index.isin(pick[k:2 * k]), "hd04"] = "EPO BRONZE"
    table.loc[table.index.isin(pick[2 * k:]), "coverage_start"] = "20250201"
    table["ins03"], table["ins04"], table["hd01"] = "030", "", "030"
    table = table.reset_index(drop=True)
    view = Enrollment(table=table, member_count=len(table), subscriber_count=int((table["ins01"] == "Y").sum()),
                      coverage_count=len(table), allowlist=mapping.allowlist)
    header = TransactionHeader(ids=mapping.envelope, created=datetime(2026, 12, 1, tzinfo=UTC), reference="B1",
                               sponsor=mapping.payer, payer=mapping.payer)
    return render_834_bytes(view, header, ControlNumbers(isa13=1, gs06=1, st02=1))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(work: Path, what: str) -> dict[str, Any]:
    """One side in this (fresh) process: ``primitives`` or ``reconcile``; times and this process's peak RSS."""
    from carrierfeeds.census.tokens import MemberTokenizer

    out: dict[str, Any] = {}
    if what == "primitives":
        import pyarrow.parquet as pq

        from carrierfeeds.x12.read import read_834

        t0 = time.perf_counter()
        read_834((work / "carrier.834").read_bytes())
        t1 = time.perf_counter()
        pq.read_table(work / "snapshot.parquet")
        t2 = time.perf_counter()
        out = {"read_834_s": t1 - t0, "pyarrow_s": t2 - t1, "total_s": t2 - t0}
    else:
        from carrierfeeds.reconcile.compare import compare_rosters
        from carrierfeeds.reconcile.readers import read_return_file
        from carrierfeeds.reconcile.roster import roster_from_view

        tokenizer = MemberTokenizer(b"b" * 32)
        t0 = time.perf_counter()
        carrier = read_return_file(work / "carrier.834", fmt="834", tokenizer=tokenizer, max_bytes=1 << 34)
        t1 = time.perf_counter()
        rss_read = _rss_mb()
        import pyarrow.parquet as pq

        from carrierfeeds.reconcile.roster import ROSTER_VIEW_COLUMNS

        # As SnapshotStore.load(columns=...) reads it: only the columns a roster needs.
        names = [c for c in ROSTER_VIEW_COLUMNS if c in pq.read_schema(work / "snapshot.parquet").names]
        import pyarrow as pa

        table = pq.read_table(work / "snapshot.parquet", columns=names)
        table = table.cast(pa.schema([(name, pa.string()) for name in table.column_names]))
        snapshot = table.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)
        del table
        expected = roster_from_view(snapshot, tokenizer, source="snapshot")
        del snapshot
        t2 = time.perf_counter()
        rss_expected = _rss_mb()
        found = compare_rosters(expected, carrier, as_of=AS_OF)
        t3 = time.perf_counter()
        # ru_maxrss only grows: the peak so far after each stage says which stage set it.
        out = {"read_carrier_roster_s": t1 - t0, "expected_roster_s": t2 - t1, "compare_s": t3 - t2,
               "total_s": t3 - t0, "discrepancies": len(found), "peak_rss_after_read_carrier_mb": rss_read,
               "peak_rss_after_expected_mb": rss_expected}
    rounded = {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}
    return rounded | {"peak_rss_mb": round(_rss_mb(), 1)}


def _generate(work: Path, members: int) -> None:
    snapshot = make_snapshot(members)
    buf = io.BytesIO()
    snapshot.to_parquet(buf, index=False)
    (work / "snapshot.parquet").write_bytes(buf.getvalue())
    (work / "carrier.834").write_bytes(carrier_834(snapshot))


def _child(work: Path, *args: str) -> str:
    """``python -m benchmarks.reconcile ARGS`` in a fresh process importing this carrierfeeds; its stdout."""
    import os
    import subprocess
    import sys

    import carrierfeeds

    # The children import the same carrierfeeds and benchmarks as this process, whatever is installed.
    src = str(Path(carrierfeeds.__file__).resolve().parents[1])
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "benchmarks.reconcile", *args], check=True, capture_output=True,
                          text=True, env=env, cwd=root)
    return done.stdout


def run_once(work: Path) -> dict[str, Any]:
    """Each side in its own fresh process, so each peak RSS is that side's alone."""
    sides = {}
    for what in ("primitives", "reconcile"):
        sides[what] = json.loads(_child(work, "--measure", str(work), what))
    p, r = sides["primitives"], sides["reconcile"]
    return {"primitives": p, "reconcile": r, "ratio": round(r["total_s"] / p["total_s"], 2),
            "discrepancies": r["discrepancies"], "reconcile_peak_rss_mb": r["peak_rss_mb"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None, help="folder for the generated files (default: temp)")
    parser.add_argument("--out", type=Path, default=None, help="folder to write a JSON result into")
    parser.add_argument("--measure", nargs=2, metavar=("WORK", "SIDE"), help=argparse.SUPPRESS)
    parser.add_argument("--generate", nargs=2, metavar=("WORK", "MEMBERS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        measured = _measure(Path(args.measure[0]), args.measure[1])
        print(json.dumps(measured))
        return measured
    if args.generate:
        _generate(Path(args.generate[0]), int(args.generate[1]))
        return {}
    import tempfile

    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        # In a child of its own: a child's ru_maxrss starts from its parent's high-water mark (fork copies
        # it), so a parent that generated the files (GBs) would lift every measured peak to its own.
        _child(work, "--generate", str(work), str(args.members))
        runs = [run_once(work) for _ in range(max(1, args.repeat))]
    result = {"members": args.members, "runs": runs, "ratio_median": statistics.median(r["ratio"] for r in runs),
              "reconcile_peak_rss_mb": max(r["reconcile_peak_rss_mb"] for r in runs)}
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"reconcile-{args.members}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
