"""A carrier roster: one row per member and coverage line, member ids as tokens, identity as keyed hashes.

Both sides of a comparison are rosters: what the carrier says it holds (read from its return file) and
what it should hold (our confirmed snapshot). :func:`roster_from_view` is the one place member data
becomes a roster, so identity values are hashed the same way on both sides and never travel further.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import pandas as pd

from carrierfeeds.census.tokens import MemberTokenizer

#: The roster's columns, in order. Dates stay CCYYMMDD text; "" is "not given".
ROSTER_COLUMNS: Final[tuple[str, ...]] = (
    "member_token", "subscriber_token", "relationship", "coverage_line", "plan", "coverage_level",
    "coverage_start", "coverage_end", "name_hash", "dob_hash", "ssn_hash", "gender_hash",
)
#: Identity fields compared as keyed hashes: roster column -> the 834 view columns it is made from.
IDENTITY_SOURCES: Final[dict[str, tuple[str, ...]]] = {
    "name_hash": ("last_name", "first_name"),
    "dob_hash": ("dob",),
    "ssn_hash": ("ssn",),
    "gender_hash": ("gender",),
}
#: 834 view columns a roster is built from (a view without some of them leaves those roster cells "").
VIEW_SOURCES: Final[dict[str, str]] = {
    "relationship": "ins02", "coverage_line": "hd03", "plan": "hd04", "coverage_level": "hd05",
    "coverage_start": "coverage_start", "coverage_end": "coverage_end",
}

#: Arrow strings: a token as a Python object costs about 70 bytes, in an Arrow buffer about 20, and a
#: million-member comparison holds two rosters and their merge.
ROSTER_DTYPE: Final = pd.StringDtype("pyarrow")
#: Rows hashed at a time (see roster_from_view).
CHUNK_ROWS: Final[int] = 100_000
#: Every 834 view column a roster reads.
ROSTER_VIEW_COLUMNS: Final[tuple[str, ...]] = (
    "member_id", "subscriber_id", *VIEW_SOURCES.values(), *(c for cols in IDENTITY_SOURCES.values() for c in cols))


@dataclass(frozen=True)
class Roster:
    """A roster frame (columns :data:`ROSTER_COLUMNS`, all text) and the PHI-free name of its source."""

    table: pd.DataFrame
    source: str

    @property
    def members(self) -> int:
        return int(self.table["member_token"].nunique())

    def __len__(self) -> int:
        return len(self.table)


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        return pd.Series("", index=frame.index, dtype=object)
    return frame[column].fillna("").astype(str).str.strip().astype(object)


def _identity_hash(tokenizer: MemberTokenizer, field: str, values: pd.Series) -> pd.Series:
    """Keyed hash of each non-empty value, domain-separated by field; "" stays "" (not given)."""
    hashed = tokenizer.tokens(f"{field}\x1f" + values)
    return hashed.where(values != "", "").astype(object)


def roster_from_view(view: pd.DataFrame, tokenizer: MemberTokenizer, *, source: str,
                     chunk_rows: int = CHUNK_ROWS) -> Roster:
    """The roster of an 834-view-shaped frame (a snapshot, or what a reader parsed): ids tokenised,
    identity values upper-cased, trimmed and hashed under the member-token key; nothing else kept.

    Built ``chunk_rows`` rows at a time: the text and hashing steps make several temporary columns of
    Python strings, and only the Arrow-backed result needs to outlive a slice.
    """
    if len(view) > chunk_rows:
        pieces = [_roster_table(view.iloc[lo:lo + chunk_rows], tokenizer)
                  for lo in range(0, len(view), chunk_rows)]
        return Roster(table=pd.concat(pieces, ignore_index=True), source=source)
    return Roster(table=_roster_table(view, tokenizer), source=source)


def _roster_table(view: pd.DataFrame, tokenizer: MemberTokenizer) -> pd.DataFrame:
    out = pd.DataFrame(index=view.index)
    member = _text(view, "member_id")
    out["member_token"] = tokenizer.tokens(member)
    subscriber = _text(view, "subscriber_id")
    out["subscriber_token"] = tokenizer.tokens(subscriber).where(subscriber != "", "").astype(object)
    for column, src in VIEW_SOURCES.items():
        out[column] = _text(view, src)
    for column, sources in IDENTITY_SOURCES.items():
        parts = [_text(view, s).str.upper() for s in sources]
        joined = parts[0]
        for part in parts[1:]:
            joined = joined + "\x1f" + part
        # A name with every part missing is not given (rather than the hash of the separators).
        given = pd.concat([p != "" for p in parts], axis=1).any(axis=1)
        out[column] = _identity_hash(tokenizer, column, joined.where(given, ""))
    return out.reset_index(drop=True).reindex(columns=list(ROSTER_COLUMNS)).astype(ROSTER_DTYPE)


def empty_roster(source: str) -> Roster:
    """A roster holding nobody (a carrier that holds no one, or no snapshot yet)."""
    return Roster(table=pd.DataFrame({c: pd.Series([], dtype=ROSTER_DTYPE) for c in ROSTER_COLUMNS}), source=source)
