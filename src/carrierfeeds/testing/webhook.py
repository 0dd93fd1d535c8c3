"""A webhook receiver on 127.0.0.1 for tests and demos: it records every POST it is sent.

``status`` sets the HTTP status it answers with (204 by default; 503 plays a carrier's endpoint that is
down), and ``on_post`` runs after a POST is recorded and before the answer goes back."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Post:
    """One request the receiver got: its path, headers and body (JSON parsed, else text)."""

    path: str
    headers: dict[str, str]
    body: Any


class WebhookReceiver(ThreadingHTTPServer):
    """Answers every POST with `status` (204) and keeps it in `posts`; `bodies` are the bodies in order."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.posts: list[Post] = []
        self.status = 204
        self.on_post: Callable[[Post], None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def bodies(self) -> list[Any]:
        return [post.body for post in self.posts]


class _Handler(BaseHTTPRequestHandler):
    server: WebhookReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        json_body = self.headers.get("Content-Type", "application/json").startswith("application/json")
        post = Post(self.path, dict(self.headers), json.loads(body) if json_body else body.decode("utf-8"))
        self.server.posts.append(post)
        if self.server.on_post is not None:
            self.server.on_post(post)
        self.send_response(self.server.status)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A running receiver for the duration of the block."""
    server = WebhookReceiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
