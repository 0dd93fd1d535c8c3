"""benchmarks.check_window runs end to end on a small file, so it cannot rot. No timing asserted."""

from __future__ import annotations

import json
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "x12" / "full-file-split-transaction-sets.834"


def test_check_window_benchmark_runs_each_window_and_the_reference_on_one_file(tmp_path: Path) -> None:
    from benchmarks.check_window import main

    out = tmp_path / "check-window.json"
    runs = main(["--file", str(FIXTURE), "--windows", "64,4096", "--repeat", "1", "--reference", "--out", str(out)])
    assert [r["variant"] for r in runs] == ["reference", "64", "4096"]
    (verdict,) = {(r["ok"], r["segments"], r["members"]) for r in runs}  # every variant reads the same file
    assert verdict[0] and verdict[1] > 0 and verdict[2] > 0
    assert all(r["peak_over_mb"] >= 0 and r["user_s"] >= 0 for r in runs)
    assert json.loads(out.read_text())["runs"] == runs
