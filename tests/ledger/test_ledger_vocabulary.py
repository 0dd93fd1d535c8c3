"""The ledger's status vocabulary: the StrEnums hold exactly the words rows have always held, and a member
written is read back as its plain string under an intact chain."""

from __future__ import annotations

from ledger_helpers import Clock, payload, start

from carrierfeeds.ledger import Ledger
from carrierfeeds.ledger.records import (
    ACK_KINDS,
    ACK_STATUSES,
    DELIVERED_STATUSES,
    HOLD_OBJECT_TYPES,
    OUTCOME_STATUSES,
    RUN_STATUSES,
    SENT_STATUSES,
    STAGE_STATUSES,
    DeliveryStatus,
    HoldAction,
    RunStatus,
    StageStatus,
)


def test_vocabularies_are_the_stored_words() -> None:
    vocabularies = {"run": RUN_STATUSES, "stage": STAGE_STATUSES, "outcome": OUTCOME_STATUSES,
                    "delivered": DELIVERED_STATUSES, "sent": SENT_STATUSES, "ack kind": ACK_KINDS,
                    "ack status": ACK_STATUSES, "hold object": HOLD_OBJECT_TYPES}
    assert vocabularies == {
        "run": {"delivered", "handed_off", "rejected", "refused", "failed", "already_delivered", "pending_handoff",
                "nothing_to_send", "no_new_census"},
        "stage": {"started", "succeeded", "failed", "skipped"},
        "outcome": {"delivered", "failed", "reconciled", "forced_resend", "pending_handoff", "handed_off",
                    "rename_sent"},
        "delivered": {"delivered", "reconciled", "forced_resend", "handed_off"},
        "sent": {"delivered", "reconciled", "forced_resend", "handed_off", "pending_handoff"},
        "ack kind": {"TA1", "999", "unreadable"},
        "ack status": {"accepted", "accepted_with_errors", "rejected", "partial", "unreadable"},
        "hold object": {"employer", "feed"},
    }
    assert (HoldAction.SET, HoldAction.CLEAR) == ("legal_hold_set", "legal_hold_clear")
    # Plain strings, so a membership test with a row's text and JSON output read the same words.
    assert all(type(s) is str for s in RUN_STATUSES | OUTCOME_STATUSES | ACK_STATUSES)


def test_enum_members_are_stored_as_their_words(ledger: Ledger, clock: Clock) -> None:
    run = start(ledger, clock)
    ledger.record_stage(run.run_id, "deliver", StageStatus.STARTED, now=clock())
    ledger.allocate_control_numbers(run_id=run.run_id, sender_id="S", receiver_id="R", now=clock())
    intent = ledger.record_delivery_intent(
        run_id=run.run_id, feed_id=run.feed_id, interval_start=run.interval_start, payload_sha256=payload(1),
        file_name="f.pgp", isa13=1, gs06=1, st02=1, recipient_fingerprint="F" * 40, member_counts={"members": 1},
        transport="local", now=clock())
    assert intent.status == DeliveryStatus.PENDING
    ledger.record_delivery_outcome(intent.delivery_id, status=DeliveryStatus.DELIVERED, now=clock())
    ledger.finish_run(run.run_id, RunStatus.DELIVERED, now=clock())

    events = ledger.run_events(run.run_id)
    assert [(e.kind, e.status) for e in events] == [("run_attempt", "started"), ("stage", "started"),
                                                    ("run_finished", "delivered")]
    assert all(type(e.status) is str and type(e.kind) is str for e in events)
    found = ledger.find_delivery(feed_id=run.feed_id, interval_start=run.interval_start)
    assert found is not None and type(found.status) is str and found.status == "delivered"
    assert ledger.get_run(run.run_id).status == "delivered"  # type: ignore[union-attr]
    assert ledger.verify_chain().ok
