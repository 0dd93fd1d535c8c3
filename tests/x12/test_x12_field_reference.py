"""The census-to-834 field reference (carrierfeeds.x12.elements, docs/census-to-834.md) is true: a census is
rendered, one column is changed for one member, the census is rendered again, and the elements that moved
must be among those the reference declares for that column under that mapping; each declared element must
move under some change; a flow whose setting is off moves nothing and its element is not written."""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import x12_helpers as h
from pydantic import ValidationError

from carrierfeeds.census.columns import CANONICAL_COLUMNS
from carrierfeeds.changes import diff_against_snapshot
from carrierfeeds.config import CarrierMapping, Feed, load_feed, load_mapping
from carrierfeeds.config.reference import main
from carrierfeeds.enrollment import build_enrollment
from carrierfeeds.x12.elements import (
    FLOWS,
    NOT_SENT,
    Flow,
    Setting,
    census_flows,
    declared_columns,
    render_field_reference,
)
from carrierfeeds.x12.read import split_segments
from carrierfeeds.x12.render import render_834_bytes

# ------------------------------------------------------------------ what moved between two 834s
_QUALIFIED = {"NM1", "REF", "DTP", "N1", "AMT", "QTY", "PER", "LUI"}
_ENVELOPE = {"ISA", "GS", "ST", "SE", "GE", "IEA"}
_NM1_LOOPS = {"IL": "2100A", "70": "2100B", "31": "2100C", "P3": "2310"}


def element_values(data: bytes) -> Counter[tuple[str, str]]:
    """Every non-empty element of the file below the envelope as ("<loop> <segment> <element>", value),
    counted: the loop from the segment that opens it, the segment by its tag and qualifier (a 2750 REF by
    its tag alone: its qualifier is the mapping's), INS06 by its components."""
    segments, _ = split_segments(data)
    component = chr(data[104])
    loop = "header"
    out: Counter[tuple[str, str]] = Counter()
    for el in segments:
        tag, qualifier = el[0], (el[1] if len(el) > 1 else "")
        if tag in _ENVELOPE:
            continue
        if tag == "INS":
            loop = "2000"
        elif tag == "NM1":
            loop = _NM1_LOOPS[qualifier]
        elif tag == "HD":
            loop = "2300"
        elif tag in ("LS", "LE"):
            loop = "2700"
        elif tag == "LX":
            loop = "2310" if loop == "2300" else "2700"
        elif tag == "N1" and qualifier == "75":
            loop = "2750"
        keyed = tag in _QUALIFIED and not (loop == "2750" and tag == "REF")
        segment = f"{tag}*{qualifier}" if keyed else tag
        for i, value in enumerate(el[2 if keyed else 1:], start=2 if keyed else 1):
            if tag == "INS" and i == 6:
                for k, part in enumerate(value.split(component), start=1):
                    if part:
                        out[(f"{loop} INS INS06-{k}", part)] += 1
            elif value:
                out[(f"{loop} {segment} {tag}{i:02d}", value)] += 1
    return out


def moved(before: bytes, after: bytes) -> set[str]:
    """The elements whose values differ between two files (written, dropped or changed anywhere)."""
    a, b = element_values(before), element_values(after)
    return {ref for ref, _ in (a - b) + (b - a)}


# ------------------------------------------------------------------ a census with every column filled
SUBSCRIBER, CHILD = "E1001", "E1001-02"
#: Every canonical column's value on the two members (a), and the value a change puts there (b): a dict
#: gives each member its own. Valid values, so each reaches the 834 wherever a mapping lets it.
VALUES: dict[str, tuple[str | dict[str, str], str | dict[str, str]]] = {
    "member_id": ({SUBSCRIBER: SUBSCRIBER, CHILD: CHILD}, {CHILD: "E1001-09"}),
    "subscriber_id": (SUBSCRIBER, "E1009"),
    "relationship": ({SUBSCRIBER: "EE", CHILD: "CH"}, "SP"),
    "last_name": ("Rivera", "Rivers"), "first_name": ({SUBSCRIBER: "Ana", CHILD: "Lucia"}, "Anna"),
    "middle_initial": ("L", "Q"), "ssn": ({SUBSCRIBER: "900112222", CHILD: "900113333"}, "900119999"),
    "dob": ({SUBSCRIBER: "1984-03-09", CHILD: "2012-07-15"}, "1985-01-01"), "gender": ("F", "M"),
    "address1": ("12 Elm Street", "77 Birch Road"), "address2": ("Apt 3", "Unit 9"),
    "city": ("Springfield", "Peoria"), "state": ("IL", "WI"), "zip": ("62701", "53703"),
    "phone": ("2175550100", "2175550199"), "hire_date": ("2019-06-01", "2020-02-03"),
    "employment_status": ("FT", "PT"), "department": ("Plant 2", "Plant 7"),
    "plan_code": ("MED-PPO", "MED-HDHP"), "coverage_level": ("FAM", "ESP"),
    "coverage_start": ("2025-01-01", "2025-02-01"), "coverage_end": ("2026-12-31", "2026-12-30"),
    "benefit_status": ("A", "C"), "student_status": ("N", "F"), "handicap": ("N", "Y"),
    "death_date": ("2026-10-01", "2026-10-02"), "employment_end_date": ("2026-09-30", "2026-09-29"),
    "event_reason": ("marriage", "birth"), "event_date": ("2026-11-01", "2026-11-02"),
    "medicare_plan": ("A", "B"), "medicare_reason": ("0", "1"), "cobra_event": ("1", "2"),
    "cobra_begin": ("2026-10-01", "2026-10-05"), "cobra_end": ("2028-03-31", "2028-03-30"),
    "salary": ("52000", "61000"), "salary_frequency": ("ANNUALLY", "MONTHLY"),
    "coverage_amount": ("100000", "150000"), "premium_amount": ("12.50", "13.75"), "eoi_pending": ("N", "Y"),
    "email": ("ana@example.com", "ana.r@example.com"), "mailing_address1": ("PO Box 12", "PO Box 99"),
    "mailing_address2": ("Suite 1", "Suite 2"), "mailing_city": ("Chicago", "Evanston"),
    "mailing_state": ("IL", "IN"), "mailing_zip": ("60601", "60201"), "language": ("spa", "vie"),
    "tobacco_use": ("N", "Y"), "pcp_npi": ("1234567893", "1245319599"), "pcp_existing_patient": ("Y", "N"),
}
#: A third value of the identity columns: the carrier holds it in the snapshot a correction is sent against.
THIRD = {"last_name": "Riviera", "first_name": "Annie", "middle_initial": "K", "ssn": "900118888",
         "dob": "1986-05-05", "gender": "U"}


def _value(spec: str | dict[str, str], member: str) -> str | None:
    return spec.get(member) if isinstance(spec, dict) else spec


def census_rows(plans: tuple[str, ...], level: str = "FAM") -> list[dict[str, str]]:
    """The subscriber and a child, each on a line of every plan, every column filled (the a values)."""
    rows = []
    for member in (SUBSCRIBER, CHILD):
        for plan in plans:
            values = {c: _value(VALUES[c][0], member) or "" for c in CANONICAL_COLUMNS}
            rows.append(h.row(**{**values, "plan_code": plan, "coverage_level": level}))
    return rows


def changed(rows: list[dict[str, str]], column: str, value: str | dict[str, str] | None = None,
            plan: str | None = None) -> list[dict[str, str]]:
    """``rows`` with ``column`` set to its b value (or ``value``) on each member it names, only on the
    lines of ``plan`` when given (plan_code: so that no member gets the same plan twice)."""
    spec = VALUES[column][1] if value is None else value
    out = []
    for r in rows:
        new = _value(spec, r["member_id"])
        if new is not None and (plan is None or r["plan_code"] == plan):
            r = {**r, column: new}
        out.append(r)
    return out


# ------------------------------------------------------------------ mappings
def every_setting_on() -> CarrierMapping:
    """The demo mapping with every setting on and every census column on its allowlist."""
    plans = {"MED-PPO": {"insurance_line": "HLT", "description": "PPO GOLD", "policy_number": "P-100"},
             "MED-HDHP": {"insurance_line": "PPO", "description": "HDHP SILVER", "policy_number": "P-200"},
             "DEN-STD": {"insurance_line": "DEN", "description": "DENTAL STANDARD"}}
    return h.validated(
        allowlist=CANONICAL_COLUMNS, charset="extended", plans=plans,
        relationship_codes={"EE": "18", "SP": "01", "CH": "19", "HD": "19"},
        member_references={"group_policy_number": True, "department": True,
                           "client_reporting_category": {"field": "department"}},
        member_dates=["hire", "eligibility_begin", "eligibility_end"],
        volumes={"salary": True, "coverage_amount": True, "premium": True, "eoi_hold": True},
        contact={"phone": True, "email": True, "mailing_address": True, "language": True, "tobacco_use": True},
        reporting_categories=[{"name": "DIVISION", "field": "department", "qualifier": "19",
                               "date_field": "hire_date"}],
        primary_care_provider={"plans": ["MED-PPO"]},
        file_header={"file_effective_date": True, "control_totals": ["TO", "DT", "ET"]},
        member_status={**h.ALL_STATUS, "identity_corrections": True})


ALL = every_setting_on()
ALL_PLANS = ("MED-PPO", "DEN-STD")


def turned_off(mapping: CarrierMapping, setting: Setting) -> CarrierMapping:
    """``mapping`` with ``setting`` off (False, empty or null by the field's kind)."""
    data = mapping.model_dump()
    if setting.path == "member_dates":
        data["member_dates"] = [d for d in mapping.dates_sent if d != setting.value]
        return CarrierMapping.model_validate(data)
    *parents, name = setting.path.split(".")
    node = data
    for parent in parents:
        node = node[parent]
    current = node[name]
    node[name] = False if isinstance(current, bool) else [] if isinstance(current, list | tuple) else None
    return CarrierMapping.model_validate(data)


def without(mapping: CarrierMapping, column: str) -> CarrierMapping:
    """``mapping`` with ``column`` off its allowlist (refused at load when a setting needs it)."""
    return CarrierMapping.model_validate({**mapping.model_dump(),
                                          "allowlist": [c for c in mapping.allowlist if c != column]})


# ------------------------------------------------------------------ rendering
def _render(rows: list[dict[str, str]], feed: Feed, mapping: CarrierMapping) -> bytes:
    view = build_enrollment(h.census(rows), feed, mapping, as_of=h.AS_OF, workers=1)
    return render_834_bytes(view, h.header(mapping, feed), h.CONTROL)


def _change_file(before: list[dict[str, str]], after: list[dict[str, str]], mapping: CarrierMapping) -> bytes:
    """The change file that takes the carrier from ``before`` (its snapshot) to ``after``."""
    return _change_file_of(mapping.model_dump_json(), json.dumps(before), json.dumps(after))


@functools.cache
def _snapshot_of(mapping_json: str, before_json: str) -> pd.DataFrame:
    view = build_enrollment(h.census(json.loads(before_json)), h.feed(),
                            CarrierMapping.model_validate_json(mapping_json), as_of=h.AS_OF, workers=1)
    return diff_against_snapshot(view, None, as_of=h.AS_OF).snapshot


@functools.cache
def _change_file_of(mapping_json: str, before_json: str, after_json: str) -> bytes:
    mapping, feed = CarrierMapping.model_validate_json(mapping_json), h.feed()
    view = build_enrollment(h.census(json.loads(after_json)), feed, mapping, as_of=h.AS_OF, workers=1)
    change = diff_against_snapshot(view, _snapshot_of(mapping_json, before_json), as_of=h.AS_OF)
    return render_834_bytes(change.enrollment, h.header(mapping, feed), h.CONTROL)


@functools.cache
def _baseline(mapping_json: str, feed_id: str, plans: tuple[str, ...], level: str) -> bytes:
    return _render(census_rows(plans, level), _feeds()[feed_id], CarrierMapping.model_validate_json(mapping_json))


def full_file_move(mapping: CarrierMapping, column: str, *, feed: Feed | None = None,
                   plans: tuple[str, ...] = ALL_PLANS, level: str = "FAM",
                   value: str | dict[str, str] | None = None, plan: str | None = None) -> tuple[set[str], bytes]:
    """The elements that move in a full file when ``column`` changes (on the lines of ``plan`` when
    given; plan_code on the first line), and the file after the change."""
    feed = feed or h.feed()
    before = _baseline(mapping.model_dump_json(), feed.feed_id, plans, level)
    plan = plans[0] if column == "plan_code" else plan
    after = _render(changed(census_rows(plans, level), column, value, plan=plan), feed, mapping)
    return moved(before, after), after


def change_file_move(mapping: CarrierMapping, column: str) -> tuple[set[str], bytes]:
    """The elements that move in a change file when ``column`` changes: for a column the carrier's value
    is sent of (an identity correction) the snapshot's value changes under the same correction; for
    employment_status the subscriber's coverage ends in both; otherwise the census's under a status change."""
    rows = census_rows(ALL_PLANS)
    if column in THIRD:
        after = changed(rows, column)
        files = [_change_file(changed(rows, column, held), after, mapping) for held in (VALUES[column][0],
                                                                                           THIRD[column])]
    elif column == "employment_status":
        # a term without an event of the census's own: INS04 is the diff's, from the employment status
        ended = changed(changed(rows, "coverage_end", {SUBSCRIBER: "2026-11-20"}), "event_reason", "")
        files = [_change_file(rows, changed(ended, column, {SUBSCRIBER: status}), mapping)
                 for status in ("FT", "TE")]
    else:
        # a status change: an occasion the census's event (INS04, DTP*303) is sent with
        occasion = changed(rows, "student_status", "F")
        files = [_change_file(rows, occasion, mapping), _change_file(rows, changed(occasion, column), mapping)]
    return moved(*files), files[1]


@functools.cache
def _feeds() -> dict[str, Feed]:
    return {f.feed_id: f for f in (load_feed(p) for p in sorted((h.ROOT / "feeds").glob("*.yaml")))}


def _shipped() -> list[tuple[Feed, CarrierMapping]]:
    """Each shipped mapping with a feed that names it."""
    out: list[tuple[Feed, CarrierMapping]] = []
    for feed in _feeds().values():
        if feed.mapping_id not in {m.mapping_id for _, m in out}:
            out.append((feed, load_mapping(h.ROOT / "mappings" / f"{feed.mapping_id}.yaml")))
    return out


def undeclared(observed: set[str], column: str, mapping: CarrierMapping) -> set[str]:
    """What moved that the reference does not let ``column`` move under ``mapping`` (carried or decided)."""
    flows = [f for f in census_flows(mapping) if f.column == column]
    return {ref for ref in observed if not any(f.covers(ref) for f in flows)}


# ------------------------------------------------------------------ the reference is true
#: Extra changes beyond each column's b value: (mapping, column, value), each a flow the b value misses.
_EXTRA: list[tuple[str, Callable[[], CarrierMapping], str, str | dict[str, str]]] = [
    ("handicapped dependent", lambda: ALL, "relationship", {CHILD: "HD"}),
    ("email without a phone", lambda: turned_off(ALL, Setting("contact.phone")), "email", "ana.r@example.com"),
]


@functools.cache
def _observed() -> dict[str, set[str]]:
    """Per census column, every element some change of it moved under the all-settings mapping."""
    seen: dict[str, set[str]] = {c: set() for c in CANONICAL_COLUMNS}
    for column in CANONICAL_COLUMNS:
        if column not in NOT_SENT:
            seen[column] |= full_file_move(ALL, column)[0]
    for column in (*THIRD, "event_reason", "event_date", "employment_status"):
        seen[column] |= change_file_move(ALL, column)[0]
    for _, mapping, column, value in _EXTRA:
        seen[column] |= full_file_move(mapping(), column, value=value)[0]
    return seen


@pytest.mark.parametrize("column", [c for c in CANONICAL_COLUMNS if c not in NOT_SENT])
def test_a_change_moves_only_elements_the_reference_declares_for_its_column(column: str) -> None:
    """Under every setting, full and change files: what moved is declared (no undeclared flow)."""
    assert not undeclared(_observed()[column], column, ALL)


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f"{f.column or f.named_by}-{f.refs[0]}")
def test_every_declared_element_moves_when_its_column_changes(flow: Flow) -> None:
    """No declared element is idle: some change of its column moves it (and every element it decides)."""
    (resolved,) = [f for f in census_flows(ALL) if f.refs == flow.refs and (f.column == flow.column or
                                                                           flow.named_by)]
    seen = _observed()[resolved.column]
    assert set(resolved.refs) <= seen
    assert all(any(r == d or r.startswith(d + " ") for r in seen) for d in resolved.decides)


#: The demo mapping with every setting at its default (off), every census column allowlisted and the plans
#: of ``ALL`` (their HD03 and policy numbers differ).
EVERY_COLUMN_NO_SETTING = h.validated(allowlist=CANONICAL_COLUMNS, plans=ALL.model_dump()["plans"])


@pytest.mark.parametrize("flow", [f for f in FLOWS if not f.setting.path], ids=lambda f: f"{f.column}-{f.refs[0]}")
def test_a_flow_said_to_be_always_on_needs_no_setting(flow: Flow) -> None:
    assert flow.setting.is_on(EVERY_COLUMN_NO_SETTING) and not flow.named_by
    move = change_file_move if flow.change_files else full_file_move
    observed, _ = move(EVERY_COLUMN_NO_SETTING, flow.column)
    assert set(flow.refs) <= observed


@pytest.mark.parametrize("flow", [f for f in FLOWS if f.setting.path], ids=lambda f: f"{f.setting.text}-{f.refs[0]}")
def test_with_its_setting_off_a_flow_moves_nothing_and_is_not_written(flow: Flow) -> None:
    off = turned_off(ALL, flow.setting)
    (on,) = [f for f in census_flows(ALL) if f.refs == flow.refs and (f.column == flow.column or flow.named_by)]
    assert on not in census_flows(off)
    move = change_file_move if flow.change_files else full_file_move
    observed, after = move(off, on.column)
    assert not observed & set(on.refs)
    # not written, unless another flow still on writes the element (email in PER04 without a phone)
    others = {ref for f in census_flows(off) for ref in f.refs}
    written = {ref for ref, value in element_values(after) if value != flow.default}
    assert not written & set(on.refs) - others


@pytest.mark.parametrize("column", sorted({f.column for f in FLOWS if f.column and f.allowlist == "gated"}))
def test_a_column_off_the_allowlist_flows_nowhere_or_its_setting_is_refused(column: str) -> None:
    try:
        cut = without(ALL, column)
    except ValidationError as exc:
        assert "allowlist" in str(exc)
        return
    refs = {ref for f in FLOWS if f.column == column for ref in f.refs}
    observed = full_file_move(cut, column)[0]
    if any(f.change_files for f in FLOWS if f.column == column):
        observed |= change_file_move(cut, column)[0]
    assert not observed & refs


@pytest.mark.parametrize(("feed", "mapping"), _shipped(), ids=lambda x: getattr(x, "mapping_id", ""))
def test_under_each_shipped_mapping_a_change_moves_only_declared_elements(feed: Feed,
                                                                           mapping: CarrierMapping) -> None:
    """Each shipped mapping renders its own plans and levels; a change of any column on its allowlist moves
    only what the reference declares for that mapping, and the columns off it move nothing."""
    line = {p: mapping.plans[p].insurance_line for p in mapping.plans if p in feed.authorization.plans}
    # one line per insurance line (HD03), as a member has them; the change moves the first to another plan
    lines: list[str] = []
    for plan, hd03 in line.items():
        if hd03 not in {line[x] for x in lines}:
            lines.append(plan)
    others = [p for p in line if p not in lines and line[p] not in {line[x] for x in lines[1:]}]
    levels = list(mapping.coverage_levels)
    values = {"coverage_level": levels[-1], **({"plan_code": others[0]} if others else {})}
    for column in mapping.allowlist:
        if column in NOT_SENT or (column == "plan_code" and not others):
            continue
        value = values.get(column)
        observed, _ = full_file_move(mapping, column, feed=feed, plans=tuple(lines[:2]), level=levels[0],
                                     value=value)
        assert not undeclared(observed, column, mapping), column
    # and every column off its allowlist changed at once moves nothing
    off = [c for c in CANONICAL_COLUMNS if c not in mapping.allowlist and c not in NOT_SENT]
    before = _render(census_rows(tuple(lines[:2]), levels[0]), feed, mapping)
    rows = census_rows(tuple(lines[:2]), levels[0])
    for column in off:
        rows = changed(rows, column)
    assert moved(before, _render(rows, feed, mapping)) == set()


def test_every_canonical_column_is_declared_or_said_why_not() -> None:
    named = {f.named_by for f in FLOWS if f.named_by}
    assert named == {"member_references.client_reporting_category.field", "reporting_categories.field",
                     "reporting_categories.date_field"}
    assert set(CANONICAL_COLUMNS) == declared_columns() | set(NOT_SENT)
    assert not declared_columns() & set(NOT_SENT)


def test_an_eoi_pending_line_is_held_back_only_under_the_hold() -> None:
    """eoi_pending is in no element: Y on one line takes that Loop 2300 (and its 2310) out, nothing else."""
    observed, _ = full_file_move(ALL, "eoi_pending", plan=ALL_PLANS[0])
    assert {"2300 HD HD03", "2300 DTP*348 DTP03", "2310 NM1*P3 NM109"} <= observed
    assert all(ref.split()[0] in ("2300", "2310") for ref in observed)
    assert not full_file_move(turned_off(ALL, Setting("volumes.eoi_hold")), "eoi_pending", plan=ALL_PLANS[0])[0]


# ------------------------------------------------------------------ the document
def test_docs_census_to_834_md_is_current() -> None:
    """Fails after the declaration changed: run `python -m carrierfeeds.config.reference`."""
    assert (h.ROOT / "docs" / "census-to-834.md").read_text(encoding="utf-8") == render_field_reference()


def test_the_document_has_a_row_per_flow_and_the_check_catches_a_stale_file(tmp_path: Path) -> None:
    text = render_field_reference()
    for flow in FLOWS:
        assert f"| {flow.loop} {flow.segment} {', '.join(flow.elements)} |" in text or flow.loop == "header"
    assert "| `ssn` | 2100A NM1*IL NM109 | always | gated |" in text
    path = tmp_path / "reference.md"
    assert main([str(path)]) == 0 and main(["--check", str(path)]) == 0
    other = tmp_path / "census-to-834.md"
    other.write_text(text.replace("NM109", "NM108"), encoding="utf-8")
    assert main(["--check", str(path)]) == 1

