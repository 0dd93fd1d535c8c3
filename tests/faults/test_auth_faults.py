"""A connection lost while the SSH authentication is in flight is a network fault, not a refusal.

The relay lets the client's signed authentication request reach the real sshd (which accepts it) and
then loses the server's answer: by a reset (RST), a hang-up (FIN) or a black hole (nothing more, until
the client's ``auth_timeout``). None of these says anything about our key, so the transport must retry
them like any other lost connection; a fault classified permanent fails the deliver stage at once and
Airflow does not retry it: the interval is not delivered until a person reruns it.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from relay import Relay, running_relay

from carrierfeeds.testing.sshd import Sshd
from carrierfeeds.transport.sftp import SftpTransport

NAME = "CARRIERFEEDS_SUNRISEHP_000000042_20261119.834.pgp"
_ACCEPTED = re.compile(r"Accepted publickey for \S+ from 127\.0\.0\.1 port (\d+)")
_CHANNEL = re.compile(r"server_input_channel_open: ctype session")
_GONE = re.compile(r"(?:Connection (?:closed|reset) by|Disconnected from|Read error from remote host)"
                   r"(?: (?:authenticating )?user \S+)? 127\.0\.0\.1 port (\d+)")


def _require_fault_in_auth(sshd: Sshd, log_offset: int, relay: Relay) -> None:
    """The fault must have landed between the server accepting our key and the client hearing so: once
    every connection is over, sshd accepted a login on each, and opened a session on all but one."""
    if relay.stats.resets != 1:
        pytest.fail(f"the relay faulted {relay.stats.resets} connection(s), not one")
    connections = relay.stats.connections
    deadline = time.monotonic() + 10
    while True:
        text = sshd.log_text(after=log_offset)
        if len(set(_GONE.findall(text))) >= connections or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    accepted, sessions = len(_ACCEPTED.findall(text)), len(_CHANNEL.findall(text))
    if accepted != connections or sessions != connections - 1:
        pytest.fail(f"the fault did not land in authentication: over {connections} connection(s) sshd "
                    f"accepted {accepted} login(s) and opened {sessions} session(s)")


def _stat_through_fault(sshd: Sshd, inbox: Path, fault: str) -> tuple[object, Relay]:
    log_offset = len(sshd.log_text())
    try:
        with running_relay((sshd.host, sshd.port), trip=Relay.after_auth_request(1), fault=fault) as relay:
            endpoint = sshd.endpoint(port=relay.port, known_hosts=relay.known_hosts(sshd.host_public_key_line),
                                     auth_timeout=2.0)
            transport = SftpTransport(endpoint, str(inbox), retries=2, sleep=lambda _s: None)
            found = transport.stat(NAME)
    finally:
        # After the relay closed every link (a stalled one too), so that sshd has logged each end.
        _require_fault_in_auth(sshd, log_offset, relay)
    return found, relay


def test_a_reset_while_authenticating_is_retried(sshd_server: Sshd, inbox: Path) -> None:
    found, relay = _stat_through_fault(sshd_server, inbox, "reset")
    assert found is None
    assert relay.stats.connections == 2 and relay.stats.resets == 1  # lost once, then through


@pytest.mark.parametrize("fault", ["close", "stall"])
def test_a_hang_up_or_silence_while_authenticating_is_retried(sshd_server: Sshd, inbox: Path, fault: str) -> None:
    found, relay = _stat_through_fault(sshd_server, inbox, fault)
    assert found is None
    assert relay.stats.connections == 2 and relay.stats.resets == 1  # lost once, then through
