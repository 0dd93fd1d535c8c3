"""The carrier-replay property (issue 16): generated multi-day histories of a small employer, each under
one drawn configuration (mode changes or full, plan_change, term policy and end, validation policy
reject or quarantine, a full-file weekday, a line-keyed or plan-keyed carrier). After every day the
carrier's roster, rebuilt from nothing out of the delivered 834s alone, equals the roster the census
says it should hold (tests/carrier_replay/expected.py), and the run's outcome (delivered, rejected,
refused) is the one the census calls for. pyx12 reads the first change file and the first full file of
every history here, and every file under the slow marker.
"""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from tests.carrier_replay.expected import Config
from tests.carrier_replay.history import Event, play
from tests.carrier_replay.replay import first_failure, has_setting, replay
from tests.carrier_replay.strategies import configs, histories

DIFF_SEMANTICS = has_setting("plan_change")
# On main the diff lacks issue 16's semantics, so the property must fail there (strictly); it is not
# shrunk then, as the minimal cases are the named tests of test_replay_findings.py.
_main_fails = pytest.mark.xfail(
    not DIFF_SEMANTICS, strict=True,
    reason="issue 16 findings 3-5 (see test_replay_findings.py); passes with the diff-semantics branch")
_PHASES = tuple(Phase) if DIFF_SEMANTICS else (Phase.explicit, Phase.reuse, Phase.generate)
_DEMOGRAPHICS = {"address_change", "name_change", "dob_change", "ssn_change"}


def _stale_demographics(days: list[list[Event]]) -> bool:
    """A line dropped on the day of a demographic change: the project sends the old demographics
    (test_replay_findings::test_demographic_change_on_the_day_a_line_is_dropped_reaches_the_carrier),
    so such days are left out until that is fixed."""
    return any({e.kind for e in day} & _DEMOGRAPHICS and any(e.kind == "drop_dental" for e in day)
               for day in days)


def _check(cfg: Config, history: tuple[date, list[list[Event]], int, bool], pyx12: str) -> None:
    start, days, families, age_out = history
    assume(not _stale_demographics(days))
    log = replay(cfg, play(start, days, families=families, age_out=age_out), pyx12=pyx12)
    failure = first_failure(log)
    assert failure is None, f"{cfg}\n{failure}"


_FAST = settings(max_examples=100, deadline=None, phases=_PHASES,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_SLOW = settings(_FAST, max_examples=400)


@_main_fails
@_FAST
@given(cfg=configs("changes"), history=histories())
def test_carrier_holds_the_census_after_every_change_file(
        cfg: Config, history: tuple[date, list[list[Event]], int, bool]) -> None:
    _check(cfg, history, pyx12="first")


@_main_fails
@_FAST
@given(cfg=configs("full"), history=histories())
def test_carrier_holds_the_census_after_every_full_file(
        cfg: Config, history: tuple[date, list[list[Event]], int, bool]) -> None:
    _check(cfg, history, pyx12="first")


@pytest.mark.slow
@_main_fails
@_SLOW
@given(cfg=configs(), history=histories(min_days=8, max_days=14))
def test_carrier_holds_the_census_over_longer_histories_with_pyx12_on_every_file(
        cfg: Config, history: tuple[date, list[list[Event]], int, bool]) -> None:
    _check(cfg, history, pyx12="all")
