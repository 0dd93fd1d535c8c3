"""The feed's reconciliation section, the threshold webhook (a real loopback HTTP server), the report,
and a bad file leaving the ledger untouched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.changes import SnapshotStore
from carrierfeeds.config import ReconciliationSpec, load_feed, load_mapping
from carrierfeeds.credentials import KeysDirConnections
from carrierfeeds.errors import DataError
from carrierfeeds.ledger import Ledger
from carrierfeeds.ledger.worklist import record_comparison, work_items
from carrierfeeds.reconcile.alert import alert_payload, needs_alert, send_alert
from carrierfeeds.reconcile.compare import Discrepancy
from carrierfeeds.reconcile.report import build_reconcile_report, render_reconcile_html
from carrierfeeds.reconcile.service import reconcile_file
from carrierfeeds.testing.webhook import WebhookReceiver

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def test_shipped_feeds_have_reconciliation_off() -> None:
    for path in (ROOT / "feeds").glob("*.yaml"):
        assert load_feed(path).reconciliation is None


def test_section_validates_format_layout_and_source() -> None:
    spec = ReconciliationSpec.model_validate({"format": "csv", "layout": "mapping", "alert_threshold": 3,
                                              "source": {"connection": "carrier_sftp", "signed_by": "A" * 40}})
    assert spec.source is not None and spec.source.remote_dir == "/outbox"
    with pytest.raises(ValidationError, match="needs a layout"):
        ReconciliationSpec.model_validate({"format": "fixed_width"})
    with pytest.raises(ValidationError, match="does not match"):
        ReconciliationSpec.model_validate({"format": "csv", "layout": {
            "kind": "fixed-width", "columns": [{"field": "member_id", "length": 9}]}})
    with pytest.raises(ValidationError):
        ReconciliationSpec.model_validate({"format": "834", "source": {"connection": "x", "signed_by": "short"}})




def test_threshold_alert_posts_counts_only(webhook: WebhookReceiver, tmp_path: Path) -> None:
    base = load_feed(ROOT / "feeds" / "acme-sunrise-medical.yaml")
    feed = base.model_validate({**base.model_dump(), "reconciliation": {"alert_threshold": 2},
                                "notify": {"webhook_url": f"http://127.0.0.1:{webhook.server_address[1]}/hook"}})
    assert not needs_alert(feed, 2) and needs_alert(feed, 3)
    assert send_alert(feed, alert_payload(feed.feed_id, open_count=3, threshold=2, comparison_id="c" * 32,
                                          by_kind={"plan": 2, "missing_at_carrier": 1}),
                      connections=KeysDirConnections(tmp_path))
    assert webhook.bodies == [{"event": "reconciliation_threshold", "feed_id": feed.feed_id, "open": 3,
                                 "threshold": 2, "comparison_id": "c" * 32,
                                 "by_kind": {"missing_at_carrier": 1, "plan": 2}}]


def test_report_counts_by_kind_and_age(tmp_path: Path) -> None:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.sqlite'}")
    ledger.upgrade()
    old = Discrepancy("m_00000000000000aa", "plan", "HLT", "plan")
    new = Discrepancy("m_00000000000000bb", "identity", "", "dob")
    record_comparison(ledger, feed_id="f", findings=[old], file_sha256="a" * 64, file_name="r", fmt="834", now=T0)
    later = T0 + timedelta(days=40)
    record_comparison(ledger, feed_id="f", findings=[old, new], file_sha256="b" * 64, file_name="r", fmt="834",
                      now=later)
    report = build_reconcile_report(work_items(ledger, feed_id="f"), generated_at=later, carriers={"f": "Sunrise"})
    section = report.as_dict()["feeds"][0]
    assert section["open"] == 2
    assert section["by_kind_age"] == {"identity": {"0-7d": 1, "8-30d": 0, "31-90d": 0, ">90d": 0},
                                      "plan": {"0-7d": 0, "8-30d": 0, "31-90d": 1, ">90d": 0}}
    assert [i["member_token"] for i in section["oldest_open"]] == [old.member_token, new.member_token]
    assert "<script" not in render_reconcile_html(report)
    ledger.close()


def test_a_bad_file_records_nothing(tmp_path: Path) -> None:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.sqlite'}")
    ledger.upgrade()
    bad = tmp_path / "back.csv"
    bad.write_bytes(b"Action,Group\nF,CV\n")
    mapping = load_mapping(ROOT / "mappings" / "clearview-csv.yaml")
    with pytest.raises(DataError):
        reconcile_file(bad, feed_id="f", spec=ReconciliationSpec(format="csv", layout="mapping"), mapping=mapping,
                       ledger=ledger, store=SnapshotStore(tmp_path / "snap", tmp_path / "snap.key"),
                       tokenizer=MemberTokenizer(b"k" * 32), now=T0)
    with ledger.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM reconciliations")).scalar_one() == 0
    assert ledger.chain_head()[0] == 0
    ledger.close()


def test_csv_export_through_the_mapping_layout_matches_then_differs(tmp_path: Path) -> None:
    from carrierfeeds.enrollment import Enrollment
    from carrierfeeds.outputs.flatfile import render_flatfile_bytes
    from carrierfeeds.x12.read import read_834

    mapping = load_mapping(ROOT / "mappings" / "clearview-csv.yaml")
    snapshot = read_834((ROOT / "tests" / "fixtures" / "x12" / "full-file-family.834").read_bytes())
    vision = next(p for p in mapping.plans.values())
    snapshot["hd03"], snapshot["hd04"] = vision.insurance_line, vision.description
    snapshot = snapshot.drop_duplicates(["member_id", "hd03"]).reset_index(drop=True)
    store = SnapshotStore(tmp_path / "snap", tmp_path / "snap.key")
    keep = snapshot.drop(columns=["ins03", "ins04", "hd01"], errors="ignore")
    store.stage("f", "run1", keep)
    store.advance("f", "run1")
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.sqlite'}")
    ledger.upgrade()
    spec = ReconciliationSpec(format="csv", layout="mapping")
    tokens = MemberTokenizer(b"k" * 32)

    def export(table: Any, name: str) -> Path:
        view = table.copy()
        view["ins03"] = "030"
        path = tmp_path / name
        path.write_bytes(render_flatfile_bytes(Enrollment(table=view, member_count=1, subscriber_count=1,
                                                          coverage_count=len(view), allowlist=mapping.allowlist),
                                               mapping.flatfile))  # type: ignore[arg-type]
        return path

    same = reconcile_file(export(snapshot, "same.csv"), feed_id="f", spec=spec, mapping=mapping, ledger=ledger,
                          store=store, tokenizer=tokens, now=T0)
    assert same.matched and same.carrier_members == same.expected_members > 1
    changed = snapshot.copy()
    changed.loc[1, "hd05"] = "ESP" if changed.loc[1, "hd05"] != "ESP" else "FAM"
    diff = reconcile_file(export(changed, "diff.csv"), feed_id="f", spec=spec, mapping=mapping, ledger=ledger,
                          store=store, tokenizer=tokens, now=T0)
    assert [(d.kind, d.member_token, d.coverage_line) for d in diff.discrepancies] == [
        ("coverage_level", tokens.token(snapshot.loc[1, "member_id"]), vision.insurance_line)]
    ledger.close()
