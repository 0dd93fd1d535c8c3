"""apply_policy: what a feed's validation policy lets on (all, the passing families, or nothing)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from carrierfeeds.census.columns import ROW_NUMBER
from carrierfeeds.config import ValidationPolicy
from carrierfeeds.validation.columns import as_text
from carrierfeeds.validation.report import HEADER_ROW, PolicyOutcome, ValidationReport


def apply_policy(census: pd.DataFrame, report: ValidationReport, policy: ValidationPolicy) -> PolicyOutcome:
    """Decide what goes on: everything, the passing families (quarantine), or nothing (rejected)."""
    if report.ok:
        return PolicyOutcome(accepted=census, held_back_families=0, held_back_members=0, rejected=False,
                             reason=None)
    # the texts only when something is held back (a coded census's subscriber ids are codes until then)
    family = as_text(census["subscriber_id"]) if "subscriber_id" in census.columns else pd.Series(
        "", index=census.index, dtype="str")
    member = as_text(census["member_id"]) if "member_id" in census.columns else family

    def rejected(reason: str) -> PolicyOutcome:
        # the totals only when everything is held back (hashing every member id costs otherwise)
        members = member[member != ""].unique()
        return PolicyOutcome(accepted=census.iloc[0:0].copy(), held_back_families=int(family.nunique()),
                             held_back_members=len(members), rejected=True,
                             reason=reason, rows=np.zeros(0, dtype=np.int64),
                             held_back_member_ids=_member_ids(census, members))

    rows = {f.row for f in report.findings}
    if HEADER_ROW in rows:
        return rejected("the file as a whole failed a rule (for example a missing column)")
    if policy.policy == "reject":
        return rejected(f"{len(report.findings)} finding(s) in {report.failed_rows} row(s); policy is reject")
    if policy.policy == "threshold" and report.families:
        pct = report.failed_families / report.families * 100
        if pct > policy.threshold_pct:
            return rejected(f"{pct:.2f}% of families failed, above the {policy.threshold_pct}% threshold")
    failing = family[census[ROW_NUMBER].isin(rows).to_numpy()].unique()
    bad = _isin(family, pd.Series(failing, dtype="str"))
    accepted = census.loc[~bad]
    if accepted.empty:
        return rejected("every family failed validation; nothing left to send")
    held_members = member[bad]
    held = pd.Series(held_members[held_members != ""].unique(), dtype="str")
    # a member id on an accepted row too (one person in two families) goes on: it is not held back
    only_held = held[~_isin(held, member[~bad])] if len(held) else held
    return PolicyOutcome(accepted=accepted, held_back_families=len(failing),
                         held_back_members=len(held), rejected=False, reason=None, rows=np.flatnonzero(~bad),
                         held_back_member_ids=_member_ids(census, only_held))


def _member_ids(census: pd.DataFrame, ids: Iterable[str]) -> frozenset[str]:
    """``ids`` as held-back member ids: none when the census has no member_id column (the counts then
    fall back to families, which are no member ids)."""
    return frozenset(ids) if "member_id" in census.columns else frozenset()


def _isin(series: pd.Series, values: pd.Series) -> np.ndarray:
    """``series.isin(values)`` by pyarrow's hash kernel; pandas' arrow-string ``isin`` boxes every value
    of ``values`` as a Python scalar first."""
    import pyarrow as pa
    import pyarrow.compute as pc

    left = pa.array(series).cast(pa.large_string())
    right = pc.unique(pa.array(values).cast(pa.large_string()))
    return np.asarray(pc.is_in(left, value_set=right).to_numpy(zero_copy_only=False), dtype=bool)

