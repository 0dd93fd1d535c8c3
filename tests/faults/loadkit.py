"""Load-test kit: many copies of the demo feed on one real sshd, worker processes sharing a ledger, and
the exactly-once check afterwards (ledger, carrier's inbox, gpg, audit chain, workers' RSS).

Feeds are copies of ``feeds/acme-sunrise-medical.yaml`` (``load-000``, ``load-001``, ...), each with its
own census folder and a small synthetic census, all delivering into one inbox. Every feed is one
ticket in a shared queue (``load_worker.py``); workers are separate Python processes.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml
from faultkit import HERE, ROOT, child_env

from carrierfeeds.config import SftpDelivery
from carrierfeeds.demo import CONNECTION_ID, prepare_workspace
from carrierfeeds.ledger.records import SENT_STATUSES
from carrierfeeds.settings import Settings, open_ledger
from carrierfeeds.testing.gpg import DemoKeys
from carrierfeeds.testing.sshd import Sshd
from carrierfeeds.transport.base import TEMP_PREFIX, TEMP_SUFFIX

DAY = date(2026, 11, 19)
CLOCK = datetime(2026, 11, 19, 7, 30, tzinfo=UTC)


@dataclass(frozen=True)
class LoadWorkspace:
    root: Path
    settings: Settings
    feed_ids: tuple[str, ...]
    inbox: Path
    keys: DemoKeys
    keys_dir: Path


def point_connection_at(keys_dir: Path, port: int, host_public_key_line: str, **timeouts: float) -> None:
    """Re-point the workspace's SFTP connection at ``127.0.0.1:port`` (a relay), pinning the real host
    key under that address; ``timeouts`` (``op_timeout``...) go into the connection file too."""
    path = keys_dir / f"{CONNECTION_ID}.json"
    spec = json.loads(path.read_text())
    spec["port"] = port
    spec.update(timeouts)
    path.write_text(json.dumps(spec, indent=2) + "\n")
    known = keys_dir / "known_hosts"
    known.write_text(known.read_text() + f"[127.0.0.1]:{port} {host_public_key_line}\n")


def make_load_workspace(root: Path, *, keys: DemoKeys, sshd: Sshd, ledger_url: str, feeds: int,
                        members: tuple[int, int] = (20, 50), seed: int = 0) -> LoadWorkspace:
    """``feeds`` copies of the demo feed, each with a census of ``members`` (a seeded range) people."""
    from carrierfeeds.census.generate import generate_census, write_census_csv

    inbox = sshd.root / f"load-{uuid.uuid4().hex[:10]}"
    inbox.mkdir()
    keys_dir = root / "keys"
    sshd.write_keys_dir(keys_dir, CONNECTION_ID)
    ws = prepare_workspace(root / "ws", keys=keys, keys_dir=keys_dir, config_root=ROOT, ledger_url=ledger_url,
                           delivery=SftpDelivery(connection_id=CONNECTION_ID, remote_dir=str(inbox)))
    settings = ws.settings
    (settings.feeds_dir / f"{ws.feed.feed_id}.yaml").unlink()  # only the copies run
    rng = random.Random(seed)
    feed_ids = []
    for i in range(feeds):
        feed_id = f"load-{i:03d}"
        source = ws.feed.census.source.model_copy(update={"path": f"inbound/{feed_id}"})
        feed = ws.feed.model_copy(update={
            "feed_id": feed_id, "census": ws.feed.census.model_copy(update={"source": source})})
        (settings.feeds_dir / f"{feed_id}.yaml").write_text(
            yaml.safe_dump(feed.model_dump(mode="json"), sort_keys=False))
        inbound = settings.data_dir / "inbound" / feed_id
        inbound.mkdir(parents=True, mode=0o700)
        frame = generate_census(rng.randint(*members), seed * 10_000 + i, as_of=DAY)
        write_census_csv(frame, inbound / f"census_{DAY:%Y%m%d}.csv")
        feed_ids.append(feed_id)
    return LoadWorkspace(root=root, settings=settings, feed_ids=tuple(feed_ids), inbox=inbox, keys=keys,
                         keys_dir=keys_dir)


@dataclass(frozen=True)
class LoadOutcome:
    """What the workers said: one account per feed run, and each worker's RSS readings."""

    accounts: tuple[dict[str, Any], ...]
    workers: tuple[dict[str, Any], ...]

    def retried(self) -> int:
        """Stage tries beyond the first, over every feed."""
        return sum(n - 1 for a in self.accounts for n in a["tries"].values())


def run_workers(lw: LoadWorkspace, *, workers: int, mode: str, stage_tries: int = 3, transport_retries: int = 3,
                transport_backoff: float = 0.05, timeout: float = 900) -> LoadOutcome:
    """Queue every feed, start ``workers`` processes (``mode``: ``run_feed`` or ``stages``, see
    ``load_worker``), wait for all; each must exit 0."""
    queue = lw.root / "queue"
    (queue / "claimed").mkdir(parents=True)
    for feed_id in lw.feed_ids:
        (queue / feed_id).touch()
    results = lw.root / "results"
    results.mkdir()
    s = lw.settings
    spec = {"settings": {"feeds_dir": str(s.feeds_dir), "mappings_dir": str(s.mappings_dir),
                         "schemas_dir": str(s.schemas_dir), "data_dir": str(s.data_dir),
                         "keys_dir": str(s.keys_dir), "gnupg_home": str(s.gnupg_home),
                         "ledger_url": s.ledger_url},
            "queue": str(queue), "results": str(results), "day": DAY.isoformat(), "clock": CLOCK.isoformat(),
            "mode": mode, "stage_tries": stage_tries, "transport_retries": transport_retries,
            "transport_backoff": transport_backoff}
    spec_path = lw.root / "load-spec.json"
    spec_path.write_text(json.dumps(spec))
    procs = []
    for n in range(workers):
        name = f"w{n}"
        err = (results / f"{name}.stderr").open("wb")
        procs.append((name, err, subprocess.Popen(
            [sys.executable, str(HERE / "load_worker.py"), str(spec_path), name], env=child_env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)))
    failed = []
    for name, err, proc in procs:
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        err.close()
        if code != 0:
            failed.append(f"{name} exited {code}:\n" + (results / f"{name}.stderr").read_text()[-3000:])
    assert not failed, "\n".join(failed)
    accounts: list[dict[str, Any]] = []
    readings: list[dict[str, Any]] = []
    for path in sorted(results.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            (readings if "hwm_end_kb" in row else accounts).append(row)
    return LoadOutcome(accounts=tuple(accounts), workers=tuple(readings))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_exactly_once(lw: LoadWorkspace, outcome: LoadOutcome, scratch: Path) -> dict[str, Any]:
    """Every feed delivered exactly once: one account each, one delivery row and one outcome on the
    carrier's side each, exactly one final file each on the server and nothing else there, every file
    decrypting (signed by us) to the payload the ledger recorded, its ciphertext hash the ledger's, the
    hash chain intact (``audit verify``). Returns figures for the report."""
    by_feed = Counter(a["feed_id"] for a in outcome.accounts)
    assert set(by_feed) == set(lw.feed_ids) and set(by_feed.values()) == {1}, "each feed run by one worker"
    not_delivered = sorted((a["feed_id"], a["status"], a["errors"]) for a in outcome.accounts
                           if a["status"] != "delivered")
    assert not not_delivered, f"feeds not delivered: {not_delivered}"

    arrived = sorted(p.name for p in lw.inbox.iterdir())
    leftovers = [n for n in arrived if n.startswith(TEMP_PREFIX) or n.endswith(TEMP_SUFFIX)]
    assert not leftovers, f"temp files left on the server: {leftovers}"

    ledger = open_ledger(lw.settings)
    try:
        expected: dict[str, Any] = {}
        for feed_id in lw.feed_ids:
            deliveries = ledger.deliveries(feed_id=feed_id)
            assert len(deliveries) == 1, f"{feed_id}: {len(deliveries)} delivery rows"
            (delivery,) = deliveries
            assert delivery.status in ("delivered", "reconciled"), f"{feed_id}: {delivery.status}"
            outcomes = [o.status for o in ledger.delivery_outcomes(delivery_ids=[delivery.delivery_id])]
            on_their_side = [s for s in outcomes if s in SENT_STATUSES]
            assert len(on_their_side) == 1, f"{feed_id}: outcomes {outcomes}"
            (run,) = ledger.list_runs(feed_id=feed_id)
            assert run.status == "delivered", f"{feed_id}: run {run.status}"
            assert delivery.remote_path is not None
            expected[delivery.remote_path.rsplit("/", 1)[-1]] = delivery
        assert len({d.isa13 for d in expected.values()}) == len(lw.feed_ids), "an interchange number twice"
        assert arrived == sorted(expected), "the server holds exactly the delivered files"
        verdict = ledger.verify_chain()
        assert verdict.ok, verdict.first_broken
    finally:
        ledger.close()

    scratch.mkdir(parents=True, exist_ok=True)
    for name, delivery in expected.items():
        cipher = lw.inbox / name
        if delivery.ciphertext_sha256 is not None:  # a reconciled delivery recorded name and size only
            assert _sha256(cipher) == delivery.ciphertext_sha256, f"{name}: ciphertext differs from the ledger"
        assert cipher.stat().st_size == delivery.size, f"{name}: size differs from the ledger"
        plain = scratch / f"{name}.834"
        result = lw.keys.carrier.decrypt_file(cipher, plain, require_signer=lw.keys.signer_fingerprint)
        assert result is not None
        assert _sha256(plain) == delivery.payload_sha256, f"{name}: payload differs from the ledger"
        plain.unlink()

    audit = subprocess.run(
        [sys.executable, "-c", "import sys; from carrierfeeds.cli import main; "
         "sys.argv = ['carrierfeeds', 'audit', 'verify', '--json']; main()"],
        env={**child_env(), "CARRIERFEEDS_LEDGER_URL": str(lw.settings.ledger_url),
             "CARRIERFEEDS_DATA_DIR": str(lw.settings.data_dir),
             # The ledger's anchors are signed with a key in the keys folder the workers used.
             "CARRIERFEEDS_KEYS_DIR": str(lw.settings.resolved_keys_dir)},
        capture_output=True, text=True, timeout=300, check=False)
    assert audit.returncode == 0, audit.stdout[-2000:] + audit.stderr[-2000:]
    verified = json.loads(audit.stdout)
    assert verified["ok"] is True
    return {"files": len(arrived), "chain_rows": verified["rows_checked"],
            "reconciled": sum(d.status == "reconciled" for d in expected.values())}


def rss_growth_mb(outcome: LoadOutcome) -> dict[str, float]:
    """Per worker: how far its peak RSS rose after its first feed (MB)."""
    return {w["worker"]: (w["hwm_end_kb"] - w["hwm_after_first_kb"]) / 1024 for w in outcome.workers
            if w["hwm_after_first_kb"] is not None}


def peak_rss_mb(outcome: LoadOutcome) -> dict[str, float]:
    """Per worker: its peak RSS over the whole load (MB)."""
    return {w["worker"]: w["hwm_end_kb"] / 1024 for w in outcome.workers}
