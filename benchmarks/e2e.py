"""End-to-end benchmark: the real pipeline on N members against the primitives it is made of.

    python -m benchmarks.e2e --members 100000 [--repeat 3] [--out benchmarks/results]

Runs every stage for real (read + GX validation, build, 834 render, conformance gate, gpg, SFTP to a
loopback OpenSSH sshd, ledger) and, in the same run and on the same files, the primitives that bound
it from below: pyarrow reading the census, writing the 834's bytes, `gpg --encrypt` on the command
line, OpenSSH's own `sftp` uploading the ciphertext. Prints wall time per stage, peak RSS, members/s,
and the ratio pipeline / primitives. Medians of --repeat runs. No assertion on time anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DAY = date(2026, 11, 20)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_pipeline_once(members: int, seed: int, work: Path, keys: Any, sshd: Any) -> dict[str, Any]:
    """One full run in a fresh workspace; per-stage seconds and the artifacts' paths and sizes."""
    from carrierfeeds import pipeline
    from carrierfeeds.census.generate import generate_census, write_census_csv
    from carrierfeeds.config import SftpDelivery
    from carrierfeeds.demo import CONNECTION_ID, prepare_workspace

    inbox = sshd.root / work.name
    inbox.mkdir()
    keys_dir = work / "keys"
    sshd.write_keys_dir(keys_dir, CONNECTION_ID)
    ws = prepare_workspace(work / "ws", keys=keys, keys_dir=keys_dir, config_root=ROOT,
                           delivery=SftpDelivery(connection_id=CONNECTION_ID, remote_dir=str(inbox)))
    census = ws.inbound / "census_bench.csv"
    gen_s, frame = _timed(lambda: generate_census(members, seed, as_of=DAY))
    write_census_csv(frame, census)
    rows = len(frame)
    del frame

    def clock() -> datetime:
        return datetime(2026, 11, 21, 7, 0, tzinfo=UTC)

    ctx = pipeline.open_run(ws.settings, pipeline.RunRef.for_day(ws.feed.feed_id, DAY), clock=clock,
                            actor="benchmark")
    stages: dict[str, float] = {}
    stages["stage_census"], _ = _timed(lambda: pipeline.stage_census(ctx, census))
    stages["validate"], _ = _timed(lambda: pipeline.validate(ctx))
    stages["build"], built = _timed(lambda: pipeline.build(ctx))
    state = ctx.state()
    plain = ctx.run_dir / state["file_name"]
    keep = work / "payload.834"
    os.link(plain, keep)  # for the primitives: the same bytes the pipeline rendered
    stages["conformance"], _ = _timed(lambda: pipeline.conformance(ctx))
    stages["encrypt"], _ = _timed(lambda: pipeline.encrypt(ctx))
    cipher = ctx.run_dir / ctx.state()["cipher_name"]
    keep_cipher = work / "payload.834.pgp"
    os.link(cipher, keep_cipher)
    stages["deliver"], _ = _timed(lambda: pipeline.deliver(ctx))
    stages["confirm"], _ = _timed(lambda: pipeline.confirm(ctx))
    ctx.ledger.close()
    return {"stages": stages, "generate_s": gen_s, "rows": rows, "members": built["members"],
            "census": census, "payload": keep, "cipher": keep_cipher, "payload_bytes": keep.stat().st_size,
            "cipher_bytes": keep_cipher.stat().st_size, "keys": keys}


def run_primitives(census: Path, payload: Path, cipher: Path, keys: Any, sshd: Any, work: Path) -> dict[str, float]:
    """The floor: what the machine's own tools take for the same bytes."""
    import pyarrow.csv as pacsv

    out: dict[str, float] = {}
    out["read_census_pyarrow"], _ = _timed(lambda: pacsv.read_csv(
        census, convert_options=pacsv.ConvertOptions(column_types={}, strings_can_be_null=False)))
    data = payload.read_bytes()
    target = work / "written.834"

    def write() -> None:
        with target.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    out["write_834_bytes"], _ = _timed(write)
    gpg_out = work / "cli.pgp"
    out["gpg_encrypt_cli"], _ = _timed(lambda: subprocess.run(
        ["gpg", "--homedir", str(keys.ours.home), "--batch", "--yes", "--trust-model", "always", "-z", "1",
         "--recipient", keys.carrier_fingerprint, "--output", str(gpg_out), "--encrypt", str(payload)],
        check=True, capture_output=True))
    endpoint = sshd.endpoint()
    known = work / "known_hosts"
    known.write_text(endpoint.known_hosts)
    dest = sshd.root / work.name / "openssh-sftp.bin"
    batch = work / "batch"
    batch.write_text(f"put {cipher} {dest}\n")
    out["openssh_sftp_upload"], _ = _timed(lambda: subprocess.run(
        ["sftp", "-q", "-b", str(batch), "-P", str(endpoint.port), "-i", str(endpoint.private_key_path),
         "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
         f"{endpoint.username}@{endpoint.host}"], check=True, capture_output=True))
    return out


def machine() -> dict[str, Any]:
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"cores": os.cpu_count(), "memory_gb": round(mem_kb / 1024 / 1024, 1),
            "python": platform.python_version(), "platform": platform.platform()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="folder for <date>-<machine>.json results")
    args = parser.parse_args(argv)

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    from carrierfeeds.testing.gpg import make_keyring
    from carrierfeeds.testing.sshd import running_sshd

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cf-bench-") as tmp:
        base = Path(tmp)
        keys = make_keyring(base / "gnupg")
        with running_sshd(base / "sshd") as sshd:
            for i in range(args.repeat):
                work = base / f"run{i}"
                work.mkdir()
                run = run_pipeline_once(args.members, args.seed, work, keys, sshd)
                run["primitives"] = run_primitives(run["census"], run["payload"], run["cipher"], keys, sshd, work)
                runs.append(run)

    def med(values: list[float]) -> float:
        return round(statistics.median(values), 3)

    stage_names = list(runs[0]["stages"])
    stages = {name: med([r["stages"][name] for r in runs]) for name in stage_names}
    prims = {name: med([r["primitives"][name] for r in runs]) for name in runs[0]["primitives"]}
    total = round(sum(stages.values()), 3)
    floor = round(sum(prims.values()), 3)
    result = {
        "date": datetime.now(UTC).date().isoformat(), "machine": machine(), "members": runs[0]["members"],
        "census_rows": runs[0]["rows"], "repeat": args.repeat, "stages_s": stages, "pipeline_s": total,
        "primitives_s": prims, "primitives_total_s": floor,
        "ratio_pipeline_to_primitives": round(total / floor, 2) if floor else None,
        "members_per_s": round(runs[0]["members"] / total) if total else None,
        "payload_mb_per_s": round(runs[0]["payload_bytes"] / 1e6 / total, 2) if total else None,
        "payload_bytes": runs[0]["payload_bytes"], "cipher_bytes": runs[0]["cipher_bytes"],
        "peak_rss_mb": round(_peak_rss_mb(), 1), "generate_census_s": med([r["generate_s"] for r in runs]),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        name = f"{result['date']}-{platform.node() or 'machine'}-e2e-{args.members}.json"
        (args.out / name).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
