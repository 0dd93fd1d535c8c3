"""Helpers shared by the fault-injection tests: the environment child processes need, RSS readings."""

from __future__ import annotations

import os
from pathlib import Path

import carrierfeeds

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def child_env() -> dict[str, str]:
    """This environment, with the carrierfeeds under test (and this folder) importable first."""
    package_root = str(Path(carrierfeeds.__file__).resolve().parents[1])
    parts = [package_root, str(HERE)]
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(parts), "GX_ANALYTICS_ENABLED": "False"}
