"""The DAG parse benchmark's smoke test at 20 feeds, so it cannot rot. No timing asserted."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.airflow]


def test_dag_parse_benchmark_fills_a_dagbag_and_builds_one_dag_alone() -> None:
    from benchmarks.dag_parse import main

    result = main(["--feeds", "20", "--repeat", "1"])
    assert result["import_errors"] == {}
    assert result["dags"] == 20 + 1  # one per feed, plus housekeeping
    # A task run's parse builds only the DAG it runs.
    assert result["single_built"] == [result["single_dag_id"]]
    assert result["dagbag_fill_s"] > 0 and result["single_dag_build_s"] > 0 and result["per_feed_ms"] > 0
