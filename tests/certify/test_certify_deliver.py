"""`certify --deliver`: a packet's 834s through the run's own gate, encryption and delivery to the carrier's test
endpoint on the loopback sshd, real gpg, the ledger on SQLite and PostgreSQL. Each file is one run under the
ledger's control numbers; a rerun sends nothing twice; a day held by a census run is refused, nothing sent."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.carrier_replay.reader import read_834
from typer.testing import CliRunner

from carrierfeeds.certify.deliver import PacketRefused, deliver_packet
from carrierfeeds.certify.packet import build_packet
from carrierfeeds.cli import app
from carrierfeeds.run.context import RunRef
from carrierfeeds.settings import load_bundle, open_ledger

pytestmark = pytest.mark.slow
AS_OF = date(2026, 11, 20)


class _Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.t += timedelta(seconds=1)
        return self.t


def _with_test_endpoint(ws: Any, sshd_server: Any) -> Path:
    """The demo feed in testing, its test endpoint a second folder on the same sshd."""
    test_inbox = sshd_server.root / f"test-{uuid.uuid4().hex[:8]}"
    test_inbox.mkdir()
    feed_file = ws.settings.feeds_dir / f"{ws.feed.feed_id}.yaml"
    data = yaml.safe_load(feed_file.read_text())
    data["lifecycle"] = {"initial": "testing"}
    data["delivery"]["test"] = {"kind": "sftp", "connection_id": data["delivery"]["connection_id"],
                                "remote_dir": str(test_inbox)}
    feed_file.write_text(yaml.safe_dump(data, sort_keys=False))
    return test_inbox


def _packet(ws: Any, tmp_path: Path) -> Path:
    bundle = load_bundle(ws.settings, ws.feed.feed_id)
    out = tmp_path / "packet"
    packet = build_packet(bundle.feed, bundle.mapping, seed=5, as_of=AS_OF, out=out, keyring=ws.keys.ours,
                          now=datetime(2026, 11, 20, 9, tzinfo=UTC))
    assert packet.ok
    return out


def test_deliver_sends_each_file_once_to_the_test_endpoint(sftp_workspace: Any, sshd_server: Any,
                                                           tmp_path: Path) -> None:
    ws = sftp_workspace
    test_inbox = _with_test_endpoint(ws, sshd_server)
    out = _packet(ws, tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    files = [s["file"] for s in manifest["scenarios"]]

    sent = deliver_packet(ws.settings, ws.feed.feed_id, out, clock=_Clock(), actor="onboarding")
    assert sent.ok, [(r.status, r.error) for r in sent.runs]
    assert [r.interval_start for r in sent.runs] == [(AS_OF + timedelta(days=k)).isoformat()
                                                     for k in range(len(files))]
    assert sorted(p.name for p in ws.inbox.iterdir()) == []  # nothing to production
    arrived = sorted(p.name for p in test_inbox.iterdir())
    assert len(arrived) == len(files) and all(n.startswith("TEST_") for n in arrived)

    ledger = open_ledger(ws.settings)
    isa13s = []
    for run, name in zip(sent.runs, files, strict=True):
        delivery = ledger.find_delivery(feed_id=ws.feed.feed_id, interval_start=date.fromisoformat(run.interval_start))
        assert delivery is not None and delivery.transport == "sftp:test"
        plain = tmp_path / f"plain-{run.isa13}"
        assert ws.keys.carrier.decrypt_file(test_inbox / Path(delivery.remote_path or "").name, plain).valid_signature
        got, certified = read_834(plain.read_bytes()), read_834((out / name).read_bytes())
        assert got.members == certified.members, name  # the certified members; only the envelope differs
        assert got.isa13 == f"{run.isa13:09d}" != certified.isa13
        assert plain.read_bytes()[:106].split(b"*")[15] == b"T"
        isa13s.append(run.isa13)
    assert len(set(isa13s)) == len(files)  # one number each, from the ledger's sequence
    events = ledger.audit_events(action="certification_packet_delivered")
    assert [e.detail["files"] for e in events] == [len(files)]

    again = deliver_packet(ws.settings, ws.feed.feed_id, out, clock=_Clock(), actor="onboarding")
    assert [r.status for r in again.runs] == ["already_delivered"] * len(files)
    assert [r.isa13 for r in again.runs] == isa13s
    assert sorted(p.name for p in test_inbox.iterdir()) == arrived


def test_a_day_held_by_a_census_run_is_refused_and_nothing_is_sent(sftp_workspace: Any, sshd_server: Any,
                                                                   tmp_path: Path) -> None:
    ws = sftp_workspace
    test_inbox = _with_test_endpoint(ws, sshd_server)
    out = _packet(ws, tmp_path)
    ledger = open_ledger(ws.settings)
    busy = RunRef.for_day(ws.feed.feed_id, AS_OF + timedelta(days=3))
    ledger.start_run(feed_id=busy.feed_id, interval_start=busy.interval_start, interval_end=busy.interval_end,
                     actor="airflow", now=datetime(2026, 11, 24, 2, tzinfo=UTC))
    with pytest.raises(PacketRefused, match="already has a run for 2026-11-23"):
        deliver_packet(ws.settings, ws.feed.feed_id, out, clock=_Clock(), actor="onboarding")
    assert list(test_inbox.iterdir()) == []
    assert ledger.deliveries(feed_id=ws.feed.feed_id) == []


def test_cli_builds_and_delivers_and_refuses_without_a_test_endpoint_or_a_tampered_packet(
        sftp_workspace: Any, sshd_server: Any, tmp_path: Path) -> None:
    ws = sftp_workspace
    s = ws.settings
    env = {"CARRIERFEEDS_FEEDS_DIR": str(s.feeds_dir), "CARRIERFEEDS_MAPPINGS_DIR": str(s.mappings_dir),
           "CARRIERFEEDS_SCHEMAS_DIR": str(s.schemas_dir), "CARRIERFEEDS_DATA_DIR": str(s.data_dir),
           "CARRIERFEEDS_GNUPG_HOME": str(ws.keys.ours.home), "CARRIERFEEDS_KEYS_DIR": str(ws.keys_dir),
           "CARRIERFEEDS_LEDGER_URL": str(s.resolved_ledger_url)}
    runner = CliRunner()
    refused = runner.invoke(app, ["certify", ws.feed.feed_id, "--out", str(tmp_path / "p"), "--deliver"], env=env)
    assert refused.exit_code == 2 and "no test endpoint" in refused.output
    assert not (tmp_path / "p").exists()

    test_inbox = _with_test_endpoint(ws, sshd_server)
    out = tmp_path / "packet"
    done = runner.invoke(app, ["certify", ws.feed.feed_id, "--out", str(out), "--as-of", "2026-11-20", "--deliver",
                               "--by", "onboarding", "--json"], env=env)
    assert done.exit_code == 0, done.output
    runs = json.loads(done.output)["runs"]
    assert [r["status"] for r in runs] == ["delivered"] * len(runs)
    assert len(list(test_inbox.iterdir())) == len(runs) == 10

    first = json.loads((out / "manifest.json").read_text())["scenarios"][0]["file"]
    (out / first).write_bytes((out / first).read_bytes().replace(b"*T*:~", b"*P*:~", 1))
    tampered = runner.invoke(app, ["certify", ws.feed.feed_id, "--out", str(out), "--deliver"], env=env)
    assert tampered.exit_code == 3 and "does not verify" in tampered.output
    assert len(list(test_inbox.iterdir())) == 10
