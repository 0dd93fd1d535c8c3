"""`reconcile collect` over a real sshd with real gpg: the carrier's signed, encrypted return file is
collected and compared, a rerun imports nothing twice, and refused files leave PHI-free audit events."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from tests.reconcile.test_reconcile_scenario import _env, _pick_single_line_members, _return_834
from typer.testing import CliRunner

from carrierfeeds.changes import SnapshotStore
from carrierfeeds.cli import app
from carrierfeeds.demo import CONNECTION_ID
from carrierfeeds.ledger.worklist import work_items
from carrierfeeds.settings import open_ledger

pytestmark = pytest.mark.slow

AS_OF = date(2026, 11, 20)
runner = CliRunner()


@dataclass
class Delivered:
    """A feed delivered once, with a reconciliation source pointing at an outbox on the sshd."""

    ws: Any
    env: dict[str, str]
    mappings: Path
    snapshot: pd.DataFrame
    outbox: Path
    our_fpr: str
    canaries: set[str]

    def put(self, name: str, plain: bytes, *, signed: bool = True, mtime: int = 1_800_000_000) -> None:
        """``plain`` encrypted to us as the carrier would (signed by its key unless ``signed`` is False)."""
        src = self.ws.settings.data_dir / f"{uuid.uuid4().hex}.plain"
        src.write_bytes(plain)
        dst = self.outbox / name
        carrier = self.ws.keys.carrier
        if signed:
            carrier.encrypt_file(src, dst, recipient=self.our_fpr, signer=self.ws.keys.carrier_fingerprint,
                                 now=datetime.now(UTC))
        else:
            import subprocess

            subprocess.run(["gpg", "--homedir", str(carrier.home), "--batch", "--yes", "--trusted-key",
                            self.our_fpr[-16:], "--recipient", self.our_fpr, "--encrypt", "--output", str(dst),
                            str(src)], check=True, capture_output=True, timeout=60)
        os.utime(dst, (mtime, mtime))
        src.unlink()


def deliver_with_outbox(ws: Any, tmp_path: Path, sshd: Any) -> Delivered:
    """Deliver the demo feed (change mode) once and give it a reconciliation source on the sshd."""
    mappings = tmp_path / "mappings"
    shutil.copytree(Path(__file__).resolve().parents[2] / "mappings", mappings)
    mapping_file = mappings / f"{ws.feed.mapping_id}.yaml"
    mapping_file.write_text(mapping_file.read_text() + "\nmode: changes\nterm_policy: explicit\n")
    outbox = sshd.root / f"returns-{uuid.uuid4().hex[:10]}"
    outbox.mkdir()
    # The carrier encrypts to a key of ours that can decrypt: the demo signer is sign-only.
    our_fpr = ws.keys.ours.generate_key("carrierfeeds returns", f"returns-{uuid.uuid4().hex[:8]}@sender.example",
                                       usage="encrypt")
    ws.keys.carrier.import_keys(ws.keys.ours.export_public(our_fpr))
    feed_file = ws.settings.feeds_dir / f"{ws.feed.feed_id}.yaml"
    feed_file.write_text(feed_file.read_text() + (
        "reconciliation:\n  format: '834'\n  source:\n"
        f"    connection: {CONNECTION_ID}\n    remote_dir: {outbox}\n    pattern: 'ELIG_*.pgp'\n"
        f"    signed_by: '{ws.keys.carrier_fingerprint}'\n"))
    env = _env(ws.settings, mappings)
    census = ws.write_census(members=60, seed=20, as_of=AS_OF)
    frame = pd.read_csv(census, dtype=str, keep_default_na=False)
    codes = frame["member_id"].factorize()[0]
    frame["first_name"] = [f"QZCANARY{chr(65 + i // 26 % 26)}{chr(65 + i % 26)}" for i in codes]
    frame.to_csv(census, index=False)
    sent = runner.invoke(app, ["run", ws.feed.feed_id, "--census", str(census), "--date", AS_OF.isoformat(),
                               "--json"], env=env)
    assert sent.exit_code == 0, sent.output
    snapshot = SnapshotStore.for_settings(ws.settings).load(ws.feed.feed_id)
    assert snapshot is not None
    canaries = set(frame["first_name"]) | {s for s in frame["ssn"] if s}
    return Delivered(ws, env, mappings, snapshot, outbox, our_fpr, canaries)


def carrier_with_six_discrepancies(d: Delivered) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """The issue's return file: 3 members dropped, a termed one active, a wrong plan, a wrong date."""
    active, termed = _pick_single_line_members(d.snapshot, AS_OF.strftime("%Y%m%d"))
    picked = {"dropped": active[:3], "plan": [active[3]], "date": [active[4]], "termed": [termed[0]]}
    carrier = d.snapshot[~d.snapshot["member_id"].isin(picked["dropped"])].copy()
    carrier.loc[carrier["member_id"] == picked["termed"][0], "coverage_end"] = ""
    row = carrier["member_id"] == picked["plan"][0]
    carrier.loc[row, "hd04"] = carrier.loc[row, "hd04"] + " WRONG"
    carrier.loc[carrier["member_id"] == picked["date"][0], "coverage_start"] = "20200101"
    return carrier, picked


def test_collect_compares_the_carriers_file_once_and_records_refusals(
        sftp_workspace: Any, sshd_server: Any, tmp_path: Path) -> None:
    d = deliver_with_outbox(sftp_workspace, tmp_path, sshd_server)
    feed_id = d.ws.feed.feed_id
    carrier, _ = carrier_with_six_discrepancies(d)
    d.put("ELIG_20261201.pgp", _return_834(carrier, d.mappings, d.ws.feed))
    outbox_before = sorted(p.name for p in d.outbox.iterdir())

    first = runner.invoke(app, ["reconcile", "collect", feed_id, "--json"], env=d.env)
    assert first.exit_code == 1, first.output
    got = json.loads(first.output)
    assert (got["compared"], got["refused"], got["open_after"]) == (1, 0, 6)
    comparison = got["files"][0]["comparison"]
    assert comparison["worklist"]["opened"] == 6
    assert sorted(comparison["by_kind"].items()) == [("coverage_dates", 1), ("missing_at_carrier", 3),
                                                     ("plan", 1), ("termed_here_active_there", 1)]
    assert sorted(p.name for p in d.outbox.iterdir()) == outbox_before  # the carrier's outbox is only read

    # The same file, and the same roster encrypted again: nothing imported twice.
    d.put("ELIG_20261202.pgp", _return_834(carrier, d.mappings, d.ws.feed), mtime=1_800_000_100)
    again = runner.invoke(app, ["reconcile", "collect", feed_id, "--json"], env=d.env)
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["files"] == []

    # An unsigned file (refused by intake) and a signed file that is not an 834 (refused by the reader).
    d.put("ELIG_20261203.pgp", b"not signed", signed=False, mtime=1_800_000_200)
    d.put("ELIG_20261204.pgp", b"QZCANARYXX is not an 834\n", mtime=1_800_000_300)
    refused = runner.invoke(app, ["reconcile", "collect", feed_id, "--json"], env=d.env)
    assert refused.exit_code == 1, refused.output
    files = json.loads(refused.output)["files"]
    assert sorted(f["refused_reason"] for f in files)[1] == "unsigned"
    assert all(f["refused_reason"] for f in files) and all(f["comparison"] is None for f in files)
    # A rerun refuses the unsigned file again but records its refusal once; the unreadable one is done.
    rerun = runner.invoke(app, ["reconcile", "collect", feed_id, "--json"], env=d.env)
    assert [f["refused_reason"] for f in json.loads(rerun.output)["files"]] == ["unsigned"]

    ledger = open_ledger(d.ws.settings)
    events = ledger.audit_events(object_type="return_file")
    assert sorted(e.action for e in events) == ["return_collected", "return_refused", "return_refused"]
    assert {e.detail["stage"] for e in events if e.action == "return_refused"} == {"intake", "read"}
    text = "\n".join(repr(e) for e in events) + refused.output + first.output
    assert not [c for c in d.canaries | {"QZCANARYXX"} if c in text]
    # No plaintext is left behind in the collection folder.
    work = d.ws.settings.data_dir / "reconcile" / feed_id
    assert not list(work.glob("collect-*/*.plain"))
    assert ledger.verify_chain().ok
    ledger.close()


def test_draft_renders_a_gated_correction_without_writing_and_approve_records_it(
        sftp_workspace: Any, sshd_server: Any, tmp_path: Path) -> None:
    d = deliver_with_outbox(sftp_workspace, tmp_path, sshd_server)
    feed_id = d.ws.feed.feed_id
    carrier, _ = carrier_with_six_discrepancies(d)
    d.put("ELIG_20261201.pgp", _return_834(carrier, d.mappings, d.ws.feed))
    assert runner.invoke(app, ["reconcile", "collect", feed_id], env=d.env).exit_code == 1
    ledger = open_ledger(d.ws.settings)
    head = ledger.chain_head()

    drafts = tmp_path / "drafts"
    drafted = runner.invoke(app, ["reconcile", "draft", feed_id, "--out", str(drafts), "--json"], env=d.env)
    assert drafted.exit_code == 0, drafted.output
    got = json.loads(drafted.output)
    assert (got["status"], len(got["discrepancy_ids"]), got["manual"]) == ("ok", 6, {})
    (entry,) = got["files"]
    assert entry["conformance"]["verdict"] == "passed" and entry["control_numbers"]["placeholder"]
    # 3 members added, the wrong plan and date changed, the termed member termed.
    assert entry["members_by_type"] == {"001": 2, "021": 3, "024": 1}
    text = (drafts / entry["name"]).read_text()
    assert "BGN*00*" in text and text.count("INS*") == 6
    assert ledger.chain_head() == head  # nothing written

    approved = runner.invoke(app, ["reconcile", "approve", feed_id, "--by", "ops.anna", "--reason",
                                   "carrier confirmed the fix", "--json"], env=d.env)
    assert approved.exit_code == 0, approved.output
    assert sorted(json.loads(approved.output)["discrepancy_ids"]) == sorted(got["discrepancy_ids"])
    events = ledger.audit_events(action="correction_approved")
    assert len(events) == 1 and events[0].actor == "ops.anna"
    ledger.close()


def test_an_approved_correction_rides_on_the_next_run_and_its_items_auto_close(
        sftp_workspace: Any, sshd_server: Any, tmp_path: Path) -> None:
    d = deliver_with_outbox(sftp_workspace, tmp_path, sshd_server)
    feed_id = d.ws.feed.feed_id
    carrier, _ = carrier_with_six_discrepancies(d)
    d.put("ELIG_20261201.pgp", _return_834(carrier, d.mappings, d.ws.feed))
    assert runner.invoke(app, ["reconcile", "collect", feed_id], env=d.env).exit_code == 1
    approved = runner.invoke(app, ["reconcile", "approve", feed_id, "--by", "ops.anna", "--json"], env=d.env)
    assert approved.exit_code == 0, approved.output
    approval = json.loads(approved.output)

    # The census has not changed: without the correction the next run would have nothing to send.
    before = {p.name for p in d.ws.inbox.iterdir()}
    nxt = AS_OF.replace(day=AS_OF.day + 1)
    census = d.ws.write_census(members=60, seed=20, as_of=AS_OF, name=f"census_{nxt:%Y%m%d}.csv")
    frame = pd.read_csv(census, dtype=str, keep_default_na=False)
    codes = frame["member_id"].factorize()[0]
    frame["first_name"] = [f"QZCANARY{chr(65 + i // 26 % 26)}{chr(65 + i % 26)}" for i in codes]
    frame.to_csv(census, index=False)
    sent = runner.invoke(app, ["run", feed_id, "--census", str(census), "--date", nxt.isoformat(), "--json"],
                         env=d.env)
    assert sent.exit_code == 0, sent.output
    assert json.loads(sent.output)["status"] == "delivered"
    (new_file,) = {p.name for p in d.ws.inbox.iterdir()} - before
    plain = tmp_path / "correction.834"
    d.ws.keys.carrier.decrypt_file(d.ws.inbox / new_file, plain)
    text = plain.read_text()
    assert text.count("INS*") == 6 and "BGN*00*" in text

    ledger = open_ledger(d.ws.settings)
    items = {i.discrepancy_id: i for i in work_items(ledger, feed_id=feed_id)}
    assert set(approval["discrepancy_ids"]) <= set(items)
    for ident in approval["discrepancy_ids"]:
        assert [e.action for e in items[ident].events][-2:] == ["correction_approved", "corrected"]
        assert items[ident].status == "open"
    runs = ledger.list_runs(feed_id=feed_id)
    confirm_detail = [e.detail for r in runs for e in ledger.run_events(r.run_id)
                      if e.stage == "confirm" and e.detail.get("correction_of")]
    assert confirm_detail and confirm_detail[0]["correction_of"] == approval["approval_id"]

    # The carrier applied it: its next return file matches and every corrected item auto-closes.
    d.put("ELIG_20261205.pgp", _return_834(d.snapshot, d.mappings, d.ws.feed), mtime=1_800_000_500)
    matched = runner.invoke(app, ["reconcile", "collect", feed_id, "--json"], env=d.env)
    assert matched.exit_code == 0, matched.output
    assert json.loads(matched.output)["files"][0]["comparison"]["worklist"]["auto_closed"] == 6
    # Nothing is left to correct.
    redraft = runner.invoke(app, ["reconcile", "draft", feed_id, "--json", "--out", str(tmp_path / "d")], env=d.env)
    assert json.loads(redraft.output)["status"] == "nothing_to_correct"
    ledger.close()


def test_scheduled_collect_reads_the_current_census_as_the_third_view(
        sftp_workspace: Any, sshd_server: Any, tmp_path: Path) -> None:
    d = deliver_with_outbox(sftp_workspace, tmp_path, sshd_server)
    feed_id = d.ws.feed.feed_id
    feed_file = d.ws.settings.feeds_dir / f"{feed_id}.yaml"
    feed_file.write_text(feed_file.read_text().replace("reconciliation:\n", "reconciliation:\n  census_view: true\n"))
    carrier, _ = carrier_with_six_discrepancies(d)
    d.put("ELIG_20261201.pgp", _return_834(carrier, d.mappings, d.ws.feed))

    # The census in the feed's drop folder is the one sent: every fix is the carrier's.
    first = runner.invoke(app, ["reconcile", "collect", feed_id, "--json"], env=d.env)
    assert first.exit_code == 1, first.output
    comparison = json.loads(first.output)["files"][0]["comparison"]
    assert comparison["by_side"] == {"carrier": 6}, comparison["by_side"]
    assert not [c for c in d.canaries if c in first.output]
    assert not list((d.ws.settings.data_dir / "reconcile" / feed_id).glob("census-*"))  # read, then deleted

    # No census in the drop folder: the file is still compared, with two views.
    for census in d.ws.inbound.glob("*.csv"):
        census.unlink()
    changed = carrier[carrier["member_id"] != carrier["member_id"].iloc[0]]
    d.put("ELIG_20261202.pgp", _return_834(changed, d.mappings, d.ws.feed), mtime=1_800_000_100)
    second = runner.invoke(app, ["reconcile", "collect", feed_id, "--json"], env=d.env)
    assert second.exit_code == 1, second.output
    comparison = json.loads(second.output)["files"][0]["comparison"]
    assert "by_side" not in comparison and comparison["worklist"]["open_after"] >= 6
