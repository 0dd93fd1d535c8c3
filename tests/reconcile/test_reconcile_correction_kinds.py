"""Which discrepancy kinds the corrective 834 drafts, on the pure ``correction_view``: a dependent's
relationship or subscriber goes out as a change (001) carrying the member's snapshot lines; an extra
member at the carrier and an identity difference stay with people (their fix needs values the roster
never keeps)."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.ledger.worklist import WorkItem
from carrierfeeds.reconcile.correction import CHANGE, DRAFTED, correction_view

TOKENIZER = MemberTokenizer(b"r" * 32)
AT = datetime(2026, 12, 1, tzinfo=UTC)


def _snapshot() -> pd.DataFrame:
    rows = [("E1", "E1", "18", "Y", "HLT", "MED-PPO"), ("E1", "E1", "18", "Y", "DEN", "DEN-BASIC"),
            ("E1", "E1-01", "01", "N", "HLT", "MED-PPO"), ("E1", "E1-02", "19", "N", "HLT", "MED-PPO"),
            ("E1", "E1-02", "19", "N", "DEN", "DEN-BASIC"), ("E2", "E2", "18", "Y", "HLT", "MED-HMO")]
    return pd.DataFrame([{"subscriber_id": s, "member_id": m, "ins02": rel, "ins01": sub, "hd03": line, "hd04": plan,
                          "ins03": "", "ins04": "", "hd01": ""} for s, m, rel, sub, line, plan in rows])


def _item(n: int, kind: str, member: str, field: str = "", line: str = "") -> WorkItem:
    token = str(TOKENIZER.tokens(pd.Series([member]))[0])
    return WorkItem(f"{n:032x}", "feed", kind, token, field, line, "open", AT, AT)


def test_dependents_are_drafted_as_a_change_of_every_line_of_the_member() -> None:
    assert DRAFTED["dependents"] == CHANGE
    items = [_item(1, "dependents", "E1-02", "relationship"), _item(2, "dependents", "E1-01", "subscriber")]
    view = correction_view(_snapshot(), items, TOKENIZER)
    assert view.discrepancy_ids == (f"{1:032x}", f"{2:032x}") and view.manual == {}
    sent = view.table
    assert sent["member_id"].tolist() == ["E1-01", "E1-02", "E1-02"]  # the snapshot's order, both lines of -02
    assert set(sent["ins03"]) == {"001"} and set(sent["hd01"]) == {"001"} and set(sent["ins04"]) == {"AI"}
    assert sent["ins02"].tolist() == ["01", "19", "19"] and set(sent["subscriber_id"]) == {"E1"}


def test_extra_at_carrier_and_identity_stay_with_people() -> None:
    items = [_item(3, "extra_at_carrier", "E9"), _item(4, "identity", "E2", "ssn"),
             _item(5, "dependents", "E2", "relationship")]
    view = correction_view(_snapshot(), items, TOKENIZER)
    assert view.manual == {f"{3:032x}": "extra_at_carrier", f"{4:032x}": "identity"}
    assert view.discrepancy_ids == (f"{5:032x}",) and view.table["member_id"].tolist() == ["E2"]
