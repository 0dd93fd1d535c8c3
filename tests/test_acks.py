"""Acknowledgments end to end: pyx12's 999s and hand-written TA1s collected once, matched, recorded, alerted."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent / "x12"))  # the shared synthetic 834 builders
import x12_helpers as h

from carrierfeeds.acks import (
    LocalAckInbox,
    SftpAckInbox,
    ack_infos,
    ack_status,
    collect_acks,
    overdue_alerts,
    snapshot_blocked,
)
from carrierfeeds.cli import app
from carrierfeeds.crypto import Keyring
from carrierfeeds.errors import HostKeyRefused
from carrierfeeds.ledger import DeliveryRecord, Ledger
from carrierfeeds.x12.check import check_834, validate_with_pyx12
from carrierfeeds.x12.envelope import ControlNumbers
from carrierfeeds.x12.render import render_834_bytes

ROOT = Path(__file__).resolve().parents[1]
FEED = "acme-sunrise-medical"
SENDER, RECEIVER = "CARRIERFEEDS", "SUNRISEHP"  # the shipped mapping's ISA06 / ISA08
T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
PLANTED = "ZQX"  # a bad INS03 value pyx12 copies into IK404; must never leave the reader


@dataclass
class Sent:
    delivery: DeliveryRecord
    x12: bytes


def deliver(ledger: Ledger, day: int, *, broken: bool = False, at: datetime = T0, cap: int | None = None,
            transport: str = "local", feed_id: str = FEED) -> Sent:
    """A delivered 834 recorded the way the pipeline records it (intent, then outcome).

    ``cap``: the mapping's max_members_per_transaction (the family of four and the single split into
    two sets); ``broken`` then breaks the second set (the single's INS03), else the first dependent's.
    ``transport`` manual: placed for a hand-off (pending_handoff), not delivered.
    """
    start = date(2026, 11, day)
    run = ledger.start_run(feed_id=feed_id, interval_start=start, interval_end=start + timedelta(days=1),
                           actor="test", now=at)
    ic = ledger.allocate_control_numbers(run_id=run.run_id, sender_id=SENDER, receiver_id=RECEIVER, now=at)
    m = h.validated(max_members_per_transaction=cap) if cap is not None else h.mapping()
    data = render_834_bytes(h.enrollment(m=m), h.header(m), ControlNumbers(ic.isa13, ic.gs06, ic.st02))
    if broken and cap is not None:
        i = data.rindex(b"INS*Y*18*030")
        data = data[:i] + data[i:].replace(b"INS*Y*18*030", b"INS*Y*18*" + PLANTED.encode(), 1)
    elif broken:
        data = data.replace(b"INS*N*01*030", b"INS*N*01*" + PLANTED.encode(), 1)
    # As the deliver stage records it: the ST count the conformance gate read from the file.
    counts = {"members": 5, "transaction_sets": check_834(data).transaction_sets}
    intent = ledger.record_delivery_intent(
        run_id=run.run_id, feed_id=feed_id, interval_start=start, payload_sha256=hashlib.sha256(data).hexdigest(),
        file_name=f"CF_{ic.isa13:09d}.834.pgp", isa13=ic.isa13, gs06=ic.gs06, st02=ic.st02,
        recipient_fingerprint="A" * 40, member_counts=counts, transport=transport, now=at)
    ledger.record_delivery_outcome(intent.delivery_id, status="pending_handoff" if transport == "manual"
                                   else "delivered", now=at + timedelta(minutes=1), size=len(data))
    found = ledger.find_delivery(feed_id=feed_id, interval_start=start)
    assert found is not None
    return Sent(found, data)


def pyx12_999(tmp_path: Path, data: bytes) -> bytes:
    """The 999 pyx12's own validator generates for ``data``."""
    path = tmp_path / f"{uuid.uuid4().hex}.834"
    path.write_bytes(data)
    try:
        ack = validate_with_pyx12(path).ack_999
    finally:
        path.unlink()
    assert ack is not None
    return ack


def ta1(control: int, code: str, note: str, *, sender: str = RECEIVER, receiver: str = SENDER) -> bytes:
    return (f"ISA*00*          *00*          *ZZ*{sender:<15}*ZZ*{receiver:<15}*261121*0900*^*00501*"
            f"000000900*0*T*:~\nTA1*{control:09d}*261121*0800*{code}*{note}~\nIEA*0*000000900~\n").encode()


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    """The ledger on SQLite and on PostgreSQL (conftest's ``ledger_url``): matching and status are SQL."""
    opened = Ledger.open(ledger_url)
    opened.upgrade()
    yield opened
    opened.close()


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "carrier-outbox"
    folder.mkdir()
    return folder


def config_root(tmp_path: Path, sunrise_extra: str) -> Path:
    """The shipped feeds, mappings and schemas, with ``sunrise_extra`` (YAML) added to sunrise-health."""
    root = tmp_path / "config"
    for part in ("feeds", "mappings", "schemas"):
        shutil.copytree(ROOT / part, root / part)
    mapping = root / "mappings" / "sunrise-health.yaml"
    mapping.write_text(mapping.read_text() + sunrise_extra)
    return root


#: The sunrise-health carrier with a local acknowledgment folder (under the data directory).
WITH_ACK_SOURCE = "acks:\n  source:\n    kind: local\n    path: carrier-outbox\nack_window_hours: 6\n"


def collect(ledger: Ledger, inbox: Path, archive: Path, **kwargs: Any) -> Any:
    return collect_acks(ledger, LocalAckInbox(inbox), source_id="sunrise-health", now=T0 + timedelta(hours=2),
                        archive_dir=archive, **kwargs)


# ------------------------------------------------------------------------------------------- tests
def test_pyx12_999_for_our_834_is_matched_recorded_once_and_chained(ledger_url: str, tmp_path: Path,
                                                                     inbox: Path) -> None:
    led = Ledger.open(ledger_url)
    led.upgrade()
    try:
        sent = deliver(led, 1)
        (inbox / "999_0001.x12").write_bytes(pyx12_999(tmp_path, sent.x12))
        report = collect(led, inbox, tmp_path / "archive")
        assert (report.count("recorded"), report.alerts) == (1, ())
        (row,) = led.acknowledgments()
        assert (row.kind, row.status, row.delivery_id, row.isa13) == ("999", "accepted", sent.delivery.delivery_id,
                                                                      sent.delivery.isa13)
        assert (row.sender_id, row.receiver_id, row.control_number) == (RECEIVER, SENDER, sent.delivery.gs06)
        # The same bytes again, under another name too: processed once.
        (inbox / "999_0001_again.x12").write_bytes((inbox / "999_0001.x12").read_bytes())
        again = collect(led, inbox, tmp_path / "archive")
        assert again.count("duplicate") == 2 and again.count("recorded") == 0
        assert len(led.acknowledgments()) == 1
        (status,) = ack_status(led, now=T0 + timedelta(days=5))
        assert (status.status, status.delivery_id) == ("accepted", sent.delivery.delivery_id)
        assert not snapshot_blocked(led, sent.delivery.delivery_id)
        assert ack_infos(led)[sent.delivery.delivery_id].status == "accepted"
        assert led.verify_chain().ok
    finally:
        led.close()


def test_rejected_999_marks_the_delivery_and_alerts_positions_and_codes_never_values(
        ledger: Ledger, tmp_path: Path, inbox: Path, caplog: pytest.LogCaptureFixture) -> None:
    good, bad = deliver(ledger, 1), deliver(ledger, 2, broken=True)
    raw = pyx12_999(tmp_path, bad.x12)
    assert PLANTED.encode() in raw
    (inbox / "999_bad.x12").write_bytes(raw)
    (inbox / "999_good.x12").write_bytes(pyx12_999(tmp_path, good.x12))
    with caplog.at_level(logging.DEBUG):
        report = collect(ledger, inbox, tmp_path / "archive")
    assert report.count("recorded") == 2
    rows = {r.delivery_id: r for r in ledger.acknowledgments()}
    rejected = rows[bad.delivery.delivery_id]
    assert (rejected.status, rejected.sets_rejected, rejected.segment_errors, rejected.element_errors) == (
        "rejected", 1, 1, 1)
    assert rows[good.delivery.delivery_id].status == "accepted"
    (alert,) = report.alerts
    assert (alert.kind, alert.severity, alert.delivery_id, alert.isa13) == (
        "rejected", "error", bad.delivery.delivery_id, bad.delivery.isa13)
    element = next(e for e in alert.errors if "ik403" in e)
    assert (element["segment"], element["element"], element["reference"], element["ik403"]) == ("INS", 3, "875", "7")
    assert element["ik403_meaning"] == "invalid code value"
    assert element["ik304_meaning"] == "segment has data element errors"
    statuses = {s.delivery_id: s.status for s in ack_status(ledger, now=T0 + timedelta(hours=3))}
    assert statuses == {good.delivery.delivery_id: "accepted", bad.delivery.delivery_id: "rejected"}
    assert snapshot_blocked(ledger, bad.delivery.delivery_id)
    assert not snapshot_blocked(ledger, good.delivery.delivery_id)
    # The bad value is nowhere: not in alerts, logs, ledger rows or the kept copy.
    archived = b"".join(p.read_bytes() for p in (tmp_path / "archive").rglob("*") if p.is_file())
    assert archived and PLANTED.encode() not in archived
    assert PLANTED not in json.dumps([a.as_dict() for a in report.alerts], default=str)
    assert PLANTED not in caplog.text and "ack alert rejected" in caplog.text
    assert PLANTED not in repr(ledger.acknowledgments())


def test_hand_written_ta1_accept_and_reject(ledger: Ledger, tmp_path: Path, inbox: Path) -> None:
    accepted, rejected = deliver(ledger, 1), deliver(ledger, 2)
    (inbox / "ta1_a.x12").write_bytes(ta1(accepted.delivery.isa13, "A", "000"))
    (inbox / "ta1_r.x12").write_bytes(ta1(rejected.delivery.isa13, "R", "006"))
    report = collect(ledger, inbox, tmp_path / "archive")
    rows = {r.delivery_id: r for r in ledger.acknowledgments()}
    assert rows[accepted.delivery.delivery_id].status == "accepted"
    assert rows[rejected.delivery.delivery_id].status == "rejected"
    assert rows[rejected.delivery.delivery_id].codes[0]["ta105"] == "006"
    (alert,) = report.alerts
    assert alert.kind == "rejected" and alert.errors[0]["ta105_meaning"] == "invalid sender id"
    later = T0 + timedelta(hours=1)
    states = {s.delivery_id: (s.status, s.interchange) for s in ack_status(ledger, now=later)}
    # An accepting TA1 is not the 999: that one is still awaited.
    assert states == {accepted.delivery.delivery_id: ("awaiting", "accepted"),
                      rejected.delivery.delivery_id: ("rejected", "rejected")}
    assert snapshot_blocked(ledger, rejected.delivery.delivery_id)


def test_acknowledgments_for_unknown_interchanges_are_kept_and_reported(ledger: Ledger, tmp_path: Path,
                                                                        inbox: Path) -> None:
    sent = deliver(ledger, 1)
    (inbox / "ta1_unknown.x12").write_bytes(ta1(777_777, "A", "000"))
    # The right control number from another carrier (ISA06) is not ours either.
    (inbox / "ta1_other_carrier.x12").write_bytes(ta1(sent.delivery.isa13, "A", "000", sender="OTHERHP"))
    ack = pyx12_999(tmp_path, sent.x12).replace(f"AK1*BE*{sent.delivery.gs06}*".encode(), b"AK1*BE*31337*")
    (inbox / "999_unknown.x12").write_bytes(ack)
    report = collect(ledger, inbox, tmp_path / "archive")
    assert report.count("recorded") == 3
    unmatched = ledger.acknowledgments(matched=False)
    assert {(r.kind, r.control_number) for r in unmatched} == {("TA1", 777_777), ("TA1", sent.delivery.isa13),
                                                                ("999", 31337)}
    assert all(r.delivery_id is None and r.isa13 is None for r in unmatched)
    assert ledger.acknowledgments(matched=True) == []
    assert sorted(a.kind for a in report.alerts) == ["unmatched"] * 3
    assert len(list((tmp_path / "archive" / "sunrise-health").iterdir())) == 3


def test_overdue_when_no_999_within_the_carrier_window(ledger: Ledger, tmp_path: Path, inbox: Path) -> None:
    sent = deliver(ledger, 1)
    delivered_at = sent.delivery.updated_at
    (status,) = ack_status(ledger, now=delivered_at + timedelta(hours=23))
    assert status.status == "awaiting"
    (status,) = ack_status(ledger, now=delivered_at + timedelta(hours=25))
    assert (status.status, status.due_at) == ("overdue", delivered_at + timedelta(hours=24))
    windows = {FEED: timedelta(hours=48)}
    assert ack_status(ledger, now=delivered_at + timedelta(hours=25), windows=windows)[0].status == "awaiting"
    (alert,) = overdue_alerts([status], now=delivered_at + timedelta(hours=25))
    assert (alert.kind, alert.delivery_id, alert.isa13) == ("overdue", sent.delivery.delivery_id,
                                                            sent.delivery.isa13)
    # A TA1 acceptance does not stop the clock; the 999 does.
    (inbox / "ta1.x12").write_bytes(ta1(sent.delivery.isa13, "A", "000"))
    collect(ledger, inbox, tmp_path / "archive")
    assert ack_status(ledger, now=delivered_at + timedelta(hours=25))[0].status == "overdue"
    (inbox / "999.x12").write_bytes(pyx12_999(tmp_path, sent.x12))
    collect(ledger, inbox, tmp_path / "archive")
    assert ack_status(ledger, now=delivered_at + timedelta(hours=25))[0].status == "accepted"


def test_unreadable_file_is_recorded_once_and_alerted(ledger: Ledger, tmp_path: Path, inbox: Path) -> None:
    (inbox / "junk.x12").write_bytes(b"ISA*00*this is not a whole ISA")
    (inbox / ".upload.part").write_bytes(b"half a file")
    report = collect(ledger, inbox, tmp_path / "archive")
    assert [f.file_name for f in report.files] == ["junk.x12"]
    (row,) = ledger.acknowledgments()
    assert (row.kind, row.status, row.codes[0]["rule"]) == ("unreadable", "unreadable", "isa")
    assert [a.kind for a in report.alerts] == ["unreadable"]
    assert collect(ledger, inbox, tmp_path / "archive").count("duplicate") == 1


def test_a_carrier_that_encrypts_and_signs_its_acknowledgments(ledger: Ledger, tmp_path: Path,
                                                               inbox: Path) -> None:
    ours = Keyring.create(tmp_path / "gpg-ours")
    carrier = Keyring.create(tmp_path / "gpg-carrier")
    stranger = Keyring.create(tmp_path / "gpg-stranger")
    try:
        our_fpr = ours.generate_key("carrierfeeds acks", "acks@sender.example", usage="encrypt,sign")
        carrier_fpr = carrier.generate_key("Carrier EDI", "edi@carrier.example", usage="sign")
        stranger_fpr = stranger.generate_key("Someone Else", "x@elsewhere.example", usage="sign")
        for ring in (carrier, stranger):
            ring.import_keys(ours.export_public(our_fpr))
        ours.import_keys(carrier.export_public(carrier_fpr))
        ours.import_keys(stranger.export_public(stranger_fpr))
        sent = deliver(ledger, 1)
        plain = tmp_path / "ack.x12"
        plain.write_bytes(pyx12_999(tmp_path, sent.x12))
        carrier.encrypt_file(plain, inbox / "999.x12.pgp", recipient=our_fpr, signer=carrier_fpr, now=T0)
        stranger.encrypt_file(plain, inbox / "forged.x12.pgp", recipient=our_fpr, signer=stranger_fpr, now=T0)
        (inbox / "plain.x12").write_bytes(ta1(sent.delivery.isa13, "A", "000"))

        report = collect(ledger, inbox, tmp_path / "archive", encrypted=True, keyring=ours,
                         require_signer=carrier_fpr)
        outcomes = {f.file_name: (f.outcome, f.error_code) for f in report.files}
        assert outcomes == {"999.x12.pgp": ("recorded", None), "forged.x12.pgp": ("failed", "key_refused"),
                            "plain.x12": ("failed", "key_refused")}
        (row,) = ledger.acknowledgments()
        assert (row.status, row.delivery_id, row.file_name) == ("accepted", sent.delivery.delivery_id,
                                                                "999.x12.pgp")
        assert sorted(a.kind for a in report.alerts) == ["undecryptable", "undecryptable"]
        (kept,) = (tmp_path / "archive" / "sunrise-health").iterdir()
        assert kept.read_bytes() == (inbox / "999.x12.pgp").read_bytes()  # kept as received: ciphertext
        # Refused files are not recorded: fixed keys let the next poll read them.
        assert collect(ledger, inbox, tmp_path / "archive", encrypted=True, keyring=ours,
                       require_signer=carrier_fpr).count("failed") == 2
    finally:
        for ring in (ours, carrier, stranger):
            ring.stop_agent()


def test_sftp_response_folder_over_the_pinned_host_key(ledger: Ledger, tmp_path: Path, sshd_server: Any) -> None:
    outbox = sshd_server.root / f"acks-{uuid.uuid4().hex[:8]}"
    outbox.mkdir()
    sent = deliver(ledger, 1)
    (outbox / "TA1_1.x12").write_bytes(ta1(sent.delivery.isa13, "A", "000"))
    (outbox / "999_1.x12").write_bytes(pyx12_999(tmp_path, sent.x12))
    (outbox / ".999_2.x12.part").write_bytes(b"still uploading")
    (outbox / "readme.txt").write_bytes(b"not an ack")
    inbox = SftpAckInbox(sshd_server.endpoint(), str(outbox), "*.x12")
    report = collect_acks(ledger, inbox, source_id="sunrise-health", now=T0 + timedelta(hours=1))
    assert sorted(f.file_name for f in report.files) == ["999_1.x12", "TA1_1.x12"]
    assert {(r.kind, r.status, r.delivery_id) for r in ledger.acknowledgments()} == {
        ("TA1", "accepted", sent.delivery.delivery_id), ("999", "accepted", sent.delivery.delivery_id)}
    other_key = "[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
    wrong = SftpAckInbox(sshd_server.endpoint(known_hosts=other_key.replace("[127.0.0.1]:1",
                                                                              f"[127.0.0.1]:{sshd_server.port}")),
                         str(outbox))
    with pytest.raises(HostKeyRefused):
        wrong.list_names()


def test_cli_collect_from_a_folder_and_status(tmp_path: Path, inbox: Path) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    led = Ledger.open(ledger_url)
    led.upgrade()
    # Real time here: the CLI reads the wall clock; two hours back with a one-hour window is overdue.
    past = datetime.now(UTC) - timedelta(hours=2)
    accepted, late = deliver(led, 1, at=past), deliver(led, 2, at=past)
    (inbox / "999.x12").write_bytes(pyx12_999(tmp_path, accepted.x12))
    led.close()
    root = config_root(tmp_path, WITH_ACK_SOURCE)
    env = {"CARRIERFEEDS_FEEDS_DIR": str(root / "feeds"), "CARRIERFEEDS_MAPPINGS_DIR": str(root / "mappings"),
           "CARRIERFEEDS_SCHEMAS_DIR": str(root / "schemas"), "CARRIERFEEDS_DATA_DIR": str(tmp_path / "var"),
           "CARRIERFEEDS_LEDGER_URL": ledger_url}
    runner = CliRunner()
    result = runner.invoke(app, ["acks", "collect", "--from-dir", str(inbox), "--source-id", "sunrise-health",
                                 "--json"], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["sources"][0]["recorded"] == 1 and data["alerts"] == []
    result = runner.invoke(app, ["acks", "status", "--overdue", "--window-hours", "1", "--format", "json"], env=env)
    assert result.exit_code == 1, result.output
    assert [r["delivery_id"] for r in json.loads(result.output)] == [late.delivery.delivery_id]
    result = runner.invoke(app, ["acks", "status", "--window-hours", "1"], env=env)
    assert "accepted" in result.output and "overdue" in result.output
    # The shipped mapping names no acknowledgment source: nothing is awaited, so nothing is overdue.
    shipped = {**env, "CARRIERFEEDS_MAPPINGS_DIR": str(ROOT / "mappings")}
    result = runner.invoke(app, ["acks", "status", "--window-hours", "1", "--format", "json"], env=shipped)
    assert result.exit_code == 0, result.output
    assert {(r["delivery_id"], r["status"]) for r in json.loads(result.output)} == {
        (accepted.delivery.delivery_id, "accepted"), (late.delivery.delivery_id, "not_expected")}


def test_housekeeping_poll_collects_configured_sources_and_fails_on_overdue(ledger: Ledger, tmp_path: Path,
                                                                             inbox: Path) -> None:
    from carrierfeeds.acks import AcksNeedAttention, CarrierAcks, poll_acks, poll_all
    from carrierfeeds.config import AckSpec
    from carrierfeeds.settings import Settings

    settings = Settings(feeds_dir=ROOT / "feeds", mappings_dir=ROOT / "mappings", schemas_dir=ROOT / "schemas",
                        data_dir=tmp_path)
    answered, silent = deliver(ledger, 1), deliver(ledger, 2)
    (inbox / "999.x12").write_bytes(pyx12_999(tmp_path, answered.x12))
    spec = AckSpec.model_validate({"source": {"kind": "local", "path": inbox.name}})
    carriers = [CarrierAcks(source_id="sunrise-health", spec=spec, window=timedelta(hours=6), feed_ids=(FEED,))]
    result = poll_acks(settings, now=T0 + timedelta(hours=7), ledger=ledger, carriers=carriers)
    assert result.reports[0].count("recorded") == 1
    assert [s.delivery_id for s in result.overdue] == [silent.delivery.delivery_id]
    assert [a.kind for a in result.alerts] == ["overdue"]
    assert (tmp_path / "acks" / "sunrise-health").is_dir()
    # The DAG's entry point. The shipped mappings name no source (all skipped): nothing can be
    # collected for them, so no delivery of theirs is ever overdue, however late.
    from carrierfeeds.config import load_feed

    mappings = len({load_feed(p).mapping_id for p in (ROOT / "feeds").glob("*.yaml")})
    for now in (T0 + timedelta(hours=1), T0 + timedelta(days=3)):
        assert poll_all(settings, ledger, now=now) == {
            "sources": 0, "skipped": mappings, "files_recorded": 0, "files_duplicate": 0, "files_failed": 0,
            "files_set_aside": 0, "files_deferred": 0, "overdue": 0}
    # The same carrier with a source configured: its silent delivery is overdue and fails the task.
    root = config_root(tmp_path, WITH_ACK_SOURCE)
    configured = Settings(feeds_dir=root / "feeds", mappings_dir=root / "mappings", schemas_dir=root / "schemas",
                          data_dir=tmp_path)
    with pytest.raises(AcksNeedAttention) as err:
        poll_all(configured, ledger, now=T0 + timedelta(days=3))
    assert err.value.details["alerts_overdue"] == 1 and err.value.details["overdue"] == 1
    assert (err.value.details["sources"], err.value.details["skipped"]) == (1, mappings - 1)
    assert err.value.details["files_duplicate"] == 1  # the 999 the first poll recorded
    assert poll_all(configured, ledger, now=T0 + timedelta(hours=5))["overdue"] == 0  # 6 h window


def test_ledger_guards_acknowledgment_rows(ledger: Ledger) -> None:
    from carrierfeeds.ledger import LedgerError, UnknownRecord, UnsafeLedgerValue
    from carrierfeeds.ledger.store import AckRow

    sha = hashlib.sha256(b"ack file").hexdigest()
    ok = AckRow(unit=0, kind="TA1", status="accepted", control_number=42, codes=({"ta104": "A"},))
    with pytest.raises(UnsafeLedgerValue):  # a value with spaces is never a position or a code
        ledger.record_acknowledgments(file_sha256=sha, source_id="s", file_name="f", now=T0,
                                      rows=[AckRow(unit=0, kind="999", status="rejected",
                                                   codes=({"value": "JANE DOE"},))])
    with pytest.raises(UnsafeLedgerValue):
        ledger.record_acknowledgments(file_sha256=sha, source_id="s", file_name="f", now=T0,
                                      rows=[AckRow(unit=0, kind="999", status="rejected",
                                                   codes=({"ik404": "123456789"},))])
    with pytest.raises(LedgerError):
        ledger.record_acknowledgments(file_sha256=sha, source_id="s", file_name="f", now=T0,
                                      rows=[AckRow(unit=0, kind="999", status="lost")])
    with pytest.raises(UnknownRecord):
        ledger.record_acknowledgments(file_sha256=sha, source_id="s", file_name="f", now=T0,
                                      rows=[AckRow(unit=0, kind="TA1", status="accepted", delivery_id="nope")])
    assert ledger.acknowledgments() == []
    assert ledger.record_acknowledgments(file_sha256=sha, source_id="s", file_name="f", rows=[ok], now=T0)
    assert not ledger.record_acknowledgments(file_sha256=sha, source_id="s", file_name="g", rows=[ok], now=T0)
    assert ledger.ack_file_seen(sha) and len(ledger.acknowledgments()) == 1
    assert ledger.verify_chain().ok


# ------------------------------------------------------------------ split files, partial, with errors
def test_999_for_an_834_split_into_several_sets_matches_its_delivery(ledger: Ledger, tmp_path: Path,
                                                                      inbox: Path) -> None:
    earlier = [deliver(ledger, day) for day in (1, 2)]  # so the split file's own ST02 is neither 1 nor 2
    sent = deliver(ledger, 3, cap=4)
    assert sent.delivery.member_counts["transaction_sets"] == 2
    assert [e.delivery.member_counts["transaction_sets"] for e in earlier] == [1, 1]
    raw = pyx12_999(tmp_path, sent.x12)
    # pyx12 acknowledges each set by its own ST02, 0001 and 0002, none of them the ledger's ST02.
    assert b"AK2*834*0001*" in raw and b"AK2*834*0002*" in raw and sent.delivery.st02 not in (1, 2)
    (inbox / "999_split.x12").write_bytes(raw)
    report = collect(ledger, inbox, tmp_path / "archive")
    assert report.alerts == ()
    (row,) = ledger.acknowledgments()
    assert (row.kind, row.status, row.delivery_id, row.sets_accepted) == ("999", "accepted",
                                                                        sent.delivery.delivery_id, 2)
    statuses = {s.delivery_id: s.status for s in ack_status(ledger, now=T0 + timedelta(days=5))}
    assert statuses == {sent.delivery.delivery_id: "accepted", **{e.delivery.delivery_id: "overdue" for e in earlier}}
    # A set number the file never held is not this delivery's acknowledgment.
    (inbox / "999_three.x12").write_bytes(raw.replace(b"AK2*834*0002*", b"AK2*834*0003*"))
    assert [a.kind for a in collect(ledger, inbox, tmp_path / "archive").alerts] == ["unmatched"]


def test_partially_accepted_999_for_a_split_834_marks_alerts_and_blocks_the_snapshot(
        ledger: Ledger, tmp_path: Path, inbox: Path, caplog: pytest.LogCaptureFixture) -> None:
    sent = deliver(ledger, 1, cap=4, broken=True)
    raw = pyx12_999(tmp_path, sent.x12)
    # pyx12 reports one of two sets rejected as AK901 R; carriers following X231A1 send P for that.
    assert b"AK9*R*2*2*1~" in raw and PLANTED.encode() in raw
    (inbox / "999_partial.x12").write_bytes(raw.replace(b"AK9*R*2*2*1~", b"AK9*P*2*2*1~"))
    with caplog.at_level(logging.DEBUG):
        report = collect(ledger, inbox, tmp_path / "archive")
    (row,) = ledger.acknowledgments()
    assert (row.status, row.delivery_id) == ("partial", sent.delivery.delivery_id)
    assert (row.sets_accepted, row.sets_rejected, row.segment_errors, row.element_errors) == (1, 1, 1, 1)
    assert {(c["st02"], c["ik501"]) for c in row.codes if "ik501" in c} == {(1, "A"), (2, "R")}
    (alert,) = report.alerts
    assert (alert.kind, alert.severity, alert.delivery_id) == ("partial", "error", sent.delivery.delivery_id)
    assert "1 set(s) rejected (ST02 0002)" in alert.message
    group = next(e for e in alert.errors if "ak901" in e)
    assert (group["ak901"], group["ak901_meaning"]) == ("P", "partially accepted")
    element = next(e for e in alert.errors if "ik403" in e)
    assert (element["st02"], element["segment"], element["element"], element["ik403"]) == (2, "INS", 3, "7")
    (status,) = ack_status(ledger, now=T0 + timedelta(days=5))
    assert (status.status, status.sets_rejected) == ("partial", 1)
    assert snapshot_blocked(ledger, sent.delivery.delivery_id)
    assert PLANTED not in caplog.text and PLANTED not in json.dumps(alert.as_dict(), default=str)
    assert PLANTED not in repr(ledger.acknowledgments())


def test_accepted_with_errors_999_is_recorded_and_warned_not_blocking(ledger: Ledger, tmp_path: Path,
                                                                      inbox: Path) -> None:
    sent = deliver(ledger, 1)
    raw = pyx12_999(tmp_path, sent.x12)
    assert raw.count(b"IK5*A~") == 1 and b"AK9*A*1*1*1~" in raw
    # A carrier's own implementation note on the subscriber's DMG (position 12, loop 2100A).
    (inbox / "999_e.x12").write_bytes(raw.replace(b"IK5*A~", b"IK3*DMG*12*2100*I9~IK4*3*1068*I6~IK5*E*I5~")
                                      .replace(b"AK9*A*1*1*1~", b"AK9*E*1*1*1~"))
    report = collect(ledger, inbox, tmp_path / "archive")
    (row,) = ledger.acknowledgments()
    assert (row.status, row.delivery_id, row.sets_rejected, row.segment_errors) == (
        "accepted_with_errors", sent.delivery.delivery_id, 0, 1)
    (alert,) = report.alerts
    assert (alert.kind, alert.severity, alert.delivery_id) == ("accepted_with_errors", "warning",
                                                               sent.delivery.delivery_id)
    element = next(e for e in alert.errors if "ik403" in e)
    assert (element["segment"], element["position"], element["loop"], element["ik304"], element["ik403"]) == (
        "DMG", 12, "2100", "I9", "I6")
    assert element["ik403_meaning"] == "implementation code value not used"
    (status,) = ack_status(ledger, now=T0 + timedelta(days=5))
    assert status.status == "accepted_with_errors"
    assert not snapshot_blocked(ledger, sent.delivery.delivery_id)


# ------------------------------------------------------------------------- not expected: no overdue
def test_manual_handoffs_are_never_overdue(ledger: Ledger) -> None:
    pending, handed, sent = (deliver(ledger, 1, transport="manual"), deliver(ledger, 2, transport="manual"),
                             deliver(ledger, 3))
    ledger.confirm_handoff(handed.delivery.delivery_id, by="ops", method="courier", now=T0 + timedelta(hours=1))
    late = T0 + timedelta(days=3)
    states = {s.delivery_id: s.status for s in ack_status(ledger, now=late)}
    # pending_handoff has not reached the carrier at all; handed_off reached a person, not a system.
    assert states == {handed.delivery.delivery_id: "not_expected", sent.delivery.delivery_id: "overdue"}
    assert pending.delivery.delivery_id not in states
    assert [a.delivery_id for a in overdue_alerts(ack_status(ledger, now=late), now=late)] == [
        sent.delivery.delivery_id]


def test_no_source_feeds_are_not_expected_unless_an_ack_arrives(ledger: Ledger, tmp_path: Path,
                                                                inbox: Path) -> None:
    quiet, answered = deliver(ledger, 1), deliver(ledger, 2)
    (inbox / "ta1_r.x12").write_bytes(ta1(answered.delivery.isa13, "R", "006"))
    collect(ledger, inbox, tmp_path / "archive")
    late = T0 + timedelta(days=3)
    states = {s.delivery_id: s.status for s in ack_status(ledger, now=late, no_source={FEED})}
    # An acknowledgment someone collected by hand still counts; silence is not a failure.
    assert states == {quiet.delivery.delivery_id: "not_expected", answered.delivery.delivery_id: "rejected"}
    assert {s.delivery_id: s.status for s in ack_status(ledger, now=late)}[quiet.delivery.delivery_id] == "overdue"


@pytest.mark.slow
def test_pipeline_split_834_is_acknowledged_by_pyx12_and_matched_accepted(tmp_path: Path, demo_keys: Any,
                                                                         ledger_url: str) -> None:
    """The whole path: the pipeline renders a split 834 (max_members_per_transaction), the deliver
    stage records its set count, the carrier's 999 (pyx12's own) for the file it received matches."""
    from carrierfeeds.census.generate import generate_census, write_census_csv
    from carrierfeeds.config import LocalDelivery
    from carrierfeeds.demo import prepare_workspace
    from carrierfeeds.run.context import RunRef
    from carrierfeeds.run.stages import run_feed

    day = date(2026, 11, 20)
    root = config_root(tmp_path, "max_members_per_transaction: 10\n")
    ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=tmp_path / "keys", config_root=root,
                           ledger_url=ledger_url, delivery=LocalDelivery(path="carrier-inbox"))
    write_census_csv(generate_census(60, 23, as_of=day), ws.inbound / "census_20261120.csv")
    summary = run_feed(ws.settings, RunRef.for_day(FEED, day), clock=lambda: T0, actor="test")
    assert summary.status == "delivered", summary.error
    (arrived,) = (ws.settings.data_dir / "carrier-inbox").iterdir()
    plain = tmp_path / "carrier-plain.834"
    assert demo_keys.carrier.decrypt_file(arrived, plain).valid_signature
    data = plain.read_bytes()
    sets = check_834(data).transaction_sets
    assert sets > 2  # 60 members at most 10 a set

    led = Ledger.open(ledger_url)
    try:
        delivery = led.find_delivery(feed_id=FEED, interval_start=day)
        assert delivery is not None and delivery.member_counts["transaction_sets"] == sets
        raw = pyx12_999(tmp_path, data)
        assert raw.count(b"AK2*834*") == sets
        inbox = tmp_path / "carrier-outbox"
        inbox.mkdir()
        (inbox / "999.x12").write_bytes(raw)
        report = collect(led, inbox, tmp_path / "archive")
        assert report.alerts == ()
        (row,) = led.acknowledgments()
        assert (row.status, row.delivery_id, row.sets_accepted) == ("accepted", delivery.delivery_id, sets)
        assert ack_status(led, now=T0 + timedelta(days=3))[0].status == "accepted"
    finally:
        led.close()
