"""Compare the carrier's roster with the one it should hold: a pure function returning discrepancies in
a deterministic order (member token, kind, coverage line, field).

Kinds (:data:`KINDS`): a member or coverage line we sent that the carrier lacks (``missing_at_carrier``)
or holds without us (``extra_at_carrier``); a line ended here but open there
(``termed_here_active_there``); then, on lines both hold, ``coverage_dates``, ``plan``,
``coverage_level``; on members both hold, ``dependents`` (relationship or subscriber) and ``identity``
(keyed hashes of name, date of birth, SSN, gender; compared only where both sides give a value).
A member- or line-level absence is reported once, not once per field. :func:`compare_with_census`
adds the current census as a third view and labels each discrepancy with the side its fix is on.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import date
from itertools import pairwise
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from carrierfeeds.reconcile.roster import IDENTITY_SOURCES, Roster

KINDS: Final[tuple[str, ...]] = (
    "missing_at_carrier", "extra_at_carrier", "termed_here_active_there", "coverage_dates", "plan",
    "coverage_level", "dependents", "identity",
)
#: Roster column -> the field name a discrepancy reports (PHI-free names only).
_LINE_FIELDS: Final[dict[str, tuple[str, str]]] = {
    "plan": ("plan", "plan"),
    "coverage_level": ("coverage_level", "coverage_level"),
}
_MEMBER_FIELDS: Final[dict[str, tuple[str, str]]] = {
    "relationship": ("dependents", "relationship"),
    "subscriber_token": ("dependents", "subscriber"),
    **{column: ("identity", column.removesuffix("_hash")) for column in IDENTITY_SOURCES},
}


@dataclass(frozen=True, order=True)
class Discrepancy:
    """One difference: ``member_token`` first so sorting groups a member's items; no member data."""

    member_token: str
    kind: str
    coverage_line: str
    field: str

    def key(self) -> tuple[str, str, str, str]:
        """What makes two sightings the same discrepancy."""
        return (self.kind, self.member_token, self.field, self.coverage_line)

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "member_token": self.member_token, "field": self.field,
                "coverage_line": self.coverage_line}


def _isin(values: pd.Series, wanted: Iterable[str]) -> np.ndarray:
    """``values.isin(wanted)`` through Arrow: pandas' isin on Arrow strings converts ``wanted`` one
    scalar at a time, which dominated a million-member comparison."""
    found = pc.is_in(pa.array(values, type=pa.string(), from_pandas=True),
                     value_set=pa.array(list(wanted), type=pa.string()))
    return np.asarray(pc.fill_null(found, False).to_numpy(zero_copy_only=False), dtype=bool)


def _active(end: pd.Series, as_of: str) -> np.ndarray:
    """A line is active on ``as_of`` when it has no end date or ends after it (CCYYMMDD compare)."""
    values = end.fillna("").astype(str)
    return ((values == "") | (values > as_of)).to_numpy()


def _factorize(*tokens: pd.Series) -> tuple[list[np.ndarray], np.ndarray]:
    """Integer codes for the member tokens of several rosters, one code per token across all of them,
    and the tokens by code: merging and set operations on integers hold a fraction of the memory of the
    tokens themselves."""
    codes, uniques = pd.factorize(pd.concat(tokens, ignore_index=True))
    bounds = np.cumsum([0, *(len(t) for t in tokens)])
    return [codes[lo:hi] for lo, hi in pairwise(bounds)], np.asarray(uniques, dtype=object)


def _coded(frame: pd.DataFrame, codes: np.ndarray, keep: np.ndarray, columns: list[str]) -> pd.DataFrame:
    """The ``keep`` rows of ``frame``'s ``columns``, keyed by the member's integer ``code``."""
    out = frame.loc[keep, columns].reset_index(drop=True)
    out.insert(0, "code", codes[keep])
    return out


def compare_rosters(expected: Roster, carrier: Roster, *, as_of: date,
                    skip_members: Collection[str] = ()) -> list[Discrepancy]:
    """Every discrepancy between what the carrier should hold (``expected``) and what it holds, on ``as_of``.

    ``skip_members`` are member tokens not judged this time (changes to them are still awaiting the
    carrier's acknowledgment). Pure: same inputs, same list.
    """
    day = as_of.strftime("%Y%m%d")
    exp, car = expected.table, carrier.table
    if skip_members:
        exp = exp[~_isin(exp["member_token"], skip_members)]
        car = car[~_isin(car["member_token"], skip_members)]
    (e_code, c_code), tokens = _factorize(exp["member_token"], car["member_token"])
    out: list[Discrepancy] = []

    exp_members, car_members = np.unique(e_code), np.unique(c_code)
    exp_active = np.unique(e_code[_active(exp["coverage_end"], day)])
    car_active = np.unique(c_code[_active(car["coverage_end"], day)])
    out += [Discrepancy(str(t), "missing_at_carrier", "", "") for t in tokens[np.setdiff1d(exp_active, car_members)]]
    out += [Discrepancy(str(t), "extra_at_carrier", "", "") for t in tokens[np.setdiff1d(car_active, exp_members)]]

    both = np.intersect1d(exp_members, car_members)
    e_both, c_both = np.isin(e_code, both), np.isin(c_code, both)
    keys = ["code", "coverage_line"]
    # Only the line columns: the member columns are compared once per member below.
    line_columns = ["coverage_line", "coverage_start", "coverage_end", *_LINE_FIELDS]
    lines = pd.merge(_coded(exp, e_code, e_both, line_columns).drop_duplicates(keys),
                     _coded(car, c_code, c_both, line_columns).drop_duplicates(keys),
                     on=keys, how="outer", suffixes=("_e", "_c"), indicator=True)
    e_only = lines[lines["_merge"] == "left_only"]
    c_only = lines[lines["_merge"] == "right_only"]
    out += _line_items(e_only[_active(e_only["coverage_end_e"], day)], tokens, "missing_at_carrier", "")
    out += _line_items(c_only[_active(c_only["coverage_end_c"], day)], tokens, "extra_at_carrier", "")

    shared = lines[lines["_merge"] == "both"]
    ended_here = ~_active(shared["coverage_end_e"], day)
    open_there = _active(shared["coverage_end_c"], day)
    termed = ended_here & open_there
    out += _line_items(shared[termed], tokens, "termed_here_active_there", "coverage_end")
    rest = shared[~termed]
    for column in ("coverage_start", "coverage_end"):
        differs = (rest[f"{column}_e"].fillna("") != rest[f"{column}_c"].fillna("")).to_numpy()
        out += _line_items(rest[differs], tokens, "coverage_dates", column)
    for column, (kind, field) in _LINE_FIELDS.items():
        e, c = shared[f"{column}_e"].fillna(""), shared[f"{column}_c"].fillna("")
        differs = ((e != c) & (e != "") & (c != "")).to_numpy()
        out += _line_items(shared[differs], tokens, kind, field)

    columns = list(_MEMBER_FIELDS)
    members = pd.merge(_coded(exp, e_code, e_both, columns).drop_duplicates("code").set_index("code"),
                       _coded(car, c_code, c_both, columns).drop_duplicates("code").set_index("code"),
                       left_index=True, right_index=True, how="inner", suffixes=("_e", "_c"))
    for column, (kind, field) in _MEMBER_FIELDS.items():
        e, c = members[f"{column}_e"].fillna(""), members[f"{column}_c"].fillna("")
        differs = ((e != c) & (e != "") & (c != "")).to_numpy(dtype=bool)
        out += [Discrepancy(str(t), kind, "", field) for t in tokens[members.index.to_numpy()[differs]]]
    return sorted(out)


def _line_items(frame: pd.DataFrame, tokens: np.ndarray, kind: str, field: str) -> Iterable[Discrepancy]:
    return [Discrepancy(str(t), kind, str(line), field)
            for t, line in zip(tokens[frame["code"].to_numpy()].tolist(), frame["coverage_line"].tolist(), strict=True)]


#: Where a discrepancy's fix lies once the current census is the third view (:func:`compare_with_census`):
#: ``carrier``: the census agrees with what the carrier should hold, so the carrier must change;
#: ``ours``: the census agrees with the carrier, so our snapshot is what is off (a person decides);
#: ``both``: the census differs from both, so a change is still to be sent and the carrier is off too;
#: ``not_sent``: the carrier holds what it should, but the census has moved on: a change not sent yet
#: (the next run's, or one held back by validation).
SIDES: Final[tuple[str, ...]] = ("carrier", "ours", "both", "not_sent")


def compare_with_census(expected: Roster, carrier: Roster, census: Roster, *, as_of: date,
                        skip_members: Collection[str] = ()) -> list[tuple[Discrepancy, str]]:
    """:func:`compare_rosters` of ``expected`` and ``carrier``, each discrepancy labelled with the side
    its fix is on (:data:`SIDES`) by the current ``census`` roster, plus the census's differences from
    both (``not_sent``). Discrepancies are keyed by kind, member token, field and line, never by value,
    so a kind reads the same in every label (``missing_at_carrier``: the census or the snapshot has the
    member, the carrier does not). Pure; sorted by discrepancy."""
    found = compare_rosters(expected, carrier, as_of=as_of, skip_members=skip_members)
    census_vs_carrier = {d.key() for d in compare_rosters(census, carrier, as_of=as_of, skip_members=skip_members)}
    pending = compare_rosters(census, expected, as_of=as_of, skip_members=skip_members)
    census_vs_expected = {d.key() for d in pending}
    out: list[tuple[Discrepancy, str]] = []
    seen = set()
    for d in found:
        key = d.key()
        seen.add(key)
        agrees_with_carrier = key not in census_vs_carrier
        out.append((d, "ours" if agrees_with_carrier else "both" if key in census_vs_expected else "carrier"))
    out += [(d, "not_sent") for d in pending if d.key() not in seen and d.key() in census_vs_carrier]
    return sorted(out)
