"""The ops command line never misleads: version, unknown ids, exit codes that match the words printed."""

from __future__ import annotations

from typer.testing import CliRunner

import carrierfeeds
from carrierfeeds.cli import app

runner = CliRunner()
ENV = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


def test_version_prints_the_package_version_and_exits_0() -> None:
    result = runner.invoke(app, ["--version"], env=ENV)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"carrierfeeds {carrierfeeds.__version__}"
