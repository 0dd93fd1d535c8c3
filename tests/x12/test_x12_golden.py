"""Golden 834 files, compared byte for byte, and the round trip each must survive.

Regenerate after an intended change to the writer (then review the diff like code):

    CARRIERFEEDS_REGENERATE_GOLDEN=1 .venv/bin/pytest tests/x12/test_x12_golden.py

The files are synthetic and use a fixed creation time and fixed control numbers (x12_helpers).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pandas as pd
import pytest
import x12_helpers as h

from carrierfeeds.enrollment import Enrollment
from carrierfeeds.x12.check import check_834
from carrierfeeds.x12.envelope import TransactionHeader
from carrierfeeds.x12.read import read_834
from carrierfeeds.x12.render import render_834_bytes

_NARROW = ("member_id", "subscriber_id", "relationship", "last_name", "first_name", "dob", "gender",
           "plan_code", "coverage_level", "coverage_start", "coverage_end")


def _full_family() -> tuple[Enrollment, TransactionHeader]:
    return h.enrollment(), h.header()


def _minimum_necessary() -> tuple[Enrollment, TransactionHeader]:
    m = h.mapping(allowlist=_NARROW, group_number=None)
    return h.enrollment(m=m), h.header(m)


def _terminate_subscriber() -> tuple[Enrollment, TransactionHeader]:
    frame = h.family_census()
    frame = frame[frame["member_id"] == "E2002"]
    return h.enrollment(frame), h.header()


SCENARIOS: dict[str, Callable[[], tuple[Enrollment, TransactionHeader]]] = {
    "full-file-family.834": _full_family,
    "full-file-minimum-necessary.834": _minimum_necessary,
    "full-file-terminated-coverage.834": _terminate_subscriber,
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_golden_file(name: str) -> None:
    enrollment, header = SCENARIOS[name]()
    data = render_834_bytes(enrollment, header, h.CONTROL)
    path = h.FIXTURES / name
    if os.environ.get("CARRIERFEEDS_REGENERATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert path.exists(), f"missing golden file {name}; see this module's docstring to create it"
    assert data == path.read_bytes()

    report = check_834(data)
    assert report.ok, report.problems
    back = read_834(data)
    table = enrollment.table
    assert back["member_id"].nunique() == enrollment.member_count == report.member_count
    expected = table.reindex(columns=["member_id", "last_name", "first_name", "dob", "gender", "hd03",
                                      "coverage_start", "coverage_end"], fill_value="")
    pd.testing.assert_frame_equal(back[expected.columns].reset_index(drop=True),
                                  expected.reset_index(drop=True).astype(object), check_dtype=False)
