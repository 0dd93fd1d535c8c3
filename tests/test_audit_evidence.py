"""Auditors' evidence: which member's data went to which carrier (by token), which fields under which
config, under which authorisation; a period report whose counts agree with its own tables; filters that
refuse values the ledger cannot hold. SQLite and PostgreSQL."""

from __future__ import annotations

import html
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from carrierfeeds.audit import (
    CATEGORIES,
    build_report,
    delivery_lines,
    disclosure_lines,
    member_deliveries,
    render_report_html,
    run_history,
)
from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.cli import app
from carrierfeeds.ledger import Ledger, LedgerError, sha256_hex
from carrierfeeds.ledger.disclosures import Disclosure, MemberIndex

runner = CliRunner()
TOKENS = MemberTokenizer(b"synthetic-token-key-for-tests-only-32b")
DAY0 = date(2026, 5, 4)
HASHES = {"feed_sha256": sha256_hex("feed"), "mapping_sha256": sha256_hex("mapping"),
          "schema_sha256": sha256_hex("schema"), "suite_sha256": sha256_hex("suite")}


def _at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 5, 4, hour, minute, tzinfo=UTC) + timedelta(days=day)


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    opened = Ledger.open(ledger_url)
    opened.upgrade()
    yield opened
    opened.close()


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ledger_url: str) -> Path:
    monkeypatch.setenv("CARRIERFEEDS_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("CARRIERFEEDS_FEEDS_DIR", str(tmp_path / "feeds"))
    monkeypatch.setenv("CARRIERFEEDS_LEDGER_URL", ledger_url)
    (tmp_path / "feeds").mkdir()
    return tmp_path


def _disclosure(member_ids: list[str], codes: list[str], fields: tuple[str, ...] = ("first_name", "member_id"),
                ) -> Disclosure:
    return Disclosure(allowlist=("first_name", "last_name", "member_id", "dob"), fields=fields,
                      members=MemberIndex.pack([TOKENS.token(m) for m in member_ids], codes), **HASHES)


def _authorise(ledger: Ledger, feed_id: str, employer: str, carrier: str, *, reference: str | None = None,
               at: datetime | None = None) -> None:
    ledger.record_authorisation(feed_id=feed_id, employer_id=employer, carrier_id=carrier, plans=["MED"],
                                effective_from=date(2026, 1, 1), effective_to=None, recorded_by="airflow",
                                now=at or _at(0, 1), reference=reference)


def _delivery(ledger: Ledger, feed_id: str, day: int, *, disclosure: Disclosure | None,
              outcomes: list[tuple[str, dict[str, Any]]], run_status: str = "delivered",
              transport: str = "sftp") -> tuple[str, str]:
    interval = DAY0 + timedelta(days=day)
    run = ledger.start_run(feed_id=feed_id, interval_start=interval, interval_end=interval + timedelta(days=1),
                           actor="airflow", now=_at(day, 2))
    ic = ledger.allocate_control_numbers(run_id=run.run_id, sender_id="ACME", receiver_id="CARRIER" + feed_id[-1],
                                         now=_at(day, 2, 1))
    d = ledger.record_delivery_intent(
        run_id=run.run_id, feed_id=feed_id, interval_start=interval, payload_sha256=sha256_hex(f"{feed_id}{day}"),
        file_name=f"{feed_id}_{ic.isa13:09d}.834.pgp", isa13=ic.isa13, gs06=ic.gs06, st02=ic.st02,
        recipient_fingerprint="AB" * 20, member_counts={"members": 3}, transport=transport, now=_at(day, 2, 2),
        disclosure=disclosure)
    for i, (status, extra) in enumerate(outcomes):
        ledger.record_delivery_outcome(d.delivery_id, status=status, now=_at(day, 2, 10 + i), **extra)
    if run_status != "running":
        ledger.finish_run(run.run_id, run_status, now=_at(day, 3), counts={"members": 3})
    return run.run_id, d.delivery_id


# ------------------------------------------------------------------------------ the member index
def test_member_index_finds_each_member_in_its_bucket_and_nothing_else() -> None:
    ids = [f"E{n:07d}" for n in range(30_000)]
    codes = ["021" if n % 3 else "024" for n in range(len(ids))]
    index = MemberIndex.pack([TOKENS.token(m) for m in ids], codes)
    assert index.members == 30_000 and index.bits == 3 and len(index.buckets) == 8  # ~3,750 per bucket
    from carrierfeeds.ledger.disclosures import bucket_of, codes_in

    for n in (0, 1, 2, 17_001, 29_999):
        token = TOKENS.token(ids[n])
        assert codes_in(index.buckets[bucket_of(token, index.bits)], token) == [codes[n]]
    absent = TOKENS.token("not-a-member")
    assert codes_in(index.buckets.get(bucket_of(absent, index.bits), ""), absent) == []
    small = MemberIndex.pack([TOKENS.token("A"), TOKENS.token("A"), TOKENS.token("B")], ["021", "021", "030"])
    assert (small.bits, small.members, len(small.buckets)) == (0, 2, 1)
    with pytest.raises(LedgerError):
        MemberIndex.pack(["123-45-6789"], ["021"])  # only tokens go in, never an id
    with pytest.raises(LedgerError):
        MemberIndex.pack([TOKENS.token("A")], ["Smith"])  # and maintenance codes, never a value


def test_audit_member_lists_every_delivery_that_carried_a_member(ledger: Ledger, cli_env: Path) -> None:
    _authorise(ledger, "acme-sunrise", "acme", "sunrise")
    _authorise(ledger, "acme-northwind", "acme", "northwind")
    many = [f"E{n:06d}" for n in range(9000)]  # several buckets
    _, first = _delivery(ledger, "acme-sunrise", 0, disclosure=_disclosure(many, ["030"] * len(many)),
                         outcomes=[("delivered", {})])
    _, second = _delivery(ledger, "acme-sunrise", 1, disclosure=_disclosure(["E000042"], ["024"]),
                          outcomes=[("delivered", {})])
    _, other = _delivery(ledger, "acme-northwind", 1, disclosure=_disclosure(["E000042", "E000043"], ["021", "021"]),
                         outcomes=[("failed", {"error_code": "transient"})])
    _delivery(ledger, "acme-northwind", 2, disclosure=_disclosure(["E000099"], ["021"]), outcomes=[])
    token = TOKENS.token("E000042")

    found = member_deliveries(ledger, token)
    assert [(m.delivery_id, m.carrier_id, m.maintenance_types) for m in found] == [
        (first, "sunrise", ("030",)), (second, "sunrise", ("024",)), (other, "northwind", ("021",))]
    assert member_deliveries(ledger, TOKENS.token("nobody")) == []
    assert ledger.verify_chain().ok

    shown = runner.invoke(app, ["audit", "member", token, "--json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert [d["delivery_id"] for d in data["deliveries"]] == [first, second, other]
    assert {k for k in data["deliveries"][0]} >= {"carrier_id", "feed_id", "file_name", "isa13", "gs06", "st02",
                                                    "sent_at", "maintenance_types", "status"}
    table = runner.invoke(app, ["audit", "member", token])
    assert table.exit_code == 0 and table.output.strip().endswith(f"3 deliveries carried {token}")
    assert runner.invoke(app, ["audit", "member", "E000042"]).exit_code == 2  # an id is not a token


def test_a_tampered_member_index_breaks_the_chain(ledger: Ledger) -> None:
    _, delivery = _delivery(ledger, "acme-sunrise", 0, disclosure=_disclosure(["A", "B"], ["021", "021"]),
                            outcomes=[("delivered", {})])
    forged = MemberIndex.pack([TOKENS.token("A")], ["021"]).buckets[0]
    with ledger.engine.begin() as conn:
        conn.execute(sa.text("UPDATE disclosed_members SET entries = :e WHERE delivery_id = :d"),
                     {"e": forged, "d": delivery})
    verdict = ledger.verify_chain()
    assert not verdict.ok and verdict.first_broken is not None
    assert verdict.first_broken.table == "disclosed_members"


# ----------------------------------------------------------------------- fields and authorisations
def test_disclosures_report_fields_counts_and_config_per_carrier(ledger: Ledger, cli_env: Path) -> None:
    _authorise(ledger, "acme-sunrise", "acme", "sunrise")
    _authorise(ledger, "acme-northwind", "acme", "northwind")
    _delivery(ledger, "acme-sunrise", 0, disclosure=_disclosure(["A", "B", "C"], ["030"] * 3),
              outcomes=[("delivered", {})])
    _delivery(ledger, "acme-sunrise", 1, disclosure=_disclosure(["A"], ["001"], fields=("dob", "member_id")),
              outcomes=[("delivered", {})])
    _delivery(ledger, "acme-sunrise", 2, disclosure=_disclosure(["D"], ["021"]), outcomes=[("failed", {})])
    _delivery(ledger, "acme-northwind", 1, disclosure=None, outcomes=[("delivered", {})])

    (sunrise,) = disclosure_lines(ledger, carrier_id="sunrise")
    assert (sunrise.files, sunrise.member_disclosures, sunrise.largest_file_members) == (2, 4, 3)  # failed: not sent
    assert sunrise.fields == {"dob": 1, "first_name": 1, "member_id": 2}
    assert sunrise.allowlist == ("dob", "first_name", "last_name", "member_id")
    assert sunrise.config_sha256 == ({"feed": HASHES["feed_sha256"], "mapping": HASHES["mapping_sha256"],
                                      "schema": HASHES["schema_sha256"], "suite": HASHES["suite_sha256"]},)
    (northwind,) = disclosure_lines(ledger, carrier_id="northwind")
    assert (northwind.files, northwind.files_without_record, northwind.fields) == (1, 1, {})
    assert [ln.files for ln in disclosure_lines(ledger, since=_at(1, 0), until=_at(2, 0))] == [1, 1]

    out = cli_env / "disclosures.html"
    made = runner.invoke(app, ["audit", "disclosures", "--carrier", "sunrise", "--from", "2026-05-04", "--to",
                               "2026-05-06", "--json", "--out", str(out)])
    assert made.exit_code == 0, made.output
    (feed,) = json.loads(made.output)["feeds"]
    assert feed["fields"] == {"dob": 1, "first_name": 1, "member_id": 2} and feed["member_disclosures"] == 4
    page = out.read_text()
    assert "first_name (1)" in page and "last_name" in page  # allowed, never sent
    pdf = cli_env / "disclosures.pdf"
    assert runner.invoke(app, ["audit", "disclosures", "--out", str(pdf)]).exit_code == 0
    read = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True, text=True,
                          timeout=60).stdout
    assert "first_name (1)" in read and "sunrise" in read and "northwind" in read
    assert runner.invoke(app, ["audit", "disclosures", "--out", str(cli_env / "d.txt")]).exit_code == 2
    text = runner.invoke(app, ["audit", "disclosures"])
    assert text.exit_code == 0 and "allowed but never sent: last_name" in text.output
    bad = runner.invoke(app, ["audit", "disclosures", "--carrier", "sunrize"])
    assert bad.exit_code == 2 and "northwind, sunrise" in bad.output
    assert runner.invoke(app, ["audit", "disclosures", "--from", "2026-05-31", "--to", "2026-05-01"]).exit_code == 2
    assert runner.invoke(app, ["audit", "disclosures", "--from", "May 4"]).exit_code == 2


def test_authorisation_reference_is_recorded_hashed_and_shown(ledger: Ledger, cli_env: Path) -> None:
    _authorise(ledger, "acme-sunrise", "acme", "sunrise", at=_at(0, 1))
    _authorise(ledger, "acme-sunrise", "acme", "sunrise", at=_at(0, 2))  # same content: no new row
    _authorise(ledger, "acme-sunrise", "acme", "sunrise", reference="MSA-2024-017 §4", at=_at(0, 3))
    _authorise(ledger, "acme-sunrise", "acme", "sunrise", reference="MSA-2024-017 §4", at=_at(0, 4))
    assert [a.reference for a in ledger.authorisations()] == [None, "MSA-2024-017 §4"]
    _, delivery = _delivery(ledger, "acme-sunrise", 1, disclosure=None, outcomes=[("delivered", {})])
    (line,) = delivery_lines(ledger)
    assert line.delivery_id == delivery and line.authorisation_reference == "MSA-2024-017 §4"
    assert ledger.verify_chain().ok

    shown = runner.invoke(app, ["audit", "authorisations", "--json"])
    assert shown.exit_code == 0, shown.output
    assert [r["reference"] for r in json.loads(shown.output)["authorisations"]] == [None, "MSA-2024-017 §4"]
    table = runner.invoke(app, ["audit", "authorisations", "--feed", "acme-sunrise"])
    assert table.exit_code == 0 and "MSA-2024-017 §4" in table.output and "(none)" in table.output
    assert runner.invoke(app, ["audit", "authorisations", "--feed", "nope"]).exit_code == 2

    # The reference is covered by the row's hash: rewriting it is a broken link.
    with ledger.engine.begin() as conn:
        conn.execute(sa.text("UPDATE authorisations SET reference = 'MSA-2099-001' WHERE reference IS NOT NULL"))
    verdict = ledger.verify_chain()
    assert not verdict.ok and verdict.first_broken is not None and verdict.first_broken.table == "authorisations"


# ------------------------------------------------------------------- the report agrees with itself
def _mixed_period(ledger: Ledger) -> dict[str, str]:
    """A delivered run whose later forced resend failed, a rejected run, a refused run, a failed transfer."""
    _authorise(ledger, "acme-sunrise", "acme", "sunrise")
    runs: dict[str, str] = {}
    runs["resent"], delivered = _delivery(ledger, "acme-sunrise", 0, disclosure=None,
                                          outcomes=[("delivered", {})], run_status="running")
    ledger.finish_run(runs["resent"], "delivered", now=_at(0, 3), counts={"members": 3})
    again = ledger.start_run(feed_id="acme-sunrise", interval_start=DAY0, interval_end=DAY0 + timedelta(days=1),
                             actor="ops-jane", now=_at(0, 9))
    ledger.record_stage(again.run_id, "deliver", "started", now=_at(0, 9, 1))
    ledger.audit(actor="ops-jane", action="forced_resend_failed", object_type="delivery", object_id=delivered,
                 reason="carrier lost the file, ticket CF-31", now=_at(0, 9, 2),
                 detail={"isa13": 1, "error_code": "transient"})
    ledger.record_stage(again.run_id, "deliver", "failed", now=_at(0, 9, 3), error_code="transient",
                        message="connection reset by the carrier's server")
    ledger.finish_run(again.run_id, "failed", now=_at(0, 9, 4), error_code="transient")

    for key, status, stage, code, message in (
            ("rejected", "rejected", "validate", "census_rejected", "12 failing rows in 3 families"),
            ("refused", "refused", "build", "not_authorized", "employer acme has not authorised carrier sunrise")):
        day = 1 if key == "rejected" else 2
        run = ledger.start_run(feed_id="acme-sunrise", interval_start=DAY0 + timedelta(days=day),
                               interval_end=DAY0 + timedelta(days=day + 1), actor="airflow", now=_at(day, 2))
        ledger.record_stage(run.run_id, stage, "started", now=_at(day, 2, 1))
        ledger.record_stage(run.run_id, stage, "failed", now=_at(day, 2, 2), error_code=code, message=message)
        ledger.finish_run(run.run_id, status, now=_at(day, 2, 3), error_code=code)
        runs[key] = run.run_id
    runs["transfer"], _ = _delivery(ledger, "acme-sunrise", 3, disclosure=None, run_status="failed", outcomes=[
        ("failed", {"error_code": "transient", "message": "authentication refused"})])
    return runs


def test_report_counts_each_category_once_and_lists_each_with_a_reason(ledger: Ledger) -> None:
    runs = _mixed_period(ledger)
    report = build_report(ledger, since=DAY0, until=DAY0 + timedelta(days=4), generated_at=_at(6, 0))
    t = report.totals
    kinds = [n.kind for n in report.notable]
    assert (t["failures"], t["failed_resends"], t["failed_attempts"], t["unsuccessful_runs"]) == (1, 1, 2, 4)
    assert kinds.count("failed") == t["failures"] and kinds.count("forced_resend_failed") == t["failed_resends"]
    assert sum(k.startswith("run_") for k in kinds) == t["unsuccessful_runs"]
    reasons = {n.object_id: n.reason for n in report.notable if n.kind.startswith("run_")}
    assert set(reasons) == {runs["resent"], runs["rejected"], runs["refused"], runs["transfer"]}
    assert all(reasons.values())
    assert "12 failing rows in 3 families" in reasons[runs["rejected"]]
    assert "not_authorized" in reasons[runs["refused"]]
    assert "authentication refused" in reasons[runs["transfer"]]
    assert "CF-31" in reasons[runs["resent"]] and "delivered earlier" in reasons[runs["resent"]]
    summary = report.summary()
    assert "2 failed delivery attempts (1 transfers, 1 forced resends)" in summary
    assert "4 runs ended failed, rejected or refused" in summary
    page = render_report_html(report)
    assert html.escape(summary) in page and html.escape(CATEGORIES) in page


def test_audit_show_states_the_run_status_and_that_its_file_was_delivered(ledger: Ledger, cli_env: Path) -> None:
    runs = _mixed_period(ledger)
    history = run_history(ledger, runs["resent"])
    assert history is not None and history.run.status == "failed" and len(history.delivered) == 1
    shown = runner.invoke(app, ["audit", "show", runs["resent"]])
    assert shown.exit_code == 0, shown.output
    assert "status: failed" in shown.output and "file delivered: yes" in shown.output
    assert "forced resend failed (carrier lost the file, ticket CF-31)" in shown.output
    data = json.loads(runner.invoke(app, ["audit", "show", runs["resent"], "--json"]).output)
    assert data["delivered"] == [history.delivered[0].delivery_id] and "CF-31" in data["latest_failure"]
    never = runner.invoke(app, ["audit", "show", runs["rejected"]])
    assert "file delivered: no" in never.output and "census_rejected" in never.output


def test_unknown_filter_values_are_usage_errors_naming_the_allowed_ones(ledger: Ledger, cli_env: Path) -> None:
    _mixed_period(ledger)
    bogus = runner.invoke(app, ["audit", "log", "--status", "bogus"])
    assert bogus.exit_code == 2 and "delivered" in bogus.output and "forced_resend" in bogus.output
    carrier = runner.invoke(app, ["audit", "log", "--carrier", "sunrize"])
    assert carrier.exit_code == 2 and "sunrise" in carrier.output
    assert runner.invoke(app, ["audit", "log", "--employer", "nobody"]).exit_code == 2
    assert runner.invoke(app, ["audit", "log", "--feed", "nobody"]).exit_code == 2
    assert runner.invoke(app, ["audit", "log", "--since", "2026-02-30"]).exit_code == 2
    assert runner.invoke(app, ["audit", "log", "--since", "2026-05-09", "--until", "2026-05-01"]).exit_code == 2
    good = runner.invoke(app, ["audit", "log", "--carrier", "sunrise", "--status", "delivered"])
    assert good.exit_code == 0 and good.output.strip().endswith("1 deliveries")


# ------------------------------------------------------------------------------------ a real run
@pytest.mark.slow
def test_a_real_run_records_what_it_disclosed_to_whom_under_which_authority(
        sftp_workspace: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """gpg, sshd and the demo feed: the delivery's disclosure names the fields present and the config
    files' hashes, its member index finds each authorised member by token, and no census value shows."""
    import pandas as pd

    from carrierfeeds.files import sha256_file
    from carrierfeeds.run.context import RunRef
    from carrierfeeds.run.stages import run_feed
    from carrierfeeds.settings import open_ledger

    ws = sftp_workspace
    day = date(2026, 11, 19)
    census = ws.write_census(members=40, seed=5, as_of=day)

    def clock() -> datetime:
        return datetime(2026, 11, 19, 7, 30, tzinfo=UTC)

    summary = run_feed(ws.settings, RunRef.for_day(ws.feed.feed_id, day), clock=clock, actor="test")
    assert summary.status == "delivered", summary.error
    ledger = open_ledger(ws.settings)
    (line,) = delivery_lines(ledger)
    assert line.authorisation_reference == ws.feed.authorization.reference == "MSA-2024-017 §4"
    (disclosed,) = ledger.disclosures().values()
    assert disclosed.delivery_id == line.delivery_id and disclosed.members == summary.members
    assert set(disclosed.fields) <= set(disclosed.allowlist) and {"member_id", "last_name"} <= set(disclosed.fields)
    bundle_files = {"feed": ws.settings.feeds_dir / f"{ws.feed.feed_id}.yaml",
                    "mapping": ws.settings.mappings_dir / f"{ws.feed.mapping_id}.yaml",
                    "schema": ws.settings.schemas_dir / f"{ws.feed.census.schema_id}.yaml"}
    for name, path in bundle_files.items():
        assert disclosed.hashes[name] == sha256_file(path), name
    assert ledger.verify_chain().ok

    frame = pd.read_csv(census, dtype=str, keep_default_na=False)
    sent = frame["plan_code"].isin(ws.feed.authorization.plans)
    tokenizer = MemberTokenizer.from_key_file(ws.settings.resolved_token_key_file)
    carried = [m for m in frame.loc[sent, "member_id"].unique()]
    assert carried and "E9999999" not in set(frame["member_id"])
    for member in carried[:5]:
        (hit,) = member_deliveries(ledger, tokenizer.token(member))
        assert hit.delivery_id == line.delivery_id and hit.isa13 == summary.isa13 and hit.maintenance_types
    assert member_deliveries(ledger, tokenizer.token("E9999999")) == []

    monkeypatch.setenv("CARRIERFEEDS_DATA_DIR", str(ws.settings.data_dir))
    monkeypatch.setenv("CARRIERFEEDS_FEEDS_DIR", str(ws.settings.feeds_dir))
    monkeypatch.setenv("CARRIERFEEDS_LEDGER_URL", str(ws.settings.ledger_url))
    views = [runner.invoke(app, ["audit", "member", tokenizer.token(carried[0]), "--json"]),
             runner.invoke(app, ["audit", "disclosures", "--json"]),
             runner.invoke(app, ["audit", "log", "--format", "csv"])]
    assert all(v.exit_code == 0 for v in views), [v.output for v in views]
    values = {v for c in ("member_id", "first_name", "last_name", "ssn", "dob", "address1", "city") if c in frame
              for v in frame[c] if len(v) >= 5}
    for view in views:
        leaked = [v for v in values if v in view.output]
        assert leaked == [], f"{len(leaked)} census values in an audit view"
    ledger.close()


# --------------------------------------------------------------------- migration and retention
def test_rows_chained_before_0007_keep_their_hashes_after_the_upgrade(ledger_url: str) -> None:
    """Late columns are hashed only when set: an authorisation and an outcome chained at 0005 still verify."""
    from alembic import command
    from alembic.config import Config

    from carrierfeeds.ledger import MIGRATIONS
    from carrierfeeds.ledger import models as m

    old = Ledger.open(ledger_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with old.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0005")
    with old._write() as tx:  # rows as the 0005 code wrote them: no reference, no received_by
        tx.append(m.authorisations, {"feed_id": "acme-sunrise", "employer_id": "acme", "carrier_id": "sunrise",
                                     "plans": '["MED"]', "effective_from": date(2026, 1, 1), "effective_to": None,
                                     "content_sha256": sha256_hex("x"), "recorded_by": "airflow", "reason": None,
                                     "at": _at(0, 1)})
        tx.append(m.audit_events, {"actor": "ops", "action": "note", "object_type": "feed", "object_id": "acme",
                                   "reason": None, "detail": "{}", "at": _at(0, 1)})
    old.upgrade()
    assert old.verify_chain().ok and old.verify_chain().rows_checked == 2
    _authorise(old, "acme-sunrise", "acme", "sunrise", reference="MSA-2024-017 §4", at=_at(0, 2))
    _delivery(old, "acme-sunrise", 1, disclosure=_disclosure(["A"], ["021"]), outcomes=[("delivered", {})])
    assert old.verify_chain().ok
    old.close()


def test_a_purge_removes_a_runs_disclosure_and_member_index_with_it(ledger: Ledger) -> None:
    _authorise(ledger, "acme-sunrise", "acme", "sunrise")
    many = [f"E{n:06d}" for n in range(9000)]
    old = _disclosure(many, ["030"] * len(many))
    assert len(old.members.buckets) == 4
    _delivery(ledger, "acme-sunrise", 0, disclosure=old, outcomes=[("delivered", {})])
    _, kept = _delivery(ledger, "acme-sunrise", 40, disclosure=_disclosure(["E000001"], ["001"]),
                        outcomes=[("delivered", {})])
    purged = ledger.purge_metadata(cutoff=_at(20, 0), actor="retention", now=_at(60, 0))
    assert purged.counts["disclosures"] == 1 and purged.counts["disclosed_members"] == 4
    assert list(ledger.disclosures()) == [kept]
    assert list(ledger.deliveries_of_member(TOKENS.token("E000001"))) == [kept]
    assert ledger.verify_chain().ok


def test_report_and_log_show_who_received_a_handoff_and_the_fields(ledger: Ledger) -> None:
    from carrierfeeds.audit import lines_to_csv

    _authorise(ledger, "acme-paper", "acme", "paperco")
    _, delivery = _delivery(ledger, "acme-paper", 0, disclosure=_disclosure(["A"], ["030"]), transport="manual",
                            outcomes=[("pending_handoff", {"remote_path": "/outbox/f.pdf"})], run_status="running")
    ledger.confirm_handoff(delivery, by="jane.ops", method="courier", received_by="R. Okafor", now=_at(0, 5))
    report = build_report(ledger, since=DAY0, until=DAY0, generated_at=_at(1, 0))
    (handed,) = [n for n in report.notable if n.kind == "handoff_confirmed"]
    assert handed.reason == "courier; received by R. Okafor" and handed.feed_id == "acme-paper"
    (line,) = delivery_lines(ledger)
    assert line.received_by == "R. Okafor"
    csv_text = lines_to_csv([line])
    assert "first_name member_id" in csv_text and "R. Okafor" in csv_text


@pytest.mark.slow
def test_deliver_refuses_a_file_whose_disclosure_record_is_missing(sftp_workspace: Any) -> None:
    """Fail closed: without the build's disclosure record nothing is sent and no intent is written;
    building again makes the record, and the file goes out with it."""
    from carrierfeeds import run
    from carrierfeeds.errors import PermanentError
    from carrierfeeds.run.context import RunRef
    from carrierfeeds.run.disclosure import DISCLOSURE

    ws = sftp_workspace
    day = date(2026, 11, 19)
    census = ws.write_census(members=12, seed=8, as_of=day)
    ref = RunRef.for_day(ws.feed.feed_id, day)

    def clock() -> datetime:
        return datetime(2026, 11, 19, 7, 30, tzinfo=UTC)

    def stage(fn: Any) -> Any:
        ctx = run.open_run(ws.settings, ref, clock=clock, actor="test", ephemeral=True)
        try:
            return fn(ctx)
        finally:
            ctx.ledger.close()

    for fn in (lambda c: run.stage_census(c, census), run.validate, run.build, run.conformance, run.encrypt):
        stage(fn)
    stage(lambda c: c.store.remove(c.feed_id, c.ref.interval_start, DISCLOSURE))
    with pytest.raises(PermanentError, match="no disclosure record"):
        stage(run.deliver)
    assert list(ws.inbox.iterdir()) == []
    ledger = Ledger.open(str(ws.settings.ledger_url))
    assert ledger.deliveries() == []
    for fn in (run.build, run.conformance, run.encrypt, run.deliver):
        stage(fn)
    (delivered,) = ledger.deliveries()
    assert delivered.status == "delivered" and list(ledger.disclosures()) == [delivered.delivery_id]
    ledger.close()
