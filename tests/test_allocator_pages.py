"""Importing carrierfeeds first keeps Arrow's allocator off transparent huge pages (issue 23)."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest

_CHILD = "import carrierfeeds, pyarrow as pa; pa.array(list(range(1000)))"


def _allow_thp(extra: dict[str, str]) -> str:
    """mimalloc's own report of its allow_thp option in a fresh process that imports carrierfeeds first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIMALLOC_")}
    env.update(MIMALLOC_VERBOSE="1", **extra)
    proc = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True)
    lines = [line for line in proc.stderr.splitlines() if "option 'allow_thp'" in line]
    assert lines, "mimalloc printed no allow_thp option"
    return lines[0].split(":")[-1].strip()


@pytest.mark.skipif(pa.default_memory_pool().backend_name != "mimalloc", reason="Arrow built without mimalloc")
def test_arrow_allocator_asks_for_no_huge_pages() -> None:
    assert _allow_thp({}) == "0"


@pytest.mark.skipif(pa.default_memory_pool().backend_name != "mimalloc", reason="Arrow built without mimalloc")
def test_an_operators_own_setting_wins() -> None:
    assert _allow_thp({"MIMALLOC_ALLOW_THP": "1"}) == "1"
