"""``carrierfeeds demo``: the demo feed end to end on this machine, with real gpg and a real sshd.

It makes a private workspace (keys, a loopback OpenSSH server playing the carrier, a ledger), writes
its own copy of ``feeds/acme-sunrise-medical.yaml`` pinning the keys it generated, generates a synthetic
census, runs the feed, runs it again to show nothing is sent twice, then plays the carrier: decrypts
what arrived, checks it against the ledger, and throws the plaintext away.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from carrierfeeds.config import Feed, LocalDelivery, LocalSource, SftpDelivery, load_feed
from carrierfeeds.errors import ConfigError
from carrierfeeds.settings import Settings

DEMO_FEED = "acme-sunrise-medical"
CONNECTION_ID = "sunrise_sftp"
MARKER = ".carrierfeeds-demo"


def _fresh_workdir(workdir: Path, *, reset: bool, ask: Callable[[str], bool] | None,
                   echo: Callable[[str], Any]) -> None:
    """Start clean. A folder an earlier demo made holds that demo's ledger and keys: it is wiped only
    with ``reset`` or when ``ask`` (a person at a terminal) says yes; a folder the demo did not make
    never is."""
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            raise ConfigError(f"{workdir} is not empty and was not made by the demo; choose another --workdir")
        question = f"{workdir} holds a previous demo (its ledger, keys and deliveries); delete it and start again?"
        if not reset and not (ask is not None and ask(question)):
            raise ConfigError(f"{workdir} holds a previous demo (its ledger, keys and deliveries): run with "
                              "--reset to delete it and start again, or choose another --workdir",
                              field="--workdir")
        shutil.rmtree(workdir)
        echo(f"previous demo workspace deleted: {workdir}")
    workdir.mkdir(parents=True, mode=0o700, exist_ok=True)
    (workdir / MARKER).write_text("made by `carrierfeeds demo`; safe to delete\n")


def demo_environment(settings: Settings) -> dict[str, str]:
    """The settings that point ``run``, ``audit`` and ``status`` at a demo workspace, as environment."""
    return {"CARRIERFEEDS_FEEDS_DIR": str(settings.feeds_dir), "CARRIERFEEDS_MAPPINGS_DIR": str(settings.mappings_dir),
            "CARRIERFEEDS_SCHEMAS_DIR": str(settings.schemas_dir), "CARRIERFEEDS_DATA_DIR": str(settings.data_dir),
            "CARRIERFEEDS_KEYS_DIR": str(settings.resolved_keys_dir),
            "CARRIERFEEDS_GNUPG_HOME": str(settings.resolved_gnupg_home),
            "CARRIERFEEDS_LEDGER_URL": settings.resolved_ledger_url}


@dataclass(frozen=True)
class Workspace:
    """A self-contained deployment in one folder: settings, the feed copy, the carrier's server."""

    settings: Settings
    feed: Feed
    inbound: Path


def prepare_workspace(workdir: Path, *, keys: Any, delivery: SftpDelivery | LocalDelivery,
                      keys_dir: Path, config_root: Path, ledger_url: str | None = None,
                      feed_id: str = DEMO_FEED) -> Workspace:
    """Copy a shipped feed into ``workdir`` pinning ``keys`` and ``delivery``; settings to match.

    The demo, the end-to-end tests and the benchmarks all run feeds this way.
    """
    template = load_feed(config_root / "feeds" / f"{feed_id}.yaml")
    feed = template.model_copy(update={
        "encryption": template.encryption.model_copy(update={
            "recipient_fingerprint": keys.carrier_fingerprint,
            "signer_fingerprint": keys.signer_fingerprint}),
        "delivery": delivery,
    })
    feeds_dir = workdir / "feeds"
    feeds_dir.mkdir(parents=True, exist_ok=True)
    (feeds_dir / f"{feed_id}.yaml").write_text(
        f"# written by carrierfeeds from feeds/{feed_id}.yaml, pinning generated keys\n"
        + yaml.safe_dump(feed.model_dump(mode="json"), sort_keys=False))
    source = feed.census.source
    if not isinstance(source, LocalSource):
        raise ConfigError(f"the demo workspace reads a local census folder, not a {source.kind} source",
                          field="census.source.kind")
    inbound = workdir / source.path
    inbound.mkdir(parents=True, exist_ok=True, mode=0o700)
    settings = Settings(feeds_dir=feeds_dir, mappings_dir=config_root / "mappings",
                        schemas_dir=config_root / "schemas", data_dir=workdir, keys_dir=keys_dir,
                        gnupg_home=keys.ours.home, ledger_url=ledger_url)
    return Workspace(settings=settings, feed=feed, inbound=inbound)


def run_demo(workdir: Path, *, members: int, seed: int, clock: Callable[[], datetime],
             say: Callable[[str], Any] | None = None, config_root: Path | None = None, reset: bool = False,
             ask: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """Run the demo; returns a PHI-free account of what happened (and prints it through ``say``).

    A previous demo in ``workdir`` is deleted only with ``reset``, or when ``ask`` says yes."""
    from carrierfeeds.testing.gpg import make_keyring

    echo = say or (lambda _line: None)
    root = (config_root or Path.cwd()).resolve()
    _fresh_workdir(workdir, reset=reset, ask=ask, echo=echo)
    today = clock().date()

    echo(f"demo workspace: {workdir}")
    keys = make_keyring(workdir / "gnupg")
    echo(f"generated keys: carrier {keys.carrier_fingerprint}, our signing key {keys.signer_fingerprint}")

    try:
        return _demo_with_keys(workdir, keys, members=members, seed=seed, clock=clock, echo=echo, root=root,
                               today=today)
    finally:
        keys.stop_agents()


def _demo_with_keys(workdir: Path, keys: Any, *, members: int, seed: int, clock: Callable[[], datetime],
                    echo: Callable[[str], Any], root: Path, today: Any) -> dict[str, Any]:
    from carrierfeeds.census.generate import generate_census, write_census_csv
    from carrierfeeds.run.context import RunRef
    from carrierfeeds.run.stages import run_feed
    from carrierfeeds.settings import open_ledger
    from carrierfeeds.testing.sshd import running_sshd

    with running_sshd(workdir / "sshd") as sshd:
        keys_dir = workdir / "keys"
        sshd.write_keys_dir(keys_dir, CONNECTION_ID)
        echo(f"carrier SFTP server: OpenSSH sshd on {sshd.host}:{sshd.port}, host key pinned in {keys_dir}")
        ws = prepare_workspace(workdir, keys=keys, keys_dir=keys_dir, config_root=root,
                               delivery=SftpDelivery(connection_id=CONNECTION_ID, remote_dir=str(sshd.root)))
        settings = ws.settings
        census_file = ws.inbound / f"census_{today:%Y%m%d}.csv"
        frame = generate_census(members, seed, as_of=today)
        write_census_csv(frame, census_file)
        echo(f"synthetic census: {frame['member_id'].nunique()} members in {len(frame)} rows -> "
             f"{census_file.relative_to(workdir)}")

        ref = RunRef.for_day(DEMO_FEED, today)
        first = run_feed(settings, ref, clock=clock, actor="demo")
        echo(f"run {first.run_id}: {first.status}; {first.members} members, ISA13 {first.isa13}, "
             f"payload sha256 {first.payload_sha256}")
        if first.status != "delivered":
            echo(f"the demo run did not deliver: {(first.error or {}).get('message')}")
            return {"ok": False, "first_run": first.as_dict()}

        again = run_feed(settings, ref, clock=clock, actor="demo")
        echo(f"rerun of the same day: {again.status} (nothing sent twice)")

        arrived = sorted(p for p in sshd.root.iterdir() if p.is_file())
        echo(f"carrier inbox holds: {', '.join(p.name for p in arrived)}")
        carrier_check = _play_carrier(keys, arrived, first.payload_sha256 or "")
        echo(f"carrier decrypted {carrier_check['file']}: sha256 matches the ledger: "
             f"{carrier_check['sha256_matches']}, signature valid: {carrier_check['signature_valid']}, "
             f"members in file: {carrier_check['members']}")

    ledger = open_ledger(settings)
    verdict = ledger.verify_chain()
    delivery = ledger.find_delivery(feed_id=DEMO_FEED, interval_start=today)
    ledger.close()
    leftovers = sorted(p.name for folder in (settings.staging_dir, settings.data_dir / "scratch")
                       for p in folder.rglob("*")
                       if p.is_file() and not p.name.removesuffix(".enc").endswith((".pgp", ".asc", "state.json",
                                                                                     ".key")))
    echo(f"ledger: {settings.resolved_ledger_url} (chain intact: {verdict.ok}, {verdict.rows_checked} rows); "
         f"delivery status {delivery.status if delivery else None}")
    echo(f"plaintext left in staging: {leftovers or 'none'}")
    ok = (first.status == "delivered" and again.status == "already_delivered" and len(arrived) == 1
          and carrier_check["sha256_matches"] and carrier_check["signature_valid"]
          and carrier_check["members"] == first.members and verdict.ok and not leftovers)
    echo("demo OK" if ok else "demo FAILED")
    environment = demo_environment(settings)
    echo("to point `carrierfeeds audit`, `status` and `run` at this workspace (its carrier's sshd has "
         "stopped: a run of a new day would fail to deliver):")
    for name, value in environment.items():
        echo(f"  export {name}={shlex.quote(value)}")
    return {"ok": ok, "first_run": first.as_dict(), "rerun_status": again.status,
            "carrier_inbox": [p.name for p in arrived], "carrier_check": carrier_check,
            "ledger_url": settings.resolved_ledger_url, "chain_ok": verdict.ok,
            "staging_plaintext_left": leftovers, "environment": environment}


def _play_carrier(keys: Any, arrived: list[Path], payload_sha256: str) -> dict[str, Any]:
    """Decrypt with the carrier's own key in a throwaway folder; keep only the verdict."""
    if len(arrived) != 1:
        return {"file": None, "sha256_matches": False, "signature_valid": False, "members": 0}
    with tempfile.TemporaryDirectory(prefix="carrier-") as tmp:
        plain = Path(tmp) / "received.834"
        result = keys.carrier.decrypt_file(arrived[0], plain)
        data = plain.read_bytes()
        members = sum(1 for segment in data.split(b"~") if segment.lstrip().startswith(b"INS*"))
        return {"file": arrived[0].name, "sha256_matches": hashlib.sha256(data).hexdigest() == payload_sha256,
                "signature_valid": bool(result.valid_signature) and
                result.signer_fingerprint == keys.signer_fingerprint, "members": members}
