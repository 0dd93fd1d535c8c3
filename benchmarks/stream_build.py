"""The build stage alone, main's tree against this one, each in a fresh process, interleaved.

    python -m benchmarks.stream_build --members 1000000 --rounds 3 --main /work/main/src

One workspace (the demo feed, a generated census of ``--members`` members, seed ``--seed``) is staged
and validated once in a child process; its accepted file is then kept twice: as validate writes it
today (one Arrow IPC file: what main's build reads) and as family-whole chunks of ``--families``
families (an Arrow IPC stream, as the streaming validate will write it; cut here by the test helper
``tests.census.chunked_accepted`` until that writer lands). Each round runs main's build over the
first, then this tree's over the second, each in its own process under the same run (a rerun of build
renders the same bytes), and records its wall and CPU seconds, peak RSS (``ru_maxrss``), the load
average and the 834's sha256, which must be equal on both sides. Results go to
``benchmarks/results/<date>-stream-build.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DAY = date(2026, 11, 20)

_SETUP = """
import json, sys
from datetime import UTC, date, datetime
from pathlib import Path
from carrierfeeds import run
from carrierfeeds.census.accepted import read_accepted
from carrierfeeds.census.generate import generate_census, write_census_csv
from carrierfeeds.config import SftpDelivery
from carrierfeeds.demo import CONNECTION_ID, prepare_workspace
from carrierfeeds.run.context import ACCEPTED
from carrierfeeds.testing.gpg import make_keyring
from tests.census.chunked_accepted import write_chunked

members, seed = int(sys.argv[1]), int(sys.argv[2])
families = [int(a) for a in sys.argv[3].split(",")]
work, root = Path(sys.argv[4]), Path(sys.argv[5])
keys = make_keyring(work / "gnupg")
ws = prepare_workspace(work / "ws", keys=keys, keys_dir=work / "keys", config_root=root,
                       delivery=SftpDelivery(connection_id=CONNECTION_ID, remote_dir="/inbox"))
census = ws.inbound / "census_bench.csv"
write_census_csv(generate_census(members, seed, as_of=date(2026, 11, 20)), census)
ctx = run.open_run(ws.settings, run.RunRef.for_day(ws.feed.feed_id, date(2026, 11, 20)),
                   clock=lambda: datetime(2026, 11, 21, 7, 0, tzinfo=UTC), actor="benchmark")
run.stage_census(ctx, census)
run.validate(ctx)
accepted = ctx.fetch(ACCEPTED)
(work / "accepted.whole.arrow").write_bytes(accepted.read_bytes())
frame = read_accepted(accepted)
chunks = {n: len(write_chunked(work / f"accepted.chunked-{n}.arrow", frame, n)) for n in families}
keys.stop_agents()
json.dump({"settings": ws.settings.model_dump(mode="json"), "feed_id": ws.feed.feed_id, "chunks": chunks,
           "run_dir": str(ctx.run_dir)}, sys.stdout)
"""

_BUILD = """
import hashlib, json, os, resource, sys, time
from datetime import UTC, date, datetime
from pathlib import Path
from carrierfeeds import run
from carrierfeeds.run.context import ACCEPTED
from carrierfeeds.settings import Settings

setup, accepted = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
settings = Settings(**setup["settings"])
ctx = run.open_run(settings, run.RunRef.for_day(setup["feed_id"], date(2026, 11, 20)),
                   clock=lambda: datetime(2026, 11, 21, 7, 0, tzinfo=UTC), actor="benchmark")
local = ctx.run_dir / ACCEPTED
local.unlink(missing_ok=True)
os.link(accepted, local)
before = resource.getrusage(resource.RUSAGE_SELF)
rss_before = before.ru_maxrss
start = time.perf_counter()
run.build(ctx)
wall = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF)
built = ctx.state().build
digest = hashlib.sha256((ctx.run_dir / built.file_name).read_bytes()).hexdigest()
json.dump({"wall_s": round(wall, 3), "user_s": round(after.ru_utime - before.ru_utime, 3),
           "sys_s": round(after.ru_stime - before.ru_stime, 3), "peak_rss_mb": round(after.ru_maxrss / 1024, 1),
           "rss_before_mb": round(rss_before / 1024, 1), "sha256": digest, "members": built.counts["members"]},
          sys.stdout)
"""


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _child(code: str, args: list[str], pythonpath: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    proc = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True, env=env)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--families", type=int, nargs="+", default=[100_000],
                        help="families per chunk of a chunked file (several: one file and one run each)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--main", type=Path, required=True, help="main's src folder (the baseline's code)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    here = f"{ROOT / 'src'}{os.pathsep}{ROOT}"
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cf-stream-build-") as tmp:
        work = Path(tmp)
        setup = _child(_SETUP, [str(args.members), str(args.seed), ",".join(map(str, args.families)), str(work),
                                str(ROOT)], here)
        (work / "setup.json").write_text(json.dumps(setup))
        for k in range(1, args.rounds + 1):
            sides = [("main", work / "accepted.whole.arrow", str(args.main)),
                     *((f"chunked-{n}", work / f"accepted.chunked-{n}.arrow", here) for n in args.families)]
            for side, path, code in sides:
                load = _load()
                result = _child(_BUILD, [str(work / "setup.json"), str(path)], code)
                row = {"round": k, "side": side, "load_before": load, "load_after": _load(), **result}
                rows.append(row)
                print(json.dumps(row), flush=True)
        shutil.rmtree(work / "ws", ignore_errors=True)
    shas = {r["sha256"] for r in rows}
    summary = {"members": args.members, "seed": args.seed, "families_per_chunk": args.families,
               "chunks": setup["chunks"], "runs": rows, "sha256": sorted(shas), "identical": len(shas) == 1,
               "at": datetime.now(tz=UTC).isoformat(timespec="seconds")}
    out = args.out or ROOT / "benchmarks" / "results" / f"{date.today().isoformat()}-stream-build.json"  # noqa: DTZ011
    out.parent.mkdir(parents=True, exist_ok=True)
    key = f"stream-build-{args.members}-{'-'.join(map(str, args.families))}"
    existing = json.loads(out.read_text()) if out.exists() else {}
    existing[key] = summary
    out.write_text(json.dumps(existing, indent=1))
    return summary


if __name__ == "__main__":
    main()
