"""A carrier that starts from nothing and applies every delivered 834, in order, as a carrier system would.

Maintenance types, at member level (INS03) and at coverage level (HD01, Loop 2300):

* 030 (full audit file): the roster becomes exactly the file's members and coverage loops.
* 021 addition: the member is created or replaced; its coverage is created or replaced with DTP*348 as
  start and DTP*349 (if any) as end.
* 001 change: demographics replaced by what the member loop carries; a coverage loop replaces plan,
  level and dates of the coverage it keys (created when absent: an upsert).
* 024 cancellation or termination: the coverage gets DTP*349 as end and the loop's level HD05 (the
  level of the period that ends); a term without an end date, or for
  coverage the carrier does not hold, is refused (:class:`CarrierRefused`). INS03 024 with no Loop 2300
  ends every open coverage of the member at DTP*357.
* 025 reinstatement: restores the ended coverage as it was: the end is cleared, the original start is
  kept (so a reinstatement after a gap covers the gap: that is what the 834 guide means by it).

Volumes: a coverage's benefit amount is the loop's AMT*FK on 030/021/001 (none sent: none held) and is
kept on 024/025; the salary (2100A ICM01 frequency, ICM02 amount) is a demographic like the others.

Two flavours key coverage differently: ``line`` by member and insurance line (HD03), so a new plan on
the line replaces the old one; ``plan`` by member, HD03 and plan (HD04), so an old plan stays open until
it is termed. Demographics are kept per member: names, SSN, DOB, gender, address, INS01/02/08.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from tests.carrier_replay.reader import Coverage, Member, Transmission

Flavour = Literal["line", "plan"]
MemberKey = tuple[str, str]
#: (subscriber id, member id, HD03) for line-keyed carriers, plus HD04 for plan-keyed ones.
CoverageKey = tuple[str, ...]

DEMOGRAPHICS = ("ins01", "ins02", "ins08", "last_name", "first_name", "middle_initial", "ssn", "dob",
                "gender", "address1", "address2", "city", "state", "zip", "income")


class CarrierRefused(AssertionError):
    """The carrier could not apply a transmission (a term for coverage it does not hold, a bad mix)."""


@dataclass(frozen=True)
class Held:
    """A coverage as the carrier holds it."""

    plan: str
    level: str
    start: date | None
    end: date | None
    amount: str = ""  # the benefit amount (AMT*FK) of a volume line


@dataclass
class Carrier:
    flavour: Flavour
    members: dict[MemberKey, dict[str, object]] = field(default_factory=dict)
    coverage: dict[CoverageKey, Held] = field(default_factory=dict)
    files: int = 0

    def _key(self, member: Member, cover: Coverage) -> CoverageKey:
        sid, mid = member.key
        return (sid, mid, cover.hd03, cover.hd04) if self.flavour == "plan" else (sid, mid, cover.hd03)

    def apply(self, tx: Transmission) -> None:
        """Apply one delivered interchange."""
        self.files += 1
        kinds = {m.ins03 for m in tx.members}
        if "030" in kinds:
            if kinds != {"030"}:
                raise CarrierRefused(f"file {tx.isa13}: a full file (030) mixes in other maintenance types")
            self.members, self.coverage = {}, {}
        for member in tx.members:
            self._apply_member(member, tx.isa13)

    def _apply_member(self, member: Member, isa13: str) -> None:
        key = member.key
        if not member.subscriber_id:
            raise CarrierRefused(f"file {isa13}: a member loop without REF*0F")
        if member.ins03 not in ("030", "021", "001", "024", "025"):
            raise CarrierRefused(f"file {isa13}: INS03 {member.ins03!r} unknown")
        if member.ins03 in ("024", "025", "001") and key not in self.members:
            raise CarrierRefused(f"file {isa13}: INS03 {member.ins03} for a member the carrier does not hold")
        self.members[key] = {name: getattr(member, name) for name in DEMOGRAPHICS}
        if not member.coverages:
            self._member_level(member, isa13)
            return
        for cover in member.coverages:
            self._apply_coverage(member, cover, isa13)

    def _member_level(self, member: Member, isa13: str) -> None:
        sid, mid = member.key
        mine = [k for k in self.coverage if k[0] == sid and k[1] == mid]
        if member.ins03 == "024":
            end = member.dates.get("357")
            if end is None:
                raise CarrierRefused(f"file {isa13}: INS03 024 without Loop 2300 or DTP*357")
            for k in mine:
                held = self.coverage[k]
                if held.end is None or held.end > end:
                    self.coverage[k] = Held(held.plan, held.level, held.start, end, held.amount)
        elif member.ins03 == "025":
            for k in mine:
                held = self.coverage[k]
                self.coverage[k] = Held(held.plan, held.level, held.start, None, held.amount)

    def _apply_coverage(self, member: Member, cover: Coverage, isa13: str) -> None:
        key = self._key(member, cover)
        held = self.coverage.get(key)
        if cover.hd01 in ("030", "021"):
            if cover.start is None:
                raise CarrierRefused(f"file {isa13}: HD*{cover.hd01} without DTP*348")
            self.coverage[key] = Held(cover.hd04, cover.hd05, cover.start, cover.end, cover.amounts.get("FK", ""))
        elif cover.hd01 == "001":
            start = cover.start if cover.start is not None else (held.start if held else None)
            self.coverage[key] = Held(cover.hd04, cover.hd05, start, cover.end, cover.amounts.get("FK", ""))
        elif cover.hd01 == "024":
            if held is None:
                raise CarrierRefused(f"file {isa13}: HD*024 for coverage the carrier does not hold")
            if cover.end is None:
                raise CarrierRefused(f"file {isa13}: HD*024 without DTP*349")
            self.coverage[key] = Held(held.plan, cover.hd05 or held.level, held.start, cover.end, held.amount)
        elif cover.hd01 == "025":
            if held is None:
                raise CarrierRefused(f"file {isa13}: HD*025 for coverage the carrier does not hold")
            self.coverage[key] = Held(held.plan, held.level, held.start, None, held.amount)
        else:
            raise CarrierRefused(f"file {isa13}: HD01 {cover.hd01!r} unknown")

    def per_line(self, on: date, plans: dict[tuple[str, str, str], str] | None = None,
                 ) -> tuple[dict[tuple[str, str, str], Held], list[str]]:
        """What the carrier holds per member and insurance line on ``on``, and overlap problems.

        Line-keyed: the one coverage of the line. Plan-keyed: the coverage of the plan ``plans`` names
        for the line (the plan the census says), else the one that counts on ``on`` (see
        :func:`counting`); no other plan on the same line may share a day with it, or the carrier pays
        for two plans of one line at once (reported as a problem)."""
        lines: dict[tuple[str, str, str], list[Held]] = {}
        for key, held in self.coverage.items():
            lines.setdefault((key[0], key[1], key[2]), []).append(held)
        out: dict[tuple[str, str, str], Held] = {}
        problems: list[str] = []
        for line, helds in sorted(lines.items()):
            named = [h for h in helds if plans is not None and h.plan == plans.get(line)]
            chosen = named[0] if named else counting(helds, on)
            out[line] = chosen
            for other in helds:
                if other is chosen:
                    continue
                if _overlap(other, chosen):
                    problems.append(f"member {line[1]} line {line[2]}: plan {other.plan!r} "
                                    f"({other.start}..{other.end}) overlaps {chosen.plan!r} from {chosen.start}")
        return out, problems


def _overlap(a: Held, b: Held) -> bool:
    """Whether two periods share a day (an open end runs on for ever)."""
    a_start, b_start = a.start or date.min, b.start or date.min
    a_end, b_end = a.end or date.max, b.end or date.max
    return a_start <= b_end and b_start <= a_end


def counting(helds: list[Held], on: date) -> Held:
    """The period that counts on ``on``: in effect; else the earliest starting after; else the last ended."""
    def in_effect(h: Held) -> bool:
        return h.start is not None and h.start <= on and (h.end is None or h.end >= on)

    now = [h for h in helds if in_effect(h)]
    if now:
        return min(now, key=lambda h: (h.start or date.min))
    later = [h for h in helds if h.start is not None and h.start > on]
    if later:
        return min(later, key=lambda h: (h.start or date.min))
    return max(helds, key=lambda h: (h.end or date.max, h.start or date.min))
