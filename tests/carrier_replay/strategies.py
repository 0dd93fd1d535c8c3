"""Hypothesis strategies for the carrier replay: a drawn configuration and a multi-day history."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Literal

from hypothesis import strategies as st
from tests.carrier_replay.carrier import Flavour
from tests.carrier_replay.expected import Config
from tests.carrier_replay.history import EVENT_KINDS, Event

Mode = Literal["changes", "full"]
PlanChange = Literal["term_and_add", "change"]

#: A Monday: histories cross a month end, so end-of-month terms and next-month plan changes take effect.
START = date(2026, 3, 23)


@st.composite
def configs(draw: Any, mode: Mode | None = None) -> Config:
    flavour: Flavour = draw(st.sampled_from(["line", "plan"]))
    # A carrier that keys coverage by plan cannot take a plan change as HD*001 (the old plan would
    # stay open): a mapping says plan_change: change only for line-keyed carriers.
    plan_change: PlanChange = "term_and_add" if flavour == "plan" else draw(st.sampled_from(["term_and_add", "change"]))
    drawn_mode: Mode = mode or draw(st.sampled_from(["changes", "full"]))
    return Config(
        mode=drawn_mode,
        plan_change=plan_change,
        term_policy=draw(st.sampled_from(["explicit", "omission"])),
        term_end=draw(st.sampled_from(["end_of_month", "day_before"])),
        flavour=flavour,
        policy=draw(st.sampled_from(["reject", "quarantine"])),
        full_file_weekday=draw(st.sampled_from([None, None, "thursday"])),
    )


events = st.builds(Event, kind=st.sampled_from(EVENT_KINDS), a=st.integers(0, 4), b=st.integers(0, 3))


@st.composite
def histories(draw: Any, min_days: int = 8, max_days: int = 10) -> tuple[date, list[list[Event]], int, bool]:
    """(start day, events per day with day 0 the initial roster, families, age-out child or not)."""
    days = draw(st.lists(st.lists(events, max_size=2), min_size=min_days - 1, max_size=max_days - 1))
    offset = draw(st.integers(0, 6))
    families = draw(st.integers(2, 4))
    # Age-outs are the named tests' (test_replay_findings::test_child_aging_out_...): a drawn history may
    # rehire the family of a child past the limit, and the generator then re-enrols that child with open
    # coverage, which validation rightly refuses while the expected roster does not yet model it.
    age_out = False
    return START + timedelta(days=offset), [[], *days], families, age_out
