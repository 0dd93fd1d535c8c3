"""Where things live: config folders, data directory, keys, gpg home, ledger URL (env CARRIERFEEDS_*).

Defaults are relative to the working directory, so a checkout runs as it is: ``feeds/``, ``mappings/``,
``schemas/`` for config and ``var/`` for everything a run writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from carrierfeeds.config import (
    CarrierMapping,
    CensusSchema,
    ConfigCache,
    Feed,
    PlanCatalogue,
    load_feed,
    load_mapping,
    load_schema,
)
from carrierfeeds.errors import ConfigError

if TYPE_CHECKING:
    from carrierfeeds.ledger import Ledger
    from carrierfeeds.staging import StagingStore

#: Days employee-level data is kept after an employer's contract ends, unless set otherwise.
DEFAULT_EMPLOYEE_DATA_RETENTION_DAYS = 90
#: Years ledger metadata is kept, unless set otherwise.
DEFAULT_LEDGER_RETENTION_YEARS = 7
#: pyx12 is slow (benchmarks/README.md): above this many members the gate runs it on a deterministic sample.
DEFAULT_PYX12_MAX_MEMBERS = 2_000
#: Families per chunk of a census validated in chunks (figures in benchmarks/README.md).
DEFAULT_CHUNK_FAMILIES = 100_000


class Settings(BaseSettings):
    """Deployment settings; every field can be set as ``CARRIERFEEDS_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="CARRIERFEEDS_", frozen=True, extra="ignore")

    feeds_dir: Path = Path("feeds")
    mappings_dir: Path = Path("mappings")
    schemas_dir: Path = Path("schemas")
    data_dir: Path = Path("var")
    keys_dir: Path | None = None
    gnupg_home: Path | None = None
    ledger_url: str | None = None
    token_key_file: Path | None = None
    staging_url: str | None = None
    #: Where signed anchors of the ledger's chain head are appended (``ledger-anchors.jsonl``); keep it
    #: off the database host. Default ``<data_dir>/anchors``.
    ledger_anchor_dir: Path | None = None
    #: Read by ``carrierfeeds purge`` and the housekeeping DAG; ``purge --retention-days`` overrides it.
    employee_data_retention_days: int = Field(DEFAULT_EMPLOYEE_DATA_RETENTION_DAYS, ge=0)
    #: Read by ``carrierfeeds purge`` and the housekeeping DAG; ``purge --retention-years`` overrides it.
    ledger_retention_years: int = Field(DEFAULT_LEDGER_RETENTION_YEARS, ge=1)
    #: The conformance gate runs pyx12 over a whole 834 of at most this many members, and over a
    #: deterministic sample of whole families (this many members) cut from a larger one; the structural
    #: check always reads the whole file.
    pyx12_max_members: int = Field(DEFAULT_PYX12_MAX_MEMBERS, ge=1)
    #: The conformance stage starts gpg on the rendered file beside its checks (another core), and the
    #: ciphertext is kept only if the gate passes; the encrypt stage then checks the key and that
    #: ciphertext instead of encrypting. False: gpg runs only in the encrypt stage.
    encrypt_ahead: bool = True
    #: The validate stage reads the census in blocks and validates it, and writes the accepted file, in
    #: chunks of about this many whole families: its memory follows the chunk, not the census.
    chunk_families: int = Field(DEFAULT_CHUNK_FAMILIES, ge=1)

    @property
    def resolved_keys_dir(self) -> Path:
        return self.keys_dir or self.data_dir / "keys"

    @property
    def resolved_gnupg_home(self) -> Path:
        return self.gnupg_home or self.data_dir / "gnupg"

    @property
    def resolved_ledger_url(self) -> str:
        return self.ledger_url or f"sqlite:///{(self.data_dir / 'ledger.sqlite').resolve()}"

    @property
    def resolved_ledger_anchor_dir(self) -> Path:
        return self.ledger_anchor_dir or self.data_dir / "anchors"

    @property
    def staging_dir(self) -> Path:
        return self.data_dir / "staging"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def resolved_token_key_file(self) -> Path:
        return self.token_key_file or self.resolved_keys_dir / "member-token.key"


def require_data_dir(settings: Settings) -> Path:
    """The data directory, created if missing and proven writable; else one error naming the setting:
    ConfigError when it cannot be used at all (a file, no permission, read-only), TransientError when
    it is full (freeing space fixes it)."""
    import errno
    import tempfile

    from carrierfeeds.errors import TransientError

    where = settings.data_dir
    try:
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=where, prefix=".probe-"):
            pass
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise TransientError(f"CARRIERFEEDS_DATA_DIR: {where} is full ({reason}); retry once space is freed",
                                 details={"setting": "CARRIERFEEDS_DATA_DIR"}) from None
        raise ConfigError(f"{where} is not a usable data directory ({reason})", field="CARRIERFEEDS_DATA_DIR",
                          details={"setting": "CARRIERFEEDS_DATA_DIR"}) from None
    return where


@dataclass(frozen=True)
class FeedBundle:
    """A feed with everything it names, loaded and cross-checked."""

    feed: Feed
    mapping: CarrierMapping
    schema: CensusSchema
    suite_path: Path


def feed_paths(settings: Settings) -> list[Path]:
    return sorted(settings.feeds_dir.glob("*.yaml"))


def load_bundle(settings: Settings, feed_id: str) -> FeedBundle:
    """Load a feed and the mapping, schema and suite it names; cross-references checked."""
    path = settings.feeds_dir / f"{feed_id}.yaml"
    if not path.exists():
        raise ConfigError(f"no feed {feed_id!r} in {settings.feeds_dir}"
                          + did_you_mean(feed_id, [p.stem for p in feed_paths(settings)]), file=str(path))
    return bundle_from_feed(settings, load_feed(path), path)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the known name closest to a mistyped ``name``, else empty."""
    import difflib

    close = difflib.get_close_matches(name, sorted(set(known)), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def bundle_from_feed(settings: Settings, feed: Feed, path: Path, *, cache: ConfigCache | None = None) -> FeedBundle:
    """``feed`` with its mapping and schema, checked against each other; ``cache`` shares the mapping
    and schema files between the feeds of one pass (each is read once)."""
    mapping_path = settings.mappings_dir / f"{feed.mapping_id}.yaml"
    schema_path = settings.schemas_dir / f"{feed.census.schema_id}.yaml"
    for field, wanted, folder in (("mapping_id", mapping_path, settings.mappings_dir),
                                  ("census.schema_id", schema_path, settings.schemas_dir)):
        if not wanted.exists():
            raise ConfigError(f"file {wanted.name} not found in {folder}"
                              + did_you_mean(wanted.stem, [p.stem for p in folder.glob("*.yaml")]),
                              file=str(path), field=field)
    mapping = load_mapping(mapping_path) if cache is None else cache.mapping(mapping_path)
    schema = load_schema(schema_path) if cache is None else cache.schema(schema_path)
    suite_path = settings.schemas_dir / schema.suite
    if not suite_path.is_file():
        raise ConfigError(f"suite file {schema.suite!r} not found in {settings.schemas_dir}",
                          file=str(settings.schemas_dir / f"{schema.schema_id}.yaml"), field="suite")
    if feed.output.format == "flatfile" and mapping.flatfile is None:
        raise ConfigError(f"output.format is flatfile but mapping {mapping.mapping_id!r} has no flatfile layout",
                          file=str(path), field="output.format")
    unmapped = [p for p in feed.authorization.plans if p not in mapping.plans]
    if unmapped:
        raise ConfigError(f"authorised plan(s) {unmapped} have no entry in mapping {mapping.mapping_id!r}",
                          file=str(path), field="authorization.plans")
    return FeedBundle(feed=feed, mapping=mapping, schema=schema, suite_path=suite_path)


def plan_catalogue(settings: Settings, bundle: FeedBundle) -> PlanCatalogue:
    """The plan codes ``bundle``'s census may hold: its authorised plans, and every plan any mapping in
    the mappings folder lists (one employer's census commonly feeds several carriers, so another
    carrier's plan is known, merely not this carrier's); validation, preview and a run all judge plans
    by this one catalogue.

    Every mapping is loaded: one that does not load is a ConfigError naming it (fail closed: without it
    a plan it lists could not be told from a typo)."""
    mappings = [bundle.mapping]
    for path in sorted(settings.mappings_dir.glob("*.yaml")):
        if path.stem != bundle.mapping.mapping_id:
            mappings.append(load_mapping(path))
    return PlanCatalogue.for_feed(bundle.feed, bundle.schema, mappings)


def open_store(settings: Settings) -> StagingStore:
    """The CLI's staging store: ``staging_url`` or the local staging folder; key file in the keys folder."""
    from carrierfeeds.staging import KEY_FILE_NAME, StagingKey, StagingStore

    key = StagingKey.load_or_create(private_dir(settings.resolved_keys_dir) / KEY_FILE_NAME)
    return StagingStore(settings.staging_url or settings.staging_dir, key)


def open_ledger(settings: Settings) -> Ledger:
    """The ledger, upgraded; an unusable data dir, a bad URL or an unreachable server is one error
    naming its setting (ConfigError: fix it; TransientError: retry later), never a driver traceback."""
    import sqlalchemy as sa

    from carrierfeeds.ledger import Ledger
    from carrierfeeds.ledger.connect import connect_failure

    require_data_dir(settings)
    setting = "CARRIERFEEDS_LEDGER_URL" if settings.ledger_url else "CARRIERFEEDS_DATA_DIR"
    ledger = Ledger.open(settings.resolved_ledger_url, setting=setting)
    try:
        ledger.upgrade()
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        ledger.close()
        raise connect_failure(settings.resolved_ledger_url, exc, setting=setting) from None
    return ledger


def private_dir(path: Path) -> Path:
    """``path`` as a folder only its owner can enter (created 0700, or tightened to it)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


#: Every feed's Airflow DAG id is this prefix and the feed id (the console links to it, the DAG file builds it).
DAG_PREFIX = "feed__"


def dag_id_for(feed_id: str) -> str:
    """The Airflow DAG id of ``feed_id``'s feed."""
    return f"{DAG_PREFIX}{feed_id}"
