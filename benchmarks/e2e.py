"""End-to-end benchmark: the real pipeline on N members against the primitives it is made of.

    python -m benchmarks.e2e --members 100000 [--repeat 3] [--warmup 1] [--out benchmarks/results]

Runs every stage for real (read + GX validation, build, 834 render, conformance gate, gpg, SFTP to a
loopback OpenSSH sshd, ledger) and, on the same files, the primitives that bound it from below: pyarrow
reading the census, writing the 834's bytes, `gpg --encrypt` on the command line, OpenSSH's own `sftp`
uploading the ciphertext. The two are interleaved (primitives, pipeline, primitives, pipeline, ...), so
that each pipeline run is divided by primitives measured moments before it, in the same machine state:
the ratio of each adjacent pair is reported, with the median and spread of those ratios. Every run
records the load average and the host's memory state (MemAvailable, Cached) before and after it, and
its peak RSS. A warm-up pipeline run (``--warmup 1``, the default) pays the imports and makes the bytes
the first primitives run uses; it is kept in the results but in no median. No assertion on time anywhere.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import resource
import shutil
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
from carrierfeeds.census.generate import generate_census_csv
rows = generate_census_csv(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[4]), as_of=date.fromisoformat(sys.argv[3]))
sys.stdout.write(str(rows))
"""


def generate_census_file(members: int, seed: int, path: Path) -> int:
    """Write the project's synthetic census to ``path`` in a child process; its row count.

    Up to a million members it is ``generate_census`` of that size; beyond, blocks of a million
    (``generate_census_csv``), so a 10M census is generated in the memory of one block. A child
    process, so that the generator's memory never counts in the pipeline's peak RSS.
    """
    proc = subprocess.run([sys.executable, "-c", _GENERATE, str(members), str(seed), DAY.isoformat(), str(path)],
                          check=True, capture_output=True, text=True)
    return int(proc.stdout.strip())


def bench_workspace(work: Path, keys: Any, sshd: Any) -> Any:
    """The demo feed in a workspace under ``work``, delivering to an inbox of its own on ``sshd``."""
    from carrierfeeds.config import SftpDelivery
    from carrierfeeds.demo import CONNECTION_ID, prepare_workspace

    inbox = sshd.root / work.name
    inbox.mkdir()
    keys_dir = work / "keys"
    sshd.write_keys_dir(keys_dir, CONNECTION_ID)
    return prepare_workspace(work / "ws", keys=keys, keys_dir=keys_dir, config_root=ROOT,
                             delivery=SftpDelivery(connection_id=CONNECTION_ID, remote_dir=str(inbox)))


def run_pipeline_once(members: int, seed: int, work: Path, keys: Any, sshd: Any,
                      source: Path | None = None) -> dict[str, Any]:
    """One full run in a fresh workspace; per-stage seconds and the artifacts' paths and sizes.

    ``source``: a census generated earlier for (members, seed), copied in instead of generated again.
    """
    from carrierfeeds import run
    from carrierfeeds.run.context import release_memory

    ws = bench_workspace(work, keys, sshd)
    census = ws.inbound / "census_bench.csv"
    if source is None:
        gen_s, rows = _timed(lambda: generate_census_file(members, seed, census))
    else:
        shutil.copyfile(source, census)
        gen_s, rows = 0.0, _count_rows(source)

    def clock() -> datetime:
        return datetime(2026, 11, 21, 7, 0, tzinfo=UTC)

    ctx = run.open_run(_settings_for(ws, census, work), run.RunRef.for_day(ws.feed.feed_id, DAY), clock=clock,
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
    state = ctx.state().as_flat()  # PHI-free, JSON-ready: kept in the results
    plain = ctx.run_dir / ctx.state().build.file_name
    keep = work / "payload.834"
    os.link(plain, keep)  # for the primitives: the same bytes the pipeline rendered
    stage("conformance", lambda: run.conformance(ctx))
    stage("encrypt", lambda: run.encrypt(ctx))
    cipher = ctx.run_dir / ctx.state().encryption.cipher_name
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


#: Above this size (bytes) the primitives read the census in batches and copy the 834 in blocks.
STREAM_PRIMITIVES_BYTES = 2 << 30


def _settings_for(ws: Any, census: Path, work: Path) -> Any:
    """The workspace's settings; for a census over the schema's size cap (1 GiB by default: a 10M census
    is 7 GB), a copy of the schemas in ``work`` whose cap lets this census in."""
    import yaml

    from carrierfeeds.config import load_schema

    schema_file = ws.settings.schemas_dir / f"{ws.feed.census.schema_id}.yaml"
    size = census.stat().st_size
    if size <= load_schema(schema_file).max_bytes:
        return ws.settings
    schemas = work / "schemas"
    shutil.copytree(ws.settings.schemas_dir, schemas)
    layout = yaml.safe_load(schema_file.read_text())
    layout["max_bytes"] = 2 * size
    (schemas / schema_file.name).write_text(yaml.safe_dump(layout, sort_keys=False))
    return ws.settings.model_copy(update={"schemas_dir": schemas})


def _count_rows(census: Path) -> int:
    """Data rows of a census CSV the generator wrote (no quoted newlines in it)."""
    with census.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b"")) - 1


def run_primitives(census: Path, payload: Path, cipher: Path, keys: Any, sshd: Any, work: Path) -> dict[str, float]:
    """The floor: what the machine's own tools take for the same bytes."""
    import pyarrow.csv as pacsv

    work.mkdir(parents=True, exist_ok=True)
    (sshd.root / work.name).mkdir(exist_ok=True)
    out: dict[str, float] = {}
    convert = pacsv.ConvertOptions(column_types={}, strings_can_be_null=False)
    if census.stat().st_size <= STREAM_PRIMITIVES_BYTES:
        out["read_census_pyarrow"], _ = _timed(lambda: pacsv.read_csv(census, convert_options=convert))
    else:
        # A census this large does not fit in memory as one table (10M members: about 13 GB), and the
        # pipeline reads it in batches: so does its floor, every batch parsed and let go.
        def read_batches() -> None:
            for _batch in pacsv.open_csv(census, convert_options=convert):
                pass

        out["read_census_pyarrow_stream"], _ = _timed(read_batches)
    target = work / "written.834"
    # The 834's bytes in memory before the clock starts, as the render has them; a 10M-member 834 (about
    # 2.4 GB) is copied in blocks instead.
    data = payload.read_bytes() if payload.stat().st_size <= STREAM_PRIMITIVES_BYTES else None

    def write() -> None:
        with target.open("wb") as fh:
            if data is not None:
                fh.write(data)
            else:
                with payload.open("rb") as src:
                    for block in iter(lambda: src.read(64 << 20), b""):
                        fh.write(block)
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


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def memory_state() -> dict[str, float]:
    """The host's MemAvailable and Cached, in MB (how much fresh memory a run may have to fault in)."""
    wanted = {"MemAvailable", "Cached"}
    out: dict[str, float] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in wanted:
            out[f"{key.lower()}_mb"] = round(int(rest.split()[0]) / 1024, 1)
    return out


def observed(fn: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """Run ``fn`` between two looks at the machine: load average, memory state, this process's peak RSS."""
    _reset_peak_rss()
    before = {"load_avg": load_average(), "memory": memory_state()}
    value = fn()
    after = {"load_avg": load_average(), "memory": memory_state()}
    return value, {"before": before, "after": after, "process_peak_rss_mb": _hwm_mb()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def spread(values: list[float]) -> dict[str, float | None]:
    """Median, extremes and standard deviation of ``values`` (rounded)."""
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3),
            "stdev": round(statistics.stdev(values), 3) if len(values) > 1 else None}


def interleaved_runs(args: argparse.Namespace, base: Path, keys: Any, sshd: Any,
                     do_naive: bool) -> tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, Any] | None]:
    """Warm-up (optional), then primitives and pipeline alternately: P1, E1, P2, E2, ...

    Each primitives run reads the census and the bytes the pipeline run before it made (the 834 is the
    same for the same census: its hash is recorded per run to show it). Without a warm-up the first
    pair runs the other way round (E1, P1), since the primitives need an 834 to write.
    Returns the pairs, the warm-up run and the naive baseline.
    """
    source = base / "census-source.csv"
    if args.census is not None:
        # Made earlier by `carrierfeeds generate-census --members N --seed S --as-of <DAY>` (a 10M census
        # takes minutes to generate): the same bytes this run would generate.
        if args.census.stat().st_dev == base.stat().st_dev:
            os.link(args.census, source)
        else:
            shutil.copyfile(args.census, source)
        gen_s = 0.0
    else:
        gen_s, _rows = _timed(lambda: generate_census_file(args.members, args.seed, source))
    warm: dict[str, Any] | None = None
    previous: dict[str, Any] | None = None
    if args.warmup:
        work = base / "warmup"
        work.mkdir()
        previous, watch = observed(lambda: run_pipeline_once(args.members, args.seed, work, keys, sshd, source))
        previous["work"] = work
        warm = {"pipeline_s": round(sum(previous["stages"].values()), 3),
                "stages_s": {k: round(v, 3) for k, v in previous["stages"].items()}, "machine_state": watch}
    runs: list[dict[str, Any]] = []
    naive: dict[str, Any] | None = None
    for i in range(args.repeat):
        work = base / f"run{i}"
        work.mkdir()
        prim_work = base / f"prim{i}"
        order: list[str] = []
        prim: dict[str, float] | None = None
        prim_watch: dict[str, Any] = {}
        stale: Path | None = None
        if previous is not None:
            prim, prim_watch = observed(lambda p=previous, w=prim_work: run_primitives(
                p["census"], p["payload"], p["cipher"], keys, sshd, w))
            order.append("primitives")
            stale = previous["work"]
        run, run_watch = observed(lambda w=work: run_pipeline_once(args.members, args.seed, w, keys, sshd, source))
        run["work"] = work
        order.append("pipeline")
        if stale is not None:
            # The earlier run's files served their primitives; at 10M members they are gigabytes.
            shutil.rmtree(stale, ignore_errors=True)
        if prim is None:
            prim, prim_watch = observed(lambda r=run, w=prim_work: run_primitives(
                r["census"], r["payload"], r["cipher"], keys, sshd, w))
            order.append("primitives")
        run["generate_s"] = gen_s
        run["primitives"] = prim
        run["order"] = order
        run["machine_state"] = {"pipeline": run_watch, "primitives": prim_watch}
        run["payload_sha256"] = _sha256(run["payload"])
        if do_naive and i == args.repeat - 1:
            # After the last run, so that both sides run with their libraries imported.
            naive = _naive(run, keys, sshd, work)
        runs.append(run)
        previous = run
    return runs, warm, naive


def per_run_record(run: dict[str, Any]) -> dict[str, Any]:
    """What the results file keeps of one pair: seconds, ratio, order, machine state, peaks, hash."""
    pipeline_s = sum(run["stages"].values())
    prims_s = sum(run["primitives"].values())
    stage_peaks = [v for v in run["stage_peak_rss_mb"].values() if v is not None]
    return {
        "order": run["order"], "pipeline_s": round(pipeline_s, 3), "primitives_total_s": round(prims_s, 3),
        "ratio": round(pipeline_s / prims_s, 3) if prims_s else None,
        "stages_s": {k: round(v, 3) for k, v in run["stages"].items()},
        "primitives_s": {k: round(v, 3) for k, v in run["primitives"].items()},
        "peak_rss_mb": {"pipeline": max(stage_peaks) if stage_peaks else None,
                        "primitives": run["machine_state"]["primitives"].get("process_peak_rss_mb")},
        "load_avg": {side: {"before": run["machine_state"][side]["before"]["load_avg"],
                            "after": run["machine_state"][side]["after"]["load_avg"]}
                     for side in ("primitives", "pipeline")},
        "memory_mb": {side: {"before": run["machine_state"][side]["before"]["memory"],
                             "after": run["machine_state"][side]["after"]["memory"]}
                      for side in ("primitives", "pipeline")},
        "payload_sha256": run["payload_sha256"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="pairs of (primitives, pipeline) runs")
    parser.add_argument("--warmup", type=int, choices=(0, 1), default=1,
                        help="a pipeline run first that pays the imports and counts in no median")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--census", type=Path, default=None,
                        help=f"a census generated earlier for --members and --seed (as of {DAY.isoformat()}) "
                             "instead of generating it")
    parser.add_argument("--naive", choices=("auto", "always", "never"), default="auto",
                        help="run the naive baseline once, after the last run (auto: up to 100k members)")
    parser.add_argument("--out", type=Path, default=None, help="folder for <date>-<machine>.json results")
    parser.add_argument("--key", default=None, help="key in the results file (default e2e-<members>)")
    args = parser.parse_args(argv)
    do_naive = args.naive == "always" or (args.naive == "auto" and args.members <= 100_000)

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    from carrierfeeds.testing.gpg import make_keyring
    from carrierfeeds.testing.sshd import running_sshd

    state_at_start = {"load_avg": load_average(), "memory": memory_state()}
    with tempfile.TemporaryDirectory(prefix="cf-bench-") as tmp:
        base = Path(tmp)
        keys = make_keyring(base / "gnupg")
        try:
            with running_sshd(base / "sshd") as sshd:
                runs, warm, naive = interleaved_runs(args, base, keys, sshd, do_naive)
        finally:
            keys.stop_agents()
    state_at_end = {"load_avg": load_average(), "memory": memory_state()}

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
    per_run = [per_run_record(r) for r in runs]
    ratios = [r["ratio"] for r in per_run if r["ratio"] is not None]
    loads = [r["load_avg"][side][when][0] for r in per_run for side in ("primitives", "pipeline")
             for when in ("before", "after")]
    result: dict[str, Any] = {
        "benchmark": "e2e", "date": datetime.now(UTC).date().isoformat(), "machine": machine(),
        "members": runs[0]["members"],
        "census_rows": runs[0]["rows"], "repeat": args.repeat, "stages_s": stages, "pipeline_s": total,
        "primitives_s": prims, "primitives_total_s": floor,
        # Median stage times over median primitives: kept for comparison with older rows; the pairs'
        # own ratios (below) are the honest figure, each taken in one machine state.
        "ratio_pipeline_to_primitives": round(total / floor, 2) if floor else None,
        "ratio_per_run": [round(x, 2) for x in ratios],
        "ratio_median": round(statistics.median(ratios), 2) if ratios else None,
        "ratio_spread": spread(ratios) if ratios else None,
        "interleaved": True,
        "runs": per_run,
        "warmup": warm,
        "machine_state": {"start": state_at_start, "end": state_at_end,
                          "max_load_avg_1m": max(loads) if loads else None},
        "payload_sha256": runs[0]["payload_sha256"],
        "payload_identical_across_runs": len({r["payload_sha256"] for r in runs}) == 1,
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
        save_result(args.out, args.key or f"e2e-{args.members}", result)
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
