"""Write, sign and verify a certification packet (the I/O around :mod:`carrierfeeds.certify.scenarios`).

A packet is one folder:

    NN-<scenario>.834     the scenario's 834 (ISA15 T, control numbers from the test range)
    NN-<scenario>.json    what the carrier should do with it, per member token (machine-readable)
    NN-<scenario>.md      the same in words, with the file's verdicts
    cover.html, cover.pdf the cover sheet for the carrier's implementation analyst
    manifest.json         every file above with its SHA-256, the scenarios and their verdicts (the structural
                          check, :func:`carrierfeeds.x12.check.check_834`, and pyx12's), the signer's fingerprint
    manifest.json.asc     our detached, armored signature over manifest.json
    signer.asc            our public key, for the carrier to import (not in the manifest: the fingerprint is)

Everything but the signature (and the exported key) is byte-identical for the same feed, mapping, seed
and anchor day: no clock, no random state beyond the seed. :func:`verify_packet` checks the signature,
every hash, that no unlisted file sits beside them, and runs the structural check and pyx12 again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from carrierfeeds.certify.cover import render_cover_html, render_cover_pdf
from carrierfeeds.certify.scenarios import CERT_ISA13_BASE, ScenarioSet, build_scenarios, describe
from carrierfeeds.config import CarrierMapping, Feed
from carrierfeeds.crypto import Keyring, normalize_fingerprint
from carrierfeeds.errors import ConfigError
from carrierfeeds.x12.check import check_834, validate_with_pyx12

log = logging.getLogger(__name__)

FORMAT = "carrierfeeds-certification-packet/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.asc"
PUBLIC_KEY = "signer.asc"
_UNLISTED_OK = frozenset({MANIFEST, SIGNATURE, PUBLIC_KEY})


@dataclass(frozen=True)
class Packet:
    out: Path
    manifest: dict[str, Any]
    manifest_sha256: str
    signer_fingerprint: str

    @property
    def ok(self) -> bool:
        """Every file passed the structural check and pyx12."""
        return all(s["structural_check"]["ok"] and s["pyx12"]["ok"] for s in self.manifest["scenarios"])


@dataclass
class Verification:
    ok: bool = True
    signer_fingerprint: str | None = None
    files_checked: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)

    def problem(self, file: str, what: str) -> None:
        self.ok = False
        self.problems.append({"file": file, "problem": what})


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode()


def structural_verdict(data: bytes) -> dict[str, Any]:
    report = check_834(data)
    return {"ok": report.ok, "segments": report.segment_count, "members": report.member_count,
            "transaction_sets": report.transaction_sets,
            "problems": [f"segment {p.segment_position} {p.segment_id}{p.element}: {p.code}" for p in report.problems]}


def pyx12_verdict(path: Path) -> dict[str, Any]:
    verdict = validate_with_pyx12(path, with_999=False)
    return {"ok": verdict.ok, "segments": verdict.segments,
            "problems": [f"segment {p.segment_position} {p.segment_id}{p.element}: {p.code}" for p in verdict.errors]}


def mapping_sha256(mapping: CarrierMapping) -> str:
    return _sha256(json.dumps(mapping.model_dump(mode="json"), sort_keys=True).encode())


def _expected_text(number: int, title: str, story: str, file: str, expected: dict[str, Any],
                   structural: dict[str, Any], pyx12: dict[str, Any]) -> bytes:
    lines = [f"# {number:02d}. {title}", "", story, "", f"File: `{file}` (ISA13 {expected['isa13']}, BGN08 "
             f"{expected['bgn08']}{', full audit file' if expected['full_file'] else ', changes'}), "
             f"anchor day {expected['as_of']}.", "",
             f"Structural check: {'pass' if structural['ok'] else 'FAIL'}; pyx12: {'pass' if pyx12['ok'] else 'FAIL'}.",
             "", "## What the file sends, per member token", "", *describe(expected), ""]
    return "\n".join(lines).encode()


def build_packet(feed: Feed, mapping: CarrierMapping, *, seed: int, as_of: date, out: Path, keyring: Keyring,
                 now: datetime) -> Packet:
    """Build every scenario, write the packet to ``out`` (a new or empty folder), check, sign."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} is not a new or empty folder; a packet is never written over another",
                          field="--out")
    signer = normalize_fingerprint(feed.encryption.signer_fingerprint)
    built: ScenarioSet = build_scenarios(feed, mapping, seed=seed, as_of=as_of)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    scenarios: list[dict[str, Any]] = []

    def write(name: str, data: bytes) -> Path:
        path = out / name
        path.write_bytes(data)
        files[name] = _sha256(data)
        return path

    for s in built.scenarios:
        path = write(s.file_name, s.data)
        structural, pyx12 = structural_verdict(s.data), pyx12_verdict(path)
        stem = s.file_name.removesuffix(".834")
        write(f"{stem}.json", _json(s.expected))
        write(f"{stem}.md", _expected_text(s.number, s.title, s.story, s.file_name, s.expected, structural, pyx12))
        scenarios.append({"number": s.number, "slug": s.slug, "title": s.title, "story": s.story,
                          "file": s.file_name, "expected_json": f"{stem}.json", "expected_text": f"{stem}.md",
                          "isa13": s.expected["isa13"], "full_file": s.expected["full_file"],
                          "members_by_ins03": s.expected["members_by_ins03"],
                          "coverages_by_hd01": s.expected["coverages_by_hd01"],
                          "structural_check": structural, "pyx12": pyx12})
        log.info("certify %s: %s structural %s pyx12 %s", feed.feed_id, s.file_name, structural["ok"], pyx12["ok"])
    manifest: dict[str, Any] = {
        "format": FORMAT, "feed_id": feed.feed_id, "employer": feed.employer.name,
        "carrier": mapping.carrier_name, "mapping_id": mapping.mapping_id, "mapping_sha256": mapping_sha256(mapping),
        "mapping_mode": mapping.mode, "seed": seed, "as_of": as_of.isoformat(),
        "isa13_range": f"{CERT_ISA13_BASE + 1:09d}-{CERT_ISA13_BASE + max(1, len(scenarios)):09d}",
        "signer_fingerprint": signer, "scenarios": scenarios,
        "not_applicable": [{"slug": n.slug, "title": n.title, "reason": n.reason} for n in built.not_applicable],
        "files": files,
    }
    write("cover.html", render_cover_html(manifest).encode())
    write("cover.pdf", render_cover_pdf(manifest))
    manifest["files"] = dict(sorted(files.items()))
    manifest_bytes = _json(manifest)
    (out / MANIFEST).write_bytes(manifest_bytes)
    keyring.sign_detached(out / MANIFEST, out / SIGNATURE, signer=signer, now=now)
    (out / PUBLIC_KEY).write_text(keyring.export_public(signer), encoding="ascii")
    return Packet(out, manifest, _sha256(manifest_bytes), signer)


def verify_packet(folder: Path, keyring: Keyring, *, signer: str | None = None, pyx12: bool = True) -> Verification:
    """Check ``folder``'s signature (by ``signer``, default the fingerprint the manifest names), every file's
    SHA-256, that nothing unlisted sits beside them, and (``pyx12``) each 834's verdicts again."""
    result = Verification()
    manifest_path, signature = folder / MANIFEST, folder / SIGNATURE
    if not manifest_path.is_file():
        result.problem(MANIFEST, "missing")
        return result
    try:
        manifest = json.loads(manifest_path.read_bytes())
        if manifest.get("format") != FORMAT:
            raise ValueError("format")
    except ValueError:
        result.problem(MANIFEST, "not a certification packet manifest")
        return result
    wanted = normalize_fingerprint(signer or manifest.get("signer_fingerprint", ""))
    if not signature.is_file():
        result.problem(SIGNATURE, "missing")
    else:
        got = keyring.verify_detached(manifest_path, signature)
        result.signer_fingerprint = got
        if got is None:
            result.problem(SIGNATURE, "signature is not valid over manifest.json (or the key is unknown)")
        elif got != wanted:
            result.problem(SIGNATURE, f"signed by {got}, not by {wanted}")
    files: dict[str, str] = manifest.get("files", {})
    for name, digest in files.items():
        path = folder / name
        if Path(name).name != name or not path.is_file():
            result.problem(name, "missing")
            continue
        result.files_checked += 1
        if _sha256(path.read_bytes()) != digest:
            result.problem(name, "sha256 differs from the manifest")
    for path in sorted(folder.iterdir()):
        if path.name not in files and path.name not in _UNLISTED_OK:
            result.problem(path.name, "not listed in the manifest")
    if pyx12:
        for s in manifest.get("scenarios", []):
            path = folder / s["file"]
            if not path.is_file():
                continue
            data = path.read_bytes()
            if not structural_verdict(data)["ok"]:
                result.problem(s["file"], "structural check fails")
            if not pyx12_verdict(path)["ok"]:
                result.problem(s["file"], "pyx12 refuses the file")
    return result


__all__ = ["FORMAT", "MANIFEST", "PUBLIC_KEY", "SIGNATURE", "Packet", "Verification", "build_packet",
           "verify_packet"]
