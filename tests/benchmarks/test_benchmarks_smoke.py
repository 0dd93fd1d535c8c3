"""The benchmarks' smoke tests: each runs end to end at a small size, so it cannot rot. No timing asserted."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest


@pytest.mark.slow
def test_e2e_benchmark_runs_and_reports_every_stage_and_primitive(tmp_path: Path) -> None:
    from benchmarks.e2e import main

    result = main(["--members", "300", "--repeat", "1", "--naive", "never", "--out", str(tmp_path)])
    assert result["members"] > 0
    assert set(result["stages_s"]) == {"stage_census", "validate", "build", "conformance", "encrypt",
                                       "deliver", "confirm"}
    assert set(result["primitives_s"]) == {"read_census_pyarrow", "write_834_bytes", "gpg_encrypt_cli",
                                           "openssh_sftp_upload"}
    assert set(result["stage_peak_rss_mb"]) == set(result["stages_s"])
    assert set(result["stage_cpu_s"]) == set(result["stages_s"])
    assert all(set(cpu) == {"user", "sys", "children"} and min(cpu.values()) >= 0
               for cpu in result["stage_cpu_s"].values())
    # gpg runs as a child of the encrypt stage, so its CPU shows there and not as this process's.
    assert result["stage_cpu_s"]["encrypt"]["children"] > 0
    assert result["stage_cpu_s"]["validate"]["user"] > 0
    assert result["peak_rss_mb"] > 0
    assert result["ratio_pipeline_to_primitives"] > 0
    assert result["payload_bytes"] > 0 and result["cipher_bytes"] > 0
    assert "naive" not in result
    # Results land in <date>-<machine>.json, merged under the run's key, with the machine recorded.
    (saved,) = tmp_path.glob(f"{result['date']}-*.json")
    doc = json.loads(saved.read_text())
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["memory_gb"] > 0
    assert doc["runs"]["e2e-300"]["members"] == result["members"]


@pytest.mark.slow
@pytest.mark.parametrize("warmup", [1, 0])
def test_e2e_benchmark_interleaves_primitives_and_pipeline_and_keeps_every_pair(tmp_path: Path,
                                                                                 warmup: int) -> None:
    from benchmarks.e2e import main

    result = main(["--members", "60", "--repeat", "2", "--warmup", str(warmup), "--naive", "never",
                   "--out", str(tmp_path)])
    runs = result["runs"]
    assert len(runs) == 2 and result["interleaved"] is True
    # Primitives first in every pair, except the first pair without a warm-up (no 834 to write yet).
    first_order = ["primitives", "pipeline"] if warmup else ["pipeline", "primitives"]
    assert [r["order"] for r in runs] == [first_order, ["primitives", "pipeline"]]
    assert (result["warmup"] is not None) == bool(warmup)
    for run in runs:
        assert set(run["stages_s"]) == set(result["stages_s"])
        assert set(run["primitives_s"]) == set(result["primitives_s"])
        assert run["ratio"] == pytest.approx(run["pipeline_s"] / run["primitives_total_s"], rel=1e-2)
        assert run["peak_rss_mb"]["pipeline"] > 0 and run["peak_rss_mb"]["primitives"] > 0
        for side in ("primitives", "pipeline"):
            for when in ("before", "after"):
                assert len(run["load_avg"][side][when]) == 3
                assert set(run["memory_mb"][side][when]) == {"memavailable_mb", "cached_mb"}
                assert run["memory_mb"][side][when]["memavailable_mb"] > 0
    assert result["ratio_per_run"] == [round(r["ratio"], 2) for r in runs]
    assert set(result["ratio_spread"]) == {"median", "min", "max", "stdev"}
    assert result["ratio_spread"]["min"] <= result["ratio_median"] <= result["ratio_spread"]["max"]
    # The same census gives the same 834 in every run.
    assert result["payload_identical_across_runs"] is True
    assert {r["payload_sha256"] for r in runs} == {result["payload_sha256"]}
    assert len(result["machine_state"]["start"]["load_avg"]) == 3
    (saved,) = tmp_path.glob("*.json")
    kept = json.loads(saved.read_text())["runs"]["e2e-60"]
    assert [r["ratio"] for r in kept["runs"]] == [r["ratio"] for r in runs]


@pytest.mark.slow
def test_naive_baseline_produces_the_same_834_as_the_pipeline() -> None:
    from benchmarks.e2e import main
    from benchmarks.naive import NAIVE_STEPS

    result = main(["--members", "1000", "--repeat", "1", "--naive", "always"])
    naive = result["naive"]
    assert naive["identical"] is True
    assert naive["same_members"] is True and naive["same_maintenance_codes"] is True
    assert naive["members"] == naive["pipeline_members"] == result["members"]
    assert naive["payload_bytes"] == result["payload_bytes"]
    assert naive["pyx12_ok"] is True and naive["gx_success"] is True
    assert naive["pyx12_segments"] > naive["members"]
    assert tuple(naive["steps_s"]) == NAIVE_STEPS
    assert naive["speedup"] > 0


def test_count_members_counts_ins_segments_only() -> None:
    from benchmarks.naive import count_members

    isa = (b"ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *261121*0700*^*00501*"
           b"000000001*0*T*:~")
    assert len(isa) == 106
    body = b"\nGS*BE~\nINS*Y*18*030*XN*A~\nREF*0F*1~\nINS*N*19*030*XN*A~\nNM1*IL*1*INSIDE~\nIEA*1*1~"
    assert count_members(isa + body) == 2
    assert count_members(b"not an 834") == 0


def _834(*loops: bytes) -> bytes:
    isa = (b"ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *261121*0700*^*00501*"
           b"000000001*0*T*:~")
    return isa + b"\nGS*BE~\nST*834*0001~" + b"".join(loops) + b"\nSE*9*0001~\nGE*1*1~\nIEA*1*1~"


SUB = b"\nINS*Y*18*021*XN*A~\nREF*0F*S1~\nNM1*IL*1*ANY~"
DEP = b"\nINS*N*19*021*XN*A~\nREF*0F*S1~\nREF*23*D1~\nDMG*D8*20100101*F~"
OTHER = b"\nINS*Y*18*021*XN*A~\nREF*0F*S2~"


def test_member_codes_names_each_member_loop_by_its_ids_relationship_and_maintenance_code() -> None:
    from benchmarks.naive import member_codes

    codes = member_codes(_834(SUB, DEP, OTHER))
    assert codes == Counter({(b"S1", b"", b"18", b"021"): 1, (b"S1", b"D1", b"19", b"021"): 1,
                             (b"S2", b"", b"18", b"021"): 1})


def test_compare_members_tells_a_changed_code_from_a_missing_or_doubled_member() -> None:
    from benchmarks.naive import compare_members

    pipeline = _834(SUB, DEP, OTHER)
    assert compare_members(_834(SUB, DEP, OTHER), pipeline) == (True, True)
    # Same members in another order: still the same.
    assert compare_members(_834(OTHER, SUB, DEP), pipeline) == (True, True)
    # One member's maintenance code differs: same members, not the same codes.
    assert compare_members(_834(SUB, DEP.replace(b"*021*", b"*024*"), OTHER), pipeline) == (True, False)
    # A member missing, or sent twice: not the same members.
    assert compare_members(_834(SUB, OTHER), pipeline) == (False, False)
    assert compare_members(_834(SUB, DEP, DEP, OTHER), pipeline) == (False, False)


@pytest.mark.slow
def test_many_feeds_benchmark_runs_feeds_back_to_back_and_in_parallel(tmp_path: Path) -> None:
    from benchmarks.many_feeds import main

    result = main(["--feeds", "2", "--members", "50", "--workers", "2", "--out", str(tmp_path)])
    seq, par = result["runs"]["sequential"], result["runs"]["parallel"]
    assert seq["workers"] == 1 and par["workers"] == 2
    assert seq["feeds"] == par["feeds"] == 2
    assert seq["statuses"] == par["statuses"] == {"delivered": 2}
    assert result["parallel_speedup"] > 0
    (saved,) = tmp_path.glob("*.json")
    assert "many_feeds-2x50" in json.loads(saved.read_text())["runs"]


@pytest.mark.slow
@pytest.mark.airflow
@pytest.mark.postgres
def test_window_benchmark_runs_feeds_under_airflow_and_in_process_each_delivered_once(
        tmp_path: Path, pg_admin_url: str) -> None:
    from benchmarks.window import main

    result = main(["--feeds", "2", "--members", "50", "--executor", "local", "--parallelism", "2",
                   "--tasks", "three", "--pool", "3", "--pg-url", pg_admin_url, "--out", str(tmp_path)])
    (saved,) = tmp_path.glob("window-local-2x50-*.json")
    assert json.loads(saved.read_text())["benchmark"] == "window"
    assert result["benchmark"] == "window" and result["ok"] is True and result["problems"] == []
    assert (result["feeds"], result["members_per_feed"], result["parallelism"]) == (2, 50, 2)
    # Exactly once, each side: one delivery per feed in its ledger, one file per feed on the SFTP target.
    for side in ("airflow", "inprocess"):
        check = result["exactly_once"][side]
        assert check == {"ok": True, "feeds": 2, "files": 2, "delivered": 2, "problems": []}
    air, inproc = result["airflow"], result["inprocess"]
    assert air["runs"] == {"success": 2} and air["failed_runs"] == []
    # The default pool had the slots asked for (read back from Airflow's metadata).
    assert result["pool"] == 3 and air["default_pool_slots"] == 3
    assert inproc["statuses"] == {"delivered": 2} and len(inproc["feed_s"]) == 2
    # The three-task design's tasks, each with its queue-to-start and run time from Airflow's metadata.
    assert len(air["tasks"]) == 6
    assert {t["task_id"] for t in air["tasks"]} == {"intake", "build", "deliver"} == set(air["task_summary"])
    assert all(t["state"] == "success" and t["queued_to_start_s"] is not None and t["run_s"] is not None
               for t in air["tasks"])
    assert all(summary["run_s"]["n"] == 2 for summary in air["task_summary"].values())
    # Each task's own log had every mark, in order: Pre Execute (holding the DAG file's parse), the run's
    # setup, its stages, and the finish after them.
    for task in air["tasks"]:
        phases = task["phases"]
        assert all(phases[p] is not None for p in phases), task
        assert all(phases[p] >= 0 for p in ("pre_execute_s", "setup_s", "stages_s", "finish_s")), task
        assert 0 < phases["dag_file_parse_s"] <= phases["pre_execute_s"]
        assert task["phases"]["stages_s"] > 0 and "celery" not in task
    assert 0 < air["slots_busy"] <= 1
    assert air["task_s_per_feed"] == pytest.approx(sum(t["run_s"] for t in air["tasks"]) / 2, abs=0.01)
    for side in (air, inproc):
        assert side["feeds_per_hour"] > 0 and side["wall_s"] > 0
        assert side["cpu_s"] > 0 and side["peak_rss_mb"] > 0 and side["peak_pss_mb"] > 0
        for when in ("before", "after"):
            assert len(side["machine_state"][when]["load_avg"]) == 3
            assert set(side["machine_state"][when]["memory"]) == {"memavailable_mb", "cached_mb"}
    assert result["airflow_over_inprocess"] == pytest.approx(air["feeds_per_hour"] / inproc["feeds_per_hour"],
                                                             rel=1e-2)
    assert isinstance(result["loaded_machine"], bool)
    # Nothing it started outlives it: no process left with its temporary folder in its command line or
    # environment (Airflow's components have it as AIRFLOW_HOME).
    workdir = result["workdir"].encode()
    left = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if workdir in (proc / "cmdline").read_bytes() or workdir in (proc / "environ").read_bytes():
                    left.append(proc.name)
            except OSError:
                continue
    assert not left, f"processes left running: {left}"
    assert not Path(result["workdir"]).exists()


def test_pyx12_alone_benchmark_pairs_stock_and_fast_pyx12_on_one_file(tmp_path: Path) -> None:
    from benchmarks.pyx12_alone import main

    result = main(["--members", "20", "--repeat", "2", "--out", str(tmp_path)])
    assert result["speedups_refused"] is None and result["same_verdict"] is True and result["ok"] is True
    assert result["segments"] > 0 and len(result["fast_over_stock_cpu"]) == 2
    assert all(len(result["runs"][mode]) == 2 for mode in ("stock", "fast"))
    (saved,) = tmp_path.glob("*.json")
    assert "pyx12_alone-20" in json.loads(saved.read_text())["runs"]


@pytest.mark.slow
def test_many_feeds_benchmark_pairs_stock_and_fast_pyx12(tmp_path: Path) -> None:
    from benchmarks.many_feeds import main

    result = main(["--mode", "speedups", "--feeds", "2", "--members", "50", "--repeat", "1", "--out", str(tmp_path)])
    assert set(result["runs"]) == {"stock-0", "fast-0"}
    assert all(run["statuses"] == {"delivered": 2} for run in result["runs"].values())
    assert len(result["pyx12_fast_over_stock_warm"]) == 1 and result["pyx12_fast_over_stock_warm_median"] > 0
    (saved,) = tmp_path.glob("*.json")
    assert "many_feeds-2x50-pyx12-speedups" in json.loads(saved.read_text())["runs"]


@pytest.mark.slow
def test_feed_stages_benchmark_times_every_stage_of_warm_feeds(tmp_path: Path) -> None:
    from benchmarks.feed_stages import STAGES, main

    result = main(["--feeds", "2", "--members", "50", "--speedups", "1", "--out", str(tmp_path)])
    assert [f["status"] for f in result["per_feed"]] == ["delivered", "delivered"]
    assert set(result["warm_stage_wall_s"]) == set(result["warm_stage_cpu_s"]) == set(STAGES)
    assert result["warm_feed_wall_s"] > 0 and result["speedups"] == "1"
    (saved,) = tmp_path.glob("*.json")
    assert "feed_stages-2x50-speedups1" in json.loads(saved.read_text())["runs"]
