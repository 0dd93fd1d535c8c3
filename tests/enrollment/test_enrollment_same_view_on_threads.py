"""Building the view on several threads gives exactly the view of one thread: columns, order, counts,
and the first error raised (the one the single-threaded build meets first)."""

from __future__ import annotations

import pandas as pd
import pytest
from tests.enrollment.test_enrollment_build import AS_OF

from carrierfeeds.census.generate import generate_census
from carrierfeeds.config import CarrierMapping, Feed
from carrierfeeds.enrollment import Enrollment, build_enrollment
from carrierfeeds.errors import DataError


def _summary(e: Enrollment) -> tuple[object, ...]:
    return (e.member_count, e.subscriber_count, e.coverage_count, e.excluded, list(e.sanitized.items()),
            list(e.normalised.items()), e.options)


def _messy(census: pd.DataFrame) -> pd.DataFrame:
    """Lower case, padding, accents and delimiters in names and addresses, hyphenated SSNs and zips."""
    out = census.copy()
    out.loc[::7, "last_name"] = out.loc[::7, "last_name"].str.lower() + " "
    out.loc[::11, "first_name"] = "Zoë*" + out.loc[::11, "first_name"]
    out.loc[::5, "address1"] = "  " + out.loc[::5, "address1"] + "~"
    out.loc[::3, "ssn"] = out.loc[::3, "ssn"].str.slice(0, 3) + "-" + out.loc[::3, "ssn"].str.slice(3)
    out.loc[::4, "zip"] = out.loc[::4, "zip"] + "-1234"
    out.loc[::13, "city"] = None
    return out


@pytest.mark.parametrize("messy", [False, True])
def test_threads_change_nothing_in_the_view(feed: Feed, mapping: CarrierMapping, messy: bool) -> None:
    census = generate_census(500, 3, as_of=AS_OF)
    if messy:
        census = _messy(census)
    one = build_enrollment(census, feed, mapping, as_of=AS_OF, workers=1)
    if messy:
        assert one.sanitized and one.normalised
    for workers in (2, 3, 8, None):
        other = build_enrollment(census, feed, mapping, as_of=AS_OF, workers=workers)
        pd.testing.assert_frame_equal(other.table, one.table)
        assert _summary(other) == _summary(one)


@pytest.mark.parametrize("workers", [2, 4])
def test_the_first_error_is_the_one_threads_would_not_change(feed: Feed, mapping: CarrierMapping,
                                                              workers: int) -> None:
    census = generate_census(200, 4, as_of=AS_OF)
    sent = census.index[census["plan_code"].isin(feed.authorization.plans)]
    census.loc[sent[-1], "coverage_level"] = "XYZ"  # made late one thread after another
    census.loc[sent[-2], "dob"] = "1980-02-30"  # made before it
    errors = []
    for w in (1, workers):
        with pytest.raises(DataError) as info:
            build_enrollment(census, feed, mapping, as_of=AS_OF, workers=w)
        errors.append((str(info.value), info.value.row, info.value.column, info.value.rule))
    assert errors[0] == errors[1]
    assert errors[0][2:] == ("dob", "iso_date")
    assert "1980" not in errors[0][0]
