"""Acknowledgment intake caps: bytes per file as received, bytes of an encrypted file's plaintext, new
files per poll. Over a byte cap a file is set aside (never parsed, nothing applied), recorded once as an
audit event and alerted; past the per-poll cap files wait for the next poll; the rest of the poll goes on.
Real folders, a real OpenSSH sshd and the real gpg."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from ack_helpers import T0, WITH_ACK_SOURCE, collect, config_root, deliver, ta1

from carrierfeeds.acknowledgments import SET_ASIDE, AckLimits, AcksNeedAttention, SftpAckInbox, poll_all
from carrierfeeds.crypto import Keyring
from carrierfeeds.ledger import Ledger
from carrierfeeds.settings import Settings


def _set_aside_events(ledger: Ledger) -> list[Any]:
    return ledger.audit_events(action=SET_ASIDE)


def test_a_file_over_the_byte_cap_is_set_aside_recorded_once_and_alerted(ledger: Ledger, tmp_path: Path,
                                                                          inbox: Path) -> None:
    sent = deliver(ledger, 1)
    good = ta1(sent.delivery.isa13, "A", "000")
    (inbox / "a_good.x12").write_bytes(good)
    # A real TA1 (it would match and be recorded) made too large by padding after its IEA.
    (inbox / "b_huge.x12").write_bytes(ta1(sent.delivery.isa13, "R", "005") + b"\n" * 10_000)
    limits = AckLimits(max_file_bytes=len(good) + 100)

    for poll in (1, 2):
        report = collect(ledger, inbox, tmp_path / "archive", limits=limits)
        outcomes = {f.file_name: (f.outcome, f.error_code) for f in report.files}
        assert outcomes["b_huge.x12"] == ("set_aside", "too_large")
        assert outcomes["a_good.x12"] == (("recorded", None) if poll == 1 else ("duplicate", None))
        set_aside = [a for a in report.alerts if a.kind == "set_aside"]
        assert len(set_aside) == 1 and set_aside[0].severity == "error"
        assert set_aside[0].file_name == "b_huge.x12" and "acks.max_file_bytes" in set_aside[0].message
    # Not parsed, nothing applied: only the good file's TA1 is in the ledger, and its accept stands.
    assert [(r.file_name, r.status) for r in ledger.acknowledgments()] == [("a_good.x12", "accepted")]
    assert not (tmp_path / "archive" / "sunrise-health" / "b_huge").exists()
    (event,) = _set_aside_events(ledger)  # recorded once, however many polls see it
    assert (event.detail["file_name"], event.detail["rule"], event.detail["max_bytes"]) == \
        ("b_huge.x12", "too_large", len(good) + 100)
    # Raising the cap lets the next poll read it.
    report = collect(ledger, inbox, tmp_path / "archive", limits=AckLimits())
    assert {f.file_name: f.outcome for f in report.files}["b_huge.x12"] == "recorded"


def test_the_byte_cap_holds_on_the_carriers_sftp_server(ledger: Ledger, tmp_path: Path, sshd_server: Any) -> None:
    outbox = sshd_server.root / f"acks-{uuid.uuid4().hex[:8]}"
    outbox.mkdir()
    sent = deliver(ledger, 1)
    (outbox / "TA1_1.x12").write_bytes(ta1(sent.delivery.isa13, "A", "000"))
    (outbox / "TA1_2.x12").write_bytes(ta1(sent.delivery.isa13, "R", "005") + b" " * 50_000)
    inbox = SftpAckInbox(sshd_server.endpoint(), str(outbox), "*.x12")
    report = collect(ledger, inbox, tmp_path / "archive", limits=AckLimits(max_file_bytes=4096))
    assert {f.file_name: f.outcome for f in report.files} == {"TA1_1.x12": "recorded", "TA1_2.x12": "set_aside"}
    assert [r.status for r in ledger.acknowledgments()] == ["accepted"]
    assert [a.kind for a in report.alerts] == ["set_aside"]


def test_an_encrypted_file_whose_plaintext_is_over_the_cap_is_set_aside(ledger: Ledger, tmp_path: Path,
                                                                        inbox: Path) -> None:
    ours = Keyring.create(tmp_path / "gpg-ours")
    carrier = Keyring.create(tmp_path / "gpg-carrier")
    try:
        our_fpr = ours.generate_key("carrierfeeds acks", "acks@sender.example", usage="encrypt,sign")
        carrier_fpr = carrier.generate_key("Carrier EDI", "edi@carrier.example", usage="sign")
        carrier.import_keys(ours.export_public(our_fpr))
        ours.import_keys(carrier.export_public(carrier_fpr))
        sent = deliver(ledger, 1)
        small = tmp_path / "small.x12"
        small.write_bytes(ta1(sent.delivery.isa13, "A", "000"))
        bomb = tmp_path / "bomb.x12"
        bomb.write_bytes(ta1(sent.delivery.isa13, "R", "005") + b"\n" * 4_000_000)  # compresses ~1000x
        carrier.encrypt_file(small, inbox / "a.x12.pgp", recipient=our_fpr, signer=carrier_fpr, now=T0,
                             compress_level=9)
        carrier.encrypt_file(bomb, inbox / "b.x12.pgp", recipient=our_fpr, signer=carrier_fpr, now=T0,
                             compress_level=9)
        limits = AckLimits(max_file_bytes=1 << 20, max_decompressed_bytes=200_000)
        assert (inbox / "b.x12.pgp").stat().st_size < limits.max_file_bytes  # only its plaintext is over

        report = collect(ledger, inbox, tmp_path / "archive", limits=limits, encrypted=True, keyring=ours,
                          require_signer=carrier_fpr)
        outcomes = {f.file_name: (f.outcome, f.error_code) for f in report.files}
        assert outcomes == {"a.x12.pgp": ("recorded", None), "b.x12.pgp": ("set_aside", "decompressed_too_large")}
        assert [r.status for r in ledger.acknowledgments()] == ["accepted"]  # the reject was never applied
        (alert,) = [a for a in report.alerts if a.kind == "set_aside"]
        assert "acks.max_decompressed_bytes" in alert.message and alert.file_sha256
        (event,) = _set_aside_events(ledger)
        assert event.object_id == alert.file_sha256 and event.detail["rule"] == "decompressed_too_large"
        assert not list(tmp_path.glob("**/plain")) and not list(tmp_path.glob("**/.plain*"))
    finally:
        for ring in (ours, carrier):
            ring.stop_agent()


def test_files_past_the_per_poll_cap_wait_for_the_next_poll(ledger: Ledger, tmp_path: Path, inbox: Path) -> None:
    sent = [deliver(ledger, day) for day in range(1, 6)]
    for i, s in enumerate(sent):
        (inbox / f"TA1_{i}.x12").write_bytes(ta1(s.delivery.isa13, "A", "000"))
    limits = AckLimits(max_files_per_poll=2)
    seen: list[dict[str, str]] = []
    for _ in range(3):
        report = collect(ledger, inbox, tmp_path / "archive", limits=limits)
        seen.append({f.file_name: f.outcome for f in report.files})
        deferred = [a for a in report.alerts if a.kind == "deferred"]
        if report.count("deferred"):
            (alert,) = deferred
            assert alert.severity == "warning" and "acks.max_files_per_poll" in alert.message
        else:
            assert not deferred
    assert [sum(o == "recorded" for o in s.values()) for s in seen] == [2, 2, 1]
    assert [sum(o == "deferred" for o in s.values()) for s in seen] == [3, 1, 0]
    # Files already read do not count against the cap: the old ones never starve the new.
    assert [sum(o == "duplicate" for o in s.values()) for s in seen] == [0, 2, 4]
    assert len(ledger.acknowledgments()) == 5


def test_the_caps_come_from_the_mappings_acks_spec(ledger: Ledger, tmp_path: Path) -> None:
    root = config_root(tmp_path, WITH_ACK_SOURCE.replace("    path: carrier-outbox\n",
                                                         "    path: carrier-outbox\n  max_file_bytes: 300\n"))
    settings = Settings(feeds_dir=root / "feeds", mappings_dir=root / "mappings", schemas_dir=root / "schemas",
                        data_dir=tmp_path)
    (tmp_path / "carrier-outbox").mkdir()
    sent = deliver(ledger, 1)
    (tmp_path / "carrier-outbox" / "TA1.x12").write_bytes(ta1(sent.delivery.isa13, "A", "000") + b" " * 400)
    with pytest.raises(AcksNeedAttention) as err:
        poll_all(settings, ledger, now=T0 + timedelta(hours=1))
    assert err.value.details["files_set_aside"] == 1 and err.value.details["alerts_set_aside"] == 1
    assert ledger.acknowledgments() == []


def test_the_cli_reports_a_set_aside_file_and_exits_1(tmp_path: Path, inbox: Path) -> None:
    import json

    from typer.testing import CliRunner

    from carrierfeeds.acknowledgments import MAX_ACK_BYTES
    from carrierfeeds.cli import app

    ledger_url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    led = Ledger.open(ledger_url)
    led.upgrade()
    sent = deliver(led, 1)
    led.close()
    (inbox / "a.x12").write_bytes(ta1(sent.delivery.isa13, "A", "000"))
    with (inbox / "b.x12").open("wb") as fh:  # sparse: the size is what counts, checked before a byte is read
        fh.truncate(MAX_ACK_BYTES + 1)
    env = {"CARRIERFEEDS_DATA_DIR": str(tmp_path / "var"), "CARRIERFEEDS_LEDGER_URL": ledger_url}
    runner = CliRunner()
    result = runner.invoke(app, ["acks", "collect", "--from-dir", str(inbox), "--source-id", "sunrise-health"],
                           env=env)
    assert result.exit_code == 1, result.output
    assert "1 new" in result.output and "1 set aside (over a cap)" in result.output and "set_aside" in result.output
    result = runner.invoke(app, ["acks", "collect", "--from-dir", str(inbox), "--source-id", "sunrise-health",
                                 "--json"], env=env)
    data = json.loads(result.output)
    assert (data["sources"][0]["set_aside"], data["sources"][0]["duplicate"]) == (1, 1)
