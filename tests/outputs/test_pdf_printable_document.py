"""The fallback PDF: readable by a person (rendered to PNG), allowlisted fields only, paged, deterministic."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import stat
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from carrierfeeds.census.generate import generate_census
from carrierfeeds.config import CarrierMapping, Feed, load_feed, load_mapping
from carrierfeeds.enrollment import Enrollment, build_enrollment
from carrierfeeds.outputs.pdf import (
    ROSTER_TITLE,
    fallback_file_name,
    render_fallback_pdf,
    write_fallback_pdf,
)

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2026, 11, 20)
CREATED = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
CONTROL = "000000042"


@pytest.fixture(scope="module")
def feed() -> Feed:
    shipped = load_feed(ROOT / "feeds" / "acme-sunrise-medical.yaml")
    return shipped.model_copy(update={"carrier": shipped.carrier.model_copy(update={"electronic": False}),
                                      "output": shipped.output.model_copy(update={"format": "pdf"})})


@pytest.fixture(scope="module")
def mapping() -> CarrierMapping:
    return load_mapping(ROOT / "mappings" / "sunrise-health.yaml")


@pytest.fixture(scope="module")
def census() -> pd.DataFrame:
    return generate_census(60, 11, as_of=DAY)


def _without(mapping: CarrierMapping, *fields: str) -> CarrierMapping:
    return mapping.model_copy(update={"allowlist": tuple(f for f in mapping.allowlist if f not in fields)})


def _render(enrollment: Enrollment, feed: Feed, **kw: object) -> bytes:
    args: dict[str, object] = {"feed": feed, "interval_start": DAY, "control_id": CONTROL, "created": CREATED}
    args.update(kw)
    return render_fallback_pdf(enrollment, **args)  # type: ignore[arg-type]


def _pages(pdf: bytes, tmp_path: Path) -> list[str]:
    """The text of each page, as poppler's pdftotext lays it out."""
    path = tmp_path / "doc.pdf"
    path.write_bytes(pdf)
    out = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, check=True, text=True)
    return out.stdout.split("\f")[:-1]


def _page_count(pdf: bytes, tmp_path: Path) -> int:
    path = tmp_path / "count.pdf"
    path.write_bytes(pdf)
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, check=True, text=True).stdout
    match = re.search(r"^Pages:\s+(\d+)$", info, re.MULTILINE)
    assert match is not None
    return int(match.group(1))


def test_allowlisted_fields_are_printed_and_a_planted_ssn_is_not(
        census: pd.DataFrame, feed: Feed, mapping: CarrierMapping, tmp_path: Path) -> None:
    enrollment = build_enrollment(census, feed, _without(mapping, "ssn"), as_of=DAY)
    assert "ssn" not in enrollment.table.columns
    text = "\n".join(_pages(_render(enrollment, feed), tmp_path))
    for name in enrollment.table["last_name"].unique()[:10]:
        assert name in text
    for member in enrollment.table["member_id"].unique():
        assert member in text
    assert "SSN" not in text
    digits = re.sub(r"\D", "", text)
    for ssn in census["ssn"].unique():
        assert ssn not in digits, "a census SSN reached a carrier that may not receive SSNs"
    for phone in census["phone"].dropna().unique():  # never in the 834 view at all
        if phone:
            assert phone not in digits


def test_ssn_is_printed_when_the_carrier_may_receive_it(
        census: pd.DataFrame, feed: Feed, mapping: CarrierMapping, tmp_path: Path) -> None:
    # The other half of the test above: the same check finds SSNs when they are allowlisted.
    enrollment = build_enrollment(census, feed, mapping, as_of=DAY)
    text = "\n".join(_pages(_render(enrollment, feed), tmp_path))
    ssn = enrollment.table["ssn"].iloc[0]
    assert f"{ssn[:3]}-{ssn[3:5]}-{ssn[5:]}" in text
    assert "SSN" in text


def test_cover_page_names_the_feed_and_counts(census: pd.DataFrame, feed: Feed, mapping: CarrierMapping,
                                              tmp_path: Path) -> None:
    enrollment = build_enrollment(census, feed, mapping, as_of=DAY)
    cover = _pages(_render(enrollment, feed), tmp_path)[0]
    for expected in (feed.employer.name, feed.carrier.name, feed.feed_id, "2026-11-20", CONTROL,
                     "2026-11-20 07:00 UTC"):
        assert expected in cover
    assert re.search(rf"Members\s+{enrollment.member_count}\b", cover)
    assert re.search(rf"Subscribers\s+{enrollment.subscriber_count}\b", cover)
    assert re.search(rf"Coverage lines\s+{enrollment.coverage_count}\b", cover)
    assert re.search(rf"Maintenance 030 Audit\s+{enrollment.member_count} members, "
                     rf"{enrollment.coverage_count} coverage lines", cover)


def test_every_page_is_numbered_and_every_table_page_repeats_the_header(
        census: pd.DataFrame, feed: Feed, mapping: CarrierMapping, tmp_path: Path) -> None:
    pdf = _render(build_enrollment(census, feed, mapping, as_of=DAY), feed)
    pages = _pages(pdf, tmp_path)
    total = _page_count(pdf, tmp_path)
    assert total == len(pages) > 2
    for number, page in enumerate(pages, start=1):
        assert f"page {number} of {total}" in page
        if number > 1:
            assert re.search(r"Member ID\s+Role\s+Name\s+SSN\s+Birth date", page)


def test_families_are_together_subscriber_first(census: pd.DataFrame, feed: Feed, mapping: CarrierMapping,
                                                tmp_path: Path) -> None:
    enrollment = build_enrollment(census, feed, mapping, as_of=DAY)
    text = "\n".join(_pages(_render(enrollment, feed), tmp_path)[1:])
    table = enrollment.table
    families = table.groupby("subscriber_id", sort=False)["member_id"].unique()
    positions = {m: text.index(m) for m in table["member_id"].unique()}
    multi = [list(f) for f in families if len(f) > 1]
    assert multi, "the synthetic census should hold families with dependents"
    for members in multi:
        subscriber, *dependents = members
        assert all(positions[subscriber] < positions[d] for d in dependents)
    starts = [positions[f[0]] for f in families]
    assert starts == sorted(starts)


def test_same_inputs_give_the_same_bytes_whatever_the_environment(
        census: pd.DataFrame, feed: Feed, mapping: CarrierMapping, monkeypatch: pytest.MonkeyPatch) -> None:
    enrollment = build_enrollment(census, feed, mapping, as_of=DAY)
    first = _render(enrollment, feed)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234567890")  # reportlab reads it; we must not
    assert _render(enrollment, feed) == first
    assert _render(enrollment, feed, created=datetime(2026, 11, 21, 7, 0, tzinfo=UTC)) != first
    assert b"D:20261120070000" in first  # the PDF's creation date is ``created``, not the clock


def test_mixed_maintenance_types_get_an_action_column(census: pd.DataFrame, feed: Feed, mapping: CarrierMapping,
                                                      tmp_path: Path) -> None:
    enrollment = build_enrollment(census, feed, mapping, as_of=DAY)
    table = enrollment.table.copy()
    first, second = table["member_id"].unique()[:2]
    table.loc[table["member_id"] == first, "ins03"] = "021"
    table.loc[table["member_id"] == second, "ins03"] = "024"
    changes = dataclasses.replace(enrollment, table=table)
    pages = _pages(_render(changes, feed), tmp_path)
    assert re.search(r"Maintenance 021 Add\s+1 member,", pages[0])
    assert re.search(r"Maintenance 024 Terminate\s+1 member,", pages[0])
    assert "Action" in pages[1] and "021 Add" in pages[1] and "024 Terminate" in pages[1]
    # A roster (one type throughout) states it in the page header instead of a column of "030".
    roster = _pages(_render(enrollment, feed), tmp_path)
    assert "every line: 030 Audit" in roster[1] and not re.search(r"\bAction\b", roster[1])


def test_naive_created_is_refused(census: pd.DataFrame, feed: Feed, mapping: CarrierMapping) -> None:
    enrollment = build_enrollment(census.head(4), feed, mapping, as_of=DAY)
    with pytest.raises(ValueError, match="timezone-aware"):
        _render(enrollment, feed, created=datetime(2026, 11, 20, 7, 0))  # noqa: DTZ001


def test_renders_to_png_a_person_can_read(census: pd.DataFrame, feed: Feed, mapping: CarrierMapping,
                                          tmp_path: Path) -> None:
    """Rendered with poppler; the engineer looked at these PNGs (cover and a table page) when writing this."""
    from PIL import Image

    pdf = tmp_path / "doc.pdf"
    pdf.write_bytes(_render(build_enrollment(census, feed, mapping, as_of=DAY), feed))
    subprocess.run(["pdftoppm", "-r", "60", "-f", "1", "-l", "2", "-png", str(pdf), str(tmp_path / "page")],
                   check=True)
    pngs = sorted(tmp_path.glob("page-*.png"))
    assert len(pngs) == 2
    for png in pngs:
        with Image.open(png) as image:
            width, height = image.size
            assert width > height  # landscape
            gray = image.convert("L")
            dark = sum(gray.histogram()[:128]) / (width * height)
        assert 0.005 < dark < 0.4, f"{png.name}: {dark:.3f} of the page is ink (blank or solid?)"


def test_write_fallback_pdf_is_private_and_reports_what_it_wrote(
        census: pd.DataFrame, feed: Feed, mapping: CarrierMapping, tmp_path: Path) -> None:
    enrollment = build_enrollment(census, feed, mapping, as_of=DAY)
    name = fallback_file_name(feed, DAY, CONTROL)
    assert name == "acme-sunrise-medical_000000042_20261120.pdf"
    doc = write_fallback_pdf(enrollment, tmp_path / name, feed=feed, interval_start=DAY, control_id=CONTROL,
                             created=CREATED)
    data = doc.path.read_bytes()
    assert stat.S_IMODE(doc.path.stat().st_mode) == 0o600
    assert doc.sha256 == hashlib.sha256(data).hexdigest() and doc.size == len(data)
    assert doc.pages == _page_count(data, tmp_path)
    assert data == _render(enrollment, feed, title=ROSTER_TITLE)  # a roster of 030s gets the roster title
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_two_thousand_members(feed: Feed, mapping: CarrierMapping, tmp_path: Path) -> None:
    """Scale: 2,000 members (3,500 coverage lines) render to ~217 pages (about 1.5-2.5 s on 2 cores)."""
    enrollment = build_enrollment(generate_census(2_000, 5, as_of=DAY), feed, mapping, as_of=DAY)
    pdf = _render(enrollment, feed)
    pages = _pages(pdf, tmp_path)
    total = _page_count(pdf, tmp_path)
    assert total == len(pages) > 100
    assert f"page {total} of {total}" in pages[-1]
    assert enrollment.table["member_id"].iloc[-1] in pages[-1]
    text = "\n".join(pages)
    assert all(m in text for m in enrollment.table["member_id"].unique())
