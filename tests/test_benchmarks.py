"""The benchmark's smoke test: it runs end to end at a small size, so it cannot rot. No timing asserted."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_e2e_benchmark_runs_and_reports_every_stage_and_primitive() -> None:
    from benchmarks.e2e import main

    result = main(["--members", "300", "--repeat", "1"])
    assert result["members"] > 0
    assert set(result["stages_s"]) == {"stage_census", "validate", "build", "conformance", "encrypt",
                                       "deliver", "confirm"}
    assert set(result["primitives_s"]) == {"read_census_pyarrow", "write_834_bytes", "gpg_encrypt_cli",
                                           "openssh_sftp_upload"}
    assert result["ratio_pipeline_to_primitives"] > 0
    assert result["payload_bytes"] > 0 and result["cipher_bytes"] > 0
