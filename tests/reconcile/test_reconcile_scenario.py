"""The issue's scenario through the CLI on a real ledger (SQLite and PostgreSQL), real sshd and gpg:
a delivered feed, then a carrier return file that drops 3 members, keeps a termed member active, holds
a wrong plan and a wrong coverage date -> exactly those 6 discrepancies; resolve; rerun without
duplicates; a later matching file auto-closes; census canaries never reach the ledger or the output."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.changes import SnapshotStore
from carrierfeeds.cli import app
from carrierfeeds.config import Party, load_mapping
from carrierfeeds.enrollment import Enrollment
from carrierfeeds.x12.envelope import ControlNumbers, TransactionHeader
from carrierfeeds.x12.render import render_834_bytes

ROOT = Path(__file__).resolve().parents[2]
AS_OF = date(2026, 11, 20)
runner = CliRunner()


def _env(settings: Any, mappings: Path) -> dict[str, str]:
    return {"CARRIERFEEDS_FEEDS_DIR": str(settings.feeds_dir), "CARRIERFEEDS_MAPPINGS_DIR": str(mappings),
            "CARRIERFEEDS_SCHEMAS_DIR": str(settings.schemas_dir), "CARRIERFEEDS_DATA_DIR": str(settings.data_dir),
            "CARRIERFEEDS_KEYS_DIR": str(settings.keys_dir), "CARRIERFEEDS_GNUPG_HOME": str(settings.gnupg_home),
            "CARRIERFEEDS_LEDGER_URL": settings.resolved_ledger_url}


def _return_834(frame: pd.DataFrame, mappings: Path, feed: Any) -> bytes:
    """The carrier's full audit file (030) of ``frame``, written by the project's own 834 writer."""
    mapping = load_mapping(mappings / f"{feed.mapping_id}.yaml")
    table = frame.copy()
    table["ins03"], table["ins04"], table["hd01"] = "030", "", "030"
    view = Enrollment(table=table.reset_index(drop=True), member_count=table["member_id"].nunique(),
                      subscriber_count=int((table.drop_duplicates("member_id")["ins01"] == "Y").sum()),
                      coverage_count=len(table), allowlist=mapping.allowlist)
    header = TransactionHeader(ids=mapping.envelope, created=datetime(2026, 12, 1, tzinfo=UTC), reference="RET1",
                               sponsor=Party(name="CARRIER", id_qualifier="FI", id="123456789"),
                               payer=mapping.payer, action="4")
    return render_834_bytes(view, header, ControlNumbers(isa13=7, gs06=7, st02=7))


def _pick_single_line_members(frame: pd.DataFrame, day: str) -> tuple[list[str], list[str]]:
    """Members with exactly one coverage line: (active ones, termed ones)."""
    lines = frame.groupby("member_id").size()
    single = frame[frame["member_id"].isin(lines[lines == 1].index)]
    ended = (single["coverage_end"] != "") & (single["coverage_end"] <= day)
    return sorted(single.loc[~ended, "member_id"]), sorted(single.loc[ended, "member_id"])


def test_return_file_scenario_through_the_cli(sftp_workspace: Any, tmp_path: Path) -> None:
    ws = sftp_workspace
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    mapping_file = mappings / f"{ws.feed.mapping_id}.yaml"
    # Change mode keeps the snapshot of what the carrier holds.
    mapping_file.write_text(mapping_file.read_text() + "\nmode: changes\nterm_policy: explicit\n")
    feed_file = ws.settings.feeds_dir / f"{ws.feed.feed_id}.yaml"
    feed_file.write_text(feed_file.read_text() + "reconciliation:\n  format: '834'\n")
    env = _env(ws.settings, mappings)

    census = ws.write_census(members=60, seed=20, as_of=AS_OF)
    frame = pd.read_csv(census, dtype=str, keep_default_na=False)
    # Canaries: unique identity values that must never leave the census except toward the carrier.
    codes = frame["member_id"].factorize()[0]
    frame["first_name"] = [f"QZCANARY{chr(65 + i // 26 % 26)}{chr(65 + i % 26)}" for i in codes]
    frame.to_csv(census, index=False)
    canaries = set(frame["first_name"]) | {s for s in frame["ssn"] if s}

    sent = runner.invoke(app, ["run", ws.feed.feed_id, "--census", str(census), "--date", AS_OF.isoformat(),
                               "--json"], env=env)
    assert sent.exit_code == 0, sent.output
    assert json.loads(sent.output)["status"] == "delivered"

    snapshot = SnapshotStore.for_settings(ws.settings).load(ws.feed.feed_id)
    assert snapshot is not None
    active, termed = _pick_single_line_members(snapshot, AS_OF.strftime("%Y%m%d"))
    assert len(active) >= 5 and termed, "the generated census needs active and termed single-line members"
    dropped, plan_member, date_member, termed_member = active[:3], active[3], active[4], termed[0]
    carrier = snapshot[~snapshot["member_id"].isin(dropped)].copy()
    carrier.loc[carrier["member_id"] == termed_member, "coverage_end"] = ""
    plan_row = carrier["member_id"] == plan_member
    carrier.loc[plan_row, "hd04"] = carrier.loc[plan_row, "hd04"] + " WRONG"
    carrier.loc[carrier["member_id"] == date_member, "coverage_start"] = "20200101"
    back = tmp_path / "carrier-return.834"
    back.write_bytes(_return_834(carrier, mappings, ws.feed))

    outputs: list[str] = []

    def cli(*args: str) -> Any:
        result = runner.invoke(app, ["reconcile", *args], env=env)
        outputs.append(result.output)
        return result

    first = cli("import", ws.feed.feed_id, str(back), "--json")
    assert first.exit_code == 1, first.output
    got = json.loads(first.output)
    tokens = MemberTokenizer.from_key_file(ws.settings.resolved_token_key_file)
    line = {m: snapshot.loc[snapshot["member_id"] == m, "hd03"].iloc[0] for m in (plan_member, date_member,
                                                                                  termed_member)}
    assert sorted((d["kind"], d["member_token"], d["field"], d["coverage_line"]) for d in got["discrepancies"]) \
        == sorted([*(("missing_at_carrier", tokens.token(m), "", "") for m in dropped),
                   ("termed_here_active_there", tokens.token(termed_member), "coverage_end", line[termed_member]),
                   ("plan", tokens.token(plan_member), "plan", line[plan_member]),
                   ("coverage_dates", tokens.token(date_member), "coverage_start", line[date_member])])
    assert got["worklist"]["opened"] == 6

    listed = json.loads(cli("list", ws.feed.feed_id, "--status", "open", "--json").output)
    assert len(listed) == 6
    plan_item = next(i for i in listed if i["kind"] == "plan")
    assert cli("acknowledge", plan_item["id"], "--by", "ops.anna").exit_code == 0
    resolved = cli("resolve", plan_item["id"], "--by", "ops.anna", "--reason", "carrier corrected the plan")
    assert resolved.exit_code == 0, resolved.output
    shown = json.loads(cli("show", plan_item["id"], "--json").output)
    assert shown["status"] == "resolved" and [e["action"] for e in shown["events"]] == [
        "opened", "acknowledged", "resolved"]

    again = cli("import", ws.feed.feed_id, str(back), "--json")
    assert again.exit_code == 1
    rerun = json.loads(again.output)["worklist"]
    # Seen again, not duplicated; the resolved one stays resolved (a person decided) but is seen.
    assert (rerun["opened"], rerun["seen"], rerun["auto_closed"], rerun["open_after"]) == (0, 6, 0, 5)
    assert len(json.loads(cli("list", ws.feed.feed_id, "--json").output)) == 6

    matching = tmp_path / "carrier-return-fixed.834"
    matching.write_bytes(_return_834(snapshot, mappings, ws.feed))
    fixed = cli("import", ws.feed.feed_id, str(matching), "--json")
    assert fixed.exit_code == 0, fixed.output
    assert json.loads(fixed.output)["worklist"]["auto_closed"] == 5
    statuses = sorted(i["status"] for i in json.loads(cli("list", ws.feed.feed_id, "--json").output))
    assert statuses == ["auto_closed"] * 5 + ["resolved"]

    # The current census as a third view. The census that was sent agrees with the snapshot: all six are
    # the carrier's to fix. A census that lost a dropped member agrees with the carrier there (ours to
    # fix), and a member gone from the census but still at the carrier is a change not sent yet.
    def lone(member: str) -> bool:  # nobody else's subscriber: leaving the census orphans no dependent
        return bool((frame["subscriber_id"] == member).sum() <= (frame["member_id"] == member).sum())

    gone_here, unsent = next(m for m in dropped if lone(m)), next(m for m in active[5:] if lone(m))
    same = json.loads(cli("import", ws.feed.feed_id, str(back), "--census", str(census), "--json").output)
    assert same["by_side"] == {"carrier": 6} and same["not_sent"] == []
    assert {d["side"] for d in same["discrepancies"]} == {"carrier"}
    later = tmp_path / "census-later.csv"
    frame[~frame["member_id"].isin([gone_here, unsent])].to_csv(later, index=False)
    third = cli("import", ws.feed.feed_id, str(back), "--census", str(later), "--json")
    labelled = json.loads(third.output)
    assert labelled["by_side"] == {"carrier": 5, "ours": 1, "not_sent": 1}, labelled["by_side"]
    (ours,) = [d for d in labelled["discrepancies"] if d["side"] == "ours"]
    assert (ours["kind"], ours["member_token"]) == ("missing_at_carrier", tokens.token(gone_here))
    assert [(d["kind"], d["member_token"]) for d in labelled["not_sent"]] == [
        ("extra_at_carrier", tokens.token(unsent))]
    assert "by side: ours" in cli("import", ws.feed.feed_id, str(back), "--census", str(later)).output

    report = tmp_path / "reconcile.html"
    assert cli("report", ws.feed.feed_id, "--format", "html", "--out", str(report)).exit_code == 0
    pdf = tmp_path / "reconcile.pdf"
    assert cli("report", ws.feed.feed_id, "--format", "pdf", "--out", str(pdf)).exit_code == 0
    assert pdf.read_bytes().startswith(b"%PDF")
    assert runner.invoke(app, ["audit", "verify", "--json"], env=env).exit_code == 0

    # Canary: nothing from the census in the ledger's tables, the CLI's output or the report.
    engine = sa.create_engine(ws.settings.resolved_ledger_url)
    dump: list[str] = []
    with engine.connect() as conn:
        for table in sa.inspect(engine).get_table_names():
            dump += [repr(tuple(r)) for r in conn.execute(sa.text(f'SELECT * FROM "{table}"'))]  # noqa: S608
    engine.dispose()
    text = "\n".join([*dump, *outputs, report.read_text()])
    leaked = [c for c in canaries if c in text]
    assert not leaked, f"{len(leaked)} census values reached the ledger or output"


@pytest.mark.parametrize("fmt", ["json"])
def test_reconcile_without_a_section_is_a_usage_error(fmt: str, tmp_path: Path) -> None:
    back = tmp_path / "x.834"
    back.write_bytes(b"ISA")
    result = runner.invoke(app, ["reconcile", "import", "acme-sunrise-medical", str(back), "--json"], env={
        "CARRIERFEEDS_FEEDS_DIR": str(ROOT / "feeds"), "CARRIERFEEDS_MAPPINGS_DIR": str(ROOT / "mappings"),
        "CARRIERFEEDS_SCHEMAS_DIR": str(ROOT / "schemas"), "CARRIERFEEDS_DATA_DIR": str(tmp_path / "data")})
    assert result.exit_code == 2, result.output
    assert json.loads(result.output)["field"] == "reconciliation"
