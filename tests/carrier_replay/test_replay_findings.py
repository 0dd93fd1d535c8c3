"""Minimal carrier-replay histories, one per thing the replay found.

Each plays a short history through the project's pure stages, hands every delivered 834 to the carrier
model and asserts the carrier's roster equals the census after every day. Each failed before its fix.
"""

from __future__ import annotations

from datetime import date

import pytest
from tests.carrier_replay.expected import Config
from tests.carrier_replay.history import Event, play
from tests.carrier_replay.reader import read_834
from tests.carrier_replay.replay import first_failure, replay

FRIDAY = date(2026, 3, 27)


def _hd(data: bytes) -> list[tuple[str, str, str, str]]:
    """(HD01, HD03, HD04, DTP*348 or DTP*349 dates) of every coverage loop of a file, via the test reader."""
    return [(c.hd01, c.hd03, c.hd04, f"{c.start}..{c.end or ''}")
            for m in read_834(data).members for c in m.coverages]


def test_plan_change_in_one_row_ends_the_old_plan_at_a_plan_keyed_carrier() -> None:
    """Finding 5: the census moves the family from PPO to HDHP next month in the same row."""
    days = play(FRIDAY, [[], [Event("plan_change_one_row")]], families=2)
    log = replay(Config(flavour="plan"), days, pyx12="all")
    assert first_failure(log) is None, first_failure(log)


def test_plan_change_goes_out_as_a_term_of_the_old_plan_and_an_add_of_the_new() -> None:
    """Finding 5, in the file: HD*024 for the old plan ending the day before, HD*021 for the new plan."""
    days = play(FRIDAY, [[], [Event("plan_change_one_row")]], families=2)
    log = replay(Config(flavour="line"), days)
    assert first_failure(log) is None, first_failure(log)
    change = log[1].file
    assert change is not None
    loops = _hd(change)
    assert ("024", "HLT", "PPO GOLD", "2025-01-01..2026-03-31") in loops, loops
    assert ("021", "HLT", "HDHP SILVER", "2026-04-01..") in loops, loops
    assert not any(h[0] == "001" for h in loops), loops


def test_plan_change_as_change_sends_hd001_with_the_new_plan_to_a_line_keyed_carrier() -> None:
    days = play(FRIDAY, [[], [Event("plan_change_one_row")]], families=2)
    log = replay(Config(flavour="line", plan_change="change"), days)
    assert first_failure(log) is None, first_failure(log)
    change = log[1].file
    assert change is not None
    assert ("001", "HLT", "HDHP SILVER", "2026-04-01..") in _hd(change)


def test_two_row_plan_change_under_plan_change_change_is_hd001_on_the_day_the_new_plan_starts() -> None:
    """The old period (PPO) ended 03-31 at the carrier (sent as a term on 03-31); on 04-01 the HDHP
    period counts. That is a plan change, so HD*001 with HDHP from 04-01. A 025 restores the ended
    coverage (the PPO from 2025-01-01), which a line-keyed carrier does, and the member never moves."""
    days = play(date(2026, 3, 30), [[], [Event("plan_change_two_rows")], [], []], families=2)
    log = replay(Config(plan_change="change"), days, pyx12="all")
    assert first_failure(log) is None, first_failure(log)
    start_day = log[2].file
    assert start_day is not None
    assert ("001", "HLT", "HDHP SILVER", "2026-04-01..") in _hd(start_day), _hd(start_day)


@pytest.mark.parametrize("flavour", ["line", "plan"])
def test_plan_change_in_two_rows_reaches_the_carrier(flavour: str) -> None:
    """Finding 3: PPO ending 03-31 and HDHP from 04-01 as two rows of one insurance line; followed over
    the day the new plan starts."""
    events = [[], [Event("plan_change_two_rows")], [], [], [], [], []]
    days = play(FRIDAY, events, families=2)
    log = replay(Config(flavour=flavour), days, pyx12="all")  # type: ignore[arg-type]
    assert first_failure(log) is None, first_failure(log)
    assert [entry.got for entry in log][1] == "delivered"


@pytest.mark.parametrize("how", ["coverage_end", "removal"])
def test_rehire_after_a_gap_is_an_addition_with_the_new_start(how: str) -> None:
    """Finding 4: coverage ended (a past end date, or the family left the census), then the employee
    comes back next month; a 025 would restore the old coverage and cover the gap."""
    gone = Event("end_family", 0, 2) if how == "coverage_end" else Event("remove_family", 0)
    days = play(FRIDAY, [[], [gone], [], [Event("rehire")], []], families=2)
    log = replay(Config(term_end="day_before"), days)
    assert first_failure(log) is None, first_failure(log)
    back = log[3].file
    assert back is not None
    assert {h[0] for h in _hd(back)} == {"021"}, _hd(back)


def test_reinstatement_without_a_gap_is_025_and_keeps_the_start() -> None:
    days = play(FRIDAY, [[], [Event("end_family", 0, 0)], [Event("reinstate")], []], families=2)
    log = replay(Config(), days)
    assert first_failure(log) is None, first_failure(log)
    back = log[2].file
    assert back is not None
    assert {h[0] for h in _hd(back)} == {"025"}


@pytest.mark.parametrize("policy", ["reject", "quarantine"])
def test_child_aging_out_at_the_end_of_the_birthday_month_is_accepted(policy: str) -> None:
    """Finding 2: a child's 26th birthday falls in the history; its coverage ends on the last day of
    that month, as the employer set it from the start."""
    events: list[list[Event]] = [[] for _ in range(9)]
    events[7] = [Event("address_change", 0)]  # the family moves after the birthday
    days = play(date(2026, 3, 23), events, families=2, age_out=True)
    log = replay(Config(policy=policy), days)  # type: ignore[arg-type]
    assert first_failure(log) is None, first_failure(log)


def test_full_mode_keeps_a_held_back_family() -> None:
    """Mode full, policy quarantine: one family's row is bad for a day. A full file (030) is the
    carrier's whole roster, so the family held back is carried over from the last file the carrier
    confirmed (a carrier that replaces its roster on a full file would otherwise end their coverage)."""
    days = play(FRIDAY, [[], [Event("bad_data", 0)], []], families=2)
    log = replay(Config(mode="full", policy="quarantine"), days)
    assert first_failure(log) is None, first_failure(log)


@pytest.mark.parametrize("change", ["address_change", "name_change", "ssn_change"])
def test_demographic_change_on_the_day_a_line_is_dropped_reaches_the_carrier(change: str) -> None:
    """Changes mode: the employee drops dental and moves (or is renamed, or has the SSN corrected) the
    same day. The change file carries INS*001 with the 024 for dental, but its member loop is written
    from the dropped line's snapshot values, so the carrier keeps the old address (name, SSN)."""
    days = play(FRIDAY, [[], [Event(change, 0, 0), Event("drop_dental", 0)], []], families=2)  # type: ignore[arg-type]
    log = replay(Config(), days)
    assert first_failure(log) is None, first_failure(log)


def test_a_term_after_a_reinstatement_is_dated_against_the_coverage_the_carrier_holds() -> None:
    """Removed (a term ending 03-31 goes out), back the next day from 04-01 (025: the carrier restores its
    coverage from 2025-01-01), removed again: the term ends 03-31 for that coverage, not 04-01."""
    events = [[], [Event("remove_family", 0)], [Event("rehire", 0)], [Event("remove_family", 0)]]
    days = play(date(2026, 3, 24), events, families=2)
    log = replay(Config(flavour="plan"), days)
    assert first_failure(log) is None, first_failure(log)


@pytest.mark.parametrize("ending", ["end_family", "plan_change_two_rows"])
def test_an_end_given_with_a_moved_start_redates_the_coverage_at_the_carrier(ending: str) -> None:
    """A family first sent in a full file with a start 90 days back; the next day the employer moves the
    start to 10 days back and ends the coverage (or its plan, a plan change in two rows) on 03-31. A term
    (HD*024) only ends coverage: the carrier keeps its start, so the line goes out as HD*001 carrying the
    new start (DTP*348) and the end (DTP*349)."""
    days = play(FRIDAY, [[Event("retro_add_outside", 1)], [Event(ending, 2, 0)], []], families=2)  # type: ignore[arg-type]
    log = replay(Config(), days)
    assert first_failure(log) is None, first_failure(log)
    change = log[1].file
    assert change is not None
    assert ("001", "HLT", "HDHP SILVER", "2026-03-18..2026-03-31") in _hd(change), _hd(change)


def test_coverage_restored_by_a_025_keeps_its_start_on_the_quiet_days_after() -> None:
    """Rule: a census start the carrier's coverage absorbed (a 025 for coverage that resumes the day after
    its end) is no start change. Removed (a term ending 03-31 goes out), back the next day from 04-01: the
    025 restores the coverage from 2025-01-01. Found as day 4 add/remove, day 5 bad data (rejected) and a
    dropped line, day 6 rehire; neither the held-back family nor the dropped line mattered. The next
    day, with nothing changed, the diff compared the census start (04-01) with the snapshot's restored
    start (2025-01-01) and sent HD*001 with 04-01, moving the carrier's start and losing the coverage
    from 2025-01-01 to 03-31 it had confirmed."""
    events = [[], [Event("remove_family", 0)], [Event("rehire", 0)], [], []]
    log = replay(Config(), play(date(2026, 3, 24), events, families=2))
    assert first_failure(log) is None, first_failure(log)
    back = log[2].file
    assert back is not None
    assert {h[0] for h in _hd(back)} == {"025"}, _hd(back)
    assert [entry.got for entry in log[3:]] == ["no_changes", "no_changes"]


def test_an_end_after_a_025_keeps_the_restored_start() -> None:
    """Rule: as above, while the census keeps the start it resumed with, an end given for that coverage
    is a term (HD*024) of the coverage the carrier holds, from its original start, on every day after."""
    events = [[], [Event("remove_family", 0)], [Event("rehire", 0)], [Event("end_family", 0, 0)], [], []]
    log = replay(Config(), play(date(2026, 3, 29), events, families=2), pyx12="all")
    assert first_failure(log) is None, first_failure(log)
    ended = log[3].file
    assert ended is not None
    assert {h[0] for h in _hd(ended)} == {"024"}, _hd(ended)


@pytest.mark.parametrize("flavour", ["line", "plan"])
def test_a_reinstatement_with_a_moved_start_sends_the_new_start(flavour: str) -> None:
    """Rule: 025 restores the ended coverage as the carrier holds it, start included, so it is only for
    coverage that resumes with the start the carrier holds (or the day after its end). A family first
    sent in a full file from 90 days back, ending 03-31; the next day the employer moves the start to
    10 days back and lifts the end. The carrier kept the old start under a 025; the line goes out as
    HD*001 with the new DTP*348 and no DTP*349 (a change of the coverage's dates, as for an end that
    comes with a moved start), never 024+021 (an add after a term reads as a new enrollment)."""
    days = play(FRIDAY, [[Event("retro_add_outside", 1), Event("end_family", 2, 0)], [Event("reinstate", 2)], []],
                families=2)
    log = replay(Config(flavour=flavour), days, pyx12="all")  # type: ignore[arg-type]
    assert first_failure(log) is None, first_failure(log)
    back = log[1].file
    assert back is not None
    assert ("001", "HLT", "HDHP SILVER", "2026-03-18..") in _hd(back), _hd(back)
    assert not any(h[0] == "025" for h in _hd(back)), _hd(back)


@pytest.mark.parametrize("how", ["remove_family", "drop_dental"])
def test_a_weekly_full_file_carries_a_pending_term_with_its_end(how: str) -> None:
    """Rule: a full file (030) is the carrier's whole roster, so it carries every line the carrier still
    covers, a term already sent whose end is still ahead included, with that DTP*349. Removed from the
    census on Tuesday (a term ending 03-31 goes out; or dental dropped), Thursday's weekly full file left
    the line out, and the carrier dropped coverage it still owes until 03-31."""
    events = [[], [Event(how, 0)], [], []]  # type: ignore[arg-type]
    log = replay(Config(full_file_weekday="thursday"), play(date(2026, 3, 23), events, families=2),
                 pyx12="all")
    assert first_failure(log) is None, first_failure(log)
    weekly = log[3].file
    assert weekly is not None
    assert ("030", "DEN", "DENTAL STANDARD", "2025-01-01..2026-03-31") in _hd(weekly), _hd(weekly)


VOLUME_DAYS = [[], [Event("salary_change", 0, 0), Event("volume_change", 1, 0)], [Event("volume_change", 0, 1)],
               [Event("salary_change", 0, 1)], [Event("eoi_release", 0)], []]


@pytest.mark.parametrize("cfg", [Config(), Config(flavour="plan"), Config(full_file_weekday="thursday"),
                                 Config(mode="full", policy="quarantine")], ids=["line", "plan", "weekly", "full"])
def test_volumes_salary_amount_and_an_increase_held_for_eoi_reach_the_carrier(cfg: Config) -> None:
    """Issue 19's volumes, replayed: a raise (2100A ICM) and a benefit amount change (2300 AMT*FK), then
    an increase waiting on evidence of insurability (held back: the carrier keeps the amount it holds,
    also through a weekly full file), a second raise while it waits, and its approval (HD*001 with the
    new amount)."""
    log = replay(cfg, play(date(2026, 3, 23), VOLUME_DAYS, families=2), pyx12="all")
    assert first_failure(log) is None, first_failure(log)
    if cfg.mode == "changes":
        approved = log[4].file
        assert approved is not None
        assert [(c.hd01, c.hd03, c.amounts.get("FK")) for m in read_834(approved).members for c in m.coverages] == [
            ("001", "STD", "1350")]


def test_full_mode_keeps_a_line_held_for_eoi_at_the_carrier() -> None:
    """Rule: a line held back for evidence of insurability keeps what the carrier holds; a full file is
    the carrier's whole roster, so it carries the held line as last sent. Mode full under policy reject
    kept no snapshot, so Wednesday's 030 left the STD line waiting on EOI out and the carrier dropped
    the employee's STD coverage (850) for as long as EOI was pending."""
    log = replay(Config(mode="full"), play(date(2026, 3, 23), VOLUME_DAYS, families=2), pyx12="all")
    assert first_failure(log) is None, first_failure(log)
    held = log[2].file
    assert held is not None
    assert ("030", "STD", "SHORT TERM DISABILITY", "2025-01-01..") in _hd(held), _hd(held)


@pytest.mark.parametrize("eoi", [False, True])
def test_an_end_that_comes_with_a_new_amount_is_hd001_with_both(eoi: bool) -> None:
    """Rule: a term (HD*024) only ends coverage; the carrier keeps the benefit amount it holds. The
    employee's STD amount goes up the same day the family's coverage is given an end (or the increase
    waits on evidence of insurability and is approved after the end was given): the line went out as
    HD*024 and the carrier kept the old amount, so it goes out as HD*001 with the end and the amount."""
    events = [[], [Event("volume_change", 0, int(eoi)), Event("end_family", 0, 0)], [Event("eoi_release", 0)], []]
    log = replay(Config(), play(date(2026, 3, 23), events, families=2), pyx12="all")
    assert first_failure(log) is None, first_failure(log)
    sent = log[2 if eoi else 1].file
    assert sent is not None
    assert [(c.hd01, c.end, c.amounts.get("FK")) for m in read_834(sent).members for c in m.coverages
            if c.hd03 == "STD"] == [("001", date(2026, 3, 31), "1350" if eoi else "1100")]


def test_an_end_given_while_an_increase_waits_on_eoi_goes_out_at_the_amount_held() -> None:
    """Rule: the EOI hold holds back an increase, never an end. The employee's STD increase waits on
    evidence of insurability when the family's coverage is given an end (03-31): the held line went out
    with nothing, so the carrier kept covering STD open-ended for as long as EOI stayed pending (for a
    leaver, for ever). The end goes out as HD*024 of the coverage the carrier holds (its amount)."""
    events = [[], [Event("volume_change", 0, 1)], [Event("end_family", 0, 0)], [], [Event("eoi_release", 0)], []]
    log = replay(Config(), play(date(2026, 3, 23), events, families=2), pyx12="all")
    assert first_failure(log) is None, first_failure(log)
    ended = log[2].file
    assert ended is not None
    assert [(c.hd01, c.end, c.amounts.get("FK")) for m in read_834(ended).members for c in m.coverages
            if c.hd03 == "STD"] == [("024", date(2026, 3, 31), "850")]
