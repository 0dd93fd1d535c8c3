"""The PHI guard: detail, counts and messages refuse what is never an id or a code; canaries stay out."""

from __future__ import annotations

import hashlib
import string

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from ledger_helpers import JAN, Clock, payload, start

from carrierfeeds.ledger import Ledger, UnsafeLedgerValue, scrub_detail
from carrierfeeds.ledger.models import metadata
from carrierfeeds.ledger.records import check_detail, check_sha256, check_text, check_token

SSN = "123-45-6789"
NAME = "Jane Q Canary"
DOB_WORDS = "born 1980-02-29"


UNSAFE_DETAILS: list[dict[str, object]] = [
    {"ssn": SSN},
    {"member": NAME},
    {"note": DOB_WORDS},
    {"ssn": "123456789"},
    {"nested": {"members": 1}},
    {"list": [1, 2]},
    {"bad key!": 1},
    {"long": "x" * 201},
    {"nan": float("nan")},
    {"big": 2**64},
]


def test_detail_refuses_anything_but_scalars_and_short_codes(ledger: Ledger, clock: Clock) -> None:
    run = start(ledger, clock)
    for detail in UNSAFE_DETAILS:
        with pytest.raises(UnsafeLedgerValue) as caught:
            ledger.record_stage(run.run_id, "validate", "failed", now=clock(), detail=detail)
        text = str(caught.value) + repr(caught.value.as_dict())
        assert SSN not in text and NAME not in text and "123456789" not in text
    assert [e.kind for e in ledger.run_events(run.run_id)] == ["run_attempt"]


def test_messages_and_reasons_refuse_ssn_shapes_and_control_characters(ledger: Ledger, clock: Clock) -> None:
    run = start(ledger, clock)
    for message in (f"member {SSN} failed", "row 3\x1b[31m", "m" * 1001, "ssn 123 45 6789 seen"):
        with pytest.raises(UnsafeLedgerValue) as caught:
            ledger.finish_run(run.run_id, "rejected", now=clock(), message=message)
        assert SSN not in str(caught.value)
    with pytest.raises(UnsafeLedgerValue):
        ledger.audit(actor="ops", action="note", object_type="run", object_id=run.run_id, now=clock(),
                     reason=f"caller said {SSN}")
    with pytest.raises(UnsafeLedgerValue):
        ledger.finish_run(run.run_id, "delivered", now=clock(), counts={"members": "12"})  # type: ignore[dict-item]


def test_canary_never_reaches_the_database(ledger: Ledger, raw: sa.Engine, clock: Clock) -> None:
    """A realistic run, with every attempt to slip the canaries in refused; then read every stored cell."""
    run = start(ledger, clock)
    ledger.record_stage(run.run_id, "validate", "succeeded", now=clock(),
                        detail={"members": 12, "bad_rows": 1, "rule": "ssn_format", "column": "ssn",
                                "source_name": "census_20260101.csv", "ratio": 0.5, "pyx12_ok": True})
    ledger.record_stage(run.run_id, "validate", "failed", now=clock(), error_code="census_rejected",
                        message="census.csv, row 7, column 'ssn': does not match the SSN format")
    for attempt in ({"value": SSN}, {"name": NAME}):
        with pytest.raises(UnsafeLedgerValue):
            ledger.record_stage(run.run_id, "validate", "failed", now=clock(), detail=attempt)
    with pytest.raises(UnsafeLedgerValue):
        ledger.record_stage(run.run_id, "validate", "failed", now=clock(), message=f"bad ssn {SSN}")
    ic = ledger.allocate_control_numbers(run_id=run.run_id, sender_id="S", receiver_id="R", now=clock())
    with pytest.raises(UnsafeLedgerValue):
        ledger.record_delivery_intent(
            run_id=run.run_id, feed_id="acme-medical", interval_start=JAN[0], payload_sha256=payload(1),
            file_name=f"{SSN}.pgp", isa13=ic.isa13, gs06=ic.gs06, st02=ic.st02, recipient_fingerprint="AB",
            member_counts={"members": 1}, transport="sftp", now=clock())
    ledger.finish_run(run.run_id, "rejected", now=clock(), error_code="census_rejected")

    with raw.connect() as conn:
        cells = [str(v) for table in metadata.sorted_tables
                 for row in conn.execute(sa.select(table)) for v in row]
    assert len(cells) > 30
    blob = "\n".join(cells)
    assert SSN not in blob and "123456789" not in blob and NAME not in blob and "Canary" not in blob
    assert ledger.verify_chain().ok


def test_scrub_detail_drops_unsafe_entries_by_count() -> None:
    scrubbed = scrub_detail({"file": "/data/census.csv", "row": 7, "value": SSN, "who": NAME, "ok": True})
    assert scrubbed == {"file": "/data/census.csv", "row": 7, "ok": True, "redacted": 2}
    assert scrub_detail({"members": 3}) == {"members": 3}
    assert scrub_detail(None) == {}


@given(st.binary(min_size=0, max_size=64))
def test_hex_digests_are_always_accepted(data: bytes) -> None:
    """Digests hold digit runs of any length; the SSN guard must never refuse one."""
    digest = hashlib.sha256(data).hexdigest()
    assert check_sha256("x", digest) == digest
    assert check_token("x", digest) == digest
    assert check_detail("d", {"sha": digest, "fpr": digest[:40].upper()}) == {"sha": digest,
                                                                           "fpr": digest[:40].upper()}


@given(st.text(alphabet=string.ascii_letters, min_size=1, max_size=20),
       st.text(alphabet=string.ascii_letters, min_size=1, max_size=20))
def test_names_with_spaces_are_never_a_detail_value(first: str, last: str) -> None:
    with pytest.raises(UnsafeLedgerValue):
        check_detail("d", {"who": f"{first} {last}"})


@given(st.integers(0, 999), st.integers(0, 99), st.integers(0, 9999), st.sampled_from(["-", " ", ""]))
def test_ssn_shapes_are_refused_in_free_text(a: int, b: int, c: int, sep: str) -> None:
    ssn = f"{a:03d}{sep}{b:02d}{sep}{c:04d}"
    with pytest.raises(UnsafeLedgerValue):
        check_text("message", f"member {ssn} rejected")
