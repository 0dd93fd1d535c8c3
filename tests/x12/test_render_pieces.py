"""The chunk writer's one-gather assembly (every segment's pieces under their row masks) gives the per-row
reference writer's bytes and segment counts whatever cells are empty: every optional segment and
element present or absent in any combination, every 834 option on, members without a Loop 2300."""

from __future__ import annotations

import x12_helpers as h
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carrierfeeds.config import CarrierMapping, ClientReporting, MemberReferences
from carrierfeeds.x12.envelope import Delimiters
from carrierfeeds.x12.render import render_834, render_834_naive

#: Cells an 834 may go without; each blanked or kept per person.
OPTIONAL = ("middle_initial", "ssn", "address1", "address2", "city", "state", "zip", "dob", "hire_date",
            "employment_status", "department")
_DELIMITERS = [Delimiters(), Delimiters(element="|", component=">", repetition="{", segment="~", suffix="\r\n")]


def _options_mapping() -> CarrierMapping:
    base = h.mapping()
    plans = {k: {**v.model_dump(), "policy_number": f"POL-{k}" if k != "DEN-STD" else None}
             for k, v in base.plans.items()}
    return h.validated(allowlist=(*base.allowlist, "department", "hire_date"), plans=plans,
                       group_number="GRP-1", member_dates=["hire", "eligibility_begin", "eligibility_end"],
                       member_references=MemberReferences(
                           group_policy_number=True, department=True,
                           client_reporting_category=ClientReporting(field="department")))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blank=st.lists(st.frozensets(st.sampled_from(OPTIONAL)), min_size=6, max_size=6),
       options=st.booleans(), no_coverage=st.frozensets(st.integers(0, 13)),
       delimiters=st.sampled_from(_DELIMITERS), chunk=st.integers(1, 4))
def test_any_empty_cells_render_as_the_reference_writer(blank: list[frozenset[str]], options: bool,
                                                        no_coverage: frozenset[int], delimiters: Delimiters,
                                                        chunk: int) -> None:
    rows = h.family_rows()
    people = list(dict.fromkeys(r["member_id"] for r in rows))
    for r in rows:
        r.update(dict.fromkeys(blank[people.index(r["member_id"])], ""))
    m = _options_mapping() if options else h.mapping()
    enrollment = h.enrollment(h.census(rows), m)
    table = enrollment.table
    # Rows without a Loop 2300 (as a change file's demographic changes have): hd03 "".
    for i in sorted(no_coverage):
        if i < len(table):
            table.loc[i, "hd03"] = ""
    header = h.header(m)
    want = render_834_naive(enrollment, header, h.CONTROL, delimiters)
    for workers in (1, 2):
        got = b"".join(render_834(enrollment, header, h.CONTROL, delimiters, chunk_members=chunk,
                                  workers=workers))
        assert got == want
    # SE01 counts the set's segments, ST and SE included (the chunks' counts summed).
    segments = [seg.strip(b"\r\n") for seg in want.split(delimiters.segment.encode())]
    st_at = next(i for i, seg in enumerate(segments) if seg.startswith(b"ST"))
    se_at = next(i for i, seg in enumerate(segments) if seg.startswith(b"SE"))
    assert int(segments[se_at].split(delimiters.element.encode())[1]) == se_at - st_at + 1
