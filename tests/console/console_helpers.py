"""A console workspace: the shipped feeds, a real ledger with runs in several outcomes, two pending
hand-offs, an authorisation, a validation report naming a member token, a census whose values are PHI
canaries, and standalone console users (ops and auditor)."""

from __future__ import annotations

import csv
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from carrierfeeds.console.auth import UsersFile
from carrierfeeds.ledger import Ledger
from carrierfeeds.ledger.anchor import AnchorLog
from carrierfeeds.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SUNRISE, NORTHWIND, CLEARVIEW = "acme-sunrise-medical", "acme-northwind-dental", "acme-clearview-vision"
PASSWORDS = {"olivia": "ops-password-123", "audrey": "auditor-password-456"}
TOKEN = "m_0123456789abcdef"
REFERENCE = "MSA-2024-017 §4"
T0 = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Workspace:
    settings: Settings
    handoffs: tuple[str, str]
    canaries: tuple[str, ...]
    runs: tuple[str, ...]

    def env(self) -> dict[str, str]:
        s = self.settings
        return {"CARRIERFEEDS_FEEDS_DIR": str(s.feeds_dir), "CARRIERFEEDS_MAPPINGS_DIR": str(s.mappings_dir),
                "CARRIERFEEDS_SCHEMAS_DIR": str(s.schemas_dir), "CARRIERFEEDS_DATA_DIR": str(s.data_dir),
                "CARRIERFEEDS_LEDGER_URL": str(s.ledger_url), "CARRIERFEEDS_KEYS_DIR": str(s.keys_dir)}


def _run(ledger: Ledger, feed_id: str, day: date, status: str, at: datetime, *, delivery: str | None = None,
         transport: str = "sftp", disclosure: Any = None) -> tuple[str, str | None]:
    run = ledger.start_run(feed_id=feed_id, interval_start=day, interval_end=day + timedelta(days=1),
                           actor="scheduler", now=at)
    ledger.record_stage(run.run_id, "census", "succeeded", now=at + timedelta(minutes=1), detail={"rows": 12})
    delivery_id = None
    if delivery is not None:
        numbers = ledger.allocate_control_numbers(run_id=run.run_id, sender_id="ACME", receiver_id=feed_id[:10],
                                                  now=at)
        intent = ledger.record_delivery_intent(
            run_id=run.run_id, feed_id=feed_id, interval_start=day,
            payload_sha256=f"{feed_id}{day}".encode().hex()[:64].ljust(64, "c"),
            file_name=f"{feed_id}-{day}.834.pgp", isa13=numbers.isa13, gs06=numbers.gs06, st02=numbers.st02,
            recipient_fingerprint="A" * 40, member_counts={"members": 3}, transport=transport, now=at,
            disclosure=disclosure)
        ledger.record_delivery_outcome(intent.delivery_id, status=delivery, now=at + timedelta(minutes=5))
        delivery_id = intent.delivery_id
    ledger.finish_run(run.run_id, status, now=at + timedelta(minutes=6))
    return run.run_id, delivery_id


def make_workspace(tmp_path: Path, ledger_url: str) -> Workspace:
    from carrierfeeds.census.generate import generate_census, write_census_csv

    for name in ("feeds", "mappings", "schemas"):
        shutil.copytree(ROOT / name, tmp_path / name)
    settings = Settings(feeds_dir=tmp_path / "feeds", mappings_dir=tmp_path / "mappings",
                        schemas_dir=tmp_path / "schemas", data_dir=tmp_path / "var", ledger_url=ledger_url,
                        keys_dir=tmp_path / "keys")
    ledger = Ledger.open(ledger_url)
    ledger.upgrade()
    day = T0.date()
    runs, handoffs = [], []
    from carrierfeeds.ledger.disclosures import Disclosure, MemberIndex

    # What the delivered file disclosed: fields, config hashes and the members, by token only.
    disclosed = Disclosure(allowlist=("member_id", "last_name", "first_name", "dob"),
                           fields=("member_id", "last_name", "first_name"),
                           feed_sha256="f" * 64, mapping_sha256="e" * 64, schema_sha256="d" * 64, suite_sha256="c" * 64,
                           members=MemberIndex.pack([TOKEN, "m_00000000000000aa"], ["021", "030"]))
    rid, _ = _run(ledger, SUNRISE, day, "delivered", T0, delivery="delivered", disclosure=disclosed)
    runs.append(rid)
    for offset in (0, 1):
        rid, did = _run(ledger, NORTHWIND, day + timedelta(days=offset), "pending_handoff",
                        T0 + timedelta(days=offset), delivery="pending_handoff", transport="manual")
        runs.append(rid)
        assert did is not None
        handoffs.append(did)
    rid, _ = _run(ledger, CLEARVIEW, day, "rejected", T0)
    runs.append(rid)
    ledger.record_authorisation(feed_id=SUNRISE, employer_id="acme", carrier_id="sunrise", plans=["MED-PPO"],
                                effective_from=date(2026, 1, 1), effective_to=None, recorded_by="compliance",
                                now=T0 - timedelta(days=30), reason="contract-2026")
    ledger.record_authorisation(feed_id=SUNRISE, employer_id="acme", carrier_id="sunrise", plans=["MED-PPO"],
                                effective_from=date(2026, 1, 1), effective_to=None, recorded_by="compliance",
                                now=T0 - timedelta(days=10), reference=REFERENCE)
    AnchorLog.for_settings(settings).anchor_head(ledger, reason="audit-verify", now=T0 + timedelta(hours=1))
    ledger.close()

    census = generate_census(5, 7, as_of=day)
    inbound = settings.data_dir / "inbound" / "acme"
    inbound.mkdir(parents=True)
    write_census_csv(census, inbound / "census_today.csv")
    canaries = tuple(str(census[c].iloc[0]) for c in ("ssn", "last_name", "first_name"))
    report = settings.reports_dir / SUNRISE / day.isoformat()
    report.mkdir(parents=True)
    with (report / "validation.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["row", "member_token", "column", "rule", "message"])
        writer.writerow([3, TOKEN, "birth_date", "dob_in_past", "date of birth is in the future"])
    users = UsersFile(settings.resolved_keys_dir)
    users.set_user("olivia", "ops", PASSWORDS["olivia"])
    users.set_user("audrey", "auditor", PASSWORDS["audrey"])
    return Workspace(settings=settings, handoffs=(handoffs[0], handoffs[1]), canaries=canaries, runs=tuple(runs))


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def login(client: Any, user: str) -> None:
    """Log ``user`` in through the standalone console's form (``client``: a TestClient)."""
    response = client.post("/login", data={"user": user, "password": PASSWORDS[user], "next": "/"})
    assert response.status_code == 303, response.text
