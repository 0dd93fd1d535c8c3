"""The current census as reconciliation's third view: read, validated and built as a run of the day would,
then reduced to a roster of tokens and keyed hashes (nothing of it is recorded but counts)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.errors import CensusRejected
from carrierfeeds.reconcile.roster import ROSTER_VIEW_COLUMNS, Roster, roster_from_view
from carrierfeeds.settings import FeedBundle, Settings, plan_catalogue


@dataclass(frozen=True)
class CensusView:
    """The census's roster and the tokens of members its validation held back (compared by nobody)."""

    roster: Roster
    held_back: frozenset[str]


def census_view(settings: Settings, bundle: FeedBundle, census: Path, tokenizer: MemberTokenizer, *,
                as_of: date) -> CensusView:
    """``census`` as the run of ``as_of`` would build it. CensusRejected when the feed's policy rejects it."""
    import pandas as pd

    from carrierfeeds.census.readers import read_census
    from carrierfeeds.enrollment import build_enrollment
    from carrierfeeds.validation import CarrierRules, apply_policy, validate_census

    feed, mapping = bundle.feed, bundle.mapping
    frame = read_census(census, bundle.schema)
    report = validate_census(frame, bundle.suite_path, bundle.schema, tokenizer, as_of=as_of,
                             source_name=census.name, plans=plan_catalogue(settings, bundle),
                             carrier=CarrierRules.for_feed(mapping, feed.authorization.plans,
                                                           output_format=feed.output.format))
    outcome = apply_policy(frame, report, feed.validation)
    if outcome.rejected:
        raise CensusRejected(f"the census would be rejected under policy {feed.validation.policy!r}: "
                             f"{report.failed_rows} failing rows; it cannot serve as the third view "
                             "(run `carrierfeeds validate` for the report)", file=census.name)
    enrollment = build_enrollment(outcome.accepted, feed, mapping, as_of=as_of)
    view = enrollment.table[[c for c in ROSTER_VIEW_COLUMNS if c in enrollment.table.columns]]
    held = sorted(outcome.held_back_member_ids)
    held_tokens = frozenset(tokenizer.tokens(pd.Series(held, dtype="str")).tolist()) if held else frozenset()
    return CensusView(roster_from_view(view, tokenizer, source="census"), held_tokens)
