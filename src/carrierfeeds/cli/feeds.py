"""`carrierfeeds feeds`: load and check every feed's configuration before a run does."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from carrierfeeds.cli.common import _emit, app
from carrierfeeds.errors import ConfigError, TransientError
from carrierfeeds.outcomes import ExitCode
from carrierfeeds.settings import Settings, feed_paths

feeds_app = typer.Typer(help="Feed configuration.", no_args_is_help=True)
app.add_typer(feeds_app, name="feeds")


@feeds_app.command("check")
def feeds_check(as_json: Annotated[bool, typer.Option("--json", help="each file's verdict as JSON")] = False) -> None:
    """Load every feed and the mapping, schema and suite each names; report every problem.

    Each suite is built by Great Expectations itself (a run evaluates common expectation types as masks
    and may never hand the suite to GX), so an edit GX would refuse is caught here, before any run.
    Every mapping in the mappings folder must load (a run judges plan codes by all of them), and a
    schema's ``plan_codes`` may map only onto plans some mapping lists (or its ``plans_not_sent``):
    a target no mapping knows would make every row of that plan an ``unknown_plan`` finding.
    """
    from carrierfeeds.config import CensusSchema, load_feed, load_mapping
    from carrierfeeds.settings import bundle_from_feed
    from carrierfeeds.validation import check_suite

    settings = Settings()
    results: list[dict[str, Any]] = []
    shared: list[dict[str, Any]] = []  # problems of files feeds share: mappings, schemas
    known: set[str] = set()
    for mapping_path in sorted(settings.mappings_dir.glob("*.yaml")):
        try:
            loaded = load_mapping(mapping_path)
            known.update(loaded.plans)
            if loaded.aggregation is not None:  # its employers' feeds must share one file's key and target
                from carrierfeeds.run.aggregate import aggregate_bundles

                aggregate_bundles(settings, loaded.mapping_id)
        except ConfigError as exc:
            shared.append({"file": str(mapping_path), "ok": False, "error": exc.message})
    schemas: dict[str, CensusSchema] = {}
    suites: dict[Path, ConfigError | None] = {}  # feeds sharing a suite build it once
    for path in feed_paths(settings):
        try:
            bundle = bundle_from_feed(settings, load_feed(path), path)
            schemas.setdefault(bundle.schema.schema_id, bundle.schema)
            if bundle.suite_path not in suites:
                try:
                    check_suite(bundle.suite_path)
                    suites[bundle.suite_path] = None
                except ConfigError as exc:
                    suites[bundle.suite_path] = exc
            if (refused := suites[bundle.suite_path]) is not None:
                raise refused
            _check_sql_login(settings, bundle.feed.census.source)
            results.append({"file": str(path), "ok": True})
        except (ConfigError, TransientError) as exc:
            results.append({"file": str(path), "ok": False, "error": exc.message})
    for schema_id, schema in sorted(schemas.items()):
        unknown = [(name, code) for name, code in schema.plan_codes.items()
                   if code not in known and code not in schema.plans_not_sent]
        if unknown:
            shared.append({"file": str(settings.schemas_dir / f"{schema_id}.yaml"), "ok": False, "error": "; ".join(
                f"plan_codes[{name!r}] maps to {code!r}, which no mapping in {settings.mappings_dir} lists "
                "(a typo? a plan the employer runs elsewhere goes in plans_not_sent)" for name, code in unknown)})
    ok = all(r["ok"] for r in results) and bool(results) and not shared
    lines = [f"{'ok  ' if r['ok'] else 'FAIL'} {r['file']}" + ("" if r["ok"] else f"\n     {r['error']}")
             for r in [*results, *shared]] or [f"no feeds in {settings.feeds_dir}"]
    _emit({"ok": ok, "feeds": results, "shared": shared}, as_json, lines)
    raise typer.Exit(ExitCode.OK if ok else ExitCode.USAGE)


def _check_sql_login(settings: Settings, source: Any) -> None:
    """A SQL census source's login must be read-only (census.sql_source); checked where its connection
    file is in the keys directory (an Airflow connection is checked by the run itself, before its query)."""
    from carrierfeeds.census.sources import load_sql_url
    from carrierfeeds.census.sql_source import read_only_login_problems
    from carrierfeeds.config import SqlSource

    if not isinstance(source, SqlSource) or not (settings.resolved_keys_dir / f"{source.connection_id}.json").exists():
        return
    problems = read_only_login_problems(load_sql_url(settings.resolved_keys_dir, source.connection_id))
    if problems:
        raise ConfigError("the login is not read-only: " + "; ".join(problems),
                          field=f"census.source (connection {source.connection_id})")


