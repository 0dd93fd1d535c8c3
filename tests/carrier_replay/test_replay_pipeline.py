"""Carrier replay through the real pipeline: ``run_feed`` day after day with a ``delivery: {kind: local}``
feed, so the stage wiring is what the carrier sees (the census source, validation policy, the snapshot
advanced only after a delivery, rejected and refused days, gpg). The carrier decrypts what arrived in its
inbox and applies it; after every day its roster equals the census's (tests/carrier_replay/expected.py).
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from tests.carrier_replay.carrier import Carrier
from tests.carrier_replay.expected import Config, compare
from tests.carrier_replay.history import Event, play
from tests.carrier_replay.reader import read_834
from tests.carrier_replay.replay import ROOT, configured, expected_for

from carrierfeeds.census.columns import CANONICAL_COLUMNS
from carrierfeeds.config import LocalDelivery
from carrierfeeds.demo import prepare_workspace
from carrierfeeds.run.context import RunRef
from carrierfeeds.run.stages import run_feed

pytestmark = pytest.mark.slow

_STATUS = {"delivered": "delivered", "rejected": "not_delivered", "refused": "not_delivered",
           "nothing_to_send": "no_changes", "no_new_census": "no_changes"}


def _workspace(tmp_path: Path, keys: Any, cfg: Config) -> tuple[Any, Path]:
    feed, mapping = configured(cfg)
    ws = prepare_workspace(tmp_path / "ws", keys=keys, keys_dir=tmp_path / "keys", config_root=ROOT,
                           delivery=LocalDelivery(path="carrier-inbox"))
    feed_file = ws.settings.feeds_dir / f"{feed.feed_id}.yaml"
    data = yaml.safe_load(feed_file.read_text())
    data["validation"] = {"policy": cfg.policy}
    data["authorization"]["plans"] = list(feed.authorization.plans)  # the volume lines too
    feed_file.write_text(yaml.safe_dump(data, sort_keys=False))
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / f"{mapping.mapping_id}.yaml").write_text(
        yaml.safe_dump(mapping.model_dump(mode="json", exclude_none=True), sort_keys=False))
    settings = ws.settings.model_copy(update={"mappings_dir": mappings})
    inbox = ws.settings.data_dir / "carrier-inbox"
    inbox.mkdir(exist_ok=True)
    return (settings, ws.inbound, feed.feed_id), inbox


def _replay_pipeline(tmp_path: Path, keys: Any, cfg: Config, events: list[list[Event]]) -> None:
    (settings, inbound, feed_id), inbox = _workspace(tmp_path, keys, cfg)
    feed, mapping = configured(cfg)
    expected = expected_for(cfg, feed, mapping)
    carrier = Carrier(cfg.flavour)
    seen: set[str] = set()
    for day in play(date(2026, 3, 27), events, families=3):
        for old in inbound.glob("census_*.csv"):
            old.unlink()
        pd.DataFrame(day.rows, columns=list(CANONICAL_COLUMNS)).to_csv(
            inbound / f"census_{day.on:%Y%m%d}.csv", index=False)
        want = expected.step(day)
        clock = functools.partial(datetime, day.on.year, day.on.month, day.on.day, 7, 30, tzinfo=UTC)
        summary = run_feed(settings, RunRef.for_day(feed_id, day.on), actor="replay", clock=clock)
        got = _STATUS.get(summary.status, summary.status)
        arrived = sorted(p for p in inbox.iterdir() if p.name not in seen and not p.name.startswith("."))
        seen.update(p.name for p in arrived)
        assert len(arrived) == (1 if got == "delivered" else 0), (day.on, summary.status, arrived)
        for cipher in arrived:
            plain = tmp_path / "plain.834"
            assert keys.carrier.decrypt_file(cipher, plain).valid_signature
            carrier.apply(read_834(plain.read_bytes()))
            plain.unlink()
        if want == "delivered":
            assert got in ("delivered", "no_changes"), (day.on, summary.status, summary.error)
        else:
            assert got == "not_delivered", (day.on, want, summary.status)
        problems = compare(carrier, expected, day.on)
        assert not problems, f"{day.on}: {problems}"


_EVERYDAY = [[], [Event("address_change", 1)], [], [Event("add_family", 0, 0), Event("bad_data", 2)],
             [Event("remove_family", 0)], [Event("level_change", 1), Event("end_family", 2, 0)],
             [Event("reinstate")], [Event("remove_dependent", 1, 0)], []]


@pytest.mark.parametrize("cfg", [
    Config(mode="changes", term_policy="explicit", policy="reject"),
    Config(mode="changes", term_policy="omission", policy="quarantine", flavour="plan",
           full_file_weekday="tuesday"),
    Config(mode="full", policy="reject", term_end="day_before"),
], ids=["changes-explicit-reject", "changes-omission-quarantine-plan", "full-reject"])
def test_run_feed_day_after_day_leaves_the_carrier_holding_the_census(
        tmp_path: Path, demo_keys: Any, cfg: Config) -> None:
    _replay_pipeline(tmp_path, demo_keys, cfg, _EVERYDAY)


def test_run_feed_carries_plan_changes_and_a_rehire_to_a_plan_keyed_carrier(tmp_path: Path, demo_keys: Any) -> None:
    events = [[], [Event("plan_change_one_row", 0)], [Event("plan_change_two_rows", 1)],
              [Event("end_family", 2, 2)], [], [Event("rehire", 0)], [], [], []]
    _replay_pipeline(tmp_path, demo_keys, Config(flavour="plan"), events)
