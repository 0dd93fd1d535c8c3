"""The mapping's file header options: DTP*007, QTY totals per transaction set and Loop 1000C parties."""

from __future__ import annotations

import pydantic
import pytest
import x12_helpers as h

from carrierfeeds.config.mapping import BrokerParty, FileHeader
from carrierfeeds.x12.check import check_834
from carrierfeeds.x12.read import split_segments
from carrierfeeds.x12.render import render_834_bytes, render_834_naive


def _render(file_header: FileHeader, **update: object) -> bytes:
    m = h.validated(file_header=file_header, **update)
    enrollment, header = h.enrollment(m=m), h.header(m)
    data = render_834_bytes(enrollment, header, h.CONTROL)
    assert data == render_834_naive(enrollment, header, h.CONTROL)
    return data


def test_off_by_default_writes_the_header_it_always_has() -> None:
    assert _render(FileHeader()) == render_834_bytes(h.enrollment(), h.header(), h.CONTROL)


def test_totals_count_members_subscribers_and_dependents_per_set() -> None:
    data = _render(FileHeader(control_totals=("ET", "DT", "TO"), file_effective_date=True))
    segments, _ = split_segments(data)
    assert [s for s in segments if s[0] in ("QTY", "DTP") and s[1] in ("007", "TO", "DT", "ET")] == [
        ["DTP", "007", "D8", h.AS_OF.strftime("%Y%m%d")], ["QTY", "ET", "2"], ["QTY", "DT", "3"], ["QTY", "TO", "5"]]
    assert check_834(data).ok


def test_parties_follow_the_payer() -> None:
    data = _render(FileHeader(parties=(BrokerParty(role="BO", name="Keystone", id_qualifier="94", id="K1"),)))
    segments, _ = split_segments(data)
    n1 = [s[:3] for s in segments if s[0] == "N1"]
    assert n1 == [["N1", "P5", "ACME WIDGETS INC"], ["N1", "IN", "SUNRISE HEALTH PLAN"], ["N1", "BO", "KEYSTONE"]]
    assert check_834(data).ok


def test_header_segments_out_of_order_are_found() -> None:
    data = _render(FileHeader(control_totals=("TO",)))
    moved = data.replace(b"QTY*TO*5~\n", b"").replace(b"N1*IN*", b"QTY*TO*5~\nN1*IN*")
    report = check_834(moved)
    assert not report.ok
    assert {p.code for p in report.problems} == {"segment_order"}


@pytest.mark.parametrize("bad", [
    {"control_totals": ("TO", "TO")},
    {"parties": ({"role": "TV", "name": "A", "id": "1"}, {"role": "TV", "name": "B", "id": "2"})},
    {"control_totals": ("XX",)},
])
def test_mapping_refuses_a_doubtful_header(bad: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        h.validated(file_header=bad)
