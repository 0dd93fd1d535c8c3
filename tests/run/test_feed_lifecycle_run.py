"""The lifecycle through real runs: gpg, the loopback sshd (a production and a test inbox), the ledger on
SQLite and PostgreSQL. Testing sends T files with the test marker to the test endpoint; approval and the
go-live date move the feed to production, whose first file is full; P before production and a suspended
feed are refused, recorded, and send nothing."""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from carrierfeeds.lifecycle import approve, current, resume, suspend
from carrierfeeds.outcomes import ExitCode, exit_code_for_run
from carrierfeeds.run.context import RunRef
from carrierfeeds.run.stages import run_feed
from carrierfeeds.settings import load_bundle, open_ledger

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DAY1, DAY2, GO_LIVE, DAY4 = date(2026, 11, 16), date(2026, 11, 17), date(2026, 11, 18), date(2026, 11, 19)


class _Clock:
    """Each call a second later, from the morning after the first interval."""

    def __init__(self) -> None:
        self.t = datetime(2026, 11, 17, 6, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.t += timedelta(seconds=1)
        return self.t


def _configure(ws: Any, sshd_server: Any, tmp_path: Path, *, lifecycle: str | None) -> tuple[Any, Path]:
    """The demo feed with the carrier's live mapping (ISA15 P, changes mode) and, with ``lifecycle``, a
    lifecycle block and a test endpoint: a second folder on the same sshd."""
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    live = mappings / "sunrise-health.yaml"
    text = live.read_text()
    assert "  usage: T " in text
    live.write_text(text.replace("  usage: T ", "  usage: P ") + "mode: changes\n")
    test_inbox = sshd_server.root / f"test-{uuid.uuid4().hex[:8]}"
    test_inbox.mkdir()
    feed_file = ws.settings.feeds_dir / f"{ws.feed.feed_id}.yaml"
    data = yaml.safe_load(feed_file.read_text())
    if lifecycle is not None:
        data["lifecycle"] = {"initial": lifecycle}
        data["delivery"]["test"] = {"kind": "sftp", "connection_id": data["delivery"]["connection_id"],
                                    "remote_dir": str(test_inbox)}
    feed_file.write_text(yaml.safe_dump(data, sort_keys=False))
    return ws.settings.model_copy(update={"mappings_dir": mappings}), test_inbox


CANARIES = {"last_name": "Quillonius", "first_name": "Zebediah"}


def _with_canaries(census: Path) -> Path:
    """The first member's names replaced by values a PHI leak would carry (synthetic data)."""
    frame = pd.read_csv(census, dtype=str, keep_default_na=False)
    first = frame["member_id"] == frame["member_id"].iloc[0]
    for column, value in CANARIES.items():
        frame.loc[first, column] = value
    frame.to_csv(census, index=False)
    return census


def _dump_ledger(settings: Any) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(settings.resolved_ledger_url)
    chunks = []
    with engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        assert "feed_lifecycle" in tables
        for table in tables:
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):  # noqa: S608 - names from the schema
                chunks.append(repr(tuple(row)))
    engine.dispose()
    return "\n".join(chunks)


def current_history(settings: Any, feed: Any) -> list[dict[str, Any]]:
    ledger = open_ledger(settings)
    try:
        return [e.as_dict() for e in current(ledger, feed).history]
    finally:
        ledger.close()


def _moved_house(census: Path, out: Path) -> Path:
    """The census with one family's address changed: a change file's worth (synthetic data)."""
    frame = pd.read_csv(census, dtype=str, keep_default_na=False)
    family = frame["subscriber_id"] == frame["subscriber_id"].iloc[0]
    frame.loc[family, "address1"] = "12 SYNTHETIC WAY"
    frame.to_csv(out, index=False)
    return out


def _plain(ws: Any, path: Path, tmp_path: Path) -> bytes:
    out = tmp_path / f"plain-{uuid.uuid4().hex[:6]}"
    assert ws.keys.carrier.decrypt_file(path, out).valid_signature
    return out.read_bytes()


def _isa(plain: bytes) -> list[str]:
    return plain[:106].decode().split("*")


def _ins03(plain: bytes) -> set[str]:
    return {s.strip().split("*")[3] for s in plain.decode().split("~") if s.strip().startswith("INS*")}


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_testing_then_certified_then_production_on_the_go_live_date(sftp_workspace: Any, sshd_server: Any,
                                                                     tmp_path: Path) -> None:
    ws = sftp_workspace
    settings, test_inbox = _configure(ws, sshd_server, tmp_path, lifecycle="testing")
    feed, mapping = load_bundle(settings, ws.feed.feed_id).feed, load_bundle(settings, ws.feed.feed_id).mapping
    clock = _Clock()
    first = _with_canaries(ws.write_census(members=24, seed=21, as_of=DAY1))

    # Testing: the parallel run. The real census goes through every stage to the carrier's test system.
    s1 = run_feed(settings, RunRef.for_day(feed.feed_id, DAY1), clock=clock, actor="test", census_path=first)
    assert s1.status == "delivered", s1.error
    assert s1.endpoint == "test"
    assert _names(ws.inbox) == []
    [sent1] = _names(test_inbox)
    assert sent1.startswith(mapping.test_marker) and sent1 == s1.file_name
    plain1 = _plain(ws, test_inbox / sent1, tmp_path)
    assert _isa(plain1)[15] == "T" and _isa(plain1)[13] == f"{s1.isa13:09d}"
    ledger = open_ledger(settings)
    d1 = ledger.find_delivery(feed_id=feed.feed_id, interval_start=DAY1)
    assert d1 is not None and d1.transport == "sftp:test" and d1.remote_path is not None
    assert d1.remote_path.startswith(str(test_inbox))

    life = approve(ledger, feed, by="dana.ops", reference="Sunrise EDI ticket CERT-4411", go_live=GO_LIVE,
                   now=clock())
    assert life.state == "certified"

    # Certified, before the go-live date: still test files, to the test endpoint.
    second = _moved_house(first, ws.inbound / "census_20261117.csv")
    s2 = run_feed(settings, RunRef.for_day(feed.feed_id, DAY2), clock=clock, actor="test", census_path=second)
    assert s2.status == "delivered", s2.error
    assert _names(ws.inbox) == [] and len(_names(test_inbox)) == 2
    plain2 = _plain(ws, test_inbox / str(s2.file_name), tmp_path)
    assert _isa(plain2)[15] == "T" and "030" not in _ins03(plain2)  # a change file

    # The go-live date: the same census as the day before (nothing changed) still sends the whole roster,
    # a full file (030) with ISA15 P, to production, without the test marker.
    s3 = run_feed(settings, RunRef.for_day(feed.feed_id, GO_LIVE), clock=clock, actor="airflow",
                  census_path=second)
    assert s3.status == "delivered", s3.error
    assert s3.endpoint == "production"
    [sent3] = _names(ws.inbox)
    assert not sent3.startswith(mapping.test_marker) and len(_names(test_inbox)) == 2
    plain3 = _plain(ws, ws.inbox / sent3, tmp_path)
    assert _isa(plain3)[15] == "P" and _ins03(plain3) == {"030"}
    assert sum(1 for s in plain3.split(b"~") if s.strip().startswith(b"INS*")) == s3.members > 0
    assert s1.isa13 is not None and s2.isa13 is not None and s3.isa13 is not None
    assert s1.isa13 < s2.isa13 < s3.isa13  # one sequence for test and production: never a repeat
    d3 = ledger.find_delivery(feed_id=feed.feed_id, interval_start=GO_LIVE)
    assert d3 is not None and d3.transport == "sftp" and d3.status == "delivered"
    assert [(e.action, e.state, e.actor) for e in current(ledger, feed).history] == [
        ("approved", "certified", "dana.ops"), ("went_live", "production", "airflow")]
    build = next(e for e in ledger.run_events(s3.run_id) if e.stage == "build" and e.status == "succeeded")
    assert build.detail["went_live"] is True and build.detail["first_production_file"] is True

    # The next production day diffs as the mapping says: nothing changed, nothing sent.
    s4 = run_feed(settings, RunRef.for_day(feed.feed_id, DAY4), clock=clock, actor="test", census_path=second)
    assert s4.status == "nothing_to_send", s4.error
    assert len(_names(ws.inbox)) == 1
    assert ledger.verify_chain().ok
    ledger.close()
    # No member data in the ledger (lifecycle rows included), the summaries or the names of what was sent.
    seen = (_dump_ledger(settings) + json.dumps([x.as_dict() for x in (s1, s2, s3, s4)])
            + json.dumps(current_history(settings, feed)) + " ".join(_names(ws.inbox) + _names(test_inbox)))
    assert "12 SYNTHETIC WAY" in plain3.decode()  # the canaries did reach the carrier's files
    for value in CANARIES.values():
        assert value.casefold() not in seen.casefold() and value.upper() in plain3.decode(), value


def test_a_suspended_feed_is_refused_recorded_and_sends_nothing(sftp_workspace: Any, sshd_server: Any,
                                                                 tmp_path: Path) -> None:
    ws = sftp_workspace
    settings, test_inbox = _configure(ws, sshd_server, tmp_path, lifecycle="testing")
    feed = load_bundle(settings, ws.feed.feed_id).feed
    clock = _Clock()
    census = ws.write_census(members=12, seed=23, as_of=DAY1)
    ledger = open_ledger(settings)
    suspend(ledger, feed, by="ops", reason="carrier test system down (ticket 91)", now=clock())

    ref = RunRef.for_day(feed.feed_id, DAY1)
    refused = run_feed(settings, ref, clock=clock, actor="test", census_path=census)
    assert refused.status == "refused" and refused.error is not None and refused.error["code"] == "lifecycle"
    assert exit_code_for_run(refused.status, refused.error) == ExitCode.REFUSED
    assert _names(test_inbox) == [] and _names(ws.inbox) == []
    events = [(e.stage, e.status, e.error_code) for e in ledger.run_events(refused.run_id)]
    assert ("build", "failed", "lifecycle") in events
    assert ledger.transmissions(refused.run_id) == []  # no control number taken
    assert ledger.find_delivery(feed_id=feed.feed_id, interval_start=DAY1) is None

    resume(ledger, feed, by="ops", reason="back up", now=clock())
    again = run_feed(settings, ref, clock=clock, actor="test", census_path=census)
    assert again.status == "delivered", again.error
    assert len(_names(test_inbox)) == 1 and _names(ws.inbox) == []
    assert ledger.verify_chain().ok
    ledger.close()


def test_a_production_file_of_an_unmanaged_feed_is_refused_until_declared(sftp_workspace: Any, sshd_server: Any,
                                                                          tmp_path: Path) -> None:
    from carrierfeeds.lifecycle import declare

    ws = sftp_workspace
    settings, _ = _configure(ws, sshd_server, tmp_path, lifecycle=None)
    feed = load_bundle(settings, ws.feed.feed_id).feed
    clock = _Clock()
    census = ws.write_census(members=12, seed=24, as_of=DAY1)
    ref = RunRef.for_day(feed.feed_id, DAY1)

    refused = run_feed(settings, ref, clock=clock, actor="test", census_path=census)
    assert refused.status == "refused" and refused.error is not None
    assert refused.error["code"] == "lifecycle" and refused.error["usage"] == "P"
    assert exit_code_for_run(refused.status, refused.error) == ExitCode.REFUSED
    assert _names(ws.inbox) == []
    ledger = open_ledger(settings)
    assert ledger.transmissions(refused.run_id) == []
    assert ledger.get_run(refused.run_id) is not None
    assert ledger.get_run(refused.run_id).status == "refused"  # type: ignore[union-attr]

    declare(ledger, feed, state="production", by="ops", reference="live since 2025", reason="upgrade", now=clock())
    sent = run_feed(settings, ref, clock=clock, actor="test", census_path=census)
    assert sent.status == "delivered", sent.error
    [name] = _names(ws.inbox)
    assert _isa(_plain(ws, ws.inbox / name, tmp_path))[15] == "P"
    ledger.close()


def test_the_gate_and_deliver_recheck_the_lifecycle_after_the_build(sftp_workspace: Any, sshd_server: Any,
                                                                     tmp_path: Path) -> None:
    """A production file built while the feed was live is stopped by the gate once the feed is declared back to
    testing, and a built file by deliver once the feed is suspended: nothing sent, no intent row."""
    from carrierfeeds.lifecycle import LifecycleRefused, declare
    from carrierfeeds.run import build, conformance, deliver, encrypt, open_run, stage_census, validate

    ws = sftp_workspace
    settings, test_inbox = _configure(ws, sshd_server, tmp_path, lifecycle="production")
    feed = load_bundle(settings, ws.feed.feed_id).feed
    clock = _Clock()
    census = ws.write_census(members=12, seed=25, as_of=DAY1)

    ctx = open_run(settings, RunRef.for_day(feed.feed_id, DAY1), clock=clock, actor="test")
    stage_census(ctx, census)
    validate(ctx)
    build(ctx)
    assert ctx.state().build.usage == "P" and ctx.state().build.endpoint == "production"
    declare(ctx.ledger, feed, state="testing", by="ops", reference=None, reason="re-certification", now=clock())
    with pytest.raises(LifecycleRefused, match=r"ISA15 P\) for feed .* which is testing"):
        conformance(ctx)
    events = [(e.stage, e.status, e.error_code, dict(e.detail)) for e in ctx.ledger.run_events(ctx.run_id)]
    assert events[-1][:3] == ("conformance", "failed", "lifecycle")

    declare(ctx.ledger, feed, state="production", by="ops", reference=None, reason="back", now=clock())
    conformance(ctx)
    encrypt(ctx)
    suspend(ctx.ledger, feed, by="ops", reason="carrier asked to hold", now=clock())
    with pytest.raises(LifecycleRefused, match="suspended"):
        deliver(ctx)
    assert _names(ws.inbox) == [] and _names(test_inbox) == []
    assert ctx.ledger.find_delivery(feed_id=feed.feed_id, interval_start=DAY1) is None
    resume(ctx.ledger, feed, by="ops", reason=None, now=clock())
    deliver(ctx)
    [name] = _names(ws.inbox)
    assert _isa(_plain(ws, ws.inbox / name, tmp_path))[15] == "P"
    ctx.ledger.close()
