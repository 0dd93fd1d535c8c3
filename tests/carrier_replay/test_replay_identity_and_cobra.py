"""Carrier replay of identity corrections and COBRA events, against a carrier that keys members the way
many do: by SSN, or by name and birth date when a member has none.

Each history starts from a full file and then, day by day, corrects SSNs, names and birth dates (a
newborn gets its first SSN) and moves the single employee onto COBRA, through the project's pure stages
(build_enrollment, diff_against_snapshot, render_834). The carrier applies only the delivered bytes, read
by the replay's own reader; a change it cannot place on a member it holds is refused. After every day
it holds exactly the census: the same people under their corrected keys, with their names, birth dates,
benefit status and COBRA event and dates. Without identity corrections (2100B) the same carrier loses a
member on the first SSN correction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.carrier_replay.carrier import CarrierRefused
from tests.carrier_replay.reader import Member, read_834
from tests.x12 import x12_helpers as h

from carrierfeeds.changes import diff_against_snapshot
from carrierfeeds.config import CarrierMapping
from carrierfeeds.x12.envelope import ControlNumbers
from carrierfeeds.x12.render import render_834_bytes

Key = tuple[str, ...]
_SETTINGS = dict(identity_corrections=True, benefit_status=True, cobra=True, event_reasons=True,
                 maintenance_effective=True)


def _key(ssn: str, last: str, first: str, dob: str) -> Key:
    return ("ssn", ssn) if ssn else ("name", last, first, dob)


@dataclass
class DemographicCarrier:
    """Members keyed by SSN, else by (last name, first name, birth date): a correction is found by the
    identity it held (Loop 2100B), falling back on 2100A for what 2100B leaves out."""

    roster: dict[Key, dict[str, str]] = field(default_factory=dict)

    def apply(self, data: bytes) -> None:
        tx = read_834(data)
        if tx.full_file:
            self.roster = {}
        for m in tx.members:
            self._apply(m)

    def _apply(self, m: Member) -> None:
        dob = m.dob.isoformat() if m.dob else ""
        now = _key(m.ssn, m.last_name, m.first_name, dob)
        if m.ins03 in ("030", "021"):
            self.roster[now] = self._held(m, dob)
            return
        prior = m.prior
        was = (_key(prior.get("ssn", ""), prior["last_name"], prior["first_name"], prior.get("dob", dob))
               if prior else now)
        if was not in self.roster:
            raise CarrierRefused(f"INS03 {m.ins03}: no member held under the key sent")
        del self.roster[was]
        self.roster[now] = self._held(m, dob)

    @staticmethod
    def _held(m: Member, dob: str) -> dict[str, str]:
        return {"member": m.member_id or m.subscriber_id, "dob": dob, "benefit": m.ins05, "cobra": m.ins07,
                "cobra_begin": m.dates["340"].isoformat() if "340" in m.dates else "",
                "cobra_end": m.dates["341"].isoformat() if "341" in m.dates else ""}


def _expected(view: pd.DataFrame) -> dict[Key, dict[str, str]]:
    def iso(v: str) -> str:
        return f"{v[:4]}-{v[4:6]}-{v[6:]}" if v else ""

    out: dict[Key, dict[str, str]] = {}
    for r in view.drop_duplicates(["subscriber_id", "member_id"]).to_dict("records"):
        key = _key(r["ssn"], r["last_name"], r["first_name"], iso(r["dob"]))
        out[key] = {"member": r["member_id"], "dob": iso(r["dob"]), "benefit": r.get("benefit_status", "A"),
                    "cobra": r.get("cobra_event", ""), "cobra_begin": iso(r.get("cobra_begin", "")),
                    "cobra_end": iso(r.get("cobra_end", ""))}
    return out


@dataclass
class Replay:
    mapping: CarrierMapping
    carrier: DemographicCarrier = field(default_factory=DemographicCarrier)
    snapshot: pd.DataFrame | None = None
    isa13: int = 0

    def day(self, rows: list[dict[str, str]]) -> None:
        enrollment = h.enrollment(h.census(rows), self.mapping)
        change = diff_against_snapshot(enrollment, self.snapshot, as_of=h.AS_OF)
        if not change.empty:
            self.isa13 += 1
            control = ControlNumbers(isa13=self.isa13, gs06=self.isa13, st02=1)
            self.carrier.apply(render_834_bytes(change.enrollment, h.header(self.mapping), control))
        self.snapshot = change.snapshot  # delivered and confirmed
        assert self.carrier.roster == _expected(enrollment.table)


_NAMES = {"last_name": ["Rivers", "Rivera-Cruz", "Ryvera"], "first_name": ["Anita", "Mat", "Lu", "Teodoro"]}
_DOBS = ["1984-03-10", "1983-12-01", "2012-07-16", "2016-01-03"]
Edit = tuple[str, str, str]
_EDITS: st.SearchStrategy[Edit] = st.one_of(
    st.tuples(st.sampled_from(["E1001", "E1001-01", "E2002", "E1001-03"]), st.just("ssn"),
              st.integers(1, 9999).map(lambda n: f"90019{n:04d}")),
    st.tuples(st.sampled_from(["E1001", "E1001-01", "E1001-02", "E1001-03", "E2002"]),
              st.sampled_from(sorted(_NAMES)), st.integers(0, 3).map(str)),
    st.tuples(st.sampled_from(["E1001-02", "E1001-03", "E1001-01"]), st.just("dob"), st.sampled_from(_DOBS)),
    st.tuples(st.just("E2002"), st.just("cobra"), st.sampled_from(["elect", "end"])))


def _applied(rows: list[dict[str, str]], edits: list[Edit]) -> list[dict[str, str]]:
    rows = [dict(r) for r in rows]
    for member, what, value in edits:
        mine = [r for r in rows if r["member_id"] == member]
        if what == "ssn":
            # SSNs stay unique: the value is the member's own pool (its index in the family)
            ids = ["E1001", "E1001-01", "E1001-02", "E1001-03", "E2002"]
            value = value[:5] + str(ids.index(member)) + value[6:]
        for r in mine:
            if what in _NAMES:
                pool = _NAMES[what]
                r[what] = pool[int(value) % len(pool)] + ("" if r["member_id"] == "E1001" else member[-1])
            elif what == "cobra" and value == "elect":
                r.update(benefit_status="C", cobra_event="1", cobra_begin="2026-11-01", cobra_end="2028-04-30",
                         event_reason="cobra", event_date="2026-11-01")
            elif what == "cobra":
                r.update(benefit_status="A", cobra_event="", cobra_begin="", cobra_end="", event_reason="")
            else:
                r[what] = value
    return rows


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(days=st.lists(st.lists(_EDITS, min_size=1, max_size=3), min_size=1, max_size=4))
def test_a_demographic_keyed_carrier_follows_every_correction_and_cobra_event(days: list[list[Edit]]) -> None:
    replay = Replay(h.status_mapping(**_SETTINGS))
    rows = h.family_rows()
    replay.day(rows)
    for edits in days:
        rows = _applied(rows, edits)
        replay.day(rows)


def test_without_2100b_the_same_carrier_loses_the_member_on_an_ssn_correction() -> None:
    replay = Replay(h.status_mapping(benefit_status=True, cobra=True))
    rows = h.family_rows()
    replay.day(rows)
    with pytest.raises(CarrierRefused, match="no member held"):
        replay.day(_applied(rows, [("E2002", "ssn", "900190001")]))


def test_a_cobra_election_and_a_correction_on_one_day() -> None:
    replay = Replay(h.status_mapping(**_SETTINGS))
    rows = h.family_rows()
    replay.day(rows)
    rows = _applied(rows, [("E2002", "cobra", "elect"), ("E2002", "ssn", "900190002"),
                           ("E1001-02", "dob", "2012-07-16")])
    replay.day(rows)
    held = next(v for v in replay.carrier.roster.values() if v["member"] == "E2002")
    assert (held["benefit"], held["cobra"], held["cobra_begin"], held["cobra_end"]) == (
        "C", "1", "2026-11-01", "2028-04-30")
    assert date.fromisoformat(held["cobra_begin"]) < date.fromisoformat(held["cobra_end"])
