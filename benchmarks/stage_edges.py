"""The 1M run's edge stages alone: stage_census, conformance (with gpg ahead), encrypt, deliver, confirm.

    python -m benchmarks.stage_edges --members 1000000 --rounds 3 [--census PATH] [--stages ...]

One census (generated once, or ``--census``) is staged into a fresh run ``--rounds`` times; the first
round also validates and builds, and every later round's conformance, encrypt, deliver and confirm run
on a copy of that round's run (its state and files: ``--stages`` picks which). Each stage records its
wall seconds, this process's user and kernel CPU, its children's CPU (gpg, the pyx12 child, ssh) and
the load average before it. Run it from one tree, then another, alternately: the figures of one
invocation are a pair only with those of the next. No assertion on time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.e2e import DAY, bench_workspace, generate_census_file, load_average

log = logging.getLogger(__name__)

EDGES = ("stage_census", "conformance", "encrypt", "deliver", "confirm")


def _cpu() -> dict[str, float]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"user": me.ru_utime, "sys": me.ru_stime, "children": kids.ru_utime + kids.ru_stime}


def measured(fn: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    from carrierfeeds.run.context import release_memory

    release_memory()
    load = load_average()[0]
    before, start = _cpu(), time.perf_counter()
    value = fn()
    wall = time.perf_counter() - start
    after = _cpu()
    return value, {"wall": round(wall, 3), "load": load, **{k: round(after[k] - before[k], 3) for k in after}}


def one_round(census: Path, work: Path, keys: Any, sshd: Any, stages: tuple[str, ...]) -> dict[str, Any]:
    from carrierfeeds import run

    ws = bench_workspace(work, keys, sshd)
    staged = ws.inbound / "census_bench.csv"
    os.link(census, staged)

    def clock() -> datetime:
        return datetime(2026, 11, 21, 7, 0, tzinfo=UTC)

    ctx = run.open_run(ws.settings, run.RunRef.for_day(ws.feed.feed_id, DAY), clock=clock, actor="benchmark")
    out: dict[str, Any] = {}
    for name, fn in (("stage_census", lambda: run.stage_census(ctx, staged)), ("validate", lambda: run.validate(ctx)),
                     ("build", lambda: run.build(ctx)), ("conformance", lambda: run.conformance(ctx)),
                     ("encrypt", lambda: run.encrypt(ctx)), ("deliver", lambda: run.deliver(ctx)),
                     ("confirm", lambda: run.confirm(ctx))):
        _, out[name] = measured(fn)
        if name == "build":
            plain = ctx.run_dir / ctx.state().build.file_name
            out["payload_sha256"] = _sha256(plain)
        if name not in EDGES:
            out.pop(name)
        if name == "stage_census" and stages == ("stage_census",):
            break
    ctx.ledger.close()
    return out


def _sha256(path: Path) -> str:
    from carrierfeeds.files import sha256_file

    return sha256_file(path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--census", type=Path, default=None, help="a census generated earlier (kept)")
    parser.add_argument("--stages", choices=("stage_census", "all"), default="all",
                        help="stage_census: stage the census only; all: the whole run, the edges timed")
    parser.add_argument("--out", type=Path, default=None, help="a JSON file to append this invocation to")
    args = parser.parse_args(argv)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import carrierfeeds
    from carrierfeeds.testing.gpg import make_keyring
    from carrierfeeds.testing.sshd import running_sshd

    stages = ("stage_census",) if args.stages == "stage_census" else EDGES
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cf-edges-") as tmp:
        base = Path(tmp)
        census = args.census
        if census is None:
            census = base / "census.csv"
            generate_census_file(args.members, args.seed, census)
        keys = make_keyring(base / "gnupg")
        try:
            with running_sshd(base / "sshd") as sshd:
                for i in range(args.rounds):
                    work = base / f"round{i}"
                    work.mkdir()
                    rounds.append(one_round(census, work, keys, sshd, stages))
                    shutil.rmtree(work, ignore_errors=True)
        finally:
            keys.stop_agents()
    result = {"tree": str(Path(carrierfeeds.__file__).parents[2]), "members": args.members,
              "at": datetime.now(UTC).isoformat(timespec="seconds"), "rounds": rounds}
    if args.out is not None:
        with args.out.open("a") as fh:
            fh.write(json.dumps(result) + "\n")
    sys.stdout.write(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
