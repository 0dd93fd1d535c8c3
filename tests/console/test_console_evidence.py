"""The console shows the auditors' evidence: fields disclosed, config hashes and the authorisation's
reference on a feed's history, the deliveries that carried a member token, and who received a hand-off."""

from __future__ import annotations

from console_helpers import NORTHWIND, REFERENCE, SUNRISE, TOKEN, Workspace, csrf_of, login
from fastapi.testclient import TestClient

HTML = {"accept": "text/html"}


def test_feed_history_shows_fields_hashes_and_reference(client: TestClient) -> None:
    login(client, "audrey")
    page = client.get(f"/feeds/{SUNRISE}", headers=HTML).text
    assert 'id="disclosures"' in page
    assert "member_id, first_name, last_name" not in page and "first_name, last_name, member_id" in page
    for prefix in ("f" * 12, "e" * 12, "d" * 12, "c" * 12):
        assert prefix in page
    assert REFERENCE in page
    audit = client.get("/audit", headers=HTML).text
    assert REFERENCE in audit and "none recorded" in audit  # the older authorisation names none
    assert "first_name (1), last_name (1), member_id (1)" in audit and ">dob<" in audit  # allowed, never sent


def test_member_page_lists_the_deliveries_that_carried_the_token(client: TestClient) -> None:
    login(client, "audrey")
    page = client.get(f"/audit/member?token={TOKEN}", headers=HTML).text
    assert "carried m_0123456789abcdef, from the ledger's member index (1)" in page
    assert "sunrise" in page and ">021<" in page
    other = client.get("/audit/member?token=m_ffffffffffffffff", headers=HTML).text
    assert "No delivery carried this token." in other


def test_received_by_is_shown_on_the_feed_history(client: TestClient, workspace: Workspace) -> None:
    login(client, "olivia")
    page = client.get("/handoffs", headers=HTML).text
    missing = client.post(f"/handoffs/{workspace.handoffs[0]}/confirm",
                          data={"method": "courier", "received_by": "  ", "csrf": csrf_of(page)})
    assert missing.status_code == 422
    done = client.post(f"/handoffs/{workspace.handoffs[0]}/confirm",
                       data={"method": "courier", "received_by": "T. Reyes, Northwind mail room",
                             "csrf": csrf_of(page)})
    assert done.status_code == 303
    history = client.get(f"/feeds/{NORTHWIND}", headers=HTML).text
    assert "T. Reyes, Northwind mail room" in history and "not yet confirmed" in history  # the other one
