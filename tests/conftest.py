"""Shared real parts: gpg homes, a loopback OpenSSH sshd, PostgreSQL databases, feed workspaces, and the
shipped demo feed and mapping."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from carrierfeeds.config import CarrierMapping, Feed, load_feed, load_mapping
from carrierfeeds.testing.webhook import WebhookReceiver, webhook_receiver

ROOT = Path(__file__).resolve().parents[1]
PG_ENV = "CARRIERFEEDS_TEST_PG_URL"
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


def _pg_reachable(url: str) -> str | None:
    """None when PostgreSQL answers at ``url``, else the reason."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:  # any failure to connect is the answer we want
        return f"{type(exc).__name__}"
    return None


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """PostgreSQL for tests: fail when CARRIERFEEDS_TEST_PG_URL is set and unreachable, else skip."""
    url = os.environ.get(PG_ENV)
    reason = _pg_reachable(url or PG_DEFAULT)
    if reason is not None:
        if url:
            pytest.fail(f"{PG_ENV} is set but PostgreSQL is unreachable ({reason})")
        pytest.skip(f"PostgreSQL not reachable at {PG_DEFAULT} ({reason}); set {PG_ENV} to require it")
    return url or PG_DEFAULT


@pytest.fixture
def pg_database(pg_admin_url: str) -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database for one test, dropped afterwards."""
    import sqlalchemy as sa

    name = f"cf_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The ledger on both backends the product supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    return str(request.getfixturevalue("pg_database"))


@pytest.fixture(scope="session")
def demo_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Our keyring (carrier public key + our signing key) and the carrier's own keyring."""
    from carrierfeeds.testing.gpg import make_keyring

    keys = make_keyring(tmp_path_factory.mktemp("gpg") / "home")
    yield keys
    keys.stop_agents()  # gpg-agents outlive the test session otherwise


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real OpenSSH sshd on 127.0.0.1 playing the carrier's SFTP server."""
    from carrierfeeds.testing.sshd import running_sshd

    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@dataclass
class FeedWorkspace:
    settings: Any
    feed: Any
    inbound: Path
    inbox: Path
    keys: Any
    keys_dir: Path

    def write_census(self, members: int, seed: int, as_of: Any, name: str | None = None) -> Path:
        from carrierfeeds.census.generate import generate_census, write_census_csv

        frame = generate_census(members, seed, as_of=as_of)
        path = self.inbound / (name or f"census_{as_of:%Y%m%d}.csv")
        write_census_csv(frame, path)
        return path


@pytest.fixture
def sftp_workspace(tmp_path: Path, demo_keys: Any, sshd_server: Any, ledger_url: str) -> FeedWorkspace:
    """The demo feed in a private folder, delivering to its own inbox on the loopback sshd."""
    from carrierfeeds.config import SftpDelivery
    from carrierfeeds.demo import CONNECTION_ID, prepare_workspace

    inbox = sshd_server.root / uuid.uuid4().hex[:10]
    inbox.mkdir()
    keys_dir = tmp_path / "keys"
    sshd_server.write_keys_dir(keys_dir, CONNECTION_ID)
    ws = prepare_workspace(tmp_path / "ws", keys=demo_keys, keys_dir=keys_dir, config_root=ROOT,
                           ledger_url=ledger_url,
                           delivery=SftpDelivery(connection_id=CONNECTION_ID, remote_dir=str(inbox)))
    return FeedWorkspace(settings=ws.settings, feed=ws.feed, inbound=ws.inbound, inbox=inbox,
                         keys=demo_keys, keys_dir=keys_dir)


@pytest.fixture(scope="module")
def feed() -> Feed:
    """The shipped demo feed (a test module may define its own ``feed``)."""
    return load_feed(ROOT / "feeds" / "acme-sunrise-medical.yaml")


@pytest.fixture(scope="module")
def mapping() -> CarrierMapping:
    """The shipped demo carrier mapping."""
    return load_mapping(ROOT / "mappings" / "sunrise-health.yaml")


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """A webhook on 127.0.0.1 that records every POST (path, headers, JSON body)."""
    with webhook_receiver() as server:
        yield server
