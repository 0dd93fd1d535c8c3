"""One feed end to end with every real part: census -> GX -> 834 -> pyx12 -> gpg -> sshd -> ledger."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from carrierfeeds.run.context import RunRef, run_dir_for
from carrierfeeds.run.stages import run_feed
from carrierfeeds.settings import open_ledger

pytestmark = pytest.mark.slow

DAY = date(2026, 11, 20)


def _clock() -> datetime:
    return datetime(2026, 11, 21, 7, 30, tzinfo=UTC)


def _decrypt(ws: Any, path: Path, tmp_path: Path) -> bytes:
    out = tmp_path / "carrier-plain.834"
    result = ws.keys.carrier.decrypt_file(path, out)
    assert result.valid_signature
    assert result.signer_fingerprint == ws.keys.signer_fingerprint
    return out.read_bytes()


def _expected_members(census: Path, plans: tuple[str, ...]) -> int:
    frame = pd.read_csv(census, dtype=str, keep_default_na=False)
    return int(frame.loc[frame["plan_code"].isin(plans), "member_id"].nunique())


def test_feed_delivers_once_encrypted_conformant_and_ledgered(sftp_workspace: Any, tmp_path: Path) -> None:
    from carrierfeeds.x12.check import validate_with_pyx12

    ws = sftp_workspace
    census = ws.write_census(members=60, seed=11, as_of=DAY)
    ref = RunRef.for_day(ws.feed.feed_id, DAY)

    summary = run_feed(ws.settings, ref, clock=_clock, actor="test")
    assert summary.status == "delivered", summary.error
    arrived = sorted(ws.inbox.iterdir())
    assert [p.name for p in arrived] == [summary.file_name]

    plain = _decrypt(ws, arrived[0], tmp_path)
    assert hashlib.sha256(plain).hexdigest() == summary.payload_sha256
    assert summary.members == _expected_members(census, ws.feed.authorization.plans)
    assert sum(1 for s in plain.split(b"~") if s.strip().startswith(b"INS*")) == summary.members
    rows = pd.read_csv(census, dtype=str, keep_default_na=False)
    isa = plain[:106].decode()
    assert isa.split("*")[13] == f"{summary.isa13:09d}"
    (tmp_path / "check.834").write_bytes(plain)
    verdict = validate_with_pyx12(tmp_path / "check.834")
    assert verdict.ok, verdict.errors

    ledger = open_ledger(ws.settings)
    delivery = ledger.find_delivery(feed_id=ref.feed_id, interval_start=DAY)
    assert delivery is not None
    assert delivery.status == "delivered"
    assert delivery.payload_sha256 == summary.payload_sha256
    assert delivery.ciphertext_sha256 == hashlib.sha256(arrived[0].read_bytes()).hexdigest()
    assert delivery.isa13 == summary.isa13
    assert delivery.host_key_fingerprint and delivery.host_key_fingerprint.startswith("SHA256:")
    assert ledger.verify_chain().ok
    # the validation counts reach the ledger as the validate stage's detail, expected exclusions by reason
    unauthorised = int((~rows["plan_code"].isin(ws.feed.authorization.plans)).sum())
    assert unauthorised and summary.validation["excluded"] == {"plan_not_authorized": unauthorised}
    assert _validate_detail(ledger, summary.run_id, "succeeded") == {
        "rows": len(rows), "members": rows["member_id"].nunique(), "families": rows["subscriber_id"].nunique(),
        "failed_rows": 0, "failed_families": 0, "findings": 0, "held_back_members": 0,
        "excluded_plan_not_authorized": unauthorised}

    # No plaintext PHI left behind in the run's staging folder.
    left = [p.name for p in run_dir_for(ws.settings, ref).iterdir()]
    assert all(name in ("state.json.enc", f"{summary.file_name}.enc") for name in left), left

    # A rerun of the same interval neither sends a second copy nor mints new control numbers.
    again = run_feed(ws.settings, ref, clock=_clock, actor="test")
    assert again.status == "already_delivered"
    assert again.isa13 == summary.isa13
    assert again.payload_sha256 == summary.payload_sha256
    assert sorted(p.name for p in ws.inbox.iterdir()) == [summary.file_name]
    assert ledger.verify_chain().ok
    ledger.close()


def test_changed_host_key_is_refused_and_nothing_is_sent(sftp_workspace: Any, tmp_path: Path) -> None:
    ws = sftp_workspace
    ws.write_census(members=20, seed=3, as_of=DAY)
    known_hosts = ws.keys_dir / "known_hosts"
    host = known_hosts.read_text().split()[0]
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    known_hosts.write_text(f"{host} {other}\n")

    summary = run_feed(ws.settings, RunRef.for_day(ws.feed.feed_id, DAY), clock=_clock, actor="test")
    assert summary.status == "refused"
    assert summary.error is not None and summary.error["code"] == "host_key_refused"
    assert list(ws.inbox.iterdir()) == []
    ledger = open_ledger(ws.settings)
    delivery = ledger.find_delivery(feed_id=ws.feed.feed_id, interval_start=DAY)
    assert delivery is not None and delivery.status == "failed"
    ledger.close()


def test_unpinned_recipient_is_refused_before_anything_is_encrypted(sftp_workspace: Any) -> None:
    ws = sftp_workspace
    ws.write_census(members=20, seed=4, as_of=DAY)
    feed_file = ws.settings.feeds_dir / f"{ws.feed.feed_id}.yaml"
    # Our own signing key is in the keyring, but it is not the carrier's pinned key.
    feed_file.write_text(feed_file.read_text().replace(ws.keys.carrier_fingerprint, "F" * 40))

    summary = run_feed(ws.settings, RunRef.for_day(ws.feed.feed_id, DAY), clock=_clock, actor="test")
    assert summary.status == "refused"
    assert summary.error is not None and summary.error["code"] == "key_refused"
    assert list(ws.inbox.iterdir()) == []
    staged = run_dir_for(ws.settings, RunRef.for_day(ws.feed.feed_id, DAY))
    assert not any(p.name.endswith(".pgp") for p in staged.iterdir())


def test_ended_authorisation_is_refused_recorded_and_nothing_is_sent(sftp_workspace: Any) -> None:
    ws = sftp_workspace
    ws.write_census(members=20, seed=6, as_of=DAY)
    feed_file = ws.settings.feeds_dir / f"{ws.feed.feed_id}.yaml"
    text = feed_file.read_text()
    assert "  effective_to: null\n" in text
    # The employer withdrew this carrier's authorisation before the run's interval.
    feed_file.write_text(text.replace("  effective_to: null\n", "  effective_to: 2026-10-31\n"))
    ref = RunRef.for_day(ws.feed.feed_id, DAY)

    summary = run_feed(ws.settings, ref, clock=_clock, actor="test")
    assert summary.status == "refused"
    assert summary.error is not None and summary.error["code"] == "not_authorized"
    assert list(ws.inbox.iterdir()) == []
    assert not any(p.name.endswith(".pgp") for p in run_dir_for(ws.settings, ref).iterdir())
    ledger = open_ledger(ws.settings)
    run = ledger.get_run(summary.run_id)
    assert run is not None and run.status == "refused"
    events = [(e.kind, e.stage, e.status, e.error_code) for e in ledger.run_events(summary.run_id)]
    assert ("stage", "build", "failed", "not_authorized") in events
    assert events[-1][:3] == ("run_finished", None, "refused")
    assert not any(stage in ("conformance", "encrypt", "deliver") and status != "skipped"
                   for _, stage, status, _ in events), events
    assert ledger.find_delivery(feed_id=ref.feed_id, interval_start=DAY) is None
    assert [a.effective_to for a in ledger.authorisations(feed_id=ref.feed_id)] == [date(2026, 10, 31)]
    assert ledger.verify_chain().ok
    ledger.close()


def test_rejected_census_ends_recorded_with_row_and_column_and_no_phi(sftp_workspace: Any,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    ws = sftp_workspace
    census = ws.write_census(members=30, seed=5, as_of=DAY)
    frame = pd.read_csv(census, dtype=str, keep_default_na=False)
    canary_ssn, canary_name = "666123456", "Zebediah"
    frame.loc[3, "ssn"] = canary_ssn
    frame.loc[3, "first_name"] = canary_name
    frame.to_csv(census, index=False)

    caplog.set_level("DEBUG")
    summary = run_feed(ws.settings, RunRef.for_day(ws.feed.feed_id, DAY), clock=_clock, actor="test")
    assert summary.status == "rejected"
    assert summary.error is not None and summary.error["code"] == "census_rejected"
    assert summary.validation["failed_rows"] >= 1
    assert list(ws.inbox.iterdir()) == []

    report_csv = (ws.settings.reports_dir / ws.feed.feed_id / DAY.isoformat() / "validation.csv").read_text()
    findings = list(csv.DictReader(io.StringIO(report_csv)))
    # frame index 3 is the employer's row 5 (the header is row 1)
    assert [(f["row"], f["column"]) for f in findings if f["rule"] == "ssn_format"] == [("5", "ssn")]
    # the report's counts are the ones in the ledger (the validate stage failed with them as its detail)
    ledger = open_ledger(ws.settings)
    detail = _validate_detail(ledger, summary.run_id, "failed")
    ledger.close()
    assert detail["findings"] == len(findings) and detail["rows"] == len(frame)
    assert detail["failed_rows"] == len({f["row"] for f in findings}) == summary.validation["failed_rows"]
    assert detail["failed_families"] == frame.loc[
        frame.index.isin([int(f["row"]) - 2 for f in findings]), "subscriber_id"].nunique()
    ledger_dump = _dump_ledger(ws.settings)
    for canary in (canary_ssn, canary_name):
        assert canary not in report_csv
        assert canary not in caplog.text
        assert canary not in str(summary.as_dict())
        assert canary not in ledger_dump


def _validate_detail(ledger: Any, run_id: str, status: str) -> dict[str, Any]:
    """The detail of the run's one validate stage event with ``status``, as the ledger stored it."""
    events = [e for e in ledger.run_events(run_id) if e.kind == "stage" and e.stage == "validate"
              and e.status == status]
    assert len(events) == 1, [(e.stage, e.status) for e in ledger.run_events(run_id)]
    return dict(events[0].detail)


def _dump_ledger(settings: Any) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(settings.resolved_ledger_url)
    chunks = []
    with engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):  # noqa: S608 - names from the schema
                chunks.append(repr(tuple(row)))
    engine.dispose()
    return "\n".join(chunks)


def test_carrier_without_electronic_intake_gets_a_tracked_printable_handoff(
        tmp_path: Path, demo_keys: Any, ledger_url: str) -> None:
    from carrierfeeds.config import ManualDelivery
    from carrierfeeds.demo import prepare_workspace

    feed_id = "acme-northwind-dental"
    ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=tmp_path / "keys", ledger_url=ledger_url,
                           config_root=Path(__file__).resolve().parents[2], feed_id=feed_id,
                           delivery=ManualDelivery(outbox="outbox/northwind"))
    from carrierfeeds.census.generate import generate_census, write_census_csv

    census = generate_census(40, 9, as_of=DAY)
    write_census_csv(census, ws.inbound / "census_20261120.csv")
    ref = RunRef.for_day(feed_id, DAY)

    summary = run_feed(ws.settings, ref, clock=_clock, actor="test")
    assert summary.status == "pending_handoff", summary.error
    outbox = ws.settings.data_dir / "outbox" / "northwind"
    placed = sorted(outbox.iterdir())
    assert [p.name for p in placed] == [summary.file_name] and summary.file_name.endswith(".pdf.pgp")
    plain = tmp_path / "handoff.pdf"
    result = demo_keys.carrier.decrypt_file(placed[0], plain)
    assert result.valid_signature and hashlib.sha256(plain.read_bytes()).hexdigest() == summary.payload_sha256
    text = subprocess.run(["pdftotext", "-layout", str(plain), "-"], check=True, capture_output=True,
                          text=True).stdout
    dental = census[census["plan_code"] == "DEN-STD"]
    assert summary.members == dental["member_id"].nunique()
    assert str(dental.iloc[0]["last_name"]).upper() in text.upper()
    for ssn in census["ssn"]:  # not on this carrier's allowlist
        if ssn:
            assert ssn not in text

    ledger = open_ledger(ws.settings)
    pending = ledger.pending_handoffs(feed_id=feed_id)
    assert [d.payload_sha256 for d in pending] == [summary.payload_sha256]
    ledger.confirm_handoff(pending[0].delivery_id, by="ops.jane", method="courier",
                           received_by="carrier.desk", now=_clock())
    assert ledger.find_delivery(feed_id=feed_id, interval_start=DAY).status == "handed_off"
    ledger.close()
    again = run_feed(ws.settings, ref, clock=_clock, actor="test")
    assert again.status == "already_delivered"
    assert sorted(p.name for p in outbox.iterdir()) == [summary.file_name]


def test_stages_in_separate_processes_leave_phi_only_encrypted_at_rest(sftp_workspace: Any) -> None:
    """Airflow-style: each stage alone, scratch wiped after each; the store holds PHI only encrypted."""
    from carrierfeeds import run

    ws = sftp_workspace
    census = ws.write_census(members=25, seed=12, as_of=DAY)
    frame = pd.read_csv(census, dtype=str, keep_default_na=False)
    canaries = [frame.loc[0, "ssn"], frame.loc[0, "last_name"], frame.loc[0, "address1"]]
    ref = RunRef.for_day(ws.feed.feed_id, DAY)
    stages = [lambda c: run.stage_census(c, census), run.validate, run.build,
              run.conformance, run.encrypt, run.deliver, run.confirm]
    for stage in stages:
        ctx = run.open_run(ws.settings, ref, clock=_clock, actor="test", ephemeral=True)
        stage(ctx)
        ctx.ledger.close()
        assert not run.scratch_dir_for(ws.settings, ref).exists()
        for path in run_dir_for(ws.settings, ref).iterdir():
            assert path.name.endswith(".enc"), path.name  # every object sealed
            data = path.read_bytes()
            for canary in canaries:
                assert canary.encode() not in data, (path.name, "plaintext PHI at rest")
    assert [p.name for p in ws.inbox.iterdir()] == [ctx.state().encryption.cipher_name]


def test_a_payload_changed_after_the_gate_is_refused_by_encrypt(sftp_workspace: Any) -> None:
    """The bytes gpg encrypts are hashed as it reads them: a rendered file edited after the conformance
    gate is refused, nothing is encrypted or kept, and the ledger says why. (With encrypt_ahead, the
    default, the ciphertext is made during the gate from the bytes it checked: tests/run/test_encrypt_ahead.py.)"""
    from carrierfeeds import run
    from carrierfeeds.errors import Refused

    ws = sftp_workspace
    census = ws.write_census(members=15, seed=13, as_of=DAY)
    ref = RunRef.for_day(ws.feed.feed_id, DAY)
    ctx = run.open_run(ws.settings.model_copy(update={"encrypt_ahead": False}), ref, clock=_clock,
                            actor="test")
    run.stage_census(ctx, census)
    run.validate(ctx)
    run.build(ctx)
    run.conformance(ctx)
    plain = ctx.run_dir / ctx.state().build.file_name
    data = bytearray(plain.read_bytes())
    data[-3] = ord("X") if data[-3] != ord("X") else ord("Y")  # same size, one byte differs
    plain.write_bytes(bytes(data))
    with pytest.raises(Refused) as raised:
        run.encrypt(ctx)
    assert raised.value.code == "plaintext_changed"
    assert ctx.state().encrypted is None
    assert not any(p.name.endswith(".pgp") for p in ctx.run_dir.iterdir())
    assert not any(p.name.endswith(".pgp") for p in run_dir_for(ws.settings, ref).iterdir())
    events = [(e.stage, e.status, e.error_code) for e in ctx.ledger.run_events(ctx.run_id) if e.kind == "stage"]
    assert events[-1] == ("encrypt", "failed", "plaintext_changed")
    assert run.status_for(raised.value) == "refused"
    ctx.ledger.close()


def test_quarantined_family_is_carried_over_in_the_change_file_not_termed(
        sftp_workspace: Any, tmp_path: Path) -> None:
    """Changes mode under the quarantine policy: a family that fails validation on day 2 is held back;
    the day-2 change file has no 024 for it (it was not dropped), and once fixed it is simply unchanged."""
    import yaml
    from tests.run.test_run_changes_mode import _changes_mode

    from carrierfeeds.x12.read import read_834

    ws = sftp_workspace
    settings, store = _changes_mode(ws, tmp_path)
    feed_file = settings.feeds_dir / f"{ws.feed.feed_id}.yaml"
    feed = yaml.safe_load(feed_file.read_text())
    feed["validation"] = {"policy": "quarantine"}
    feed_file.write_text(yaml.safe_dump(feed, sort_keys=False))
    day1, day2, day3 = DAY, date(2026, 11, 21), date(2026, 11, 22)

    census = ws.write_census(members=30, seed=21, as_of=day1)
    first = run_feed(settings, RunRef.for_day(ws.feed.feed_id, day1), clock=_clock, actor="test")
    assert first.status == "delivered", first.error
    frame = pd.read_csv(census, dtype=str, keep_default_na=False)
    sent1 = read_834(_decrypt(ws, ws.inbox / first.file_name, tmp_path))
    assert set(sent1["ins03"]) == {"030"}

    # Day 2: one family with dependents fails a rule (the subscriber's gender); another member moves house.
    covered = frame[frame["plan_code"].isin(ws.feed.authorization.plans)]
    families = covered.groupby("subscriber_id")["member_id"].nunique()
    held_family = str(families[families > 1].index[0])
    held = set(frame.loc[frame["subscriber_id"] == held_family, "member_id"])
    assert held <= set(sent1["member_id"]) and len(held) > 1
    mover = str(covered.loc[covered["subscriber_id"] != held_family, "member_id"].iloc[0])
    bad = frame.copy()
    bad.loc[bad["member_id"] == held_family, "gender"] = "X"
    bad.loc[bad["member_id"] == mover, "address1"] = "1 Changed Street"
    census.unlink()
    day2_file = ws.inbound / f"census_{day2:%Y%m%d}.csv"
    bad.to_csv(day2_file, index=False)

    second = run_feed(settings, RunRef.for_day(ws.feed.feed_id, day2), clock=_clock, actor="test")
    assert second.status == "delivered", second.error
    assert second.validation["held_back_members"] == len(held)
    assert second.validation["failed_families"] == 1
    sent2 = read_834(_decrypt(ws, ws.inbox / second.file_name, tmp_path))
    assert not set(sent2["member_id"]) & held, "a held-back family is carried over, not sent"
    assert "024" not in set(sent2["ins03"]), sent2[["ins03"]].value_counts()
    assert set(sent2["member_id"]) == {mover} and set(sent2["ins03"]) == {"001"}
    snapshot = store.info(ws.feed.feed_id)
    assert snapshot is not None and snapshot.run_id == second.run_id

    # Day 3: the employer fixes the family and nothing else changed: still no term, and no change for it.
    day2_file.unlink()
    fixed = bad.copy()
    fixed["gender"] = frame["gender"]
    fixed.to_csv(ws.inbound / f"census_{day3:%Y%m%d}.csv", index=False)
    third = run_feed(settings, RunRef.for_day(ws.feed.feed_id, day3), clock=_clock, actor="test")
    assert third.status == "nothing_to_send", (third.status, third.error)


def test_validate_judges_a_census_on_the_day_a_run_of_that_interval_does(sftp_workspace: Any) -> None:
    """`carrierfeeds validate --date D` finds what the run of interval D finds (age rules included);
    without --date it takes the interval `run` would: today in the feed's time zone."""
    from zoneinfo import ZoneInfo

    from typer.testing import CliRunner

    from carrierfeeds.cli import app

    ws = sftp_workspace
    census = ws.write_census(members=40, seed=6, as_of=DAY)
    frame = pd.read_csv(census, dtype=str, keep_default_na=False)
    child = frame.loc[frame["relationship"] == "CH", "member_id"].iloc[0]
    frame.loc[frame["member_id"] == child, "dob"] = DAY.replace(year=DAY.year - 26).isoformat()  # 26 on DAY
    frame.to_csv(census, index=False)

    summary = run_feed(ws.settings, RunRef.for_day(ws.feed.feed_id, DAY), clock=_clock, actor="test")
    assert summary.status == "rejected", summary.error
    report = ws.settings.reports_dir / ws.feed.feed_id / DAY.isoformat() / "validation.csv"
    ran = {tuple(r[:5]) for r in list(csv.reader(io.StringIO(report.read_text())))[1:]}  # row .. message
    assert {r[3] for r in ran} == {"dependent_age_limit"}

    s = ws.settings
    env = {"CARRIERFEEDS_FEEDS_DIR": str(s.feeds_dir), "CARRIERFEEDS_MAPPINGS_DIR": str(s.mappings_dir),
           "CARRIERFEEDS_SCHEMAS_DIR": str(s.schemas_dir), "CARRIERFEEDS_DATA_DIR": str(s.data_dir),
           "CARRIERFEEDS_KEYS_DIR": str(s.keys_dir), "CARRIERFEEDS_GNUPG_HOME": str(s.gnupg_home),
           "CARRIERFEEDS_LEDGER_URL": s.resolved_ledger_url}

    def validate(*date: str) -> dict[str, Any]:
        result = CliRunner().invoke(app, ["validate", ws.feed.feed_id, "--census", str(census), "--json", *date],
                                    env=env)
        assert result.exit_code in (0, 1), result.output
        data: dict[str, Any] = json.loads(result.output)
        return data

    same_day = validate("--date", DAY.isoformat())
    assert same_day["interval_start"] == DAY.isoformat() and same_day["rejected"]
    assert {(str(f["row"]), f["member_token"], f["column"], f["rule"], f["message"])
            for f in same_day["findings"]} == ran
    day_before = validate("--date", date.fromordinal(DAY.toordinal() - 1).isoformat())
    assert day_before["findings"] == [] and not day_before["rejected"]
    zone = ZoneInfo(ws.feed.timezone)
    before = datetime.now(zone).date()
    default = validate()
    assert default["interval_start"] in {before.isoformat(), datetime.now(zone).date().isoformat()}


def _conformance_detail(ledger: Any, run_id: str) -> dict[str, Any]:
    events = [e for e in ledger.run_events(run_id) if e.kind == "stage" and e.stage == "conformance"
              and e.status == "succeeded"]
    assert len(events) == 1, [(e.stage, e.status) for e in ledger.run_events(run_id)]
    return dict(events[0].detail)


def test_the_pyx12_size_is_a_setting_whole_file_at_or_under_it_a_sample_above(sftp_workspace: Any) -> None:
    ws = sftp_workspace
    ws.write_census(members=40, seed=12, as_of=DAY)
    whole = run_feed(ws.settings, RunRef.for_day(ws.feed.feed_id, DAY), clock=_clock, actor="test")
    assert whole.status == "delivered", whole.error
    # The same feed, the next day, with the gate's pyx12 size set below the file's member count.
    sampled_settings = ws.settings.model_copy(update={"pyx12_max_members": 5})
    next_day = DAY + timedelta(days=1)
    ws.write_census(members=40, seed=13, as_of=next_day)
    sampled = run_feed(sampled_settings, RunRef.for_day(ws.feed.feed_id, next_day), clock=_clock,
                       actor="test", force_census=True)
    assert sampled.status == "delivered", sampled.error
    ledger = open_ledger(ws.settings)
    try:
        full_detail = _conformance_detail(ledger, whole.run_id)
        sample_detail = _conformance_detail(ledger, sampled.run_id)
    finally:
        ledger.close()
    assert full_detail["pyx12"] == "full" and full_detail["pyx12_ok"] is True
    assert sample_detail["pyx12"] == "sample" and sample_detail["pyx12_ok"] is True
    # The sample is whole families cut from the file: fewer segments than the whole file, never none.
    assert 0 < sample_detail["pyx12_segments"] < sample_detail["segments"]
    assert full_detail["pyx12_segments"] == full_detail["segments"]  # pyx12 read every segment


def test_the_pyx12_size_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from carrierfeeds.settings import DEFAULT_PYX12_MAX_MEMBERS, Settings

    assert Settings().pyx12_max_members == DEFAULT_PYX12_MAX_MEMBERS
    monkeypatch.setenv("CARRIERFEEDS_PYX12_MAX_MEMBERS", "750")
    assert Settings().pyx12_max_members == 750
    monkeypatch.setenv("CARRIERFEEDS_PYX12_MAX_MEMBERS", "0")
    with pytest.raises(ValueError):
        Settings()


def test_the_census_is_read_mapped_only_as_the_runs_own_staged_copy(sftp_workspace: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """validate reads the census through a memory map (read_census's ``private``, census_blocks), which
    only the run's own copy may be: 0600 in the run's scratch folder, never the employer's file."""
    import stat

    from carrierfeeds import run
    from carrierfeeds.census import readers

    ws = sftp_workspace
    ws.write_census(members=25, seed=13, as_of=DAY)
    ref = RunRef.for_day(ws.feed.feed_id, DAY)
    mapped: list[tuple[Path, int]] = []
    real = readers._map

    def mapping(path: Path) -> Any:
        mapped.append((path.resolve(), stat.S_IMODE(path.stat().st_mode)))
        return real(path)

    monkeypatch.setattr(readers, "_map", mapping)
    summary = run_feed(ws.settings, ref, clock=_clock, actor="test")
    assert summary.status == "delivered", summary.error
    scratch = run.scratch_dir_for(ws.settings, ref).resolve()
    assert mapped and all(path == scratch / "census.csv" and mode == 0o600 for path, mode in mapped), mapped
