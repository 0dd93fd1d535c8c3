"""A printable roster run by the pipeline lists the changes since the last roster, from the diff the run
computes against the carrier's snapshot; a forced resend renders the same document again."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from carrierfeeds.census.generate import generate_census, write_census_csv
from carrierfeeds.outputs.pdf import CHANGES_TITLE
from carrierfeeds.run.context import RunRef
from carrierfeeds.run.stages import run_feed
from carrierfeeds.settings import open_ledger

FEED = "acme-northwind-dental"  # full rosters, policy quarantine: the feed keeps the carrier's snapshot
DAY = date(2026, 11, 20)
NEXT = DAY + timedelta(days=7)


def _at(day: date) -> Any:
    return lambda: datetime(day.year, day.month, day.day, 11, 0, tzinfo=UTC)


def _text(ws: Any, keys: Any, name: str, tmp_path: Path) -> str:
    placed = ws.settings.data_dir / "outbox" / "northwind" / name
    plain = tmp_path / f"{name}.pdf"
    assert keys.carrier.decrypt_file(placed, plain).valid_signature
    return subprocess.run(["pdftotext", "-layout", str(plain), "-"], check=True, capture_output=True,
                          text=True).stdout


def _line(text: str, member_id: str) -> str:
    return next(line for line in text.split(CHANGES_TITLE + ":", 1)[1].splitlines() if member_id in line)


def test_a_roster_lists_adds_and_terminations_since_the_last_one(tmp_path: Path, demo_keys: Any,
                                                                 ledger_url: str) -> None:
    from carrierfeeds.config import ManualDelivery
    from carrierfeeds.demo import prepare_workspace

    ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=tmp_path / "keys", ledger_url=ledger_url,
                           config_root=Path(__file__).resolve().parents[2], feed_id=FEED,
                           delivery=ManualDelivery(outbox="outbox/northwind"))
    census = generate_census(30, 9, as_of=DAY)
    write_census_csv(census, ws.inbound / "census_20261120.csv")
    first = run_feed(ws.settings, RunRef.for_day(FEED, DAY), clock=_at(DAY), actor="test")
    assert first.status == "pending_handoff", first.error
    assert "not compared: no earlier roster" in _text(ws, demo_keys, str(first.file_name), tmp_path)
    ledger = open_ledger(ws.settings)
    (pending,) = ledger.pending_handoffs(feed_id=FEED)
    ledger.confirm_handoff(pending.delivery_id, by="ops.jane", method="courier", now=_at(DAY)())

    dental = census[census["plan_code"] == "DEN-STD"]
    gone = str(dental.loc[dental["relationship"] == "EE", "subscriber_id"].iloc[0])
    stays = dental[(dental["relationship"] == "EE") & (dental["subscriber_id"] != gone)].iloc[0]
    child = stays.copy()
    child["member_id"], child["relationship"], child["first_name"] = "NEWCHILD1", "CH", "NEWCHILD"
    child["dob"], child["coverage_start"], child["ssn"] = "2026-10-30", "2026-11-01", ""
    later = pd.concat([census[census["subscriber_id"] != gone], child.to_frame().T], ignore_index=True)
    write_census_csv(later, ws.inbound / "census_20261127.csv")
    second = run_feed(ws.settings, RunRef.for_day(FEED, NEXT), clock=_at(NEXT), actor="test")
    assert second.status == "pending_handoff", second.error
    text = _text(ws, demo_keys, str(second.file_name), tmp_path)
    assert "every line: 030 Audit" in text  # the document itself is the full roster
    assert _line(text, "NEWCHILD1").split()[0] == "Add"
    assert _line(text, gone).split()[0] == "Termination" and "TERMINATED" in _line(text, gone)
    terms = len(census[(census["subscriber_id"] == gone) & (census["plan_code"] == "DEN-STD")])
    assert re.search(rf"{CHANGES_TITLE}\s+1 add, {terms} termination, 0 change", text.split(CHANGES_TITLE + ":")[0])

    # A forced resend renders the document again from the same snapshot: the same bytes, so it goes.
    (pending,) = ledger.pending_handoffs(feed_id=FEED)
    ledger.confirm_handoff(pending.delivery_id, by="ops.jane", method="courier", now=_at(NEXT)())
    ledger.close()
    resent = run_feed(ws.settings, RunRef.for_day(FEED, NEXT), clock=_at(NEXT), actor="ops.jane",
                      force_reason="the courier lost the envelope")
    assert resent.status == "pending_handoff", resent.error
    assert resent.isa13 != second.isa13
    assert _line(_text(ws, demo_keys, str(resent.file_name), tmp_path), "NEWCHILD1").split()[0] == "Add"
