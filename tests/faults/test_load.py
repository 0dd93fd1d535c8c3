"""Load: many feeds on 4 worker processes sharing a PostgreSQL ledger, delivering over SFTP to one real
sshd, directly or through a relay that resets every k-th connection. Afterwards every feed is on the
carrier's side exactly once (ledger, server, gpg, audit chain), and no worker's memory grew with the
number of feeds it ran.

Without faults the workers call ``run_feed`` (the brief's "subprocesses running run_feed"); through
the resetting relay they run stage by stage with Airflow's retry rule, so a lost connection fails the
deliver stage and its retry must find what the lost attempt left (a temp file, or the renamed file).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from loadkit import (
    LoadOutcome,
    check_exactly_once,
    make_load_workspace,
    peak_rss_mb,
    point_connection_at,
    rss_growth_mb,
    run_workers,
)
from relay import Relay, Tripped, running_relay

from carrierfeeds.testing.gpg import DemoKeys
from carrierfeeds.testing.sshd import Sshd

log = logging.getLogger(__name__)

WORKERS = 4
#: How far a worker's peak RSS may rise after its first feed (imports, pools and caches are warm by
#: then): a per-feed leak of even 1 MB over 50 feeds exceeds it.
GROWTH_CAP_MB = 48


def _check_rss(outcome: LoadOutcome) -> None:
    growth = rss_growth_mb(outcome)
    log.info("worker peak RSS (MB): %s; growth after the first feed (MB): %s", peak_rss_mb(outcome), growth)
    assert len(growth) == WORKERS, "every worker ran at least one feed"
    assert max(growth.values()) < GROWTH_CAP_MB, growth


def _load(tmp_path: Path, demo_keys: DemoKeys, sshd_server: Sshd, pg_database: str, feeds: int,
          members: tuple[int, int]) -> None:
    lw = make_load_workspace(tmp_path, keys=demo_keys, sshd=sshd_server, ledger_url=pg_database, feeds=feeds,
                             members=members, seed=feeds)
    started = time.monotonic()
    outcome = run_workers(lw, workers=WORKERS, mode="run_feed")
    worked = time.monotonic()
    figures = check_exactly_once(lw, outcome, tmp_path / "carrier")
    log.info("load of %d feeds: %s, retries %d; workers %.1f s, checks %.1f s", feeds, figures,
             outcome.retried(), worked - started, time.monotonic() - worked)
    _check_rss(outcome)


@pytest.mark.postgres
def test_20_feeds_on_4_workers_sharing_a_postgres_ledger_deliver_each_exactly_once(
        tmp_path: Path, demo_keys: DemoKeys, sshd_server: Sshd, pg_database: str) -> None:
    _load(tmp_path, demo_keys, sshd_server, pg_database, feeds=20, members=(20, 50))


@pytest.mark.slow
@pytest.mark.postgres
def test_200_feeds_on_4_workers_sharing_a_postgres_ledger_deliver_each_exactly_once(
        tmp_path: Path, demo_keys: DemoKeys, sshd_server: Sshd, pg_database: str) -> None:
    _load(tmp_path, demo_keys, sshd_server, pg_database, feeds=200, members=(20, 30))


def _finals(inbox: Path) -> int:
    """Final (not temporary) files on the server."""
    return sum(1 for p in inbox.iterdir() if not p.name.startswith("."))


def _load_through_resets(tmp_path: Path, demo_keys: DemoKeys, sshd_server: Sshd, pg_database: str, feeds: int,
                         k: int) -> None:
    lw = make_load_workspace(tmp_path, keys=demo_keys, sshd=sshd_server, ledger_url=pg_database, feeds=feeds,
                             members=(20, 30), seed=feeds + k)
    # Every k-th connection is reset. Half of them at a random byte offset (a session moves ~8-9 kB both
    # ways together: the reset lands anywhere from the banner to the end of the upload); the other half
    # as soon as a new final file appears on the server, before the next server-to-client bytes: a
    # rename's reply that never reaches the client (when that connection made it; else an upload cut
    # short).
    offsets = Relay.every_at_random(k, low=0, high=9_000, seed=feeds * 31 + k)

    def reset_at(n: int) -> int | None:
        return offsets(n) if n % (2 * k) else None

    def trip(n: int) -> Tripped | None:
        if n % (2 * k):
            return None
        before = _finals(lw.inbox)
        return lambda _chunks: _finals(lw.inbox) > before

    with running_relay((sshd_server.host, sshd_server.port), reset_at=reset_at, trip=trip) as relay:
        point_connection_at(lw.keys_dir, relay.port, sshd_server.host_public_key_line)
        started = time.monotonic()
        # One connection per transport: each reset fails the deliver stage, which is retried as a task.
        outcome = run_workers(lw, workers=WORKERS, mode="stages", transport_retries=1)
        worked = time.monotonic()
    stats = relay.stats
    log.info("relay: %d connections, %d reset at %s; sessions (bytes) %s", stats.connections, stats.resets,
             stats.reset_offsets, sorted(stats.session_bytes))
    log.info("slowest feeds: %s", sorted(((a["seconds"], a["feed_id"], a["errors"]) for a in outcome.accounts),
                                         reverse=True)[:8])
    assert stats.resets >= feeds // k // 2, "the relay did reset connections"
    assert outcome.retried() >= 1, "a reset deliver stage was retried"
    figures = check_exactly_once(lw, outcome, tmp_path / "carrier")
    log.info("load of %d feeds through resets: %s, stage retries %d; workers %.1f s, checks %.1f s", feeds,
             figures, outcome.retried(), worked - started, time.monotonic() - worked)
    _check_rss(outcome)


@pytest.mark.postgres
def test_20_feeds_through_a_relay_resetting_every_3rd_connection_deliver_each_exactly_once(
        tmp_path: Path, demo_keys: DemoKeys, sshd_server: Sshd, pg_database: str) -> None:
    _load_through_resets(tmp_path, demo_keys, sshd_server, pg_database, feeds=20, k=3)


@pytest.mark.slow
@pytest.mark.postgres
def test_200_feeds_through_a_relay_resetting_every_3rd_connection_deliver_each_exactly_once(
        tmp_path: Path, demo_keys: DemoKeys, sshd_server: Sshd, pg_database: str) -> None:
    _load_through_resets(tmp_path, demo_keys, sshd_server, pg_database, feeds=200, k=3)

