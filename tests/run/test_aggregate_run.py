"""A carrier aggregator's file run and delivered end to end with real parts (GX, pyx12, gpg, the loopback
sshd, SQLite and PostgreSQL): one file, one ISA13, one ST per included employer, delivered once; each
employer's run ends with its own outcome and its share of the delivery."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from carrierfeeds.run.aggregate_run import run_aggregate
from carrierfeeds.settings import open_ledger

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2026, 11, 20)
MAPPING = "keystone-exchange"
CEDAR, PINE = "cedar-grove-keystone", "pinecrest-keystone"


def _clock() -> datetime:
    return datetime(2026, 11, 21, 7, 30, tzinfo=UTC)


@dataclass
class Keystone:
    settings: Any
    inbound: dict[str, Path]
    inbox: Path
    keys: Any
    keys_dir: Path
    frames: dict[str, pd.DataFrame]

    def census(self, feed_id: str, members: int, seed: int, prefix: str, **edits: Any) -> Path:
        from carrierfeeds.census.generate import generate_census, write_census_csv

        frame = generate_census(members, seed, as_of=DAY, id_prefix=prefix)
        for column, (row, value) in edits.items():
            frame.loc[row, column] = value
        path = self.inbound[feed_id] / f"census_{DAY:%Y%m%d}.csv"
        write_census_csv(frame, path)
        self.frames[feed_id] = frame
        return path

    def files(self) -> list[Path]:
        return sorted(self.inbox.iterdir())


@pytest.fixture
def keystone(tmp_path: Path, demo_keys: Any, sshd_server: Any, ledger_url: str) -> Keystone:
    """Keystone's two employer feeds in a private workspace, delivering to one inbox on the loopback sshd."""
    from carrierfeeds.config import SftpDelivery
    from carrierfeeds.demo import CONNECTION_ID, prepare_workspace

    inbox = sshd_server.root / uuid.uuid4().hex[:10]
    inbox.mkdir()
    keys_dir = tmp_path / "keys"
    sshd_server.write_keys_dir(keys_dir, CONNECTION_ID)
    inbound = {}
    for feed_id in (CEDAR, PINE):
        ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=keys_dir, config_root=ROOT,
                               ledger_url=ledger_url, feed_id=feed_id,
                               delivery=SftpDelivery(connection_id=CONNECTION_ID, remote_dir=str(inbox)))
        inbound[feed_id] = ws.inbound
    return Keystone(settings=ws.settings, inbound=inbound, inbox=inbox, keys=demo_keys, keys_dir=keys_dir, frames={})


def _plain(ks: Keystone, path: Path, tmp_path: Path) -> bytes:
    out = tmp_path / f"{path.name}.plain"
    result = ks.keys.carrier.decrypt_file(path, out)
    assert result.valid_signature and result.signer_fingerprint == ks.keys.signer_fingerprint
    return out.read_bytes()


def _stage(ledger: Any, run_id: str, stage: str) -> dict[str, Any]:
    (detail,) = [e.detail for e in ledger.run_events(run_id) if e.kind == "stage" and e.stage == stage
                 and e.status == "succeeded"][-1:]
    return dict(detail)


def _employer(summary: Any, feed_id: str) -> dict[str, Any]:
    return next(e for e in summary.employers if e["feed_id"] == feed_id)


def _no_census_values_in_ledger(ks: Keystone, ledger: Any, run_ids: list[str]) -> None:
    """No value of either census (names, SSNs, dates of birth, addresses, member ids) in any run's events."""
    text = " ".join(f"{e.detail} {e.message or ''} {e.error_code or ''}" for r in run_ids for e in ledger.run_events(r))
    for frame in ks.frames.values():
        for column in ("member_id", "last_name", "first_name", "ssn", "dob", "address1", "city"):
            for value in frame[column].astype(str).unique():
                if len(value) >= 4:
                    assert value not in text, column


class Counting:
    """A real SFTP transport that counts uploads, or fails every one of them (the carrier is down)."""

    name = "sftp"

    def __init__(self, inner: Any, *, down: bool = False) -> None:
        self.inner, self.down, self.delivered = inner, down, 0

    def stat(self, remote_name: str) -> Any:
        return self.inner.stat(remote_name)

    def sha256(self, remote_name: str) -> str | None:
        digest: str | None = self.inner.sha256(remote_name)
        return digest

    def deliver(self, local: Path, remote_name: str, **kwargs: Any) -> Any:
        from carrierfeeds.errors import TransientError

        if self.down:
            raise TransientError("connection refused (test)")
        self.delivered += 1
        return self.inner.deliver(local, remote_name, **kwargs)


def _sftp(ks: Keystone, *, down: bool = False) -> Counting:
    from carrierfeeds.credentials import load_sftp_endpoint
    from carrierfeeds.demo import CONNECTION_ID
    from carrierfeeds.transport.sftp import SftpTransport

    endpoint = load_sftp_endpoint(ks.keys_dir, CONNECTION_ID)
    return Counting(SftpTransport(endpoint, str(ks.inbox), retries=1, sleep=lambda _s: None), down=down)


def test_the_aggregate_is_delivered_once_with_one_set_per_employer(keystone: Keystone, tmp_path: Path) -> None:
    from carrierfeeds.x12.check import validate_with_pyx12

    ks = keystone
    ks.census(CEDAR, 40, 21, "C")
    ks.census(PINE, 25, 22, "P")
    counting = _sftp(ks)
    summary = run_aggregate(ks.settings, MAPPING, DAY, clock=_clock, actor="test", transport=counting)
    assert summary.run.status == "delivered", summary.run.error
    assert summary.run.feed_id == MAPPING and counting.delivered == 1
    (arrived,) = ks.files()
    plain = _plain(ks, arrived, tmp_path)
    assert hashlib.sha256(plain).hexdigest() == summary.run.payload_sha256
    assert plain.count(b"ISA*") == 1 and plain[:106].decode().split("*")[13] == f"{summary.run.isa13:09d}"
    assert plain.count(b"\nST*834*") == 2 and plain.count(b"\nGE*2*") == 1
    assert b"N1*P5*CEDAR GROVE LANDSCAPING*FI*990000013~" in plain and b"PINECREST AUTO GLASS" in plain
    (tmp_path / "check.834").write_bytes(plain)
    assert validate_with_pyx12(tmp_path / "check.834").ok

    ledger = open_ledger(ks.settings)
    try:
        delivery = ledger.find_delivery(feed_id=MAPPING, interval_start=DAY)
        assert delivery is not None and delivery.status == "delivered" and delivery.isa13 == summary.run.isa13
        assert delivery.run_id == summary.run.run_id
        assert [(e["feed_id"], e["status"], e["st02"]) for e in summary.employers] == [
            (CEDAR, "delivered", [1]), (PINE, "delivered", [2])]
        for e, members in zip(summary.employers, (40, 25), strict=True):
            share = _stage(ledger, e["run_id"], "deliver")
            assert share["aggregate_run_id"] == summary.run.run_id and share["delivery_id"] == delivery.delivery_id
            assert share["st02"] == e["st02"][0] and share["isa13"] == summary.run.isa13
            assert share["members"] == members == share["ins03_030"] and share["disclosed_last_name"] is True
            assert ledger.get_run(e["run_id"]).status == "delivered"
        # Cedar Grove (quarantine) keeps a snapshot, advanced now the carrier holds the file; Pinecrest none.
        assert _stage(ledger, _employer(summary, CEDAR)["run_id"], "confirm")["snapshot_advanced"] is True
        assert "snapshot_advanced" not in _stage(ledger, _employer(summary, PINE)["run_id"], "confirm")
        # The file's disclosure: every member of both employers, by token.
        disclosed = ledger.disclosures(delivery_ids=[delivery.delivery_id])[delivery.delivery_id]
        assert disclosed.members == 65 and "last_name" in disclosed.fields
        assert ledger.verify_chain().ok
        _no_census_values_in_ledger(ks, ledger, [summary.run.run_id, *(e["run_id"] for e in summary.employers)])
    finally:
        ledger.close()

    # A rerun of the day reads the censuses its runs accepted, renders the same file and sends nothing.
    again = _sftp(ks)
    rerun = run_aggregate(ks.settings, MAPPING, DAY, clock=_clock, actor="test", transport=again)
    assert rerun.run.status == "already_delivered" and again.delivered == 0 and ks.files() == [arrived]
    assert [e["status"] for e in rerun.employers] == ["already_delivered", "already_delivered"]
    # The next night's run finds both censuses processed: nothing new, nothing sent.
    night = run_aggregate(ks.settings, MAPPING, DAY + timedelta(days=1), clock=_clock, actor="test", transport=again)
    assert night.run.status == "nothing_to_send" and again.delivered == 0
    assert [e["status"] for e in night.employers] == ["no_new_census", "no_new_census"]


def test_a_retry_after_a_failed_delivery_sends_the_same_file_once(keystone: Keystone) -> None:
    ks = keystone
    cedar, pine = ks.census(CEDAR, 20, 31, "C"), ks.census(PINE, 15, 32, "P")
    censuses = {CEDAR: cedar, PINE: pine}
    failed = run_aggregate(ks.settings, MAPPING, DAY, clock=_clock, actor="test", censuses=censuses,
                           transport=_sftp(ks, down=True))
    assert failed.run.status == "failed" and failed.run.error is not None
    assert [e["status"] for e in failed.employers] == ["failed", "failed"] and ks.files() == []
    # No plaintext waits for the retry: every run's scratch is gone (the staging store keeps it sealed).
    scratch = ks.settings.data_dir / "scratch"
    assert scratch.is_dir() and not [p for p in scratch.rglob("*") if p.is_file()]

    counting = _sftp(ks)
    retry = run_aggregate(ks.settings, MAPPING, DAY, clock=_clock, actor="test", censuses=censuses, transport=counting)
    assert retry.run.status == "delivered", retry.run.error
    assert counting.delivered == 1 and len(ks.files()) == 1
    # The same bytes under the same control numbers: none minted for the retry.
    assert (retry.run.isa13, retry.run.payload_sha256) == (failed.run.isa13, failed.run.payload_sha256)
    assert [e["status"] for e in retry.employers] == ["delivered", "delivered"]

    again = _sftp(ks)
    rerun = run_aggregate(ks.settings, MAPPING, DAY, clock=_clock, actor="test", censuses=censuses, transport=again)
    assert rerun.run.status == "already_delivered" and again.delivered == 0 and len(ks.files()) == 1
    ledger = open_ledger(ks.settings)
    try:
        assert len(ledger.transmissions(retry.run.run_id)) == 1
        assert len(ledger.deliveries(feed_id=MAPPING)) == 1
    finally:
        ledger.close()


def test_isolate_leaves_out_a_rejected_employer_and_sends_the_others(keystone: Keystone, tmp_path: Path) -> None:
    ks = keystone
    ks.census(CEDAR, 30, 41, "C")
    ks.census(PINE, 20, 42, "P", gender=(3, "Q"))  # Pinecrest's policy is reject
    summary = run_aggregate(ks.settings, MAPPING, DAY, clock=_clock, actor="test", transport=_sftp(ks))
    assert summary.run.status == "delivered", summary.run.error
    cedar, pine = _employer(summary, CEDAR), _employer(summary, PINE)
    assert (cedar["status"], cedar["st02"]) == ("delivered", [int(summary.run.isa13)])
    assert (pine["status"], pine["error_code"], pine["st02"]) == ("rejected", "census_rejected", [])
    (arrived,) = ks.files()
    plain = _plain(ks, arrived, tmp_path)
    assert plain.count(b"\nST*834*") == 1 and b"PINECREST" not in plain
    ledger = open_ledger(ks.settings)
    try:
        build = _stage(ledger, summary.run.run_id, "build")
        assert build["included"] == 1 and build["left_out_census_rejected"] == 1
        _no_census_values_in_ledger(ks, ledger, [summary.run.run_id, cedar["run_id"], pine["run_id"]])
    finally:
        ledger.close()
    # Pinecrest's census was not recorded as processed: fixed, it goes the next night, on its own in the
    # file (Cedar Grove has nothing new).
    ks.census(PINE, 20, 42, "P")
    counting = _sftp(ks)
    later = run_aggregate(ks.settings, MAPPING, DAY + timedelta(days=1), clock=_clock, actor="test", transport=counting)
    assert later.run.status == "delivered", later.run.error
    assert [(e["feed_id"], e["status"]) for e in later.employers] == [(CEDAR, "no_new_census"), (PINE, "delivered")]
    assert counting.delivered == 1 and len(ks.files()) == 2


def test_reject_all_refuses_the_whole_file(keystone: Keystone, tmp_path: Path) -> None:
    ks = keystone
    mappings = tmp_path / "mappings"
    shutil.copytree(ks.settings.mappings_dir, mappings)
    path = mappings / f"{MAPPING}.yaml"
    path.write_text(path.read_text().replace("on_employer_failure: isolate", "on_employer_failure: reject_all"))
    settings = ks.settings.model_copy(update={"mappings_dir": mappings})
    ks.census(CEDAR, 30, 41, "C")
    ks.census(PINE, 20, 42, "P", gender=(3, "Q"))
    counting = _sftp(ks)
    summary = run_aggregate(settings, MAPPING, DAY, clock=_clock, actor="test", transport=counting)
    assert summary.run.status == "refused" and counting.delivered == 0 and ks.files() == []
    assert summary.run.error is not None and PINE in summary.run.error["message"]
    assert [(e["feed_id"], e["status"]) for e in summary.employers] == [(CEDAR, "refused"), (PINE, "rejected")]
    ledger = open_ledger(settings)
    try:
        assert ledger.find_delivery(feed_id=MAPPING, interval_start=DAY) is None
        assert ledger.transmissions(summary.run.run_id) == []  # refused before any control number
    finally:
        ledger.close()


def _env(settings: Any) -> dict[str, str]:
    return {f"CARRIERFEEDS_{k.upper()}": str(v) for k, v in settings.model_dump().items() if v is not None}


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
def test_run_aggregate_command_delivers_and_one_employer_alone_is_refused(keystone: Keystone) -> None:
    import json

    from typer.testing import CliRunner

    from carrierfeeds.cli import app

    ks = keystone
    cedar, pine = ks.census(CEDAR, 12, 51, "C"), ks.census(PINE, 9, 52, "P")
    env = _env(ks.settings)
    # One employer's feed is never run alone, and no run of it is opened (the aggregate owns it).
    alone = CliRunner().invoke(app, ["run", CEDAR, "--census", str(cedar), "--date", DAY.isoformat(), "--json"],
                               env=env)
    assert alone.exit_code == 2 and f"run-aggregate {MAPPING}" in json.loads(alone.stdout)["message"]
    ledger = open_ledger(ks.settings)
    try:
        assert ledger.latest_runs() == {}
    finally:
        ledger.close()

    result = CliRunner().invoke(app, ["run-aggregate", MAPPING, "--census", f"{CEDAR}={cedar}", "--census",
                                      f"{PINE}={pine}", "--date", DAY.isoformat(), "--json"], env=env)
    assert result.exit_code == 0, result.stdout
    out = json.loads(result.stdout)
    assert out["status"] == "delivered" and out["mapping_id"] == MAPPING and out["members"] == 21
    assert [(e["feed_id"], e["status"], e["st02"]) for e in out["employers"]] == [
        (CEDAR, "delivered", [1]), (PINE, "delivered", [2])]
    assert len(ks.files()) == 1
    # The operator's views take the aggregate's run and delivery (its feed id is the mapping id).
    report = ks.settings.data_dir / "report.html"
    for command in (["status", "--json"], ["acks", "status", "--json"], ["audit", "disclosures", "--json"],
                    ["audit", "report", "--since", DAY.isoformat(), "--until", "2026-11-22", "--out", str(report)]):
        shown = CliRunner().invoke(app, command, env=env)
        assert shown.exit_code == 0, (command, shown.stdout)


def _999(gs06: int, answers: dict[int, str]) -> bytes:
    """The carrier's 999 for our file (GS06 ``gs06``): one AK2/IK5 per set, ST02 -> IK501 (A or R)."""
    sets = []
    for st02, code in answers.items():
        sets.append(f"AK2*834*{st02:04d}*005010X220A1~")
        if code == "R":
            sets += ["IK3*INS*3**8~", "IK4*3*1203*7~"]
        sets.append(f"IK5*{code}" + ("*5~" if code == "R" else "~"))
    accepted = sum(c == "A" for c in answers.values())
    body = ["ST*999*0001*005010X231A1~", f"AK1*BE*{gs06}*005010X220A1~", *sets,
            f"AK9*{'P' if accepted else 'R'}*{len(answers)}*{len(answers)}*{accepted}~"]
    body.append(f"SE*{len(body) + 1}*0001~")
    text = ("ISA*00*          *00*          *ZZ*KEYSTONEBX     *ZZ*CARRIERFEEDS   *261121*0800*^*00501*000000077*0*T*:~"
            "GS*FA*KEYSTONEBX*CARRIERFEEDS*20261121*0800*77*X*005010X231A1~" + "".join(body)
            + "GE*1*77~IEA*1*000000077~")
    return text.encode()


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
def test_a_999_rejecting_one_employers_set_reverts_that_employers_snapshot_only(keystone: Keystone,
                                                                                tmp_path: Path) -> None:
    from carrierfeeds.acknowledgments.collect import collect_acks
    from carrierfeeds.acknowledgments.inbox import LocalAckInbox
    from carrierfeeds.changes import SnapshotStore

    ks = keystone
    pine_feed = ks.settings.feeds_dir / f"{PINE}.yaml"  # both employers keep a snapshot (quarantine)
    pine_feed.write_text(pine_feed.read_text().replace("policy: reject", "policy: quarantine"))
    ks.census(CEDAR, 20, 71, "C")
    ks.census(PINE, 15, 72, "P")
    summary = run_aggregate(ks.settings, MAPPING, DAY, clock=_clock, actor="test", transport=_sftp(ks))
    assert summary.run.status == "delivered", summary.run.error
    cedar, pine = _employer(summary, CEDAR), _employer(summary, PINE)
    snapshots = SnapshotStore.for_settings(ks.settings)
    assert snapshots.info(CEDAR).run_id == cedar["run_id"] and snapshots.info(PINE).run_id == pine["run_id"]

    inbox = tmp_path / "acks"
    inbox.mkdir()
    (inbox / "999_keystone.x12").write_bytes(_999(summary.run.isa13, {1: "A", 2: "R"}))
    ledger = open_ledger(ks.settings)
    try:
        report = collect_acks(ledger, LocalAckInbox(inbox), source_id=MAPPING, now=_clock(), snapshots=snapshots)
        (row,) = ledger.acknowledgments()
        assert row.status == "partial" and row.delivery_id is not None
        # Pinecrest's set was rejected: its snapshot goes back (to none: its next run sends a full file);
        # Cedar Grove's set was taken: its snapshot stays.
        assert snapshots.info(PINE) is None
        assert snapshots.info(CEDAR).run_id == cedar["run_id"]
        assert any(a.kind == "snapshot_reverted" and PINE in a.message for a in report.alerts)
        (event,) = ledger.audit_events(action="snapshot_reverted", object_type="delivery")
        assert event.detail["st02_0002"] == PINE and event.detail["employers_reverted"] == 1
        assert "st02_0001" not in event.detail
    finally:
        ledger.close()


def test_the_aggregates_deliveries_take_their_carriers_ack_settings() -> None:
    """An aggregated file is delivered under the mapping id: its carrier's window and source apply to it
    (Keystone names no ack source, so its file is never reported overdue)."""
    from carrierfeeds.acknowledgments import carrier_ack_settings, feeds_without_source
    from carrierfeeds.settings import Settings

    settings = Settings(feeds_dir=ROOT / "feeds", mappings_dir=ROOT / "mappings", schemas_dir=ROOT / "schemas")
    (keystone,) = [c for c in carrier_ack_settings(settings) if c.source_id == MAPPING]
    assert set(keystone.feed_ids) == {MAPPING, CEDAR, PINE}
    assert MAPPING in feeds_without_source([keystone])
    (only,) = carrier_ack_settings(settings, [MAPPING])
    assert only.feed_ids == (MAPPING,)


def test_employers_of_one_file_share_its_schedule_and_time_zone(tmp_path: Path) -> None:
    from carrierfeeds.errors import ConfigError
    from carrierfeeds.run.aggregate import aggregate_bundles
    from carrierfeeds.settings import Settings

    feeds = tmp_path / "feeds"
    feeds.mkdir()
    for feed_id in (CEDAR, PINE):
        shutil.copy(ROOT / "feeds" / f"{feed_id}.yaml", feeds / f"{feed_id}.yaml")
    pine = feeds / f"{PINE}.yaml"
    pine.write_text(pine.read_text().replace("timezone: America/New_York", "timezone: America/Chicago"))
    settings = Settings(feeds_dir=feeds, mappings_dir=ROOT / "mappings", schemas_dir=ROOT / "schemas")
    with pytest.raises(ConfigError) as refused:
        aggregate_bundles(settings, MAPPING)
    assert refused.value.details["field"] == "timezone" and PINE in refused.value.message


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
def test_an_employer_that_has_not_authorised_the_carrier_is_left_out_under_isolate(keystone: Keystone,
                                                                                   tmp_path: Path) -> None:
    ks = keystone
    cedar_feed = ks.settings.feeds_dir / f"{CEDAR}.yaml"  # Cedar Grove authorises Keystone from next year
    text = cedar_feed.read_text()
    cedar_feed.write_text(text.replace("effective_from: '2025-01-01'", "effective_from: '2027-01-01'"))
    assert "2027-01-01" in cedar_feed.read_text()
    ks.census(CEDAR, 12, 81, "C")
    ks.census(PINE, 10, 82, "P")
    summary = run_aggregate(ks.settings, MAPPING, DAY, clock=_clock, actor="test", transport=_sftp(ks))
    assert summary.run.status == "delivered", summary.run.error
    cedar, pine = _employer(summary, CEDAR), _employer(summary, PINE)
    assert (cedar["status"], cedar["error_code"], cedar["st02"]) == ("refused", "not_authorized", [])
    assert pine["status"] == "delivered" and pine["members"] == 10
    (arrived,) = ks.files()
    assert b"CEDAR GROVE" not in _plain(ks, arrived, tmp_path)
    ledger = open_ledger(ks.settings)
    try:
        assert _stage(ledger, summary.run.run_id, "build")["left_out_not_authorized"] == 1
    finally:
        ledger.close()


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
def test_changes_mode_sends_only_the_employers_with_changes(keystone: Keystone, tmp_path: Path) -> None:
    """In changes mode each employer diffs against its own snapshot: the next night only the employer
    whose census changed has a set (BGN08 2), the other ends nothing_to_send with its census processed."""
    ks = keystone
    mappings = tmp_path / "mappings"
    shutil.copytree(ks.settings.mappings_dir, mappings)
    path = mappings / f"{MAPPING}.yaml"
    path.write_text(path.read_text() + "mode: changes\n")
    settings = ks.settings.model_copy(update={"mappings_dir": mappings})
    ks.census(CEDAR, 15, 91, "C")
    ks.census(PINE, 12, 92, "P")
    first = run_aggregate(settings, MAPPING, DAY, clock=_clock, actor="test", transport=_sftp(ks))
    assert first.run.status == "delivered" and [e["st02"] for e in first.employers] == [[1], [2]]

    moved = ks.census(PINE, 12, 92, "P")  # one Pinecrest subscriber moves
    frame = pd.read_csv(moved, dtype=str, keep_default_na=False)
    frame.loc[frame["member_id"] == frame.loc[0, "subscriber_id"], "address1"] = "77 Changed Road"
    frame.to_csv(moved, index=False)
    counting = _sftp(ks)
    night = run_aggregate(settings, MAPPING, DAY + timedelta(days=1), clock=_clock, actor="test", transport=counting,
                          force_census=True)
    assert night.run.status == "delivered", night.run.error
    cedar, pine = _employer(night, CEDAR), _employer(night, PINE)
    assert (cedar["status"], cedar["error_code"]) == ("nothing_to_send", "no_changes")
    assert pine["status"] == "delivered" and pine["members"] == 1
    arrived = [p for p in ks.files() if p.name != first.run.file_name]
    plain = _plain(ks, arrived[0], tmp_path)
    assert plain.count(b"\nST*834*") == 1 and b"PINECREST" in plain and b"CEDAR" not in plain
    bgn = plain.split(b"\nBGN*")[1].split(b"~")[0].split(b"*")
    assert b"\nINS*Y*18*001*" in plain and bgn[-1] == b"2"  # BGN08 2: a change file
