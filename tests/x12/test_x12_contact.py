"""Contact and address: 2100A PER (phone, e-mail), HLH (tobacco use), LUI (language) and the 2100C mailing
address. Golden 834s named by scenario, each passing the structural check and pyx12, compared byte for byte
and read back to the same values.

Regenerate after an intended change (then review the diff like code):

    CARRIERFEEDS_REGENERATE_GOLDEN=1 .venv/bin/pytest tests/x12/test_x12_contact.py
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pydantic
import pytest
import x12_helpers as h

from carrierfeeds.changes import diff_against_snapshot
from carrierfeeds.config import CarrierMapping
from carrierfeeds.config.mapping import Contact
from carrierfeeds.enrollment import Enrollment
from carrierfeeds.errors import DataError
from carrierfeeds.x12.envelope import TransactionHeader
from carrierfeeds.x12.read import read_834

_MAILING = ("mailing_address1", "mailing_address2", "mailing_city", "mailing_state", "mailing_zip")
_CONTACT_FIELDS = ("phone", "email", *_MAILING, "language", "tobacco_use")


def contact_mapping(email: bool = False) -> CarrierMapping:
    extended = {"charset": "extended"} if email else {}
    return h.validated(allowlist=(*h.mapping().allowlist, *_CONTACT_FIELDS), **extended, contact=Contact(
        phone=True, email=email, mailing_address=not email, language=not email, tobacco_use=not email))


def contact_rows() -> list[dict[str, str]]:
    """The demo family: the employee with e-mail, a PO box, Spanish and no tobacco; the spouse a smoker;
    the single employee with e-mail only and tobacco use unknown."""
    rows = h.family_rows()
    values = {"E1001": dict(email="ana.rivera@example.com", mailing_address1="PO Box 77", mailing_city="Springfield",
                            mailing_state="IL", mailing_zip="62705", language="spa", tobacco_use="N"),
              "E1001-01": dict(tobacco_use="y", language="spa"),
              "E2002": dict(email="sam.oneil@example.com", tobacco_use="U")}
    for r in rows:
        r.update(values.get(r["member_id"], {}))
    return rows


def _edit(rows: list[dict[str, str]], member: str, **values: str) -> list[dict[str, str]]:
    return [{**r, **values} if r["member_id"] == member else dict(r) for r in rows]


def _enrollment(rows: list[dict[str, str]], m: CarrierMapping) -> Enrollment:
    return h.enrollment(h.census(rows), m)


def _change(before: list[dict[str, str]], after: list[dict[str, str]], m: CarrierMapping
            ) -> tuple[Enrollment, TransactionHeader]:
    snapshot = diff_against_snapshot(_enrollment(before, m), None, as_of=h.AS_OF).snapshot
    change = diff_against_snapshot(_enrollment(after, m), snapshot, as_of=h.AS_OF)
    return change.enrollment, dataclasses.replace(h.header(m), action="2")


def full_file_contact_mailing_address() -> tuple[Enrollment, TransactionHeader]:
    m = contact_mapping()
    return _enrollment(contact_rows(), m), h.header(m)


def full_file_contact_email() -> tuple[Enrollment, TransactionHeader]:
    m = contact_mapping(email=True)
    return _enrollment(contact_rows(), m), h.header(m)


def change_mailing_address() -> tuple[Enrollment, TransactionHeader]:
    """A new mailing address: INS*001 with INS04 43 (change of location), no Loop 2300."""
    rows = contact_rows()
    return _change(rows, _edit(rows, "E1001", mailing_address1="PO Box 912", mailing_zip="62706"), contact_mapping())


def change_tobacco_use() -> tuple[Enrollment, TransactionHeader]:
    """The spouse quits: INS*001 (INS04 AI) with the new HLH."""
    rows = contact_rows()
    return _change(rows, _edit(rows, "E1001-01", tobacco_use="N"), contact_mapping())


SCENARIOS: dict[str, Callable[[], tuple[Enrollment, TransactionHeader]]] = {
    f"{fn.__name__.replace('_', '-')}.834": fn for fn in (
        full_file_contact_mailing_address, full_file_contact_email, change_mailing_address, change_tobacco_use)
}
_READ = ["member_id", "ins03", "ins04", "hd03", "phone", "email", "hlh01", "language", *_MAILING]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_contact_golden_file(name: str, tmp_path: Path) -> None:
    enrollment, header = SCENARIOS[name]()
    data = h.golden_834(name, enrollment, header, tmp_path)
    back = read_834(data)
    expected = enrollment.table.reindex(columns=_READ, fill_value="").astype(object).reset_index(drop=True)
    if "ins04" not in enrollment.table.columns:
        expected["ins04"] = "XN"
    # The mailing address goes only whole (street and city): a part alone is not sent.
    partial = (expected["mailing_address1"] == "") | (expected["mailing_city"] == "")
    expected.loc[partial, list(_MAILING)] = ""
    pd.testing.assert_frame_equal(back[_READ].reset_index(drop=True), expected, check_dtype=False)


def test_values_in_x12_form() -> None:
    table = _enrollment(contact_rows(), contact_mapping()).table.drop_duplicates("member_id").set_index("member_id")
    assert table.loc["E1001", ["phone", "hlh01", "language", "mailing_address1", "mailing_zip"]].tolist() == [
        "2175550100", "N", "SPA", "PO BOX 77", "62705"]
    assert table.loc["E1001-01", "hlh01"] == "T" and table.loc["E2002", "hlh01"] == "U"
    assert table.loc["E1001-02", "hlh01"] == ""


def test_contact_changes_carry_the_right_reason() -> None:
    moved, _ = change_mailing_address()
    assert moved.table[["member_id", "ins03", "ins04", "hd03"]].values.tolist() == [["E1001", "001", "43", ""]]
    quit_, _ = change_tobacco_use()
    assert quit_.table[["member_id", "ins03", "ins04", "hlh01"]].values.tolist() == [["E1001-01", "001", "AI", "N"]]


def test_off_by_default_gated_by_allowlist_and_charset() -> None:
    table = _enrollment(contact_rows(), h.validated(allowlist=(*h.mapping().allowlist, *_CONTACT_FIELDS))).table
    assert not {"phone", "email", "hlh01", "language", *_MAILING} & set(table.columns)
    with pytest.raises(pydantic.ValidationError, match=r"contact\.phone needs"):
        h.validated(contact=Contact(phone=True))
    with pytest.raises(pydantic.ValidationError, match="charset extended"):
        h.validated(allowlist=(*h.mapping().allowlist, "email"), contact=Contact(email=True))


@pytest.mark.parametrize(("column", "value", "rule", "email"), [
    ("email", "not-an-address", "email_format", True), ("language", "Spanish", "language_code", False),
    ("tobacco_use", "sometimes", "tobacco_use", False),
])
def test_bad_contact_values_are_refused_by_row(column: str, value: str, rule: str, email: bool) -> None:
    rows = _edit(contact_rows(), "E2002", **{column: value})
    with pytest.raises(DataError) as caught:
        _enrollment(rows, contact_mapping(email=email))
    assert caught.value.rule == rule
    assert value not in str(caught.value)
