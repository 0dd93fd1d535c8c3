"""The benchmarks' smoke tests: each runs end to end at a small size, so it cannot rot. No timing asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_e2e_benchmark_runs_and_reports_every_stage_and_primitive(tmp_path: Path) -> None:
    from benchmarks.e2e import main

    result = main(["--members", "300", "--repeat", "1", "--naive", "never", "--out", str(tmp_path)])
    assert result["members"] > 0
    assert set(result["stages_s"]) == {"stage_census", "validate", "build", "conformance", "encrypt",
                                       "deliver", "confirm"}
    assert set(result["primitives_s"]) == {"read_census_pyarrow", "write_834_bytes", "gpg_encrypt_cli",
                                           "openssh_sftp_upload"}
    assert set(result["stage_peak_rss_mb"]) == set(result["stages_s"])
    assert result["peak_rss_mb"] > 0
    assert result["ratio_pipeline_to_primitives"] > 0
    assert result["payload_bytes"] > 0 and result["cipher_bytes"] > 0
    assert "naive" not in result
    # Results land in <date>-<machine>.json, merged under the run's key, with the machine recorded.
    (saved,) = tmp_path.glob(f"{result['date']}-*.json")
    doc = json.loads(saved.read_text())
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["memory_gb"] > 0
    assert doc["runs"]["e2e-300"]["members"] == result["members"]


def test_naive_baseline_produces_the_same_834_as_the_pipeline() -> None:
    from benchmarks.e2e import main
    from benchmarks.naive import NAIVE_STEPS

    result = main(["--members", "1000", "--repeat", "1", "--naive", "always"])
    naive = result["naive"]
    assert naive["identical"] is True
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
