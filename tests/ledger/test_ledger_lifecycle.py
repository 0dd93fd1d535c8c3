"""A feed's lifecycle rows: transitions in order, refused out of order, chained, PHI-guarded, on both backends."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
import sqlalchemy as sa
from ledger_helpers import Clock

from carrierfeeds.config import Feed, LifecycleSpec, SftpDelivery, SftpEndpoint
from carrierfeeds.ledger import Ledger, UnsafeLedgerValue
from carrierfeeds.ledger.lifecycle import histories, history
from carrierfeeds.lifecycle import (
    UNMANAGED,
    LifecycleRefused,
    approve,
    current,
    declare,
    plan_run,
    resume,
    suspend,
)

GO_LIVE = date(2026, 3, 10)


def _feed(base: Feed, *, lifecycle: str | None = "testing", test_endpoint: bool = True) -> Feed:
    test = SftpEndpoint(connection_id="carrier_test", remote_dir="/test-inbound") if test_endpoint else None
    delivery = SftpDelivery(connection_id="carrier_prod", remote_dir="/inbound", test=test)
    return base.model_copy(update={"delivery": delivery,
                                   "lifecycle": LifecycleSpec(initial=lifecycle) if lifecycle else None})


def test_testing_certified_production_suspended_and_back(ledger: Ledger, clock: Clock, feed: Feed,
                                                          mapping: Any) -> None:
    f = _feed(feed)
    assert current(ledger, f).state == "testing" and current(ledger, f).history == ()
    plan = plan_run(ledger, f, mapping, day=date(2026, 3, 5), run_id="r1", actor="test", now=clock())
    assert (plan.endpoint, plan.usage, plan.marker) == ("test", "T", mapping.test_marker)

    life = approve(ledger, f, by="dana", reference="SUNRISE-CERT-4411 signed by EDI lead", go_live=GO_LIVE,
                   now=clock())
    assert (life.state, life.go_live) == ("certified", GO_LIVE)
    # Before the go-live date a certified feed still sends test files and records nothing more.
    before = plan_run(ledger, f, mapping, day=date(2026, 3, 9), run_id="r2", actor="test", now=clock())
    assert before.endpoint == "test" and not before.went_live
    assert [e.action for e in history(ledger, f.feed_id)] == ["approved"]

    # The first run on the go-live date moves it to production, once, and is a full file.
    live = plan_run(ledger, f, mapping, day=GO_LIVE, run_id="r3", actor="airflow", now=clock())
    assert (live.state, live.endpoint, live.usage, live.went_live, live.full_file) == \
        ("production", "production", None, True, True)
    again = plan_run(ledger, f, mapping, day=GO_LIVE, run_id="r3", actor="airflow", now=clock())
    assert again.went_live is False and again.full_file is True  # no production delivery yet
    assert [e.action for e in history(ledger, f.feed_id)] == ["approved", "went_live"]

    suspended = suspend(ledger, f, by="ops", reason="carrier asked us to pause (ticket 77)", now=clock())
    assert (suspended.state, suspended.suspended_from) == ("suspended", "production")
    with pytest.raises(LifecycleRefused, match="suspended"):
        plan_run(ledger, f, mapping, day=date(2026, 3, 11), run_id="r4", actor="test", now=clock())
    with pytest.raises(LifecycleRefused, match="is suspended; cannot record suspended"):
        suspend(ledger, f, by="ops", reason="again", now=clock())
    assert resume(ledger, f, by="ops", reason="carrier ready", now=clock()).state == "production"

    events = history(ledger, f.feed_id)
    assert [(e.action, e.state) for e in events] == [
        ("approved", "certified"), ("went_live", "production"), ("suspended", "suspended"),
        ("resumed", "production")]
    assert events[0].actor == "dana" and events[0].reference == "SUNRISE-CERT-4411 signed by EDI lead"
    assert events[1].actor == "airflow" and events[1].go_live == GO_LIVE
    assert histories(ledger)[f.feed_id] == events
    assert ledger.verify_chain().ok


def test_out_of_order_and_incomplete_transitions_are_refused_and_record_nothing(
        ledger: Ledger, clock: Clock, feed: Feed) -> None:
    f = _feed(feed)
    with pytest.raises(LifecycleRefused, match="is testing; cannot record resumed"):
        resume(ledger, f, by="ops", reason=None, now=clock())
    with pytest.raises(LifecycleRefused, match="reference"):
        approve(ledger, f, by="dana", reference="  ", now=clock())
    with pytest.raises(LifecycleRefused, match="reason"):
        suspend(ledger, f, by="ops", reason="", now=clock())
    declare(ledger, f, state="production", by="ops", reference=None, reason="live before upgrade", now=clock())
    with pytest.raises(LifecycleRefused, match="is production; cannot record approved"):
        approve(ledger, f, by="dana", reference="TICKET-1", now=clock())
    # An unmanaged feed without a test endpoint cannot be certified: it would have nowhere to send tests.
    bare = _feed(feed, lifecycle=None, test_endpoint=False).model_copy(update={"feed_id": "acme-other"})
    assert current(ledger, bare).state == UNMANAGED
    with pytest.raises(LifecycleRefused, match="no test endpoint"):
        approve(ledger, bare, by="dana", reference="TICKET-2", now=clock())
    assert history(ledger, bare.feed_id) == []
    assert [e.action for e in history(ledger, f.feed_id)] == ["declared"]


def test_an_unmanaged_feed_refuses_production_files_until_declared(ledger: Ledger, clock: Clock, feed: Feed,
                                                                   mapping: Any) -> None:
    f = _feed(feed, lifecycle=None, test_endpoint=False)
    live_mapping = mapping.model_copy(update={"envelope": mapping.envelope.model_copy(update={"usage": "P"})})
    # A test-usage mapping runs as it always did: to the feed's own delivery, the mapping's ISA15.
    plain = plan_run(ledger, f, mapping, day=GO_LIVE, run_id="r1", actor="test", now=clock())
    assert (plain.state, plain.endpoint, plain.usage, plain.marker) == (UNMANAGED, "production", None, "")
    with pytest.raises(LifecycleRefused, match=r"production file \(ISA15 P\)") as refused:
        plan_run(ledger, f, live_mapping, day=GO_LIVE, run_id="r1", actor="test", now=clock())
    assert refused.value.code == "lifecycle" and refused.value.details["state"] == UNMANAGED
    declare(ledger, f, state="production", by="ops", reference="existing live feed", reason=None, now=clock())
    # Declared, not gone live: an existing live feed's next file is not forced full.
    ok = plan_run(ledger, f, live_mapping, day=GO_LIVE, run_id="r1", actor="test", now=clock())
    assert (ok.state, ok.endpoint, ok.full_file) == ("production", "production", False)


def test_lifecycle_rows_refuse_phi_shaped_text(ledger: Ledger, clock: Clock, feed: Feed, raw: sa.Engine) -> None:
    f = _feed(feed)
    with pytest.raises(UnsafeLedgerValue, match="SSN-shaped") as refused:
        approve(ledger, f, by="dana", reference="member 123-45-6789 looked fine", now=clock())
    assert "123-45-6789" not in str(refused.value.as_dict())
    with raw.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM feed_lifecycle")).scalar_one() == 0
