"""The replay's own 834 reader: golden files read as a carrier would, delimiters taken from ISA."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from tests.carrier_replay.carrier import Carrier, CarrierRefused, Held
from tests.carrier_replay.expected import Config
from tests.carrier_replay.history import play
from tests.carrier_replay.reader import ReadError, read_834
from tests.carrier_replay.replay import configured, header_for

from carrierfeeds.census.columns import CANONICAL_COLUMNS
from carrierfeeds.enrollment import build_enrollment
from carrierfeeds.x12.envelope import ControlNumbers, Delimiters
from carrierfeeds.x12.render import render_834_bytes

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "x12"


def test_reads_a_golden_termination_of_a_family() -> None:
    tx = read_834((GOLDEN / "terminate-subscriber-and-dependents.834").read_bytes())
    assert tx.actions == ["2"] and tx.isa13 == "000000042"
    assert [m.key for m in tx.members] == [("E1001", "E1001"), ("E1001", "E1001-01"), ("E1001", "E1001-02"),
                                           ("E1001", "E1001-03")]
    ana = tx.members[0]
    assert (ana.ins03, ana.ins04, ana.ins08, ana.last_name, ana.ssn, ana.dob, ana.city) == (
        "024", "07", "FT", "RIVERA", "900112222", date(1984, 3, 9), "SPRINGFIELD")
    assert [(c.hd01, c.hd03, c.hd04, c.hd05, c.start, c.end) for c in ana.coverages] == [
        ("024", "HLT", "PPO GOLD", "FAM", date(2025, 1, 1), date(2026, 11, 30)),
        ("024", "DEN", "DENTAL STANDARD", "FAM", date(2025, 1, 1), date(2026, 11, 30))]


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("*.834")))
def test_every_golden_file_is_readable_and_applies_to_a_carrier_holding_it(name: str) -> None:
    """Each scenario file parses; a full file applies to an empty carrier and the roster is the file."""
    tx = read_834((GOLDEN / name).read_bytes())
    assert tx.members and all(m.subscriber_id for m in tx.members)
    if tx.full_file:
        carrier = Carrier("line")
        carrier.apply(tx)
        assert len(carrier.members) == len({m.key for m in tx.members})


def test_delimiters_come_from_the_isa_segment() -> None:
    """The same members rendered with other separators and no line breaks read the same."""
    cfg = Config(mode="full")
    feed, mapping = configured(cfg)
    day = play(date(2026, 3, 27), [[]], families=3)[0]
    census = pd.DataFrame(day.rows, columns=list(CANONICAL_COLUMNS))
    enrollment = build_enrollment(census, feed, mapping, as_of=day.on, workers=1)
    header, control = header_for(feed, mapping, 7, mapping.full_file.bgn08), ControlNumbers(7, 7, 7)
    usual = read_834(render_834_bytes(enrollment, header, control))
    odd_bytes = render_834_bytes(enrollment, header, control,
                                 Delimiters(element="|", component=">", repetition="!", segment="^", suffix=""))
    assert b"\n" not in odd_bytes and odd_bytes[3:4] == b"|"
    odd = read_834(odd_bytes)
    assert odd == usual and len(odd.members) > 3


def test_a_segment_out_of_place_is_an_error_not_a_skip() -> None:
    data = (GOLDEN / "add-dependent.834").read_bytes().replace(b"DMG*", b"PER*IC*", 1)
    with pytest.raises(ReadError, match="PER"):
        read_834(data)


def test_the_carrier_refuses_a_term_for_coverage_it_does_not_hold() -> None:
    carrier = Carrier("plan")
    with pytest.raises(CarrierRefused):
        carrier.apply(read_834((GOLDEN / "terminate-one-dependent.834").read_bytes()))


def test_a_plan_keyed_carrier_reports_two_open_plans_on_one_line() -> None:
    carrier = Carrier("plan")
    carrier.coverage[("E1", "E1", "HLT", "PPO GOLD")] = Held("PPO GOLD", "EMP", date(2025, 1, 1), None)
    carrier.coverage[("E1", "E1", "HLT", "HDHP SILVER")] = Held("HDHP SILVER", "EMP", date(2026, 4, 1), None)
    lines, problems = carrier.per_line(date(2026, 3, 28))
    assert lines[("E1", "E1", "HLT")].plan == "PPO GOLD" and len(problems) == 1


def test_reads_the_companion_guide_segments() -> None:
    """Volumes, contact, the mailing address, the PCP and reporting categories land on the member and
    its coverage, each read in its own loop."""
    volumes = read_834((GOLDEN / "full-file-disability-volumes.834").read_bytes()).members[0]
    assert volumes.income == ("7", "78000.00")
    assert [(c.hd03, c.amounts) for c in volumes.coverages if c.amounts] == [("STD", {"FK": "1250", "P3": "8.75"})]
    contact = read_834((GOLDEN / "full-file-contact-mailing-address.834").read_bytes()).members[0]
    assert (contact.contact, contact.health, contact.language, contact.mailing, contact.address1) == (
        {"TE": "2175550100"}, "N", "SPA", ("PO BOX 77", "", "SPRINGFIELD", "IL", "62705"), "12 ELM STREET")
    pcp = read_834((GOLDEN / "full-file-primary-care-provider.834").read_bytes()).members[0]
    assert [c.pcp for c in pcp.coverages] == [("1234567893", "25"), None]
    categories = read_834((GOLDEN / "full-file-reporting-categories.834").read_bytes()).members[0]
    assert categories.categories == [
        {"name": "DEPARTMENT", "qualifier": "ZZ", "value": "PLANT 2", "date": "2019-06-01"},
        {"name": "EMPLOYMENT CLASS", "qualifier": "17", "value": "FT"}]
    assert len(categories.coverages) == 2
