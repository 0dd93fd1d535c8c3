"""DAG parse benchmark: the dags/ folder with N generated feed files, as Airflow's DAG processor sees it.

    python -m benchmarks.dag_parse --feeds 500 [--repeat 3] [--out benchmarks/results]

Writes N feed files (copies of the demo feed with their own ids) into a temporary feeds folder and, in
a fresh interpreter with its own AIRFLOW_HOME (Airflow reads its configuration once per process),
measures: a full ``DagBag`` fill of ``dags/`` (what the DAG processor does; it must stay well inside
``[core] dagbag_import_timeout``, 30 s by default), the single-DAG build a task run does (the DAG file
run again with ``get_parsing_context()`` naming one DAG), and the primitives bounding it from below:
importing Airflow and carrierfeeds, and loading the N feed files without building DAGs. Prints the
figures as JSON; medians of --repeat. No assertion on time anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]

_MEASURE = """
import json, os, runpy, statistics, sys, time
from pathlib import Path

t0 = time.perf_counter()
import airflow.sdk  # noqa: F401
from airflow.dag_processing.dagbag import DagBag
import carrierfeeds.airflow  # noqa: F401
import_s = time.perf_counter() - t0

repeat, dags_folder, feeds_dir, one = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]
fill, single, load = [], [], []
for _ in range(repeat):
    t = time.perf_counter()
    bag = DagBag(dag_folder=dags_folder)
    fill.append(time.perf_counter() - t)
    errors = {k: str(v)[:200] for k, v in bag.import_errors.items()}
    dag_count = len(bag.dags)

    os.environ["_AIRFLOW_PARSING_CONTEXT_DAG_ID"] = one
    t = time.perf_counter()
    module = runpy.run_path(os.path.join(dags_folder, "carrierfeeds_dags.py"))
    single.append(time.perf_counter() - t)
    del os.environ["_AIRFLOW_PARSING_CONTEXT_DAG_ID"]
    built = sorted(k for k, v in module.items() if type(v).__name__ == "DAG")

    from carrierfeeds.config import load_feed
    t = time.perf_counter()
    for path in sorted(feeds_dir.glob("*.yaml")):
        load_feed(path)
    load.append(time.perf_counter() - t)

med = lambda xs: round(statistics.median(xs), 3)
print("RESULT " + json.dumps({"import_s": round(import_s, 3), "dagbag_fill_s": med(fill),
                              "single_dag_build_s": med(single), "load_feed_files_s": med(load),
                              "dags": dag_count, "single_built": built, "import_errors": errors}))
"""


def write_feeds(feeds_dir: Path, count: int) -> list[str]:
    """``count`` feed files derived from the shipped demo feed; returns their ids."""
    template = yaml.safe_load((ROOT / "feeds" / "acme-sunrise-medical.yaml").read_text())
    feeds_dir.mkdir(parents=True, exist_ok=True)
    ids = []
    for n in range(count):
        feed_id = f"bench-employer-{n:04d}"
        data = {**template, "feed_id": feed_id,
                "employer": {**template["employer"], "id": f"employer-{n:04d}", "name": f"BENCH EMPLOYER {n}"},
                "schedule": f"{n % 60} {n % 6} * * *"}
        (feeds_dir / f"{feed_id}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        ids.append(feed_id)
    return ids


def measure(feeds: int, repeat: int, work: Path) -> dict[str, Any]:
    feeds_dir = work / "feeds"
    ids = write_feeds(feeds_dir, feeds)
    home = work / "airflow-home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CARRIERFEEDS_"))}
    env.update({
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"), "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "CARRIERFEEDS_FEEDS_DIR": str(feeds_dir), "GX_ANALYTICS_ENABLED": "False",
    })
    one = f"feed__{ids[len(ids) // 2]}"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_MEASURE), str(repeat), str(ROOT / "dags"),
                           str(feeds_dir), one], env=env, cwd=work, capture_output=True, text=True, timeout=1800)
    marker = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not marker:
        raise RuntimeError(f"measurement failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(marker[-1][len("RESULT "):])
    result["single_dag_id"] = one
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="folder for <date>-<machine>.json results")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cf-dagparse-") as tmp:
        raw = measure(args.feeds, args.repeat, Path(tmp))
    fill = raw["dagbag_fill_s"]
    result = {
        "date": datetime.now(UTC).date().isoformat(), "machine": platform.platform(), "cpus": os.cpu_count(),
        "feeds": args.feeds, "repeat": args.repeat, "dags": raw["dags"],
        "dagbag_fill_s": fill, "per_feed_ms": round(fill / args.feeds * 1000, 2) if args.feeds else None,
        "single_dag_build_s": raw["single_dag_build_s"], "single_dag_id": raw["single_dag_id"],
        "single_built": raw["single_built"], "import_airflow_and_carrierfeeds_s": raw["import_s"],
        "load_feed_files_s": raw["load_feed_files_s"],
        "ratio_fill_to_loading_feeds": round(fill / raw["load_feed_files_s"], 2) if raw["load_feed_files_s"] else None,
        "import_errors": raw["import_errors"],
    }
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    if args.out:
        from benchmarks.e2e import machine, save_result

        save_result(args.out, f"dag_parse-{args.feeds}", {**result, "benchmark": "dag_parse",
                                                          "machine": machine()})
    return result


if __name__ == "__main__":
    main()
