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
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DAY = date(2026, 11, 20)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _hwm_mb() -> float | None:
    """This process's RSS high-water mark since the last reset (VmHWM), in MB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _cpu() -> dict[str, float]:
    """CPU seconds so far: this process in user and kernel mode, and its reaped children (gpg, the pyx12
    child, sftp) together. Kernel time is what page faults and page-cache writes cost; on a VM that
    hands freed memory back to its host it can exceed user time (see the README)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"user": me.ru_utime, "sys": me.ru_stime, "children": kids.ru_utime + kids.ru_stime}


_GENERATE = """
import sys
from datetime import date
from pathlib import Path
from carrierfeeds.census.generate import generate_census, write_census_csv
frame = generate_census(int(sys.argv[1]), int(sys.argv[2]), as_of=date.fromisoformat(sys.argv[3]))
write_census_csv(frame, Path(sys.argv[4]))
sys.stdout.write(str(len(frame)))
"""


def generate_census_file(members: int, seed: int, path: Path) -> int:
    """Write the project's synthetic census to ``path`` in a child process; its row count.

    A child process, so that the generator's memory never counts in the pipeline's peak RSS.
    """
    proc = subprocess.run([sys.executable, "-c", _GENERATE, str(members), str(seed), DAY.isoformat(), str(path)],
                          check=True, capture_output=True, text=True)
    return int(proc.stdout.strip())


def run_pipeline_once(members: int, seed: int, work: Path, keys: Any, sshd: Any) -> dict[str, Any]:
    """One full run in a fresh workspace; per-stage seconds and the artifacts' paths and sizes."""
    from carrierfeeds import run
    from carrierfeeds.config import SftpDelivery
    from carrierfeeds.demo import CONNECTION_ID, prepare_workspace
    from carrierfeeds.run.context import release_memory

    inbox = sshd.root / work.name
    inbox.mkdir()
    keys_dir = work / "keys"
    sshd.write_keys_dir(keys_dir, CONNECTION_ID)
    ws = prepare_workspace(work / "ws", keys=keys, keys_dir=keys_dir, config_root=ROOT,
                           delivery=SftpDelivery(connection_id=CONNECTION_ID, remote_dir=str(inbox)))
    census = ws.inbound / "census_bench.csv"
    gen_s, rows = _timed(lambda: generate_census_file(members, seed, census))

    def clock() -> datetime:
        return datetime(2026, 11, 21, 7, 0, tzinfo=UTC)

    ctx = run.open_run(ws.settings, run.RunRef.for_day(ws.feed.feed_id, DAY), clock=clock,
                            actor="benchmark")
    stages: dict[str, float] = {}
    stage_rss: dict[str, float | None] = {}
    stage_cpu: dict[str, dict[str, float]] = {}

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        # Each stage's own peak RSS: reset the high-water mark before it, read it after. Memory freed
        # but still pooled (the previous run's primitives read a whole census with pyarrow) is handed
        # back first, as the stage itself does at its start, so that it does not count as the stage's.
        release_memory()
        _reset_peak_rss()
        before = _cpu()
        stages[name], value = _timed(fn)
        stage_rss[name] = _hwm_mb()
        stage_cpu[name] = {k: round(v - before[k], 3) for k, v in _cpu().items()}
        return value

    stage("stage_census", lambda: run.stage_census(ctx, census))
    stage("validate", lambda: run.validate(ctx))
    built = stage("build", lambda: run.build(ctx))
    state = ctx.state()
    plain = ctx.run_dir / state["file_name"]
    keep = work / "payload.834"
    os.link(plain, keep)  # for the primitives: the same bytes the pipeline rendered
    stage("conformance", lambda: run.conformance(ctx))
    stage("encrypt", lambda: run.encrypt(ctx))
    cipher = ctx.run_dir / ctx.state()["cipher_name"]
    keep_cipher = work / "payload.834.pgp"
    os.link(cipher, keep_cipher)
    stage("deliver", lambda: run.deliver(ctx))
    stage("confirm", lambda: run.confirm(ctx))
    ctx.ledger.close()
    return {"stages": stages, "stage_peak_rss_mb": stage_rss, "stage_cpu_s": stage_cpu, "generate_s": gen_s,
            "rows": rows,
            "members": built["members"], "census": census, "payload": keep, "cipher": keep_cipher,
            "payload_bytes": keep.stat().st_size, "cipher_bytes": keep_cipher.stat().st_size, "keys": keys,
            "state": state, "clock": clock(), "bundle": ctx.bundle}


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


def results_path(folder: Path, day: str) -> Path:
    """``<folder>/<date>-<machine>.json``: every benchmark run that day on this machine, merged."""
    return folder / f"{day}-{machine_name()}.json"


def machine_name() -> str:
    info = machine()
    return f"{platform.node() or 'machine'}-{info['cores']}c-{round(info['memory_gb'])}g"


def save_result(folder: Path, key: str, result: dict[str, Any]) -> Path:
    """Merge ``result`` under ``key`` into the day's results file (other keys are kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = results_path(folder, result["date"])
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc["machine"] = result["machine"]
    doc.setdefault("runs", {})[key] = result
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--naive", choices=("auto", "always", "never"), default="auto",
                        help="run the naive baseline once, after the last run (auto: up to 100k members)")
    parser.add_argument("--out", type=Path, default=None, help="folder for <date>-<machine>.json results")
    args = parser.parse_args(argv)
    do_naive = args.naive == "always" or (args.naive == "auto" and args.members <= 100_000)

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    from carrierfeeds.testing.gpg import make_keyring
    from carrierfeeds.testing.sshd import running_sshd

    runs: list[dict[str, Any]] = []
    naive: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="cf-bench-") as tmp:
        base = Path(tmp)
        keys = make_keyring(base / "gnupg")
        try:
            with running_sshd(base / "sshd") as sshd:
                for i in range(args.repeat):
                    work = base / f"run{i}"
                    work.mkdir()
                    run = run_pipeline_once(args.members, args.seed, work, keys, sshd)
                    run["primitives"] = run_primitives(run["census"], run["payload"], run["cipher"], keys,
                                                       sshd, work)
                    if do_naive and i == args.repeat - 1:
                        # After the last run, so that both sides run with their libraries imported.
                        naive = _naive(run, keys, sshd, work)
                    runs.append(run)
        finally:
            keys.stop_agents()

    def med(values: list[float]) -> float:
        return round(statistics.median(values), 3)

    stage_names = list(runs[0]["stages"])
    stages = {name: med([r["stages"][name] for r in runs]) for name in stage_names}
    stage_rss = {name: max((r["stage_peak_rss_mb"][name] or 0.0) for r in runs) for name in stage_names}
    stage_cpu = {name: {k: med([r["stage_cpu_s"][name][k] for r in runs]) for k in runs[0]["stage_cpu_s"][name]}
                 for name in stage_names}
    prims = {name: med([r["primitives"][name] for r in runs]) for name in runs[0]["primitives"]}
    total = round(sum(stages.values()), 3)
    floor = round(sum(prims.values()), 3)
    ratios = [sum(r["stages"].values()) / sum(r["primitives"].values()) for r in runs]
    result: dict[str, Any] = {
        "benchmark": "e2e", "date": datetime.now(UTC).date().isoformat(), "machine": machine(),
        "members": runs[0]["members"],
        "census_rows": runs[0]["rows"], "repeat": args.repeat, "stages_s": stages, "pipeline_s": total,
        "primitives_s": prims, "primitives_total_s": floor,
        "ratio_pipeline_to_primitives": round(total / floor, 2) if floor else None,
        "ratio_per_run": [round(x, 2) for x in ratios],
        "members_per_s": round(runs[0]["members"] / total) if total else None,
        "payload_mb_per_s": round(runs[0]["payload_bytes"] / 1e6 / total, 2) if total else None,
        "payload_bytes": runs[0]["payload_bytes"], "cipher_bytes": runs[0]["cipher_bytes"],
        # The pipeline's peak: the largest stage high-water mark (census generation excluded).
        "peak_rss_mb": max(stage_rss.values()) if any(stage_rss.values()) else round(_peak_rss_mb(), 1),
        "stage_peak_rss_mb": stage_rss,
        # Medians per stage of CPU seconds: user, kernel (sys) and children (gpg, pyx12's child, sftp).
        "stage_cpu_s": stage_cpu,
        # ru_maxrss follows the per-stage resets of the high-water mark, so it alone would be the last
        # stage's peak: the process's peak is the larger of it and every stage's.
        "process_peak_rss_mb": round(max(_peak_rss_mb(), *(v or 0.0 for v in stage_rss.values())), 1),
        "generate_census_s": med([r["generate_s"] for r in runs]),
    }
    if naive is not None:
        result["naive"] = naive
    log.info("e2e benchmark result: %s", json.dumps(result))
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    if args.out:
        save_result(args.out, f"e2e-{args.members}", result)
    return result


def _naive(run: dict[str, Any], keys: Any, sshd: Any, work: Path) -> dict[str, Any]:
    """The naive baseline on this run's census; speed-up against this same run's pipeline."""
    from benchmarks.naive import run_naive

    endpoint = sshd.endpoint()
    result = run_naive(census=run["census"], bundle=run["bundle"], pipeline_payload=run["payload"],
                       state=run["state"], created=run["clock"], as_of=DAY, keys=keys, endpoint=endpoint,
                       remote_path=str(sshd.root / work.name / "naive.834.gpg"), work=work).as_dict()
    pipeline_s = sum(run["stages"].values())
    result["pipeline_s_same_run"] = round(pipeline_s, 3)
    # A speed-up over a baseline that sends different members is no speed-up: none is reported then.
    same = result["same_members"] and result["same_maintenance_codes"]
    if not same:
        log.error("naive baseline: its 834 holds different members or maintenance codes than the pipeline's")
    result["speedup"] = round(result["total_s"] / pipeline_s, 2) if pipeline_s and same else None
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
