"""Hypothesis strategies for the carrier replay: a drawn configuration and a multi-day history."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Literal

from hypothesis import strategies as st
from tests.carrier_replay.carrier import Flavour
from tests.carrier_replay.expected import Config
from tests.carrier_replay.history import EVENT_KINDS, Event
from tests.carrier_replay.replay import has_setting

from carrierfeeds.config import CarrierMapping, CensusSchema

Mode = Literal["changes", "full"]
PlanChange = Literal["term_and_add", "change"]

#: A Monday: histories cross a month end, so end-of-month terms and next-month plan changes take effect.
START = date(2026, 3, 23)


def age_limit_setting() -> bool:
    """Whether a schema or mapping setting says how coverage ends at the dependent age limit (issue 16
    finding 2: birthday, end_of_month, end_of_year); until it exists a child whose coverage runs to the
    end of its 26th-birthday month is refused by validation, so age-outs are left out of the histories."""
    for model in (CensusSchema, CarrierMapping):
        for info in model.model_fields.values():
            if "end_of_month" in repr(info.annotation) and "birthday" in repr(info.annotation):
                return True
    return False


def plan_changes() -> list[PlanChange]:
    """``plan_change: change`` only once the mapping has the setting (issue 16 finding 5)."""
    return ["term_and_add", "change"] if has_setting("plan_change") else ["term_and_add"]


@st.composite
def configs(draw: Any, mode: Mode | None = None) -> Config:
    flavour: Flavour = draw(st.sampled_from(["line", "plan"]))
    # A carrier that keys coverage by plan cannot take a plan change as HD*001 (the old plan would
    # stay open): a mapping says plan_change: change only for line-keyed carriers.
    plan_change: PlanChange = "term_and_add" if flavour == "plan" else draw(st.sampled_from(plan_changes()))
    drawn_mode: Mode = mode or draw(st.sampled_from(["changes", "full"]))
    # Mode full leaves a quarantined family out of the full file, so a carrier that replaces its roster
    # on a full file terms that family (test_replay_findings::test_full_mode_keeps_a_held_back_family):
    # quarantine is drawn in changes mode only until that is fixed.
    policies = ["reject", "quarantine"] if drawn_mode == "changes" else ["reject"]
    return Config(
        mode=drawn_mode,
        plan_change=plan_change,
        term_policy=draw(st.sampled_from(["explicit", "omission"])),
        term_end=draw(st.sampled_from(["end_of_month", "day_before"])),
        flavour=flavour,
        policy=draw(st.sampled_from(policies)),
        full_file_weekday=draw(st.sampled_from([None, None, "thursday"])),
    )


events = st.builds(Event, kind=st.sampled_from(EVENT_KINDS), a=st.integers(0, 4), b=st.integers(0, 3))


@st.composite
def histories(draw: Any, min_days: int = 8, max_days: int = 10) -> tuple[date, list[list[Event]], int, bool]:
    """(start day, events per day with day 0 the initial roster, families, age-out child or not)."""
    days = draw(st.lists(st.lists(events, max_size=2), min_size=min_days - 1, max_size=max_days - 1))
    offset = draw(st.integers(0, 6))
    families = draw(st.integers(2, 4))
    age_out = age_limit_setting() and draw(st.booleans())
    return START + timedelta(days=offset), [[], *days], families, age_out
