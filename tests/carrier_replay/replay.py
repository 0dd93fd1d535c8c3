"""Drive the project through its real stages for each day of a history and hand every delivered 834 to
the carrier; check the carrier's roster against the expected one after every day.

The pure path (:class:`PureFeed`) is what the pipeline runs, without its edges: the census written as
the employer's CSV and read back with ``read_census``, ``validate_census`` and ``apply_policy`` under the
feed's policy, ``build_enrollment``, in changes mode ``diff_against_snapshot`` against the snapshot as
the pipeline keeps it (advanced only when the file is delivered), and the renderer. What reaches the
carrier is only the rendered bytes, read back by the test's own reader.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from tests.carrier_replay.carrier import Carrier
from tests.carrier_replay.expected import Config, ExpectedRoster, compare
from tests.carrier_replay.history import Day, Event, play
from tests.carrier_replay.reader import read_834

from carrierfeeds.census.columns import CANONICAL_COLUMNS
from carrierfeeds.census.readers import read_census
from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.changes import diff_against_snapshot, is_full_file_day, keeps_snapshot
from carrierfeeds.config import CarrierMapping, Feed, Party, ValidationPolicy, load_feed, load_mapping, load_schema
from carrierfeeds.enrollment import build_enrollment
from carrierfeeds.errors import DataError
from carrierfeeds.validation import apply_policy, validate_census
from carrierfeeds.x12.envelope import ControlNumbers, TransactionHeader
from carrierfeeds.x12.render import render_834_bytes

ROOT = Path(__file__).resolve().parents[2]
Run = Literal["delivered", "rejected", "refused", "no_changes"]
CREATED = datetime(2026, 3, 1, 7, 30, tzinfo=UTC)
#: The employee's disability lines (issue 19's volumes): STD and LTD are in the TR3's HD03 list, so pyx12
#: reads them (life and AD&D are not).
VOLUME_PLANS = {"STD-CORE": {"insurance_line": "STD", "description": "SHORT TERM DISABILITY"},
                "LTD-CORE": {"insurance_line": "LTD", "description": "LONG TERM DISABILITY"}}


def configured(cfg: Config) -> tuple[Feed, CarrierMapping]:
    """The demo feed and mapping under ``cfg`` (validated as if loaded from YAML)."""
    feed = load_feed(ROOT / "feeds" / "acme-sunrise-medical.yaml")
    auth = feed.authorization.model_copy(update={"plans": (*feed.authorization.plans, *VOLUME_PLANS)})
    feed = feed.model_copy(update={"validation": ValidationPolicy(policy=cfg.policy), "authorization": auth})
    base = load_mapping(ROOT / "mappings" / "sunrise-health.yaml").model_dump()
    base.update(mode=cfg.mode, term_policy=cfg.term_policy, term_end=cfg.term_end,
                retro_window_days=cfg.retro_window_days, full_file_weekday=cfg.full_file_weekday,
                plan_change=cfg.plan_change, plans={**base["plans"], **VOLUME_PLANS},
                allowlist=[*base["allowlist"], "salary", "salary_frequency", "coverage_amount", "eoi_pending"],
                volumes={"salary": True, "coverage_amount": True, "eoi_hold": True})
    return feed, CarrierMapping.model_validate(base)


def expected_for(cfg: Config, feed: Feed, mapping: CarrierMapping) -> ExpectedRoster:
    plans = {code: (str(p.insurance_line), p.description) for code, p in mapping.plans.items()}
    return ExpectedRoster(cfg, plans, set(feed.authorization.plans), set(mapping.allowlist))


def header_for(feed: Feed, mapping: CarrierMapping, isa13: int, action: str) -> TransactionHeader:
    """The transaction header the pipeline's build writes (BGN08 ``action``)."""
    return TransactionHeader(
        ids=mapping.envelope, created=CREATED, reference=f"CF{isa13:09d}",
        sponsor=Party(name=feed.employer.name, id_qualifier="FI", id=feed.employer.tax_id),
        payer=mapping.payer, action=action, group_number=mapping.group_number)


@dataclass
class PureFeed:
    """The pipeline's pure core for one feed, day after day."""

    feed: Feed
    mapping: CarrierMapping
    workdir: Path
    snapshot: pd.DataFrame | None = None
    isa13: int = 0
    schema: Any = field(default=None)

    def __post_init__(self) -> None:
        self.schema = load_schema(ROOT / "schemas" / "census-v1.yaml")
        self.tokenizer = MemberTokenizer(b"\x01" * 32)

    def run(self, day: Day) -> tuple[Run, bytes | None]:
        path = self.workdir / f"census_{day.on:%Y%m%d}.csv"
        pd.DataFrame(day.rows, columns=list(CANONICAL_COLUMNS)).to_csv(path, index=False)
        try:
            census = read_census(path, self.schema)
        except DataError:
            return "rejected", None  # an empty census is refused as it is read
        report = validate_census(census, ROOT / "schemas" / self.schema.suite, self.schema, self.tokenizer,
                                 as_of=day.on, source_name=path.name, workers=1)
        outcome = apply_policy(census, report, self.feed.validation)
        if outcome.rejected:
            return "rejected", None
        accepted = outcome.accepted
        mapping = self.mapping
        try:
            enrollment = build_enrollment(accepted, self.feed, mapping, as_of=day.on, workers=1)
            action: str = mapping.full_file.bgn08
            snapshot = None
            if keeps_snapshot(mapping.mode, self.feed.validation.policy, eoi_hold=mapping.volumes.eoi_hold):
                full = self.snapshot is None or mapping.mode == "full" or is_full_file_day(
                    day.on, mapping.full_file_weekday)
                change_set = diff_against_snapshot(
                    enrollment, self.snapshot, as_of=day.on, term_policy=mapping.term_policy,
                    term_end=mapping.term_end, retro_window_days=mapping.retro_window_days,
                    held_back_members=outcome.held_back_member_ids, full_file=full, plan_change=mapping.plan_change,
                    pending_terms=mapping.mode == "changes")
                if change_set.empty:
                    return "no_changes", None
                enrollment, snapshot = change_set.enrollment, change_set.snapshot
                action = mapping.full_file.bgn08 if change_set.full_file else "2"
        except DataError:
            return "refused", None
        self.isa13 += 1
        data = render_834_bytes(enrollment, header_for(self.feed, mapping, self.isa13, action),
                                ControlNumbers(self.isa13, self.isa13, self.isa13))
        if snapshot is not None:
            self.snapshot = snapshot  # delivered: the pipeline advances the snapshot only now
        return "delivered", data


@dataclass
class DayLog:
    on: date
    expected: str
    got: Run
    problems: list[str]
    file: bytes | None


def replay(cfg: Config, days: list[Day], *, pyx12: str = "first") -> list[DayLog]:
    """Play ``days`` through the pure path under ``cfg``; the per-day log (problems empty when equal).

    ``pyx12``: "all" files, the "first" change file and the first full file, or "none"."""
    feed, mapping = configured(cfg)
    expected = expected_for(cfg, feed, mapping)
    carrier = Carrier(cfg.flavour)
    log: list[DayLog] = []
    checked: set[bool] = set()
    with tempfile.TemporaryDirectory(prefix="replay-") as tmp:
        pure = PureFeed(feed, mapping, Path(tmp))
        for day in days:
            want = expected.step(day)
            got, data = pure.run(day)
            problems: list[str] = []
            if data is not None:
                tx = read_834(data)
                carrier.apply(tx)
                if pyx12 == "all" or (pyx12 == "first" and tx.full_file not in checked):
                    checked.add(tx.full_file)
                    problems += pyx12_problems(data, Path(tmp))
            if (got == "no_changes" and want != "delivered") or (got != "no_changes" and got != want):
                problems.append(f"run {got}, census says {want}")
            problems += compare(carrier, expected, day.on)
            log.append(DayLog(day.on, want, got, problems, data))
            if problems:
                break
    return log


def pyx12_problems(data: bytes, folder: Path) -> list[str]:
    from carrierfeeds.x12.check import validate_with_pyx12

    path = folder / "check.834"
    path.write_bytes(data)
    verdict = validate_with_pyx12(path, with_999=False)
    return [] if verdict.ok else [f"pyx12: {e}" for e in verdict.errors[:5]] or ["pyx12 refused the file"]


def first_failure(log: list[DayLog]) -> str | None:
    """A readable account of the first day whose roster differs (None: every day agreed)."""
    for entry in log:
        if entry.problems:
            return f"{entry.on} ({entry.got}): " + "; ".join(entry.problems)
    return None


History = tuple[date, list[list[Event]], int, bool]


def check_history(cfg: Config, history: History, pyx12: str = "first") -> str | None:
    """Replay one generated history (start, events per day, families, age-out child); the first
    failure, or None. Module-level so that a process pool can run it."""
    start, days, families, age_out = history
    return first_failure(replay(cfg, play(start, days, families=families, age_out=age_out), pyx12=pyx12))
