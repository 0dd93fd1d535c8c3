"""A mail server on 127.0.0.1 for tests: aiosmtpd (a dev dependency), keeping every message it is sent.

``reply`` set to an SMTP reply (``"451 4.3.0 try later"``) makes it refuse each message with it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any


@dataclass
class SmtpReceiver:
    """What the server got: each message parsed, with its envelope sender and recipients."""

    host: str = "127.0.0.1"
    port: int = 0
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    reply: str | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.reply is not None:
            return self.reply
        parsed = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)  # noqa: S101 - policy.default makes EmailMessage
        self.messages.append(parsed)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def smtp_receiver() -> Iterator[SmtpReceiver]:
    """A running SMTP server (plain, no login: ``security: none``) for the duration of the block."""
    from aiosmtpd.controller import Controller

    receiver = SmtpReceiver(port=_free_port())
    controller = Controller(receiver, hostname=receiver.host, port=receiver.port)
    controller.start()
    try:
        yield receiver
    finally:
        controller.stop()
