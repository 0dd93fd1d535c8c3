"""HD03 codes: the enum matches the 005010X220A1 list pyx12 carries, and LIF/ADD/HSA (outside that list) go
only to a carrier whose mapping names them; the gate then waives exactly pyx12's HD03 code-list errors,
counts them in its detail, and still refuses anything else."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from importlib.resources import files
from pathlib import Path

import pydantic
import pytest
import x12_helpers as h
from hypothesis import given, settings
from hypothesis import strategies as st
from test_x12_volumes import _header, volume_enrollment, volume_feed, volume_mapping, volume_rows

from carrierfeeds.config import CarrierMapping, load_schema
from carrierfeeds.config.mapping import Conformance
from carrierfeeds.run.gate import check_file, hd03_beyond_tr3
from carrierfeeds.settings import FeedBundle
from carrierfeeds.x12.codes import HD03_BEYOND_TR3, InsuranceLine, values
from carrierfeeds.x12.render import render_834_bytes


def _pyx12_hd03() -> set[str]:
    root = ET.fromstring(files("pyx12").joinpath("map", "834.5010.X220.A1.xml").read_bytes())  # noqa: S314
    element = next(e for e in root.iter("element") if e.get("xid") == "HD03")
    return {c.text or "" for c in element.iter("code")}


def test_insurance_lines_are_the_tr3_list_plus_three_named_beyond_it() -> None:
    assert values(InsuranceLine) - HD03_BEYOND_TR3 == _pyx12_hd03()
    assert {"LIF", "ADD", "HSA"} == HD03_BEYOND_TR3 and not HD03_BEYOND_TR3 & _pyx12_hd03()
    assert InsuranceLine.MENTAL_HEALTH == "AK" and InsuranceLine.PREVENTATIVE_CARE_WELLNESS == "AG"
    assert InsuranceLine.TWENTY_FOUR_HOUR_CARE == "AH" and InsuranceLine.PRACTITIONERS == "PRA"
    assert InsuranceLine.LONG_TERM_CARE == "LTC"


def test_a_life_plan_needs_the_carriers_word() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        h.validated(plans={**h.mapping().plans, "LIFE-BASIC": {"insurance_line": "LIF", "description": "LIFE"}})
    assert "conformance.hd03_beyond_tr3" in str(caught.value) and "LIFE-BASIC" in str(caught.value)


def _life_file(tmp_path: Path, mapping: CarrierMapping, plans: tuple[str, ...]) -> tuple[Path, int]:
    rows = volume_rows()
    ee = next(r for r in rows if r["member_id"] == "E1001" and r["plan_code"] == "MED-PPO")
    rows += [{**ee, "plan_code": plan, "coverage_level": "EMP", "coverage_amount": "100000",
              "premium_amount": "2.10"} for plan in plans]
    enrollment = volume_enrollment(rows, mapping)
    path = tmp_path / "life.834"
    path.write_bytes(render_834_bytes(enrollment, _header(), h.CONTROL))
    return path, enrollment.member_count


def _gate(path: Path, mapping: CarrierMapping, members: int, scratch: Path) -> tuple[object, dict[str, object]]:
    bundle = FeedBundle(feed=volume_feed(), mapping=mapping, schema=load_schema(h.ROOT / "schemas" / "census-v1.yaml"),
                        suite_path=h.ROOT / "schemas" / "census-v1.suite.json")
    detail: dict[str, object] = {}
    verdict = check_file(path, bundle, payload_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                         members=members, records=None, pyx12_max_members=2000, scratch=scratch, detail=detail)
    return verdict, detail


def test_the_gate_waives_declared_life_and_add_lines_and_records_it(tmp_path: Path) -> None:
    mapping = volume_mapping()
    path, members = _life_file(tmp_path, mapping, ("LIFE-BASIC", "ADD-BASIC"))
    assert hd03_beyond_tr3(path.read_bytes()) == {"LIF", "ADD"}
    verdict, detail = _gate(path, mapping, members, tmp_path)
    assert verdict.passed and verdict.waived == 2  # type: ignore[attr-defined]
    assert detail["pyx12_ok"] is True and detail["pyx12_waived"] == 2
    assert detail["hd03_beyond_tr3"] == "ADD,LIF"  # a flat token: the ledger keeps it


def test_the_gate_refuses_a_code_the_mapping_did_not_name(tmp_path: Path) -> None:
    """The mapping names LIF only; an ADD line in the file (config checks bypassed) is not waived."""
    declared = volume_mapping()
    path, members = _life_file(tmp_path, declared, ("LIFE-BASIC", "ADD-BASIC"))
    narrower = declared.model_copy(update={"conformance": Conformance(hd03_beyond_tr3=("LIF",))})
    verdict, detail = _gate(path, narrower, members, tmp_path)
    assert not verdict.passed and verdict.waived == 0  # type: ignore[attr-defined]
    assert "pyx12_waived" not in detail and detail["pyx12_ok"] is False


def test_without_lines_beyond_the_tr3_nothing_is_waived(tmp_path: Path) -> None:
    mapping = volume_mapping()
    path, members = _life_file(tmp_path, mapping, ())
    assert hd03_beyond_tr3(path.read_bytes()) == set()
    verdict, detail = _gate(path, mapping, members, tmp_path)
    assert verdict.passed and verdict.waived == 0 and "pyx12_waived" not in detail  # type: ignore[attr-defined]


def _whole_file_hd03_beyond_tr3(data: bytes) -> set[str]:
    """The oracle: the gate's search before it read windows, one regular expression over the whole file."""
    import re

    tr3 = values(InsuranceLine) - HD03_BEYOND_TR3
    e, t = re.escape(bytes(data[3:4])), re.escape(bytes(data[105:106]))
    found = {m.decode("ascii", "replace") for m in re.findall(rb"(?:^|" + t + rb")\s*HD" + e + rb"[^" + e + t
                                                                + rb"]*" + e + rb"[^" + e + t + rb"]*" + e
                                                                + rb"([^" + e + t + rb"]*)", data)}
    return found - tr3


_HD_DAMAGE = [b"~", b"\n", b"*", b"HD*030**LIF*", b"HD*", b"~HD*024**ZZ", b"~\n\nHD*1*2*ADD", b"HSA", b" "]


@settings(max_examples=150, deadline=None)
@given(edits=st.lists(st.tuples(st.floats(0, 1), st.sampled_from(_HD_DAMAGE)), max_size=6),
       window=st.sampled_from([1, 2, 7, 64, 997, 1 << 20]))
def test_windows_find_the_codes_the_whole_file_search_finds(tmp_path_factory: pytest.TempPathFactory,
                                                            edits: list[tuple[float, bytes]], window: int) -> None:
    data = _life_bytes(tmp_path_factory)
    for fraction, chunk in edits:
        at = 106 + int(fraction * (len(data) - 106))
        data = data[:at] + chunk + data[at:]
    assert hd03_beyond_tr3(data, window_bytes=window) == _whole_file_hd03_beyond_tr3(data)


def test_windows_read_a_map_and_find_codes_in_its_last_segment(tmp_path: Path) -> None:
    from carrierfeeds.files import read_mapped

    path, _ = _life_file(tmp_path, volume_mapping(), ("LIFE-BASIC", "ADD-BASIC"))
    data = path.read_bytes()
    last = data.rstrip(b"\n")
    cut = last[:last.rindex(b"~", 0, len(last) - 1) + 1] + b"\nHD*030**HSA"  # no terminator at the end
    assert _whole_file_hd03_beyond_tr3(cut) == {"LIF", "ADD", "HSA"}
    for window in (1, 50, 1 << 20):
        assert hd03_beyond_tr3(cut, window_bytes=window) == {"LIF", "ADD", "HSA"}
    with read_mapped(path) as mapped:
        assert hd03_beyond_tr3(mapped, window_bytes=4096) == {"LIF", "ADD"}


_LIFE: list[bytes] = []


def _life_bytes(factory: pytest.TempPathFactory) -> bytes:
    if not _LIFE:
        path, _ = _life_file(factory.mktemp("life"), volume_mapping(), ("LIFE-BASIC", "ADD-BASIC"))
        _LIFE.append(path.read_bytes())
    return _LIFE[0]
