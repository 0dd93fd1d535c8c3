"""The standalone console over a real ledger: every page for ops and auditors, refusals (no session,
no CSRF token, an auditor confirming), a confirmation that writes what the CLI writes, and no PHI on
any page or URL."""

from __future__ import annotations

from typing import Any

import pytest
from console_helpers import CLEARVIEW, NORTHWIND, SUNRISE, TOKEN, Workspace, csrf_of, login
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from carrierfeeds.ledger import Ledger

HTML = {"accept": "text/html"}


def _pages(ws: Workspace) -> list[str]:
    return ["/", "/?employer=acme&carrier=sunrise-health", f"/feeds/{SUNRISE}", f"/feeds/{NORTHWIND}",
            f"/feeds/{CLEARVIEW}",
            "/audit", "/audit/report?since=2026-11-01&until=2026-12-05&format=html", f"/audit/member?token={TOKEN}",
            "/handoffs"]


@pytest.mark.parametrize("user", ["olivia", "audrey"])
def test_every_page_renders_for_ops_and_auditor(client: TestClient, workspace: Workspace, user: str) -> None:
    login(client, user)
    for page in _pages(workspace):
        response = client.get(page, headers=HTML)
        assert response.status_code == 200, (page, response.text[:500])
        assert "text/html" in response.headers["content-type"]
    board = client.get("/", headers=HTML).text
    assert '<a class="skip" href="#main">' in board and "<caption>" in board and '<th scope="col">Feed</th>' in board
    assert SUNRISE in board and "run_rejected" in board
    feed = client.get(f"/feeds/{NORTHWIND}", headers=HTML).text
    assert f"{NORTHWIND}-2026-11-30.834.pgp" in feed and "A" * 40 in feed and "pending_handoff" in feed
    assert client.get(f"/audit/member?token={TOKEN}", headers=HTML).text.count("dob_in_past") == 1
    assert "contract-2026" in client.get("/audit", headers=HTML).text
    pdf = client.get("/audit/report?since=2026-11-01&until=2026-12-05&format=pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    handoffs = client.get("/handoffs", headers=HTML).text
    assert (handoffs.count('name="received_by"') == 2) == (user == "olivia")


def test_board_filters_by_employer_and_carrier(client: TestClient) -> None:
    login(client, "audrey")
    text = client.get("/?carrier=sunrise-health", headers=HTML).text
    assert f">{SUNRISE}</a>" in text and f">{NORTHWIND}</a>" not in text


def test_unauthenticated_requests_are_refused(client: TestClient, workspace: Workspace) -> None:
    for page in _pages(workspace):
        browser = client.get(page, headers=HTML)
        assert browser.status_code == 303 and browser.headers["location"].startswith("http://testserver/login?next=")
        assert client.get(page).status_code == 401
    assert client.post(f"/handoffs/{workspace.handoffs[0]}/confirm",
                       data={"method": "courier", "received_by": "clerk"}).status_code == 401
    wrong = client.post("/login", data={"user": "olivia", "password": "not-her-password", "next": "/"})
    assert wrong.status_code == 401 and "carrierfeeds_console" not in wrong.headers.get("set-cookie", "")
    client.cookies.set("carrierfeeds_console", "forged.value")
    assert client.get("/").status_code == 401
    assert client.get("/static/console.css").status_code == 200  # the style sheet holds no data


def _confirm(client: TestClient, delivery_id: str, csrf: str | None) -> Any:
    data = {"method": "courier", "received_by": "carrier-clerk"}
    if csrf is not None:
        data["csrf"] = csrf
    return client.post(f"/handoffs/{delivery_id}/confirm", data=data)


def test_auditor_cannot_confirm_and_csrf_is_required(client: TestClient, workspace: Workspace) -> None:
    login(client, "audrey")
    token = csrf_of(client.get("/handoffs", headers=HTML).text)  # the log-out form's token
    assert _confirm(client, workspace.handoffs[0], token).status_code == 403
    client.cookies.clear()
    login(client, "olivia")
    assert _confirm(client, workspace.handoffs[0], None).status_code == 403
    assert _confirm(client, workspace.handoffs[0], "0" * 64).status_code == 403
    assert _confirm(client, workspace.handoffs[0], token).status_code == 403  # another session's token
    ledger = Ledger.open(str(workspace.settings.ledger_url))
    assert len(ledger.pending_handoffs()) == 2  # nothing was written
    ledger.close()


def _rows(ledger: Ledger, delivery_id: str) -> tuple[list[Any], list[Any]]:
    outcomes = [(o.status, o.actor, o.reason, o.received_by)
                for o in ledger.delivery_outcomes(delivery_ids=[delivery_id])]
    audit = [(a.actor, a.action, a.object_type, a.reason, sorted(a.detail))
             for a in ledger.audit_events(object_ids=[delivery_id])]
    return outcomes, audit


def test_confirm_writes_the_rows_the_cli_writes(client: TestClient, workspace: Workspace) -> None:
    from carrierfeeds.cli import app

    by_cli, by_console = workspace.handoffs
    result = CliRunner().invoke(app, ["handoff", "confirm", by_cli, "--by", "olivia", "--method", "courier",
                                      "--received-by", "carrier-clerk"], env=workspace.env())
    assert result.exit_code == 0, result.output

    login(client, "olivia")
    page = client.get("/handoffs", headers=HTML).text
    response = _confirm(client, by_console, csrf_of(page))
    assert response.status_code == 303 and response.headers["location"].endswith(f"/handoffs?done={by_console}")
    assert "recorded as handed off" in client.get(response.headers["location"], headers=HTML).text
    again = _confirm(client, by_console, csrf_of(page))
    assert again.status_code == 409  # already confirmed

    ledger = Ledger.open(str(workspace.settings.ledger_url))
    cli_outcomes, cli_audit = _rows(ledger, by_cli)
    web_outcomes, web_audit = _rows(ledger, by_console)
    # Who at the carrier received the file is a field of the hand-off row itself, from either door.
    assert web_outcomes == cli_outcomes and web_outcomes[-1] == ("handed_off", "olivia", "courier", "carrier-clerk")
    assert web_audit == cli_audit
    assert ledger.pending_handoffs() == []
    assert ledger.verify_chain().ok
    ledger.close()


def test_no_phi_on_any_page_or_url(client: TestClient, workspace: Workspace) -> None:
    seen: list[str] = []
    for user in ("audrey", "olivia"):  # olivia last: she confirms below
        client.cookies.clear()
        login(client, user)
        for page in _pages(workspace):
            response = client.get(page, headers=HTML)
            seen += [page, response.text, response.headers.get("location", "")]
        pdf = client.get("/audit/report?since=2026-11-01&until=2026-12-05&format=pdf")
        seen.append(pdf.content.decode("latin-1"))
    page = client.get("/handoffs", headers=HTML).text
    seen.append(_confirm(client, workspace.handoffs[0], csrf_of(page)).headers["location"])
    unauthenticated = TestClient(client.app, follow_redirects=False)
    seen += [unauthenticated.get(p, headers=HTML).headers.get("location", "") for p in _pages(workspace)]
    text = "\n".join(seen)
    assert all(canary not in text for canary in workspace.canaries)


def test_member_lookup_refuses_what_is_not_a_token(client: TestClient) -> None:
    login(client, "audrey")
    response = client.get("/audit/member?token=123-45-6789", headers=HTML)
    assert response.status_code == 422 and "123-45-6789" not in response.text
