"""Config of the per-file notice's sending: the mapping's ``notice.send`` and SMTP connections (keys
directory under the CLI), checked when loaded; secrets never in YAML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from carrierfeeds.config.mapping import FileNotice
from carrierfeeds.credentials import KeysDirConnections, SmtpTarget, StaticConnections
from carrierfeeds.errors import ConfigError


def _notice(send: dict[str, Any]) -> FileNotice:
    return FileNotice.model_validate({"formats": ["json", "text"], "send": send})


def test_notice_send_takes_a_webhook_and_or_an_email_and_nothing_else() -> None:
    both = _notice({"webhook": {"connection_id": "carrier_hook"},
                    "email": {"connection_id": "mail", "to": ["elig@carrier.example"],
                              "from_address": "feeds@tpa.example"}})
    assert both.send is not None and both.send.retries == 2 and not both.send.test_files
    assert FileNotice().send is None  # off unless configured
    with pytest.raises(ValidationError, match="give webhook, email or both"):
        _notice({})
    with pytest.raises(ValidationError, match="not an e-mail address"):
        _notice({"email": {"connection_id": "mail", "to": ["not an address"], "from_address": "a@tpa.example"}})
    with pytest.raises(ValidationError):  # a URL (and its token) never sits in YAML
        _notice({"webhook": {"url": "https://carrier.example/hook?token=x"}})


def _write(keys: Path, data: dict[str, Any], mode: int = 0o600) -> None:
    keys.mkdir(exist_ok=True)
    path = keys / "mail.json"
    path.write_text(json.dumps(data))
    path.chmod(mode)


def test_smtp_connections_from_the_keys_directory(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    _write(keys, {"host": "smtp.tpa.example", "login": "feeds", "password": "pw"})
    target = KeysDirConnections(keys).smtp("mail")
    assert (target.host, target.port, target.security, target.login) == ("smtp.tpa.example", 587, "starttls",
                                                                          "feeds")
    assert "pw" not in repr(target)
    _write(keys, {"host": "smtp.tpa.example", "security": "ssl"})
    assert KeysDirConnections(keys).smtp("mail").port == 465
    _write(keys, {"host": "relay.local", "security": "none", "login": "feeds", "password": "pw"})
    with pytest.raises(ConfigError, match="in the clear"):
        KeysDirConnections(keys).smtp("mail")
    _write(keys, {"host": "smtp.tpa.example", "password": "pw"}, mode=0o644)
    with pytest.raises(ConfigError, match="readable by group or others"):
        KeysDirConnections(keys).smtp("mail")
    with pytest.raises(ConfigError, match="no credentials"):
        KeysDirConnections(keys).smtp("other")
    with pytest.raises(ConfigError, match="not defined"):
        StaticConnections().smtp("mail")
    assert StaticConnections(smtps={"mail": SmtpTarget("h", 25, "none")}).smtp("mail").port == 25
