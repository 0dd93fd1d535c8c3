"""The per-file notice a carrier's guide may ask for: a human-readable summary sent alongside each file.

What it holds: the file's name, format, size and sha256, its control numbers (ISA13, GS06, ST02), the
interval, whether it is a full (030) or change file, and counts: members and coverage lines by
maintenance type (INS03 / HD01: 021 additions, 001 changes, 024 terminations, 025 reinstatements, 030
audit), subscribers, dependents. Never a name, id, date of birth or any other member value: it is built
from counts and envelope values alone, so it cannot carry PHI (tests plant canaries to prove it).

Pure: :func:`file_notice` takes the numbers and returns a dict; :func:`notice_files` renders it as JSON
and/or text under the mapping's ``notice.file_name``. The run writes them beside the file in the run
folder and keeps them in the staging store, where they stay after the run with its state and ciphertext
(no PHI), and records their hashes in the build stage's ledger detail; ``preview`` writes them into its
folder. ``notice.send`` has them sent to the carrier after delivery (``carrierfeeds.run.notices``).
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from typing import Any, Final

from carrierfeeds.config.mapping import FileNotice

#: INS03/HD01 maintenance type codes by the words a reader of the notice knows them by.
MAINTENANCE_WORDS: Final[dict[str, str]] = {"021": "additions", "001": "changes", "024": "terminations",
                                            "025": "reinstatements", "030": "audit (full file)"}
SUFFIXES: Final[dict[str, str]] = {"json": ".json", "text": ".txt"}


def file_notice(*, feed_id: str, carrier: str, employer: str, file_name: str, file_format: str, sha256: str,
                size: int, isa13: int, gs06: int, st02: int, interval_start: date, created: datetime,
                full_file: bool, members: int, subscribers: int, members_by_type: dict[str, int],
                coverages_by_type: dict[str, int], excluded: dict[str, int] | None = None) -> dict[str, Any]:
    """The notice of one file, from counts and envelope values only."""
    return {
        "notice": "carrierfeeds per-file notice", "version": 1,
        "feed_id": feed_id, "carrier": carrier, "employer": employer,
        "file": {"name": file_name, "format": file_format, "bytes": size, "sha256": sha256},
        "control_numbers": {"isa13": f"{isa13:09d}", "gs06": str(gs06), "st02": f"{st02:04d}"},
        "interval_start": interval_start.isoformat(), "created": created.isoformat(),
        "kind": "full" if full_file else "changes",
        "members": members, "subscribers": subscribers, "dependents": members - subscribers,
        "members_by_type": dict(sorted(members_by_type.items())),
        "coverages_by_type": dict(sorted(coverages_by_type.items())),
        "left_out": dict(sorted((excluded or {}).items())),
    }


def notice_text(notice: dict[str, Any]) -> str:
    """The notice as plain text for a person, one fact a line."""
    f, c = notice["file"], notice["control_numbers"]
    lines = [f"Eligibility file notice: {notice['employer']} to {notice['carrier']}",
             f"File: {f['name']} ({f['format']}, {f['bytes']} bytes)",
             f"SHA-256: {f['sha256']}",
             f"Control numbers: ISA13 {c['isa13']}  GS06 {c['gs06']}  ST02 {c['st02']}",
             f"Interval: {notice['interval_start']}  created {notice['created']}",
             f"Kind: {'full file (audit, 030)' if notice['kind'] == 'full' else 'changes'}",
             f"Members: {notice['members']} ({notice['subscribers']} subscribers, {notice['dependents']} "
             "dependents)"]
    for title, counts in (("Members by maintenance type", notice["members_by_type"]),
                          ("Coverage lines by maintenance type", notice["coverages_by_type"])):
        lines.append(f"{title}:")
        lines += [f"  {code} {MAINTENANCE_WORDS.get(code, code)}: {n}" for code, n in counts.items()] or ["  none"]
    if notice["left_out"]:
        lines.append("Left out as expected: " + ", ".join(f"{k} {v}" for k, v in notice["left_out"].items()))
    return "\n".join(lines) + "\n"


def notice_names(spec: FileNotice, file_name: str) -> list[str]:
    """The names of ``file_name``'s notice files, one per format."""
    return [spec.file_name.format(file=file_name) + SUFFIXES[fmt] for fmt in spec.formats]


def notice_files(spec: FileNotice, file_name: str, notice: dict[str, Any]) -> list[tuple[str, bytes]]:
    """The notice's files (name, bytes), one per format the mapping asks for, named after ``file_name``."""
    out: list[tuple[str, bytes]] = []
    for fmt, name in zip(spec.formats, notice_names(spec, file_name), strict=True):
        data = (json.dumps(notice, indent=2, sort_keys=True) + "\n" if fmt == "json" else notice_text(notice))
        out.append((name, data.encode("utf-8")))
    return out


def notice_digest(spec: FileNotice, files: list[tuple[str, bytes]]) -> dict[str, str]:
    """Each notice file's sha256 by format (``notice_json``, ``notice_text``), for the ledger's flat
    build detail."""
    return {f"notice_{fmt}": hashlib.sha256(data).hexdigest() for fmt, (_, data) in zip(spec.formats, files,
                                                                                         strict=True)}
