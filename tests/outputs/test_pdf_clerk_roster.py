"""The clerk's PDF roster: a legend of the codes in words, terminations marked (shaded and in words), and
the changes since the last roster from the diff the run computes, read back with poppler."""

from __future__ import annotations

import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from carrierfeeds.census.generate import generate_census
from carrierfeeds.changes import ChangeSet, diff_against_snapshot
from carrierfeeds.config import CarrierMapping, Feed, load_feed, load_mapping
from carrierfeeds.enrollment import Enrollment, build_enrollment
from carrierfeeds.outputs.pdf import CHANGES_TITLE, render_fallback_pdf

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2026, 11, 20)
CREATED = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def feed() -> Feed:
    shipped = load_feed(ROOT / "feeds" / "acme-sunrise-medical.yaml")
    return shipped.model_copy(update={"carrier": shipped.carrier.model_copy(update={"electronic": False}),
                                      "output": shipped.output.model_copy(update={"format": "pdf"})})


@pytest.fixture(scope="module")
def mapping() -> CarrierMapping:
    return load_mapping(ROOT / "mappings" / "sunrise-health.yaml")


def _text(pdf: bytes, tmp_path: Path) -> list[str]:
    path = tmp_path / "doc.pdf"
    path.write_bytes(pdf)
    out = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, check=True, text=True)
    return out.stdout.split("\f")[:-1]


def _line_of(pages: list[str], member_id: str) -> str:
    return next(line for page in pages for line in page.splitlines() if member_id in line)


def _two_nights(feed: Feed, mapping: CarrierMapping) -> tuple[Enrollment, ChangeSet, dict[str, str]]:
    """Yesterday's roster as the carrier holds it, today's census with one family gone, one new member
    and one plan changed; the run's diff between them. Returns (today's view, the diff, who is what)."""
    census = generate_census(40, 5, as_of=DAY)
    authorised = census["plan_code"].isin(feed.authorization.plans)
    yesterday = build_enrollment(census, feed, mapping, as_of=DAY)
    snapshot = diff_against_snapshot(yesterday, None, as_of=DAY, full_file=True).snapshot
    alone = census.groupby("subscriber_id")["member_id"].transform("nunique") == 1
    families = census.loc[authorised & alone, "subscriber_id"].unique()
    gone, changed = families[0], families[1]
    today = census[census["subscriber_id"] != gone].copy()
    plan = today.loc[(today["subscriber_id"] == changed) & today["plan_code"].str.startswith("MED"), "plan_code"]
    today.loc[plan.index, "plan_code"] = plan.map({"MED-PPO": "MED-HDHP", "MED-HDHP": "MED-PPO"})
    today.loc[plan.index, "coverage_start"] = "2026-11-01"
    new = today[today["subscriber_id"] == families[2]].iloc[[0]].copy()
    new["member_id"], new["relationship"], new["first_name"] = "NEWKID01", "CH", "NEWKID"
    new["dob"] = "2026-10-02"
    new["coverage_start"] = "2026-11-01"
    today = pd.concat([today, new], ignore_index=True)
    view = build_enrollment(today, feed, mapping, as_of=DAY)
    diff = diff_against_snapshot(view, snapshot, as_of=DAY)
    return view, diff, {"gone": str(census.loc[census["subscriber_id"] == gone, "member_id"].iloc[0]),
                        "changed": str(changed), "new": "NEWKID01"}


def test_the_cover_explains_every_code_the_document_prints(feed: Feed, mapping: CarrierMapping,
                                                          tmp_path: Path) -> None:
    view = build_enrollment(generate_census(40, 5, as_of=DAY), feed, mapping, as_of=DAY)
    cover = _text(render_fallback_pdf(view, feed=feed, interval_start=DAY, control_id="000000001",
                                      created=CREATED), tmp_path)[0]
    assert "What the codes mean" in cover
    for level in set(view.table["hd05"]):
        assert level in cover
    for words in ("EMP employee only", "ESP employee and spouse", "FAM family", "030 audit",
                  "HLT health", "DEN dental", "FT full time"):
        assert words in cover, words
    assert "not compared: no earlier roster" in cover


def test_terminations_are_marked_in_words_and_shaded_and_the_changes_are_listed(
        feed: Feed, mapping: CarrierMapping, tmp_path: Path) -> None:
    from PIL import Image

    _, diff, who = _two_nights(feed, mapping)
    pdf = render_fallback_pdf(diff.enrollment, feed=feed, interval_start=DAY, control_id="000000002",
                              created=CREATED)
    pages = _text(pdf, tmp_path)
    table = pages[1:]
    assert "TERMINATED" in _line_of(table, who["gone"]) and "024 Terminate" in _line_of(table, who["gone"])
    assert "TERMINATED" not in _line_of(table, who["new"])
    assert "024 terminate: the coverage ends" in pages[0]
    section = [p for p in pages if f"{CHANGES_TITLE}:" in p]
    assert section and "1 add" in pages[0]
    assert _line_of(section, who["new"]).split()[0] == "Add"
    assert _line_of(section, who["gone"]).split()[0] == "Termination"
    # the plan change: the old plan termed and the new one added, under the member's change
    kinds = {line.split()[0] for line in "\n".join(section).splitlines() if who["changed"] in line}
    assert kinds <= {"Add", "Termination", "Change"} and kinds

    # shaded: the termination's row is drawn in a colour no other row has
    path = tmp_path / "shade.pdf"
    path.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "40", "-f", "2", "-l", "2", "-png", str(path), str(tmp_path / "p")], check=True)
    with Image.open(next(tmp_path.glob("p-*.png"))) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
    assert any(r > 220 and 170 < g < 215 and 170 < b < 215 for _, (r, g, b) in colours)


def test_a_roster_lists_the_changes_the_run_diffed(feed: Feed, mapping: CarrierMapping, tmp_path: Path) -> None:
    view, diff, who = _two_nights(feed, mapping)
    pdf = render_fallback_pdf(view, feed=feed, interval_start=DAY, control_id="000000003", created=CREATED,
                              title="Full enrollment roster", changes=diff.enrollment)
    pages = _text(pdf, tmp_path)
    assert "Full enrollment roster" in pages[0] and "every line: 030 Audit" in pages[1]
    assert who["gone"] not in "\n".join(p for p in pages[1:] if f"{CHANGES_TITLE}:" not in p)
    section = [p for p in pages if f"{CHANGES_TITLE}:" in p]
    assert section and all("Change" in p and "Member ID" in p for p in section)
    assert _line_of(section, who["gone"]).split()[0] == "Termination"
    assert _line_of(section, who["new"]).split()[0] == "Add"
    assert CHANGES_TITLE in pages[0] and "not compared" not in pages[0]


def test_no_changes_no_section(feed: Feed, mapping: CarrierMapping, tmp_path: Path) -> None:
    view = build_enrollment(generate_census(20, 5, as_of=DAY), feed, mapping, as_of=DAY)
    snapshot = diff_against_snapshot(view, None, as_of=DAY, full_file=True).snapshot
    same = diff_against_snapshot(view, snapshot, as_of=DAY)
    pages = _text(render_fallback_pdf(view, feed=feed, interval_start=DAY, control_id="000000004",
                                      created=CREATED, changes=same.enrollment), tmp_path)
    assert not any(f"{CHANGES_TITLE}:" in p for p in pages)
    assert "0 add, 0 termination, 0 change, 0 reinstatement lines" in pages[0]
