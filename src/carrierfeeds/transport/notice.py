"""The per-file notice on the wire: one HTTP POST, or one e-mail, carrying an idempotency key; our errors.

:func:`post_notice` POSTs the notice's bytes with ``Idempotency-Key`` (redirects are not followed: the
connection's auth header would go with them); :func:`mail_notice` sends a message through an SMTP server
(STARTTLS or TLS unless the connection says none). Neither can make a send exactly-once: a reply lost
after the far side accepted leaves us not knowing, and the caller sends again under the same key (HTTP
``Idempotency-Key``, e-mail ``Message-ID``), which a receiver that honours it takes once. Failures are
:class:`NoticeNotAccepted` (worth retrying: network, timeout, HTTP 408/429/5xx, SMTP 4xx) or
:class:`NoticeRefused` (not: other HTTP statuses, SMTP 5xx, a refused login); their messages name the
host and the status or reply code, never a URL (it may hold a token) or anything the server said.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from carrierfeeds.credentials import SmtpTarget, WebhookTarget
from carrierfeeds.errors import ConfigError, PermanentError, TransientError

log = logging.getLogger(__name__)

#: HTTP statuses a retry may get past; any other status outside 2xx is an answer.
_RETRY_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})


class NoticeNotAccepted(TransientError):
    """The carrier's endpoint or mail server did not take the notice this time (network, timeout, busy)."""

    code = "notice_not_accepted"


class NoticeRefused(PermanentError):
    """The carrier's endpoint or mail server refused the notice (HTTP 4xx, SMTP 5xx, login refused)."""

    code = "notice_refused"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx comes back as an HTTPError: an answer we do not follow


def post_notice(target: WebhookTarget, body: bytes, *, content_type: str, idempotency_key: str,
                timeout: float = 15.0) -> int:
    """POST ``body`` to the target; the HTTP status on 2xx, else NoticeNotAccepted or NoticeRefused."""
    parsed = urllib.parse.urlsplit(target.url)
    if parsed.scheme not in ("http", "https"):
        raise ConfigError(f"notice webhook URL scheme {parsed.scheme!r} is not http or https",
                          field="notice.send.webhook")
    request = urllib.request.Request(target.url, data=body, method="POST", headers={  # noqa: S310 - scheme checked
        **target.headers, "Content-Type": content_type, "User-Agent": "carrierfeeds-notice",
        "Idempotency-Key": idempotency_key})
    opener = urllib.request.build_opener(_NoRedirect)
    host = parsed.hostname
    try:
        with opener.open(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        cls = NoticeNotAccepted if exc.code in _RETRY_HTTP else NoticeRefused
        raise cls(f"notice webhook at {host} answered HTTP {exc.code}", details={"host": host,
                                                                                "http_status": exc.code}) from None
    except OSError as exc:  # refused, reset, DNS, timeout (URLError is an OSError)
        reason = getattr(exc, "reason", exc)
        raise NoticeNotAccepted(f"notice webhook at {host} not reached: {type(reason).__name__}",
                                details={"host": host}) from None
    if not 200 <= status < 300:
        raise NoticeRefused(f"notice webhook at {host} answered HTTP {status}",
                            details={"host": host, "http_status": status})
    log.info("notice POSTed to %s (HTTP %s, key %s)", host, status, idempotency_key)
    return status


def notice_message(*, sender: str, to: Sequence[str], subject: str, text: str, message_id: str,
                   attachments: Sequence[tuple[str, bytes, str]] = ()) -> EmailMessage:
    """The notice as an e-mail: ``text`` as its body, each (name, bytes, MIME type) attached. Pure."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message["Date"] = formatdate(usegmt=True)
    message.set_content(text)
    for name, data, mime in attachments:
        maintype, _, subtype = mime.partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return message


def mail_notice(target: SmtpTarget, message: EmailMessage) -> None:
    """Send ``message`` through the SMTP server; NoticeNotAccepted or NoticeRefused when it is not taken."""
    host = target.host
    try:
        if target.security == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, target.port, timeout=target.timeout,
                                                  context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(host, target.port, timeout=target.timeout)
        with smtp:
            if target.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if target.login:
                smtp.login(target.login, target.password or "")
            refused = smtp.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:
        raise NoticeRefused(f"mail server {host} refused our login (SMTP {exc.smtp_code})",
                            details={"host": host, "smtp_code": exc.smtp_code}) from None
    except smtplib.SMTPRecipientsRefused as exc:
        codes = sorted({int(code) for code, _ in exc.recipients.values()})
        cls = NoticeNotAccepted if all(400 <= c < 500 for c in codes) else NoticeRefused
        raise cls(f"mail server {host} refused every recipient (SMTP {codes})",
                  details={"host": host, "recipients": len(exc.recipients)}) from None
    except smtplib.SMTPResponseException as exc:
        cls = NoticeNotAccepted if 400 <= exc.smtp_code < 500 else NoticeRefused
        raise cls(f"mail server {host} answered SMTP {exc.smtp_code}",
                  details={"host": host, "smtp_code": exc.smtp_code}) from None
    except (OSError, smtplib.SMTPException) as exc:  # refused, reset, timeout, TLS, disconnected
        raise NoticeNotAccepted(f"mail server {host} not reached: {type(exc).__name__}",
                                details={"host": host}) from None
    if refused:
        # Taken for some addresses: the notice went out, and a resend would reach the others twice.
        log.warning("mail server %s refused %d of the notice's recipients", host, len(refused))
    log.info("notice mailed through %s (%s)", host, message["Message-ID"])
