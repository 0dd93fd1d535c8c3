"""The reconciliation benchmark runs end to end at a small size, so it cannot rot. No timing asserted."""

from __future__ import annotations


def test_reconcile_benchmark_runs_small() -> None:
    from benchmarks.reconcile import main

    result = main(["--members", "300"])
    run = result["runs"][0]
    # 0.1% of 300 rounds up to one member of each kind of difference.
    assert run["discrepancies"] == 3 and result["reconcile_peak_rss_mb"] > 0
