"""load_sftp_endpoint: the keys-directory layout, and every mistake named by file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from carrierfeeds.credentials import load_sftp_endpoint
from carrierfeeds.errors import ConfigError
from carrierfeeds.testing.sshd import Sshd
from carrierfeeds.transport.sftp import SftpTransport

CONN = "acme_sftp"


@pytest.fixture
def keys_dir(tmp_path: Path, sshd_server: Sshd) -> Path:
    path = tmp_path / "keys"
    sshd_server.write_keys_dir(path, CONN)
    return path


def _edit(keys_dir: Path, **changes: object) -> None:
    path = keys_dir / f"{CONN}.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def test_keys_dir_written_by_the_kit_loads_and_connects(keys_dir: Path, sshd_server: Sshd) -> None:
    endpoint = load_sftp_endpoint(keys_dir, CONN)
    assert (endpoint.host, endpoint.port, endpoint.username) == (sshd_server.host, sshd_server.port,
                                                                  sshd_server.username)
    assert endpoint.private_key_path == (keys_dir / f"{CONN}_ed25519").resolve()
    assert endpoint.known_hosts.strip() == sshd_server.known_hosts_text.strip()
    assert endpoint.connect_timeout == 10.0 and endpoint.op_timeout == 60.0
    assert SftpTransport(endpoint, str(sshd_server.root)).stat("absent.pgp") is None


def test_timeouts_are_read(keys_dir: Path) -> None:
    _edit(keys_dir, connect_timeout=3, op_timeout=120.5)
    endpoint = load_sftp_endpoint(keys_dir, CONN)
    assert endpoint.connect_timeout == 3.0 and endpoint.op_timeout == 120.5


@pytest.mark.parametrize(("changes", "field"), [
    ({"host": None}, "host"),
    ({"login": ""}, "login"),
    ({"port": "22"}, "port"),
    ({"port": 70000}, "port"),
    ({"op_timeout": 0}, "op_timeout"),
    ({"password": "x"}, "password"),
    ({"key_file": "missing_key"}, "key_file"),
    ({"known_hosts_file": "nope"}, "known_hosts_file"),
])
def test_mistakes_name_file_and_field(keys_dir: Path, changes: dict[str, object], field: str) -> None:
    _edit(keys_dir, **changes)
    with pytest.raises(ConfigError) as caught:
        load_sftp_endpoint(keys_dir, CONN)
    assert caught.value.field == field
    assert caught.value.file == str(keys_dir / f"{CONN}.json")


def test_private_key_readable_by_others_is_refused(keys_dir: Path) -> None:
    (keys_dir / f"{CONN}_ed25519").chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600") as caught:
        load_sftp_endpoint(keys_dir, CONN)
    assert caught.value.field == "key_file"


def test_known_hosts_without_this_host_is_refused(keys_dir: Path) -> None:
    (keys_dir / "known_hosts").write_text("[127.0.0.1]:1 ssh-ed25519 "
                                          "AAAAC3NzaC1lZDI1NTE5AAAAIHjXk7gPzU6mYDPDVl3JUsLaYnwbrBzFlKMGdyvOKyeS\n")
    with pytest.raises(ConfigError, match="no host key") as caught:
        load_sftp_endpoint(keys_dir, CONN)
    assert caught.value.field == "known_hosts_file"


def test_missing_connection_and_bad_json(keys_dir: Path) -> None:
    with pytest.raises(ConfigError, match="no credentials"):
        load_sftp_endpoint(keys_dir, "other")
    (keys_dir / f"{CONN}.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_sftp_endpoint(keys_dir, CONN)
