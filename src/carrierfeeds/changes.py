"""Change detection against the last snapshot the carrier confirmed (a pure diff), and the snapshot store
that keeps that snapshot encrypted at rest and advances it only after a confirmed delivery (I/O edge).

:func:`diff_against_snapshot` compares the 834 view of today's census with what the carrier holds and
returns a :class:`ChangeSet`: the rows to send, each member with its INS03 (021 add, 001 change, 024
term, 025 reinstate, or 030 in a full audit file) and INS04 reason, each coverage line (one per
insurance line, HD03) with its HD01 and, for terms, its DTP*349 end date; and the snapshot the carrier
will hold once this file is delivered. Members held back by validation are carried over untouched,
never termed. Nothing here reads a clock, a file or a key.

Every column the carrier is sent is compared, the mapping's options included (REF*1L/17/DX and
DTP*356/357 per member, the Loop 2300 REF*1L per line), so the snapshot never moves to a value the
carrier was not sent. A column the view has but the snapshot lacks (the mapping turned an option on
since the last confirmed file) counts as empty in the snapshot, because that is what the carrier
holds: every member with a value for it is sent as a change (001), and only then does the snapshot
hold it. Treating the missing column as "unchanged" would instead record values the carrier never
received, and it would learn them only from the next full file. Ops who would rather send one full
audit file that day can (``run --full-file``). A column the snapshot has but the view no longer has
(an option turned off) is dropped from the next snapshot, and nothing is sent for it.

Member status columns (the mapping's ``member_status``: INS05-INS12, DTP*337/340/341) are compared like
the other member columns. The census's ``event_reason`` gives INS04 of the change it accompanies and
``maintenance_effective`` dates every change with DTP*303 (``event_date``, else ``as_of``); with
``identity_corrections`` a change whose name, SSN, birth date or gender differs from the snapshot also
carries ``prior_*`` columns, the identity the carrier holds (Loop 2100B). Those, like INS04, are
run-local and never stored.

:class:`SnapshotStore` keeps one current snapshot per feed (Parquet, AES-256-GCM, key file 0600),
``stage``-s the next one per run and ``advance``-s it only when the pipeline confirms the delivery, so
a failed delivery leaves the base where it was and the rerun computes, and sends, the same changes.
When the carrier then rejects that file (TA1/999), ``revert`` puts back the snapshot from before the
run, so the next run diffs against what the carrier really holds and sends those changes again.

Why one module: the diff decides what the snapshot will hold and the store decides when it holds it;
the rule that the snapshot never moves to a value the carrier was not sent spans both, so they are read
together. The store is the only I/O here and sits below the pure diff.
"""

from __future__ import annotations

import calendar
import fcntl
import io
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Final, Literal

import numpy as np
import pandas as pd
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from carrierfeeds.census.columns import ROW_NUMBER
from carrierfeeds.enrollment import Enrollment
from carrierfeeds.errors import CarrierFeedsError, ConfigError, DataError, Refused
from carrierfeeds.files import create_key_file, read_key_file
from carrierfeeds.x12.codes import MaintenanceReason, MaintenanceType

log = logging.getLogger(__name__)

TermPolicy = Literal["explicit", "omission"]
TermEnd = Literal["end_of_month", "day_before"]
PlanChange = Literal["term_and_add", "change"]

ADD, CHANGE, TERM, REINSTATE, AUDIT = (m.value for m in (
    MaintenanceType.ADDITION, MaintenanceType.CHANGE, MaintenanceType.CANCELLATION,
    MaintenanceType.REINSTATEMENT, MaintenanceType.AUDIT_OR_COMPARE))

MEMBER_KEY: Final[tuple[str, str]] = ("subscriber_id", "member_id")
LINE_KEY: Final[tuple[str, str, str]] = ("subscriber_id", "member_id", "hd03")
#: Columns the diff adds to the view; never stored in a snapshot.
MAINTENANCE: Final[tuple[str, ...]] = ("ins03", "ins04", "hd01")
_IDENTITY: Final[tuple[str, ...]] = ("last_name", "first_name", "middle_initial", "ssn", "dob", "gender",
                                     "ins01", "ins02")
_ADDRESS: Final[tuple[str, ...]] = ("address1", "address2", "city", "state", "zip",
                                    *("mailing_address1", "mailing_address2", "mailing_city", "mailing_state",
                                      "mailing_zip"))  # contact: 2100C
#: The mapping's Loop 2000 options (REF*1L, REF*17, REF*DX, DTP*356, DTP*357): compared when the view has them.
MEMBER_OPTIONS: Final[tuple[str, ...]] = ("group_policy_number", "reporting_category", "department",
                                          "eligibility_begin", "eligibility_end")
_MEMBER_OTHER: Final[tuple[str, ...]] = ("employment_status", "hire_date", *MEMBER_OPTIONS,
                                         *("icm01", "salary"),  # volumes: 2100A ICM
                                         *("phone", "email", "hlh01", "language"),  # contact: PER, HLH, LUI
                                         # reporting categories: Loop 2700/2750 values and dates
                                         *(f"reporting_2750_{k}{s}" for k in range(1, 11) for s in ("", "_date")))
#: Per line; ``coverage_policy_number`` is the plan's Loop 2300 REF*1L (when the mapping has one).
_COVERAGE: Final[tuple[str, ...]] = ("hd04", "hd05", "coverage_start", "coverage_end", "coverage_policy_number",
                                     *("coverage_amount", "premium_amount"),  # volumes: 2300 AMT*FK/P3
                                     *("pcp_npi", "pcp_relationship"))  # primary care provider: 2310
#: Snapshot only, per line: the census start of coverage that resumed the day after its end and that a 025
#: restored at the carrier from its original start. While the census keeps that start it is no start change:
#: the line is compared and sent with the start the carrier holds (``coverage_start`` in the snapshot).
RESUMED: Final[str] = "coverage_resumed"
#: What names the plan on a line (HD04): another value on the same HD03 is a plan change. The plan's
#: REF*1L alone changing is the same plan under a new policy number (HD*001).
_PLAN: Final[tuple[str, ...]] = ("hd04",)
#: Member status (mapping member_status): compared like the other member columns, so a change in any
#: is a 001; ``event_reason``/``event_date`` only say why and when the change is made (INS04, DTP*303)
#: and ``maintenance_effective`` is the diff's DTP*303: run-local, never stored in a snapshot.
STATUS: Final[tuple[str, ...]] = ("benefit_status", "medicare_plan", "medicare_reason", "cobra_event",
                                  "student_status", "handicap", "death_date", "employment_end_date",
                                  "cobra_begin", "cobra_end")
EVENTS: Final[tuple[str, ...]] = ("event_reason", "event_date", "maintenance_effective")
#: Loop 2100B of an identity correction: the identity the carrier holds (the snapshot's), run-local.
CORRECTED: Final[tuple[str, ...]] = ("last_name", "first_name", "middle_initial", "ssn", "dob", "gender")
PRIOR: Final[tuple[str, ...]] = tuple(f"prior_{c}" for c in CORRECTED)
_RANK: Final[dict[str, int]] = {"18": 0, "01": 1, "19": 2,
                                # as the view orders them: a life partner with spouses, other dependents
                                # with children (carrierfeeds.enrollment.relationships)
                                "53": 1, **dict.fromkeys(("05", "09", "10", "15", "17", "23", "25", "38",
                                                          "G9"), 2)}


class OutsideRetroWindow(DataError):
    """A change would take effect before the carrier's retroactive window; fix the date or send it by hand."""

    code = "outside_retro_window"


class NoChanges(CarrierFeedsError):
    """Nothing changed against the carrier's snapshot: there is no file to send for this interval."""

    code = "no_changes"


class SnapshotRefused(Refused):
    """The snapshot store cannot be trusted: key missing or exposed, file tampered or of another feed."""

    code = "snapshot_refused"


class SnapshotSuperseded(SnapshotRefused):
    """A revert came too late: a later run already advanced the snapshot past the rejected run, so
    putting the older one back would also forget what that later run sent. Ops decide (a full file)."""

    code = "snapshot_superseded"


@dataclass(frozen=True)
class ChangeSet:
    """What to send and what the carrier will hold afterwards.

    ``enrollment`` is the 834 view to render (the view's columns plus ``ins04`` and ``hd01``; a row
    with ``hd03 == ""`` is a member without coverage loop); ``snapshot`` the carrier's state once it
    is delivered (stage it); ``members_by_type`` members sent per INS03, ``coverages_by_type`` Loop
    2300s sent per HD01; ``carried_over`` held-back members kept as they were; ``full_file`` whether
    this is the full audit file (030, BGN08 from the mapping) rather than changes (BGN08 "2").
    """

    enrollment: Enrollment
    snapshot: pd.DataFrame
    members_by_type: dict[str, int]
    coverages_by_type: dict[str, int]
    carried_over: int = 0
    full_file: bool = False
    dropped_terms: int = 0

    @property
    def empty(self) -> bool:
        """Nothing to send (an 834 needs at least one member)."""
        return self.enrollment.member_count == 0


def term_date(as_of: date, rule: TermEnd) -> date:
    """DTP*349 for a member gone from the census on ``as_of``."""
    if rule == "day_before":
        return as_of - timedelta(days=1)
    return as_of.replace(day=calendar.monthrange(as_of.year, as_of.month)[1])


def snapshot_columns(table: pd.DataFrame) -> list[str]:
    """The view columns a snapshot keeps: what the carrier was sent, without run-local columns."""
    return [c for c in table.columns if c not in (ROW_NUMBER, *MAINTENANCE, *EVENTS, *PRIOR)]


def _text(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    out = frame.reindex(columns=list(columns), fill_value="")
    return out.fillna("").astype(str).astype(object)


def _sort(frame: pd.DataFrame) -> pd.DataFrame:
    """Families together (first appearance), subscriber, spouse, children, a member's lines adjacent."""
    if frame.empty:
        return frame.reset_index(drop=True)
    pos = frame["_pos"]
    family = pos.groupby(frame["subscriber_id"]).transform("min").to_numpy()
    member = pos.groupby([frame["subscriber_id"], frame["member_id"]]).transform("min").to_numpy()
    rank = frame["ins02"].map(_RANK).fillna(3).to_numpy()
    order = np.lexsort((pos.to_numpy(), member, rank, family))
    return frame.iloc[order].reset_index(drop=True)


def _enrollment(table: pd.DataFrame, like: Enrollment) -> Enrollment:
    members = table.drop_duplicates(list(MEMBER_KEY))
    covered = int((table["hd03"] != "").sum()) if len(table) else 0
    return Enrollment(table=table, member_count=len(members),
                      subscriber_count=int((members["ins01"] == "Y").sum()),
                      coverage_count=covered, excluded=dict(like.excluded), sanitized=dict(like.sanitized),
                      allowlist=like.allowlist, normalised=dict(like.normalised), options=like.options)


def _keys(frame: pd.DataFrame, cols: Iterable[str]) -> pd.Series:
    return frame[list(cols)].astype(str).agg("\x1f".join, axis=1) if len(frame) else pd.Series(
        [], dtype=object, index=frame.index)


def _current_member_values(merged: pd.DataFrame, gone: np.ndarray, columns: list[str]) -> None:
    """A line gone from the census carries the snapshot's values; when its member is still in the census
    its member-level columns take the member's current values, so a member loop written from that line
    (its term may come first) never sends the carrier old names, SSN or address."""
    if not gone.any() or gone.all():
        return
    member = _keys(merged, MEMBER_KEY)
    flags = pd.Series(gone, index=merged.index).groupby(member)
    mixed = (flags.transform("any") & ~flags.transform("all")).to_numpy(dtype=bool)
    if not mixed.any():
        return
    rows = merged.index[mixed]
    for col in columns:
        current = merged.loc[rows, col].where(~gone[mixed])
        latest = current.groupby(member[rows]).transform("first")
        fill = gone[mixed] & latest.notna().to_numpy(dtype=bool)
        merged.loc[rows[fill], col] = latest[fill].to_numpy()


def _shift_days(days: np.ndarray, by: int) -> np.ndarray:
    """CCYYMMDD texts moved by ``by`` days."""
    moved = pd.to_datetime(pd.Series(days, dtype=object), format="%Y%m%d") + pd.Timedelta(days=by)
    out: np.ndarray = moved.dt.strftime("%Y%m%d").to_numpy(dtype=object)
    return out


def _end_eligibility(merged: pd.DataFrame, termed: np.ndarray) -> None:
    """DTP*357 again for members the diff termed: the census no longer has them, so the view could not
    say when their eligibility ends. As in the view: the latest coverage end once every line ends."""
    member = _keys(merged, MEMBER_KEY)
    touched = pd.Series(termed, index=merged.index).groupby(member).transform("any").to_numpy(dtype=bool)
    end = merged["coverage_end"].fillna("").astype(str)
    open_ended = (end == "").groupby(member).transform("any").to_numpy(dtype=bool)
    latest = end.groupby(member).transform("max").to_numpy(dtype=object)
    merged.loc[touched, "eligibility_end"] = np.where(open_ended, "", latest)[touched]


def _events(merged: pd.DataFrame, view: pd.DataFrame, current: Enrollment, ins03: np.ndarray,
            ins04: np.ndarray, as_of: date, eventful: np.ndarray | None = None) -> None:
    """The census's own reason and date for each member sent: its event_reason (already an INS04 code)
    replaces the reason the diff inferred where ``eventful`` (default: every member sent), and with
    ``maintenance_effective`` every member sent gets a DTP*303, its event_date where eventful or else
    ``as_of`` (a member gone from the census has no event: ``as_of``)."""
    given = [c for c in ("event_reason", "event_date") if c in view.columns]
    if not given and not current.options.maintenance_effective:
        return
    member = _keys(merged, MEMBER_KEY)
    per_member = pd.DataFrame({c: view[c].astype(object).fillna("").astype(str) for c in given})
    per_member.index = _keys(view, MEMBER_KEY).to_numpy() if len(view) else per_member.index
    # a member's rows all carry its own event (a member-level column): the first non-empty one counts
    firsts = {c: per_member[c][per_member[c] != ""].groupby(level=0).first() for c in given}
    sent = ins03 != ""
    if "event_reason" in firsts:
        reason = member.map(firsts["event_reason"]).astype(object).fillna("").to_numpy(dtype=object)
        use = sent & (reason != "") & (True if eventful is None else eventful)
        ins04[use] = reason[use]
    if current.options.maintenance_effective:
        day = (member.map(firsts["event_date"]).astype(object).fillna("").to_numpy(dtype=object)
               if "event_date" in firsts
               else np.full(len(merged), "", dtype=object))
        if eventful is not None:
            day = np.where(eventful, day, "")
        merged["maintenance_effective"] = np.where(sent, np.where(day != "", day, as_of.strftime("%Y%m%d")), "")


def _prior_identity(merged: pd.DataFrame, cols: list[str], both: np.ndarray, member_key: pd.Series,
                    changing: np.ndarray) -> None:
    """Loop 2100B for each member sent as a change whose name, SSN, birth date or gender differs from
    what the carrier holds: the carrier's values, from the snapshot (the encrypted data path: the prior
    identity is never written anywhere else, and never stored again once the correction is sent).

    The prior name and SSN (NM1*70) go with every correction; the prior birth date and gender (DMG)
    only when one of them changed. A member is the same member by its ids (subscriber and member id),
    so a new id is a new member (021), never a correction."""
    fields = [c for c in CORRECTED if c in cols]
    if "last_name" not in fields:
        return

    def held(col: str) -> pd.Series:
        # the carrier's value, from any line it holds for the member (a newly added line has none)
        snap = merged[f"{col}_snap"].astype(object).where(pd.Series(both, index=merged.index))
        return snap.groupby(member_key).transform("first").fillna("").astype(object)

    def changed(columns: list[str]) -> np.ndarray:
        flags = np.zeros(len(merged), dtype=bool)
        for col in columns:
            flags |= both & (merged[col].to_numpy(dtype=object) != merged[f"{col}_snap"].to_numpy(dtype=object))
        out: np.ndarray = pd.Series(flags, index=merged.index).groupby(member_key).transform("any").to_numpy(
            dtype=bool)
        return out

    corrected = changing & changed(fields)
    demographic = corrected & changed([c for c in ("dob", "gender") if c in fields])
    # Only the fields the view carries (the allowlist's): a prior_ column of any other would name a field
    # the carrier may not see, and the writer refuses the whole file for it.
    for col in fields:
        value = held(col).to_numpy(dtype=object)
        keep = demographic if col in ("dob", "gender") else corrected
        if col == "gender":
            value = np.where(value == "", "U", value)
        merged[f"prior_{col}"] = np.where(keep, value, "")
    # DMG needs the birth date (DMG02): without one the carrier's gender cannot be sent either
    if "prior_gender" in merged.columns:
        dob = merged["prior_dob"] if "prior_dob" in merged.columns else pd.Series("", index=merged.index)
        merged["prior_gender"] = np.where(dob != "", merged["prior_gender"], "")


def diff_against_snapshot(current: Enrollment, snapshot: pd.DataFrame | None, *, as_of: date,
                          term_policy: TermPolicy = "explicit", term_end: TermEnd = "end_of_month",
                          retro_window_days: int = 60, held_back_members: Iterable[str] = (),
                          full_file: bool = False, plan_change: PlanChange = "term_and_add",
                          pending_terms: bool = True) -> ChangeSet:
    """Today's view against the carrier's snapshot (None: nothing confirmed yet, so a full file).

    ``held_back_members``: member ids validation held back; a snapshot member whose member id or
    subscriber id is among them is carried over and never sent. So is a snapshot line the view held
    back (``current.held_lines``: evidence of insurability pending), alone: the member's other lines
    are compared as usual, and the line is neither changed nor termed until it comes back.
    A full file carries, with ``pending_terms`` (changes mode's weekly full file), every line gone from the
    census whose end the carrier holds and has not passed on ``as_of`` (a term sent, still ahead), with
    that end: the carrier still covers it, and a 030 is its whole roster. Mode full passes False: there
    the census alone is the roster.
    Raises :class:`OutsideRetroWindow` (by row number) when an add, change or term would take effect
    more than ``retro_window_days`` before ``as_of``; a full file is never refused for that.

    Per insurance line (HD03), against what the carrier holds:

    - another plan (HD04) is a plan change. ``plan_change="term_and_add"`` sends
      the old plan as HD*024 ending the day before the new start (DTP*349) and the new plan as HD*021
      (DTP*348), in two Loop 2300s of the member, the old first; ``"change"`` sends HD*001 with the new
      plan. Either way the snapshot then holds the new plan only.
    - coverage that had ended and starts again after a gap (start later than the day after the end)
      is a new enrollment: HD*021 with the new start, under INS03 021 when every line of the member had
      ended at the carrier. It is never a reinstatement (025), which would restore the ended coverage
      and so cover the gap; 025 is only for coverage that resumes with no gap.
    """
    cur_table = current.table
    cols = snapshot_columns(cur_table)
    for required in ("subscriber_id", "member_id", "ins01", "ins02", "hd03", "coverage_start"):
        if required not in cols:
            raise DataError(f"the 834 view lacks column {required!r}", column=required, rule="view_columns")
    if "coverage_end" not in cols:
        cols.append("coverage_end")
    cols = [c for c in cols if c != RESUMED] + [RESUMED]
    sent_cols = cols[:-1]  # what the carrier is sent: the snapshot's own column stays out of the 834 view
    cur = _text(cur_table, cols)
    cur[ROW_NUMBER] = (cur_table[ROW_NUMBER].astype(int).to_numpy() if ROW_NUMBER in cur_table.columns
                       else np.zeros(len(cur), dtype=int))
    line_keys = _keys(cur, LINE_KEY)
    dup = line_keys.duplicated(keep="first").to_numpy()
    if dup.any():
        raise DataError(f"{int(dup.sum())} row(s) repeat a member's insurance line (one HD per line)",
                        row=int(cur.loc[dup, ROW_NUMBER].iloc[0]), column="plan_code", rule="duplicate_line",
                        details={"count": int(dup.sum())})
    snap = _text(snapshot if snapshot is not None else pd.DataFrame(columns=cols), cols)
    held = {str(m) for m in held_back_members if str(m)}
    snap_held = (snap["member_id"].isin(held) | snap["subscriber_id"].isin(held)).to_numpy()
    cur_held = (cur["member_id"].isin(held) | cur["subscriber_id"].isin(held)).to_numpy()
    # Lines the view held back (evidence of insurability pending): the carrier keeps what it holds.
    carried_members = len(snap.loc[snap_held, list(MEMBER_KEY)].drop_duplicates())
    if current.held_lines:
        held_lines = {"\x1f".join(k) for k in current.held_lines}
        snap_held = snap_held | _keys(snap, LINE_KEY).isin(held_lines).to_numpy(dtype=bool)
    if current.held_ends:
        # A held line given an end: the hold is for an increase, never an end. The line is compared as the
        # carrier holds it with the census's end (a term of that coverage), and no longer carried over.
        ends = {"\x1f".join(k[:3]): k[3] for k in current.held_ends}
        line = _keys(snap, LINE_KEY)
        ending = (snap_held & line.isin(ends).to_numpy(dtype=bool)
                  & ~(snap["member_id"].isin(held) | snap["subscriber_id"].isin(held)).to_numpy())
        if ending.any():
            snap_held = snap_held & ~ending
            given = snap.loc[ending].assign(coverage_end=line[ending].map(ends).to_numpy(dtype=object),
                                            **{ROW_NUMBER: 0})
            cur = pd.concat([cur, given[cur.columns]], ignore_index=True)
            cur_held = np.concatenate([cur_held, np.zeros(len(given), dtype=bool)])
    carried = snap.loc[snap_held]
    snap, cur = snap.loc[~snap_held].reset_index(drop=True), cur.loc[~cur_held].reset_index(drop=True)

    if snapshot is None or full_file:
        pending = snap.iloc[0:0]
        if pending_terms and len(snap):
            still = (snap["coverage_end"] != "") & (snap["coverage_end"] >= as_of.strftime("%Y%m%d"))
            pending = snap.loc[still.to_numpy(dtype=bool) & ~_keys(snap, LINE_KEY).isin(_keys(cur, LINE_KEY))
                               .to_numpy(dtype=bool)]
        send = pd.concat([cur, pending.assign(**{ROW_NUMBER: 0}), carried.assign(**{ROW_NUMBER: 0})],
                         ignore_index=True)
        if len(pending):
            # a pending line of a member still in the census: the member loop has the member's values
            gone = np.zeros(len(send), dtype=bool)
            gone[len(cur):len(cur) + len(pending)] = True
            _current_member_values(send, gone, [c for c in sent_cols if c not in LINE_KEY and c not in _COVERAGE])
        send["_pos"] = np.arange(len(send))
        send = _sort(send).drop(columns="_pos")
        send["ins03"], send["ins04"], send["hd01"] = AUDIT, MaintenanceReason.NOT_SPECIFIED.value, AUDIT
        table = send[[*sent_cols, "ins03", "ins04", "hd01", ROW_NUMBER]]
        enrollment = _enrollment(table, current)
        new_snapshot = send[cols].reset_index(drop=True)
        return ChangeSet(enrollment=enrollment, snapshot=new_snapshot,
                         members_by_type={AUDIT: enrollment.member_count},
                         coverages_by_type={AUDIT: enrollment.coverage_count},
                         carried_over=carried_members, full_file=True)

    window = (as_of - timedelta(days=retro_window_days)).strftime("%Y%m%d")
    ended = term_date(as_of, term_end).strftime("%Y%m%d")

    cur["_pos"] = np.arange(len(cur))
    snap["_pos"] = np.arange(len(snap)) + len(cur)
    merged = cur.merge(snap, on=list(LINE_KEY), how="outer", suffixes=("", "_snap"), indicator=True)
    merged = merged.sort_values("_pos").reset_index(drop=True) if len(merged) else merged
    merged["_pos"] = merged["_pos"].fillna(merged["_pos_snap"])
    side = merged["_merge"].astype(str).to_numpy()
    new, both, gone = side == "left_only", side == "both", side == "right_only"
    # Lines the carrier no longer has a use for: take the snapshot's own values for them.
    for col in cols:
        if col in LINE_KEY:
            continue
        snap_col = merged[f"{col}_snap"].fillna("").astype(str)
        merged[col] = np.where(gone, snap_col, merged[col].fillna("").astype(str))
        merged[f"{col}_snap"] = snap_col
    merged[ROW_NUMBER] = merged[ROW_NUMBER].fillna(0).astype(int)
    _current_member_values(merged, gone, [c for c in sent_cols if c not in LINE_KEY and c not in _COVERAGE])
    # A start the carrier's coverage absorbed (see RESUMED): compared and sent as the start it holds.
    census_start = merged["coverage_start"].to_numpy(dtype=object).copy()
    held_start = merged["coverage_start_snap"].to_numpy(dtype=object)
    resumed_snap = merged[f"{RESUMED}_snap"].to_numpy(dtype=object)
    absorbed = both & (resumed_snap != "") & (census_start == resumed_snap)
    merged.loc[absorbed, "coverage_start"] = held_start[absorbed]
    merged[RESUMED] = np.where(absorbed | gone, resumed_snap, "")

    end, snap_end = merged["coverage_end"].to_numpy(dtype=object), merged["coverage_end_snap"].to_numpy(dtype=object)
    coverage_changed = np.zeros(len(merged), dtype=bool)
    for col in (c for c in _COVERAGE if c in cols and c != "coverage_end"):
        coverage_changed |= merged[col].to_numpy(dtype=object) != merged[f"{col}_snap"].to_numpy(dtype=object)
    start_changed = merged["coverage_start"].to_numpy(dtype=object) != merged["coverage_start_snap"].to_numpy(
        dtype=object)

    starts = merged["coverage_start"].to_numpy(dtype=object)
    plan_changed = np.zeros(len(merged), dtype=bool)
    for col in (c for c in _PLAN if c in cols):
        plan_changed |= merged[col].to_numpy(dtype=object) != merged[f"{col}_snap"].to_numpy(dtype=object)
    plan_changed &= both
    # Coverage the carrier holds as ended that starts again later than the day after its end: a new
    # enrollment of the line (a rehire after a gap), never a reinstatement that would cover the gap.
    snap_ended = both & (snap_end != "")
    resumes_on = np.full(len(merged), "", dtype=object)
    if snap_ended.any():
        resumes_on[snap_ended] = _shift_days(snap_end[snap_ended], 1)
    returns = snap_ended & (starts > resumes_on)
    # Another plan on the line (not after a gap): under term_and_add the old plan's term and the new
    # plan's add, two Loop 2300s on one line; under change one HD*001 with the new plan and its dates,
    # whether or not the old plan had an end (a reinstatement would restore the old plan).
    moved = plan_changed & ~returns
    switch = moved if plan_change == "term_and_add" else np.zeros(len(merged), dtype=bool)
    by_rules = both & ~returns & ~moved

    hd01 = np.full(len(merged), "", dtype=object)
    hd01[new | returns | switch] = ADD
    hd01[moved & ~switch] = CHANGE
    # A term only ends coverage (the carrier keeps the start, and the amounts, policy number and provider
    # it holds; the level is the loop's HD05): an end that comes with a moved start or another of those
    # values is sent as HD*001 carrying the end and the new values.
    kept_by_term = start_changed.copy()
    for col in (c for c in _COVERAGE if c in cols and c not in ("hd04", "hd05", "coverage_start", "coverage_end")):
        kept_by_term |= merged[col].to_numpy(dtype=object) != merged[f"{col}_snap"].to_numpy(dtype=object)
    term_now = by_rules & (end != "") & (end != snap_end) & ~kept_by_term
    hd01[term_now] = TERM
    # 025 restores the ended coverage as the carrier held it: coverage that resumes with another level
    # (or plan policy number) is sent as HD*001 with its new values instead.
    restyled = np.zeros(len(merged), dtype=bool)
    for col in (c for c in ("hd05", "coverage_policy_number") if c in cols):
        restyled |= merged[col].to_numpy(dtype=object) != merged[f"{col}_snap"].to_numpy(dtype=object)
    # Nor does a 025 move the start: coverage that comes back with another start than the one the carrier
    # holds (other than the day after its end, where it simply resumes) is HD*001 with the new DTP*348.
    redated = start_changed & (starts != resumes_on)
    hd01[by_rules & (end == "") & (snap_end != "") & ~restyled & ~redated] = REINSTATE
    hd01[by_rules & (hd01 == "") & coverage_changed] = CHANGE
    gone_active = gone & (snap_end == "")
    keep = np.ones(len(merged), dtype=bool)
    if term_policy == "explicit":
        hd01[gone_active] = TERM
        merged.loc[gone_active, "coverage_end"] = np.where(starts > ended, starts, ended)[gone_active]
        if "eligibility_end" in cols and gone_active.any():
            _end_eligibility(merged, gone_active)
    # Old terms stay in the snapshot only while a reinstatement could still be retroactive.
    dropped = gone & (snap_end != "") & (snap_end < window)
    keep &= ~dropped

    retro = np.zeros(len(merged), dtype=bool)
    retro |= (new | returns | switch) & (starts < window)
    retro |= (hd01 == CHANGE) & start_changed & (starts < window)
    retro |= (hd01 == CHANGE) & (end != snap_end) & (end != "") & (end < window)
    retro |= term_now & (end < window)
    if retro.any():
        rows = sorted(int(r) for r in merged.loc[retro, ROW_NUMBER].tolist())
        raise OutsideRetroWindow(
            f"{len(rows)} coverage change(s) take effect more than {retro_window_days} days before "
            f"{as_of.isoformat()} (the carrier's retroactive window)",
            row=rows[0], column="coverage_start", rule="retro_window",
            details={"count": len(rows), "rows": rows[:50], "window_days": retro_window_days})

    member_key = _keys(merged, MEMBER_KEY)
    merged["_member"] = member_key
    identity = [c for c in _IDENTITY if c in cols]
    address = [c for c in _ADDRESS if c in cols]
    other = [c for c in (*_MEMBER_OTHER, *STATUS) if c in cols]

    def differs(columns: list[str]) -> pd.Series:
        flags = np.zeros(len(merged), dtype=bool)
        for col in columns:
            flags |= (merged[col].to_numpy(dtype=object) != merged[f"{col}_snap"].to_numpy(dtype=object))
        return pd.Series(flags & both, index=merged.index).groupby(member_key).transform("any")

    id_changed, addr_changed, other_changed = differs(identity), differs(address), differs(other)

    def per_member(flags: np.ndarray, how: Literal["any", "all"] = "any") -> np.ndarray:
        out: np.ndarray = pd.Series(flags, index=merged.index).groupby(member_key).transform(how).to_numpy(
            dtype=bool)
        return out

    in_snap, in_cur = per_member(~new), per_member(~gone)
    snap_active = per_member(~new & (snap_end == ""))
    final_end = merged["coverage_end"].to_numpy(dtype=object)
    all_ended = ~per_member(keep & (final_end == ""))
    hd = pd.Series(hd01, index=merged.index)
    switched = per_member(switch)  # the old plan's HD*024 is sent too
    any_hd = hd.ne("").groupby(member_key).transform("any").to_numpy()
    any_term = hd.eq(TERM).groupby(member_key).transform("any").to_numpy() | switched
    only_terms = hd.isin(["", TERM]).groupby(member_key).transform("all").to_numpy() & ~switched
    only_adds = any_hd & hd.isin(["", ADD]).groupby(member_key).transform("all").to_numpy() & ~switched
    any_reinstate = hd.eq(REINSTATE).groupby(member_key).transform("any").to_numpy()
    no_terms = ~any_term
    demo = (id_changed | addr_changed | other_changed).to_numpy()

    ins03 = np.full(len(merged), "", dtype=object)
    # A member new to the carrier, or back after every line of theirs had ended there.
    ins03[~in_snap | (~snap_active & only_adds)] = ADD
    ins03[in_snap & in_cur & any_reinstate & ~snap_active & no_terms] = REINSTATE
    ins03[in_snap & (ins03 == "") & any_term & only_terms & all_ended] = TERM
    ins03[in_snap & (ins03 == "") & (any_hd | demo)] = CHANGE
    status = merged["employment_status"].to_numpy(dtype=object) if "employment_status" in cols else np.full(
        len(merged), "", dtype=object)
    ins04 = np.full(len(merged), "", dtype=object)
    ins04[ins03 == ADD] = MaintenanceReason.INITIAL_ENROLLMENT.value
    ins04[ins03 == REINSTATE] = MaintenanceReason.REENROLLMENT.value
    ins04[ins03 == TERM] = np.where(status[ins03 == TERM] == "TE", MaintenanceReason.TERMINATION_OF_EMPLOYMENT.value,
                                    MaintenanceReason.TERMINATION_OF_BENEFITS.value)
    change = ins03 == CHANGE
    ins04[change] = np.where(id_changed.to_numpy()[change], MaintenanceReason.CHANGE_IN_IDENTIFYING_DATA.value,
                             np.where(addr_changed.to_numpy()[change], MaintenanceReason.CHANGE_OF_LOCATION.value,
                                      MaintenanceReason.NO_REASON_GIVEN.value))
    # The census's event is the reason only for a maintenance it can be the reason of (TR3 INS04): an add,
    # term or reinstatement, a coverage change, or a status change. A change of name or address alone keeps
    # the diff's reason and the run's day (DTP*303), so an event already sent (the census keeps it) does not
    # linger on later changes.
    status_changed = differs([c for c in STATUS if c in cols]).to_numpy()
    _events(merged, cur_table, current, ins03, ins04, as_of,
            eventful=(ins03 != CHANGE) | any_hd | switched | status_changed)
    if current.options.identity_corrections:
        _prior_identity(merged, cols, both, member_key, ins03 == CHANGE)
    merged["ins03"], merged["ins04"], merged["hd01"] = ins03, ins04, hd01

    # Rows to send: every line with an HD01; a member sent without any becomes one row with no Loop 2300.
    sent_member = ins03 != ""
    line_rows = merged.loc[sent_member & (hd01 != "")]
    bare_members = sent_member & ~any_hd
    bare = merged.loc[bare_members].drop_duplicates("_member").copy()
    for col in ("hd03", *_COVERAGE):
        if col in bare.columns:
            bare[col] = ""
    # The old plan of each term_and_add plan change: the member's own row with the carrier's coverage
    # values, ending the day before the new plan starts, just before the new plan's Loop 2300.
    old_plans = merged.loc[sent_member & switch].copy()
    for col in (c for c in _COVERAGE if c in cols):
        old_plans[col] = old_plans[f"{col}_snap"]
    if len(old_plans):
        old_plans["coverage_end"] = _shift_days(merged.loc[sent_member & switch, "coverage_start"].to_numpy(
            dtype=object), -1)
    old_plans["hd01"] = TERM
    old_plans["_pos"] = old_plans["_pos"].astype(float) - 0.5
    send = _sort(pd.concat([line_rows, old_plans, bare]))
    dated = [c for c in ("maintenance_effective", *PRIOR) if c in send.columns]
    table = send[[*sent_cols, *dated, "ins03", "ins04", "hd01", ROW_NUMBER]].reset_index(drop=True)
    for col in table.columns:
        if col != ROW_NUMBER:
            table[col] = table[col].astype(object)

    after = merged.loc[keep, [*cols, "_pos"]]
    # A 025 restores the coverage the carrier held, start included: the snapshot keeps that start (not the
    # census's day-after-the-end one), so a later term is dated against the coverage the carrier holds, and
    # the census start it resumed on (RESUMED), which is then no start change.
    restored = (hd01 == REINSTATE)[keep]
    if restored.any():
        resumed = np.where(census_start != held_start, census_start, resumed_snap)[keep]
        after.loc[restored, RESUMED] = resumed[restored]
        after.loc[restored, "coverage_start"] = held_start[keep][restored]
    after = pd.concat([after, carried.assign(_pos=np.arange(len(carried)) + len(merged) + len(cur))])
    new_snapshot = _sort(after)[cols].reset_index(drop=True)

    enrollment = _enrollment(table, current)
    members = table.drop_duplicates(list(MEMBER_KEY))
    change_set = ChangeSet(
        enrollment=enrollment, snapshot=new_snapshot,
        members_by_type={str(k): int(v) for k, v in members["ins03"].value_counts().sort_index().items()},
        coverages_by_type={str(k): int(v) for k, v in table.loc[table["hd01"] != "", "hd01"]
                           .value_counts().sort_index().items()},
        carried_over=carried_members, full_file=False, dropped_terms=int(dropped.sum()))
    log.info("diff: members by type %s, coverages by type %s, %d carried over, %d old term(s) dropped",
             change_set.members_by_type, change_set.coverages_by_type, carried_members, int(dropped.sum()))
    return change_set


def keeps_snapshot(mode: str, policy: str, *, eoi_hold: bool = False) -> bool:
    """Whether a feed keeps the snapshot of what its carrier holds: always in changes ``mode``, and in full
    mode when the validation ``policy`` may hold families back (``quarantine``) or the mapping holds lines
    back until evidence of insurability is approved (``eoi_hold``). A full file (030) is the carrier's
    whole roster, so a family or line left out of it loses its coverage; with the snapshot it is carried
    over from the last file the carrier confirmed instead (``held_back_members``, ``held_lines``)."""
    return mode == "changes" or policy == "quarantine" or eoi_hold


def is_full_file_day(day: date, weekday: str | None) -> bool:
    """Whether ``day`` is the mapping's full-file weekday (changes mode sends the 030 audit file then)."""
    return weekday is not None and calendar.day_name[day.weekday()].lower() == weekday


# ------------------------------------------------------------------------------------ snapshot store
_MAGIC: Final[bytes] = b"CFSNAP1\n"
#: A snapshot sealed segment by segment (:class:`SnapshotWriter`): staged without the whole in memory.
_MAGIC2: Final[bytes] = b"CFSNAP2\n"
_KEY_BYTES: Final[int] = 32
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _load_key(path: Path, *, create: bool) -> bytes:
    """The store's AES-256 key; created (0600, O_EXCL) only when ``create``; refused when exposed."""
    key = read_key_file(path, what="snapshot key", error=SnapshotRefused)
    if key is None:
        if not create:
            raise SnapshotRefused("snapshot key file is missing but snapshots exist; restore it (a new key "
                                  "would make every member look new)", details={"key_file": path.name})
        create_key_file(path, os.urandom(_KEY_BYTES), what="snapshot key")
        key = read_key_file(path, what="snapshot key", error=SnapshotRefused)  # ours, or a racer's
    if key is None or len(key) != _KEY_BYTES:
        raise SnapshotRefused("snapshot key file does not hold a 32-byte key", details={"key_file": path.name})
    return key


@dataclass(frozen=True)
class SnapshotInfo:
    """A stored snapshot's clear (authenticated) header: no member data."""

    feed_id: str
    run_id: str
    rows: int
    full_file: bool


class SnapshotStore:
    """Per feed: ``current.snap`` (what the carrier holds), ``previous.snap`` (the base of the run that
    made current, so a rerun of that run diffs the same way), ``pending/<run_id>.snap`` and
    ``reverted/<run_id>`` (empty markers: runs whose file the carrier rejected; never advanced again).

    Files are ``MAGIC | header length | header JSON | nonce | AES-256-GCM(parquet)`` with the header
    (feed id, run id, row count) as associated data, so a file moved to another feed or run is refused.
    Every write is a temp file, fsync, rename; advance and revert hold the feed's lock file, so a
    pipeline confirming and an acknowledgment poller reverting never interleave.
    """

    @classmethod
    def for_settings(cls, settings: Any) -> SnapshotStore:
        """The store the pipeline and the acknowledgment poller share: under the data directory, keyed
        from the keys directory (``settings`` is a :class:`carrierfeeds.settings.Settings`)."""
        return cls(Path(settings.data_dir) / "snapshots", Path(settings.resolved_keys_dir) / "snapshot.key")

    def __init__(self, root: Path, key_file: Path) -> None:
        self.root = Path(root)
        self.key_file = Path(key_file)
        self._key: bytes | None = None

    def _aead(self, *, create: bool) -> AESGCM:
        if self._key is None:
            self._key = _load_key(self.key_file, create=create)
        return AESGCM(self._key)

    def _dir(self, feed_id: str) -> Path:
        if not _SAFE.match(feed_id):
            raise ConfigError("feed id is not usable as a snapshot folder name", field="feed_id")
        return self.root / feed_id

    def _write(self, path: Path, info: SnapshotInfo, frame: pd.DataFrame) -> None:
        has_any = self.root.exists() and any(self.root.glob("*/*.snap"))
        aead = self._aead(create=not has_any)
        buf = io.BytesIO()
        frame.reset_index(drop=True).astype(str).to_parquet(buf, index=False)
        header = json.dumps({"feed_id": info.feed_id, "run_id": info.run_id, "rows": info.rows,
                             "full_file": info.full_file}, sort_keys=True).encode()
        nonce = os.urandom(12)
        blob = _MAGIC + len(header).to_bytes(4, "big") + header + nonce + aead.encrypt(
            nonce, buf.getvalue(), _MAGIC + header)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def _read(self, path: Path, feed_id: str,
              columns: Iterable[str] | None = None) -> tuple[SnapshotInfo, pd.DataFrame] | None:
        try:
            with path.open("rb") as fh:
                if fh.read(len(_MAGIC2)) == _MAGIC2:
                    return self._read_segments(fh, feed_id, columns)
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + 4:
            raise SnapshotRefused("snapshot file is not a carrierfeeds snapshot", details={"feed_id": feed_id})
        at = len(_MAGIC)
        size = int.from_bytes(blob[at:at + 4], "big")
        header = blob[at + 4:at + 4 + size]
        nonce = blob[at + 4 + size:at + 16 + size]
        aead = self._aead(create=False)
        try:
            plain = aead.decrypt(nonce, blob[at + 16 + size:], _MAGIC + header)
            meta = json.loads(header)
        except (InvalidTag, ValueError):
            raise SnapshotRefused("snapshot file failed its integrity check", details={"feed_id": feed_id}) from None
        if meta.get("feed_id") != feed_id:
            raise SnapshotRefused("snapshot file belongs to another feed", details={"feed_id": feed_id})
        if columns is not None:  # only what the caller reads: a whole million-row snapshot is gigabytes
            import pyarrow as pa
            import pyarrow.parquet as pq

            columns = [c for c in columns if c in pq.read_schema(pa.BufferReader(plain)).names]
            # Arrow strings: a cell as a Python str costs several times its bytes (benchmarks/README.md).
            table = pq.read_table(pa.BufferReader(plain), columns=columns)
            table = table.cast(pa.schema([(name, pa.string()) for name in table.column_names]))
            frame = table.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)
        else:
            frame = pd.read_parquet(io.BytesIO(plain)).astype(str).astype(object)
        return SnapshotInfo(feed_id, str(meta["run_id"]), int(meta["rows"]), bool(meta["full_file"])), frame

    def _read_segments(self, fh: BinaryIO, feed_id: str, columns: Iterable[str] | None
                       ) -> tuple[SnapshotInfo, pd.DataFrame]:
        """A segmented snapshot (after its magic): each segment's parquet opened and read, then the
        trailer's row and segment counts checked, so a segment dropped, repeated or moved is refused."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        def refused(why: str) -> SnapshotRefused:
            return SnapshotRefused(f"snapshot file {why}", details={"feed_id": feed_id})

        size = int.from_bytes(fh.read(4), "big")
        header = fh.read(size)
        aead = self._aead(create=False)
        try:
            meta = json.loads(header)
        except ValueError:
            raise refused("failed its integrity check") from None
        if meta.get("feed_id") != feed_id:
            raise refused("belongs to another feed")
        wanted = None if columns is None else list(columns)
        frames: list[pd.DataFrame] = []
        tables: list[pa.Table] = []
        k = 0
        while True:
            head = fh.read(9)
            if len(head) != 9:
                raise refused("ends before its trailer")
            kind, length = head[0], int.from_bytes(head[1:9], "big")
            nonce, body = fh.read(12), fh.read(length)
            try:
                plain = aead.decrypt(nonce, body, _segment_aad(header, k, kind))
            except InvalidTag:
                raise refused("failed its integrity check") from None
            if kind == 1:
                trailer = json.loads(plain)
                if trailer["segments"] != k:
                    raise refused("failed its integrity check")
                break
            k += 1
            if wanted is None:
                frames.append(pd.read_parquet(io.BytesIO(plain)).astype(str).astype(object))
            else:
                names = [c for c in wanted if c in pq.read_schema(pa.BufferReader(plain)).names]
                table = pq.read_table(pa.BufferReader(plain), columns=names)
                tables.append(table.cast(pa.schema([(name, pa.string()) for name in table.column_names]))
                              if table.num_columns else table)
        if wanted is None:
            frame = pd.concat(frames, ignore_index=True) if len(frames) != 1 else frames[0]
        else:
            frame = pa.concat_tables(tables).to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)
        read = sum(len(f) for f in frames) if wanted is None else sum(t.num_rows for t in tables)
        if read != int(trailer["rows"]):
            raise refused("failed its integrity check")
        return SnapshotInfo(feed_id, str(meta["run_id"]), int(trailer["rows"]), bool(meta["full_file"])), frame

    @contextmanager
    def staging(self, feed_id: str, run_id: str, *, full_file: bool = False) -> Iterator[SnapshotWriter]:
        """Stage ``run_id``'s pending snapshot a part at a time (:meth:`SnapshotWriter.write`; parts in
        order, one at a time in memory): kept, replacing an earlier attempt's, when the block ends
        without an exception, nothing otherwise. It loads as :meth:`stage` of the parts concatenated."""
        if not _SAFE.match(run_id):
            raise ConfigError("run id is not usable as a file name", field="run_id")
        path = self._dir(feed_id) / "pending" / f"{run_id}.snap"
        has_any = self.root.exists() and any(self.root.glob("*/*.snap"))
        aead = self._aead(create=not has_any)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        header = json.dumps({"feed_id": feed_id, "run_id": run_id, "full_file": full_file,
                             "segments": True}, sort_keys=True).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(_MAGIC2 + len(header).to_bytes(4, "big") + header)
                writer = SnapshotWriter(fh, aead, header)
                yield writer
                writer.close()
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        log.info("feed %s run %s: snapshot staged (%d rows in %d segments)", feed_id, run_id, writer.rows,
                 writer.segments)

    def info(self, feed_id: str) -> SnapshotInfo | None:
        """The current snapshot's header, or None when nothing was ever confirmed."""
        got = self._read(self._dir(feed_id) / "current.snap", feed_id, columns=())
        return got[0] if got else None

    def load(self, feed_id: str, *, columns: Iterable[str] | None = None) -> pd.DataFrame | None:
        """What the carrier holds for ``feed_id`` (the last confirmed snapshot), or None; with ``columns``,
        only those of them the snapshot has."""
        got = self._read(self._dir(feed_id) / "current.snap", feed_id, columns)
        return got[1] if got else None

    def load_base(self, feed_id: str, run_id: str) -> pd.DataFrame | None:
        """The snapshot ``run_id`` diffs against: the current one, unless ``run_id`` itself made it
        current (a rerun of a delivered run), then the one before, so the rerun renders the same file."""
        folder = self._dir(feed_id)
        got = self._read(folder / "current.snap", feed_id)
        if got is not None and got[0].run_id == run_id:
            previous = self._read(folder / "previous.snap", feed_id)
            return previous[1] if previous else None
        return got[1] if got else None

    def has_base(self, feed_id: str, run_id: str) -> bool:
        """Whether :meth:`load_base` would find a snapshot (its columns left unread)."""
        folder = self._dir(feed_id)
        got = self._read(folder / "current.snap", feed_id, columns=())
        if got is not None and got[0].run_id == run_id:
            return (folder / "previous.snap").exists()
        return got is not None

    def stage(self, feed_id: str, run_id: str, frame: pd.DataFrame, *, full_file: bool = False) -> Path:
        """Keep ``frame`` as ``run_id``'s pending snapshot (replacing an earlier attempt's)."""
        if not _SAFE.match(run_id):
            raise ConfigError("run id is not usable as a file name", field="run_id")
        path = self._dir(feed_id) / "pending" / f"{run_id}.snap"
        self._write(path, SnapshotInfo(feed_id, run_id, len(frame), full_file), frame)
        log.info("feed %s run %s: snapshot staged (%d rows)", feed_id, run_id, len(frame))
        return path

    @contextmanager
    def _locked(self, feed_id: str) -> Iterator[Path]:
        folder = self._dir(feed_id)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield folder
        finally:
            os.close(fd)  # releases the lock

    def is_reverted(self, feed_id: str, run_id: str) -> bool:
        """Whether ``run_id``'s snapshot was reverted after the carrier rejected its file."""
        return (self._dir(feed_id) / "reverted" / run_id).exists()

    def advance(self, feed_id: str, run_id: str) -> bool:
        """Make ``run_id``'s pending snapshot current (call only once its delivery is confirmed).

        Idempotent: True when it advanced now or had already advanced to ``run_id``; False (and the
        pending snapshot dropped) when ``run_id`` was reverted, since the carrier rejected what it sent
        and a rerun that only finds the file already delivered must not make it the baseline again.
        Raises SnapshotRefused when there is nothing pending for ``run_id`` and it is not current.
        """
        with self._locked(feed_id) as folder:
            pending = folder / "pending" / f"{run_id}.snap"
            if self.is_reverted(feed_id, run_id):
                pending.unlink(missing_ok=True)
                log.warning("feed %s: run %s was reverted after a rejection; snapshot not advanced",
                            feed_id, run_id)
                return False
            current = self._read(folder / "current.snap", feed_id)
            if not pending.exists():
                if current is not None and current[0].run_id == run_id:
                    return True
                raise SnapshotRefused("no staged snapshot for this run",
                                      details={"feed_id": feed_id, "run_id": run_id})
            staged = self._read(pending, feed_id)
            if staged is None or staged[0].run_id != run_id:
                raise SnapshotRefused("staged snapshot belongs to another run", details={"run_id": run_id})
            if current is not None and current[0].run_id != run_id:
                os.replace(folder / "current.snap", folder / "previous.snap")
            # A rerun of the run that made current (current is already its own) keeps previous: that is
            # still the base the run diffed against, and what a revert of the run must put back.
            os.replace(pending, folder / "current.snap")
            _fsync_dir(folder)
        log.info("feed %s: snapshot advanced to run %s (%d rows)", feed_id, run_id, staged[0].rows)
        return True

    def revert(self, feed_id: str, run_id: str) -> bool:
        """The carrier rejected ``run_id``'s file: put back the snapshot from before that run.

        The snapshot ``run_id`` made current is dropped and ``previous.snap`` (its base) becomes current
        again, or none is current when the run was the first (the next run then sends a full file).
        Idempotent: True when it reverted now, False when ``run_id`` was reverted before. Raises
        :class:`SnapshotSuperseded` when ``run_id`` is not the current snapshot (a later run advanced past
        it, or it never advanced): nothing is changed then.
        """
        if not _SAFE.match(run_id):
            raise ConfigError("run id is not usable as a file name", field="run_id")
        with self._locked(feed_id) as folder:
            marker = folder / "reverted" / run_id
            current = self._read(folder / "current.snap", feed_id)
            if current is None or current[0].run_id != run_id:
                if marker.exists():
                    return False
                raise SnapshotSuperseded(
                    "the rejected run's snapshot is no longer current; a later run advanced past it",
                    details={"feed_id": feed_id, "run_id": run_id,
                             "current_run_id": current[0].run_id if current else None})
            previous = self._read(folder / "previous.snap", feed_id)
            marker.parent.mkdir(exist_ok=True, mode=0o700)
            # Marker first: after a crash between it and the swap, the run cannot advance again and a
            # retry still finds the run current, so it completes the swap.
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, 0o600))
            _fsync_dir(marker.parent)
            if previous is not None:
                os.replace(folder / "previous.snap", folder / "current.snap")
            else:
                (folder / "current.snap").unlink()
            (folder / "pending" / f"{run_id}.snap").unlink(missing_ok=True)
            _fsync_dir(folder)
        log.warning("feed %s: snapshot of run %s reverted to %s", feed_id, run_id,
                    previous[0].run_id if previous else "none (next run sends a full file)")
        return True


def _segment_aad(header: bytes, index: int, kind: int) -> bytes:
    """What a segmented snapshot's segment ``index`` is sealed with: its file's header, its place, and
    whether it is the trailer (``kind`` 1), so no segment can be dropped, repeated or moved unnoticed."""
    return _MAGIC2 + header + index.to_bytes(8, "big") + bytes([kind])


class SnapshotWriter:
    """A segmented snapshot being written (:meth:`SnapshotStore.staging`): each part a parquet file
    sealed with AES-256-GCM on its own, then a trailer with the row and segment counts."""

    def __init__(self, fh: BinaryIO, aead: AESGCM, header: bytes) -> None:
        self._fh, self._aead, self._header = fh, aead, header
        self.rows = self.segments = 0

    def _seal(self, plain: bytes, kind: int) -> None:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plain, _segment_aad(self._header, self.segments, kind))
        self._fh.write(bytes([kind]) + len(sealed).to_bytes(8, "big") + nonce + sealed)

    def write(self, frame: pd.DataFrame) -> None:
        """The next part of the snapshot, as :meth:`SnapshotStore.stage` stores a whole one."""
        buf = io.BytesIO()
        frame.reset_index(drop=True).astype(str).to_parquet(buf, index=False)
        self._seal(buf.getvalue(), 0)
        self.rows += len(frame)
        self.segments += 1

    def close(self) -> None:
        if not self.segments:
            raise ValueError("a snapshot has at least one part (its columns)")
        self._seal(json.dumps({"rows": self.rows, "segments": self.segments}).encode(), 1)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
