"""The certification packet, built once per module with real gpg and pyx12 for a changes-mode mapping that turns
every optional setting on: it verifies, rebuilds byte for byte, differs under another seed, names a tampered
file, and each scenario's expected JSON is what the carrier-replay reader reads out of its 834."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.carrier_replay.reader import read_834

from carrierfeeds.certify.packet import MANIFEST, Packet, build_packet, verify_packet
from carrierfeeds.certify.scenarios import build_scenarios
from carrierfeeds.config import CarrierMapping, Feed, load_feed, load_mapping
from carrierfeeds.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
AS_OF = date(2026, 11, 20)
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
SEED = 7
CASES = {"new-subscriber-with-dependents", "termination", "reinstatement", "rehire-after-gap", "plan-change",
         "coverage-level-change", "address-and-name-change", "identity-correction", "dependent-age-out",
         "cobra-event", "full-audit-file", "volume-change", "contact-change", "primary-care-provider-change",
         "reporting-category-1"}


def certify_feed(signer: str) -> tuple[Feed, CarrierMapping]:
    """The demo feed (disability line authorised, our test signer) and the all-options mapping."""
    feed = load_feed(ROOT / "feeds" / "acme-sunrise-medical.yaml")
    auth = feed.authorization.model_copy(update={"plans": (*feed.authorization.plans, "STD-CORE")})
    enc = feed.encryption.model_copy(update={"signer_fingerprint": signer})
    return (feed.model_copy(update={"authorization": auth, "encryption": enc}),
            load_mapping(Path(__file__).with_name("sunrise-certify.yaml")))


@pytest.fixture(scope="module")
def packet(demo_keys: Any, tmp_path_factory: pytest.TempPathFactory) -> Packet:
    feed, mapping = certify_feed(demo_keys.signer_fingerprint)
    return build_packet(feed, mapping, seed=SEED, as_of=AS_OF, out=tmp_path_factory.mktemp("packet") / "p",
                        keyring=demo_keys.ours, now=NOW)


def test_every_case_is_built_and_passes_both_checks(packet: Packet) -> None:
    scenarios = packet.manifest["scenarios"]
    assert {s["slug"] for s in scenarios} == CASES
    assert packet.manifest["not_applicable"] == []
    for s in scenarios:
        assert s["structural_check"]["ok"], (s["file"], s["structural_check"]["problems"])
        assert s["pyx12"]["ok"], (s["file"], s["pyx12"]["problems"])
    assert packet.ok
    names = {p.name for p in packet.out.iterdir()}
    assert {"cover.html", "cover.pdf", "manifest.json", "manifest.json.asc", "signer.asc"} <= names
    assert (packet.out / "cover.pdf").read_bytes().startswith(b"%PDF")
    html = (packet.out / "cover.html").read_text()
    assert packet.signer_fingerprint in html
    assert all(digest in html for name, digest in packet.manifest["files"].items() if name.endswith(".834"))


def test_the_packet_verifies_signature_hashes_and_pyx12(packet: Packet, demo_keys: Any) -> None:
    result = verify_packet(packet.out, demo_keys.ours)
    assert result.ok, result.problems
    assert result.signer_fingerprint == packet.signer_fingerprint
    assert result.files_checked == len(packet.manifest["files"]) == 3 * len(CASES) + 2


def test_the_carrier_can_verify_the_signature_with_the_key_in_the_packet(packet: Packet, tmp_path: Path) -> None:
    from carrierfeeds.crypto import Keyring

    carrier = Keyring.create(tmp_path / "analyst")
    try:
        carrier.import_keys((packet.out / "signer.asc").read_text())
        assert carrier.verify_detached(packet.out / MANIFEST, packet.out / "manifest.json.asc") == \
            packet.signer_fingerprint
    finally:
        carrier.stop_agent()


def test_a_tampered_file_fails_verification_naming_it(packet: Packet, demo_keys: Any, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(packet.out, copy)
    target = next(s["file"] for s in packet.manifest["scenarios"] if s["slug"] == "termination")
    data = (copy / target).read_bytes()
    (copy / target).write_bytes(data.replace(b"DTP*349*D8*20261130", b"DTP*349*D8*20261231", 1))
    (copy / "extra.834").write_bytes(data)
    result = verify_packet(copy, demo_keys.ours, pyx12=False)
    assert not result.ok
    assert {"file": target, "problem": "sha256 differs from the manifest"} in result.problems
    assert {"file": "extra.834", "problem": "not listed in the manifest"} in result.problems
    assert not any(p["file"] == MANIFEST or p["file"].endswith(".asc") for p in result.problems)


def test_an_edited_manifest_fails_the_signature(packet: Packet, demo_keys: Any, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(packet.out, copy)
    manifest = (copy / MANIFEST).read_bytes()
    (copy / MANIFEST).write_bytes(manifest.replace(b'"seed": 7', b'"seed": 8'))
    result = verify_packet(copy, demo_keys.ours, pyx12=False)
    assert [p["file"] for p in result.problems] == ["manifest.json.asc"]
    wrong = verify_packet(packet.out, demo_keys.ours, signer=demo_keys.carrier_fingerprint, pyx12=False)
    assert not wrong.ok and "not by" in wrong.problems[0]["problem"]


def test_the_same_seed_rebuilds_byte_identical_files(packet: Packet, demo_keys: Any, tmp_path: Path) -> None:
    """Rebuilt in another process (another hash seed, another clock): every file and the manifest are the
    same bytes; only the signature may differ."""
    again = tmp_path / "again"
    code = (f"from datetime import UTC, datetime\n"
            f"from carrierfeeds.crypto import Keyring\n"
            f"from tests.certify.test_certify_packet import AS_OF, SEED, build_packet, certify_feed\n"
            f"feed, mapping = certify_feed({demo_keys.signer_fingerprint!r})\n"
            f"build_packet(feed, mapping, seed=SEED, as_of=AS_OF, out=Path({str(again)!r}),\n"
            f"             keyring=Keyring(Path({str(demo_keys.ours.home)!r})),\n"
            f"             now=datetime(2027, 1, 2, tzinfo=UTC))\n")
    env = {**os.environ, "PYTHONHASHSEED": "4242", "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", "from pathlib import Path\n" + code], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (again / MANIFEST).read_bytes() == (packet.out / MANIFEST).read_bytes()
    for name in packet.manifest["files"]:
        assert (again / name).read_bytes() == (packet.out / name).read_bytes(), name
    assert (again / "manifest.json.asc").is_file()


def test_another_seed_gives_other_people_in_every_file(packet: Packet, demo_keys: Any) -> None:
    feed, mapping = certify_feed(demo_keys.signer_fingerprint)
    other = build_scenarios(feed, mapping, seed=SEED + 1, as_of=AS_OF)
    assert [s.file_name for s in other.scenarios] == [s["file"] for s in packet.manifest["scenarios"]]
    for s in other.scenarios:
        assert s.data != (packet.out / s.file_name).read_bytes(), s.file_name


def _read_back(data: bytes) -> list[dict[str, Any]]:
    """Each member of the file as the carrier-replay reader (independent of carrierfeeds.x12) reads it."""
    def iso(d: date | None) -> str | None:
        return d.isoformat() if d else None

    return [{"subscriber_id": m.subscriber_id, "member_id": m.member_id or m.subscriber_id,
             "subscriber": m.ins01 == "Y", "relationship": m.ins02, "ins03": m.ins03, "ins04": m.ins04,
             "coverages": [{"hd01": c.hd01, "insurance_line": c.hd03, "plan": c.hd04, "level": c.hd05,
                            "start": iso(c.start), "end": iso(c.end)} for c in m.coverages]}
            for m in read_834(data).members]


def test_each_expected_json_is_what_the_carrier_reads_from_its_file(packet: Packet) -> None:
    import json

    for s in packet.manifest["scenarios"]:
        expected = json.loads((packet.out / s["expected_json"]).read_text())
        members = [{k: v for k, v in m.items() if k != "member_token"} for m in expected["members"]]
        assert members == _read_back((packet.out / s["file"]).read_bytes()), s["file"]
        assert all(m["member_token"].startswith("m_") for m in expected["members"])
        assert {h["member_id"] for h in expected["carrier_holds_after"]} == {m["member_id"] for m in members}


def test_scenarios_send_what_each_case_means(packet: Packet) -> None:
    """The cases read back as a carrier would: the maintenance types that make each one what it is."""
    by_slug = {s["slug"]: _read_back((packet.out / s["file"]).read_bytes()) for s in packet.manifest["scenarios"]}
    assert [m["ins03"] for m in by_slug["new-subscriber-with-dependents"]] == ["021", "021", "021"]
    assert [(m["ins03"], {c["end"] for c in m["coverages"]}) for m in by_slug["termination"]] == \
        [("024", {"2026-11-30"})]
    assert [m["ins03"] for m in by_slug["reinstatement"]] == ["025"]
    rehire = by_slug["rehire-after-gap"]
    assert [(m["ins03"], m["ins04"]) for m in rehire] == [("021", "28")]
    assert {c["start"] for c in rehire[0]["coverages"]} == {"2026-12-01"}
    assert sorted(c["hd01"] for c in by_slug["plan-change"][0]["coverages"]) == ["021", "024"]
    ageout = by_slug["dependent-age-out"]
    assert [(m["subscriber"], m["ins03"]) for m in ageout] == [(False, "024")]
    assert all(m["ins03"] == "030" for m in by_slug["full-audit-file"])
    identity = (packet.out / next(s["file"] for s in packet.manifest["scenarios"]
                                  if s["slug"] == "identity-correction")).read_bytes()
    assert b"NM1*70*" in identity  # Loop 2100B: the identity the carrier holds
    cobra = (packet.out / next(s["file"] for s in packet.manifest["scenarios"]
                               if s["slug"] == "cobra-event")).read_bytes()
    assert b"DTP*340*D8*20261201" in cobra and b"*C**1*" in cobra


def test_a_mapping_without_the_settings_lists_the_cases_it_cannot_express(demo_keys: Any) -> None:
    feed = load_feed(ROOT / "feeds" / "acme-sunrise-medical.yaml")
    mapping = load_mapping(ROOT / "mappings" / "sunrise-health.yaml").model_copy(update={"mode": "changes"})
    built = build_scenarios(feed, mapping, seed=SEED, as_of=AS_OF)
    assert {n.slug for n in built.not_applicable} == {"cobra-event"}
    assert "member_status.cobra" in built.not_applicable[0].reason
    assert not any(s.slug.startswith(("volume", "contact", "primary", "reporting")) for s in built.scenarios)
    assert all(b"*T*:~" in s.data.split(b"\n")[0] for s in built.scenarios)  # ISA15 T, whatever the mapping says


@pytest.mark.parametrize("feed_id", ["acme-clearview-vision", "acme-northwind-dental"])
def test_a_feed_that_sends_no_834s_gets_no_packet(feed_id: str) -> None:
    feed = load_feed(ROOT / "feeds" / f"{feed_id}.yaml")
    with pytest.raises(ConfigError, match="not 834s") as caught:
        build_scenarios(feed, load_mapping(ROOT / "mappings" / f"{feed.mapping_id}.yaml"), seed=SEED, as_of=AS_OF)
    assert "output.format" in str(caught.value.as_dict())
