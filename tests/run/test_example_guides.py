"""The three example companion guides shipped under mappings/ and feeds/ (fictional carriers): a
life/disability carrier with volumes and EOI (harbor-life), an HMO with PCP and reporting categories
(meridian-hmo) and a carrier aggregator taking several employers in one file (keystone-exchange).
Each is previewed on generate-census output; the gate (structure and pyx12) passes; pyx12 itself is run
again on each file; the per-file notices hold counts and the file's hash, never member data."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from carrierfeeds.census.generate import generate_census, write_census_csv
from carrierfeeds.cli import app
from carrierfeeds.x12.check import validate_with_pyx12

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2026, 11, 20)


def _env(tmp: Path, mappings: Path = ROOT / "mappings", feeds: Path = ROOT / "feeds") -> dict[str, str]:
    return {"CARRIERFEEDS_FEEDS_DIR": str(feeds), "CARRIERFEEDS_MAPPINGS_DIR": str(mappings),
            "CARRIERFEEDS_SCHEMAS_DIR": str(ROOT / "schemas"), "CARRIERFEEDS_DATA_DIR": str(tmp / "var"),
            "CARRIERFEEDS_KEYS_DIR": str(tmp / "keys"),
            "CARRIERFEEDS_LEDGER_URL": f"sqlite:///{tmp / 'var' / 'ledger.sqlite'}"}


def _census(tmp: Path, name: str, members: int, seed: int, prefix: str = "E", **edits: Any) -> tuple[Path, Any]:
    frame = generate_census(members, seed, as_of=DAY, volumes=True, id_prefix=prefix)
    for column, (row, value) in edits.items():
        frame.loc[row, column] = value
    path = tmp / name
    write_census_csv(frame, path)
    return path, frame


def _invoke(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(app, [*args, "--date", DAY.isoformat(), "--json"], env=env)
    return result.exit_code, json.loads(result.stdout)


def _no_member_values(text: str, frame: Any) -> None:
    for column in ("last_name", "ssn", "member_id", "address1", "dob"):
        for value in set(frame[column]) - {""}:
            assert value not in text, column


@pytest.mark.parametrize(("feed_id", "segments"), [
    ("acme-harbor-life", (b"HD*030**LIF*BASIC LIFE*EMP~", b"HD*030**STD*", b"HD*030**LTD*", b"AMT*FK*",
                          b"AMT*P3*", b"ICM*", b"REF*1L*HML-31044~", b"DTP*007*D8*20261120~", b"QTY*ET*")),
    ("bayview-meridian-hmo", (b"HD*030**HMO*HMO GOLD*", b"NM1*P3*1******XX*", b"LS*2700~", b"N1*75*DEPARTMENT~",
                              b"REF*19*", b"N1*TV*HARBORVIEW BENEFITS TPA*FI*990000032~", b"PER*IP**TE*",
                              b"LUI*LE*", b"QTY*DT*")),
])
def test_example_feed_previews_and_pyx12_accepts(tmp_path: Path, feed_id: str, segments: tuple[bytes, ...]) -> None:
    census, frame = _census(tmp_path, "census.csv", 160, 3)
    code, result = _invoke(_env(tmp_path), "preview", feed_id, "--census", str(census), "--out", str(tmp_path / "out"))
    assert code == 0, result
    (entry,) = result["files"]
    assert entry["conformance"]["verdict"] == "passed" and entry["conformance"]["pyx12"] == "full"
    path = tmp_path / "out" / entry["name"]
    data = path.read_bytes()
    for segment in segments:
        assert segment in data, segment
    verdict = validate_with_pyx12(path)
    if feed_id == "acme-harbor-life":
        # LIF is outside the TR3's HD03 list: pyx12 alone refuses exactly that, the mapping names it, the
        # gate waived it and said so
        assert {(p.segment_id, p.element) for p in verdict.errors} == {("HD", "HD03")}
        assert entry["conformance"]["pyx12_waived"] == len(verdict.errors)
        assert result["validation"]["excluded"]["plan_not_authorized"] > 0
    else:
        assert verdict.ok and "pyx12_waived" not in entry["conformance"]
    notices = entry["notice"]
    assert notices and all((tmp_path / "out" / n).is_file() for n in notices)
    for name in notices:
        text = (tmp_path / "out" / name).read_text()
        assert hashlib.sha256(data).hexdigest() in text and entry["name"] in text
        _no_member_values(text, frame)
        if name.endswith(".json"):
            notice = json.loads(text)
            assert notice["members"] == entry["members"] and notice["members_by_type"] == {"030": entry["members"]}
            assert notice["file"]["sha256"] == entry["sha256"] and notice["control_numbers"]["isa13"] == "000000001"
            assert notice["left_out"]["eoi_pending"] > 0  # LTD lines waiting on EOI are held back and counted


def test_aggregator_file_has_one_transaction_set_per_employer(tmp_path: Path) -> None:
    cedar, cedar_frame = _census(tmp_path, "cedar.csv", 50, 21, "C")
    pine, pine_frame = _census(tmp_path, "pine.csv", 30, 22, "P")
    assert not set(cedar_frame["member_id"]) & set(pine_frame["member_id"])
    code, result = _invoke(_env(tmp_path), "preview-aggregate", "keystone-exchange", "--census",
                           f"cedar-grove-keystone={cedar}", "--census", f"pinecrest-keystone={pine}",
                           "--out", str(tmp_path / "out"))
    assert code == 0, result
    assert [(e["feed_id"], e["status"], e["members"]) for e in result["employers"]] == [
        ("cedar-grove-keystone", "included", 50), ("pinecrest-keystone", "included", 30)]
    (entry,) = result["files"]
    assert entry["transaction_sets"] == 2 and entry["members"] == 80
    assert entry["conformance"]["verdict"] == "passed"
    path = tmp_path / "out" / entry["name"]
    data = path.read_bytes()
    assert data.count(b"ISA*") == 1 and data.count(b"ST*834*") == 2
    assert b"N1*P5*CEDAR GROVE LANDSCAPING*FI*990000013~" in data
    assert b"N1*P5*PINECREST AUTO GLASS*FI*990000014~" in data
    assert b"REF*0F*C0000001~" in data and b"REF*0F*P0000001~" in data
    assert data.index(b"REF*0F*P0000001~") > data.index(b"ST*834*0002*")  # each employer in its own set
    assert validate_with_pyx12(path).ok
    (notice_name,) = entry["notice"]
    notice_text = (tmp_path / "out" / notice_name).read_text()
    notice = json.loads(notice_text)
    assert notice["members"] == 80 and notice["employer"] == "2 employers: cedar-grove, pinecrest"
    _no_member_values(notice_text, cedar_frame)
    _no_member_values(notice_text, pine_frame)


def test_a_rejected_employer_is_left_out_and_the_others_go(tmp_path: Path) -> None:
    """Pinecrest's policy is reject: one bad gender code rejects its census; under isolate the file
    carries Cedar Grove alone and says why Pinecrest is not in it (by reason, never by value)."""
    cedar, _ = _census(tmp_path, "cedar.csv", 40, 21)
    pine, _ = _census(tmp_path, "pine.csv", 30, 22, gender=(3, "Q"))
    code, result = _invoke(_env(tmp_path), "preview-aggregate", "keystone-exchange", "--census",
                           f"cedar-grove-keystone={cedar}", "--census", f"pinecrest-keystone={pine}",
                           "--out", str(tmp_path / "out"))
    assert code == 0, result
    assert [(e["feed_id"], e["status"], e["reason"]) for e in result["employers"]] == [
        ("cedar-grove-keystone", "included", None), ("pinecrest-keystone", "left_out", "census_rejected")]
    assert result["employers"][1]["findings"] >= 1
    (entry,) = result["files"]
    assert entry["transaction_sets"] == 1 and entry["members"] == 40
    data = (tmp_path / "out" / entry["name"]).read_bytes()
    assert b"PINECREST" not in data

    # the same census under reject_all: the whole file is refused, exit 1 (the employer must fix its data)
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    text = (mappings / "keystone-exchange.yaml").read_text()
    (mappings / "keystone-exchange.yaml").write_text(text.replace("on_employer_failure: isolate",
                                                                  "on_employer_failure: reject_all"))
    code, result = _invoke(_env(tmp_path, mappings=mappings), "preview-aggregate", "keystone-exchange", "--census",
                           f"cedar-grove-keystone={cedar}", "--census", f"pinecrest-keystone={pine}",
                           "--out", str(tmp_path / "out2"))
    assert code == 1 and result["code"] == "census_rejected" and result["feed_id"] == "pinecrest-keystone"
    assert not any((tmp_path / "out2").glob("*.834"))


def test_a_feed_outside_the_aggregate_is_refused(tmp_path: Path) -> None:
    census, _ = _census(tmp_path, "c.csv", 10, 1)
    code, result = _invoke(_env(tmp_path), "preview-aggregate", "keystone-exchange", "--census",
                           f"acme-sunrise-medical={census}", "--out", str(tmp_path / "out"))
    assert code == 2 and "do not name mapping" in result["message"]


def test_feeds_check_refuses_employers_that_do_not_share_the_file(tmp_path: Path) -> None:
    feeds = tmp_path / "feeds"
    shutil.copytree(ROOT / "feeds", feeds)
    pine = feeds / "pinecrest-keystone.yaml"
    pine.write_text(pine.read_text().replace("0000000000000000000000000000000000000041",
                                             "0000000000000000000000000000000000000042"))
    result = CliRunner().invoke(app, ["feeds", "check", "--config-only", "--json"], env=_env(tmp_path, feeds=feeds))
    assert result.exit_code == 2
    (problem,) = json.loads(result.stdout)["shared"]
    assert problem["file"].endswith("keystone-exchange.yaml")
    assert "pinecrest-keystone" in problem["error"] and "encryption.recipient_fingerprint" in problem["error"]


def test_one_employer_of_an_aggregated_file_is_not_previewed_alone(tmp_path: Path) -> None:
    census, _ = _census(tmp_path, "c.csv", 10, 1)
    code, result = _invoke(_env(tmp_path), "preview", "cedar-grove-keystone", "--census", str(census),
                           "--out", str(tmp_path / "out"))
    assert code == 2 and "preview-aggregate" in result["message"]


@pytest.mark.parametrize("name", ["{file}.{date}", "{file}.{}", "notice", "{file}}", "../{file}"])
def test_a_notice_name_takes_only_the_file_placeholder(name: str) -> None:
    import pydantic

    from carrierfeeds.config.mapping import FileNotice

    with pytest.raises(pydantic.ValidationError):
        FileNotice(file_name=name)
    assert FileNotice(file_name="{file}.summary").file_name == "{file}.summary"


def test_each_employer_keeps_its_own_authorisation(tmp_path: Path) -> None:
    """Pinecrest authorises dental only, Cedar Grove not until next year: the file holds Pinecrest's
    dental lines alone, and says Cedar Grove is left out as not authorised."""
    feeds = tmp_path / "feeds"
    shutil.copytree(ROOT / "feeds", feeds)
    pine, cedar = feeds / "pinecrest-keystone.yaml", feeds / "cedar-grove-keystone.yaml"
    pine.write_text(pine.read_text().replace("plans: [MED-PPO, MED-HDHP, DEN-STD]", "plans: [DEN-STD]"))
    cedar.write_text(cedar.read_text().replace("effective_from: 2025-01-01", "effective_from: 2027-01-01"))
    a, _ = _census(tmp_path, "a.csv", 30, 21, "C")
    b, _ = _census(tmp_path, "b.csv", 30, 22, "P")
    code, result = _invoke(_env(tmp_path, feeds=feeds), "preview-aggregate", "keystone-exchange", "--census",
                           f"cedar-grove-keystone={a}", "--census", f"pinecrest-keystone={b}",
                           "--out", str(tmp_path / "out"))
    assert code == 0, result
    assert [(e["feed_id"], e["status"], e["reason"]) for e in result["employers"]] == [
        ("cedar-grove-keystone", "left_out", "not_authorized"), ("pinecrest-keystone", "included", None)]
    (entry,) = result["files"]
    data = (tmp_path / "out" / entry["name"]).read_bytes()
    lines = {line.split(b"*")[3] for line in data.split(b"\n") if line.startswith(b"HD*")}
    assert lines == {b"DEN"} and b"CEDAR GROVE" not in data and b"REF*0F*C" not in data
    assert entry["transaction_sets"] == 1 and entry["conformance"]["verdict"] == "passed"
