"""The current census as the third view: each carrier discrepancy says whether its fix is on the
carrier's side or ours, and a census change the carrier has not been sent yet shows up as ``not_sent``.
Pure, on rosters built from small 834-shaped views."""

from __future__ import annotations

from datetime import date

import pandas as pd

from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.reconcile.compare import SIDES, compare_with_census
from carrierfeeds.reconcile.roster import Roster, roster_from_view

TOKENS = MemberTokenizer(b"c" * 32)
AS_OF = date(2026, 12, 1)


def _roster(members: dict[str, str], source: str) -> Roster:
    """member id -> plan (HD04) on one HLT line; every other column the same for everyone."""
    rows = [{"member_id": m, "subscriber_id": m, "ins02": "18", "hd03": "HLT", "hd04": plan, "hd05": "EMP",
             "coverage_start": "20260101", "coverage_end": "", "last_name": "X", "first_name": "Y",
             "dob": "19800101", "ssn": "", "gender": "U"} for m, plan in members.items()]
    return roster_from_view(pd.DataFrame(rows, columns=list(rows[0])), TOKENS, source=source)


def _token(member: str) -> str:
    return str(TOKENS.tokens(pd.Series([member]))[0])


def test_each_discrepancy_names_the_side_its_fix_is_on() -> None:
    # The snapshot the carrier confirmed, what the carrier holds, and today's census.
    expected = _roster({"A": "PPO", "B": "PPO", "C": "PPO", "D": "PPO", "E": "PPO"}, "snapshot")
    carrier = _roster({"A": "HMO", "B": "HMO", "C": "HMO", "D": "PPO", "E": "PPO", "F": "PPO"}, "carrier")
    census = _roster({"A": "PPO", "B": "HMO", "C": "EPO", "D": "EPO", "E": "PPO", "F": "PPO", "G": "PPO"},
                     "census")
    got = {(d.member_token, d.kind, d.field): side for d, side in compare_with_census(expected, carrier, census,
                                                                                       as_of=AS_OF)}
    assert set(got.values()) <= set(SIDES)
    assert got == {
        (_token("A"), "plan", "plan"): "carrier",  # the census says PPO, as we sent: the carrier is wrong
        (_token("B"), "plan", "plan"): "ours",  # the census says HMO, as the carrier holds: our snapshot is off
        (_token("C"), "plan", "plan"): "both",  # EPO now: still to send, and the carrier is off too
        (_token("D"), "plan", "plan"): "not_sent",  # the carrier holds what we sent; EPO not sent yet
        (_token("F"), "extra_at_carrier", ""): "ours",  # the census has F too: we never sent it
        (_token("G"), "missing_at_carrier", ""): "not_sent",  # new in the census, not sent yet
    }


def test_a_census_equal_to_the_snapshot_puts_every_fix_on_the_carrier() -> None:
    expected = _roster({"A": "PPO", "B": "PPO"}, "snapshot")
    carrier = _roster({"A": "HMO"}, "carrier")
    labelled = compare_with_census(expected, carrier, expected, as_of=AS_OF)
    assert sorted((d.kind, side) for d, side in labelled) == [("missing_at_carrier", "carrier"), ("plan", "carrier")]
