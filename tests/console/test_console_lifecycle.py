"""The console shows a feed's lifecycle: a column on the board, the history on the feed's page."""

from __future__ import annotations

from datetime import UTC, date, datetime

from console_helpers import NORTHWIND, SUNRISE, Workspace, login
from fastapi.testclient import TestClient

from carrierfeeds.lifecycle import approve
from carrierfeeds.settings import load_bundle, open_ledger

HTML = {"accept": "text/html"}


def test_board_column_and_feed_page_history(client: TestClient, workspace: Workspace) -> None:
    settings = workspace.settings
    feed_file = settings.feeds_dir / f"{SUNRISE}.yaml"
    text = feed_file.read_text()
    feed_file.write_text(text.replace("  remote_dir: /inbox\n", "  remote_dir: /inbox\n  test:\n    kind: sftp\n"
                                      "    connection_id: sunrise_test\n    remote_dir: /test\n")
                         + "lifecycle: {initial: testing}\n")
    ledger = open_ledger(settings)
    approve(ledger, load_bundle(settings, SUNRISE).feed, by="dana", reference="CERT-4411 signed",
            go_live=date(2026, 12, 10), now=datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    ledger.close()

    login(client, "audrey")
    board = client.get("/", headers=HTML).text
    assert '<th scope="col">Lifecycle</th>' in board
    assert "<td>certified (go-live 2026-12-10)</td>" in board and "<td>unmanaged</td>" in board
    page = client.get(f"/feeds/{SUNRISE}", headers=HTML).text
    assert 'id="lifecycle"' in page
    assert "<td>approved</td><td><strong>certified</strong></td><td>dana</td><td>2026-12-10</td>" \
           "<td>CERT-4411 signed</td>" in page
    other = client.get(f"/feeds/{NORTHWIND}", headers=HTML).text
    assert "No lifecycle rows" in other
