"""Acknowledgment files read once and recorded whole: unreadable files, encrypted and signed ones, the
carrier's SFTP folder over its pinned host key, and the ledger's guard on acknowledgment rows."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from ack_helpers import T0, collect, deliver, pyx12_999, ta1

from carrierfeeds.acknowledgments import SftpAckInbox, collect_acks
from carrierfeeds.crypto import Keyring
from carrierfeeds.errors import HostKeyRefused
from carrierfeeds.ledger import Ledger


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


def test_ledger_guards_acknowledgment_rows(ledger: Ledger) -> None:
    from carrierfeeds.ledger import LedgerError, UnknownRecord, UnsafeLedgerValue
    from carrierfeeds.ledger.records import AckRow

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
