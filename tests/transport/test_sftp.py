"""SftpTransport against a real OpenSSH sshd on 127.0.0.1: pinning, atomic hand-off, fault handling."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest

from carrierfeeds.errors import HostKeyRefused, PermanentError, Refused, TransientError
from carrierfeeds.testing.sshd import Sshd, write_ed25519_key
from carrierfeeds.transport.base import RemoteFile, RemoteFileExists, Transport
from carrierfeeds.transport.sftp import SftpTransport, _remote_sha256, _Session

NAME = "ACME_834_20260301_000000001.x12.pgp"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _host_fingerprint(server: Sshd) -> str:
    blob = base64.b64decode(server.host_public_key_line.split()[1])
    return paramiko.Ed25519Key(data=blob).fingerprint


def _auth_attempts(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "Authentication (" in r.getMessage()]


def test_upload_lands_complete_under_final_name(sshd_server: Sshd, inbox: Path,
                                                 make_payload: Callable[..., Path]) -> None:
    local = make_payload(3 * 1024 * 1024 + 17)
    transport = SftpTransport(sshd_server.endpoint(), str(inbox))
    assert isinstance(transport, Transport)
    assert transport.stat(NAME) is None

    receipt = transport.deliver(local, NAME)

    assert receipt.remote_path == f"{inbox}/{NAME}"
    assert receipt.size == local.stat().st_size
    assert receipt.attempts == 1
    assert receipt.host_key_fingerprint == _host_fingerprint(sshd_server)
    assert receipt.host_key_fingerprint.startswith("SHA256:")
    assert [p.name for p in inbox.iterdir()] == [NAME]  # no temp file left
    assert _digest(inbox / NAME) == _digest(local)
    assert transport.stat(NAME) == RemoteFile(name=NAME, size=local.stat().st_size)


@pytest.mark.parametrize("pin", ["empty known_hosts", "another host key"])
def test_unpinned_or_changed_host_key_is_refused_before_auth(
        sshd_server: Sshd, inbox: Path, make_payload: Callable[..., Path], tmp_path: Path,
        caplog: pytest.LogCaptureFixture, pin: str) -> None:
    if pin == "empty known_hosts":
        known_hosts = ""
    else:
        other = write_ed25519_key(tmp_path / "impostor_host_key")
        known_hosts = f"[{sshd_server.host}]:{sshd_server.port} {other}\n"
    transport = SftpTransport(sshd_server.endpoint(known_hosts=known_hosts), str(inbox), retries=3,
                              sleep=lambda _s: pytest.fail("a host key refusal must not be retried"))
    log_offset = len(sshd_server.log_text())
    with caplog.at_level(logging.DEBUG, logger="paramiko"), pytest.raises(HostKeyRefused) as caught:
        transport.deliver(make_payload(1000), NAME)
    server_log = sshd_server.wait_for_log(r"Connection (closed|reset) by .*\[preauth\]", after=log_offset)
    # The server finished key exchange (so it showed its host key) and never saw an auth request.
    assert "KEX done" in server_log
    assert "userauth-request" not in server_log

    assert caught.value.details["attempts"] == 1
    assert caught.value.details["offered_fingerprint"] == _host_fingerprint(sshd_server)
    # paramiko logs every authentication attempt; none was made, and nothing reached the server.
    assert _auth_attempts(caplog) == []
    assert list(inbox.iterdir()) == []


def test_auth_attempt_is_visible_in_the_log_we_check(sshd_server: Sshd, inbox: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    # The control for the test above: a pinned connection does log its authentication.
    with caplog.at_level(logging.DEBUG, logger="paramiko"):
        log_offset = len(sshd_server.log_text())
        SftpTransport(sshd_server.endpoint(), str(inbox)).stat(NAME)
    assert _auth_attempts(caplog) != []
    assert "userauth-request" in sshd_server.wait_for_log("Accepted publickey", after=log_offset)


def _logins(server: Sshd, after: int) -> int:
    return server.log_text(after=after).count("Accepted publickey")


def test_operations_in_a_connected_block_share_one_login(sshd_server: Sshd, inbox: Path,
                                                        make_payload: Callable[..., Path]) -> None:
    local = make_payload(1024 * 1024 + 5)
    transport = SftpTransport(sshd_server.endpoint(), str(inbox))
    offset = len(sshd_server.log_text())
    with transport.connected():
        assert transport.stat(NAME) is None
        receipt = transport.deliver(local, NAME)
    assert receipt.attempts == 1 and _digest(inbox / NAME) == _digest(local)
    sshd_server.wait_for_log("Accepted publickey", after=offset)
    time.sleep(0.2)  # the log is written by the server; give a second login (there must be none) time
    assert _logins(sshd_server, offset) == 1
    assert transport._kept is None  # closed at the end of the block
    # Outside a block every operation logs in afresh, as before.
    offset = len(sshd_server.log_text())
    assert transport.stat(NAME) == RemoteFile(name=NAME, size=local.stat().st_size)
    assert transport.stat("other.pgp") is None
    sshd_server.wait_for_log("Accepted publickey(.|\n)*Accepted publickey", after=offset)
    assert _logins(sshd_server, offset) == 2


def test_a_kept_session_that_dropped_is_replaced_by_a_fresh_one(sshd_server: Sshd, inbox: Path,
                                                                make_payload: Callable[..., Path]) -> None:
    local = make_payload(256 * 1024)
    sleeps: list[float] = []
    transport = SftpTransport(sshd_server.endpoint(), str(inbox), retries=3, backoff=0.25, sleep=sleeps.append)
    with transport.connected():
        assert transport.stat(NAME) is None
        assert sshd_server.kill_connections() >= 1  # the kept session's server side is gone
        receipt = transport.deliver(local, NAME)
    assert receipt.attempts == 2 and sleeps == [0.25]
    assert [p.name for p in inbox.iterdir()] == [NAME]
    assert _digest(inbox / NAME) == _digest(local)


def test_existing_final_file_is_never_overwritten(sshd_server: Sshd, inbox: Path,
                                                  make_payload: Callable[..., Path]) -> None:
    (inbox / NAME).write_bytes(b"delivered yesterday")
    transport = SftpTransport(sshd_server.endpoint(), str(inbox),
                              sleep=lambda _s: pytest.fail("not retriable"))
    with pytest.raises(RemoteFileExists) as caught:
        transport.deliver(make_payload(5000), NAME)
    assert isinstance(caught.value, PermanentError)
    assert (inbox / NAME).read_bytes() == b"delivered yesterday"
    assert [p.name for p in inbox.iterdir()] == [NAME]


def test_stale_temp_file_from_an_earlier_attempt_is_replaced(sshd_server: Sshd, inbox: Path,
                                                             make_payload: Callable[..., Path]) -> None:
    stale = inbox / f".{NAME}.part"
    stale.write_bytes(b"half an upload" * 1000)
    local = make_payload(70_000)
    receipt = SftpTransport(sshd_server.endpoint(), str(inbox)).deliver(local, NAME)
    assert receipt.size == 70_000
    assert [p.name for p in inbox.iterdir()] == [NAME]
    assert _digest(inbox / NAME) == _digest(local)


def test_permission_denied_fails_at_once(read_only_sshd: Sshd, make_payload: Callable[..., Path]) -> None:
    sleeps: list[float] = []
    transport = SftpTransport(read_only_sshd.endpoint(), str(read_only_sshd.root), retries=3,
                              sleep=sleeps.append)
    with pytest.raises(PermanentError) as caught:
        transport.deliver(make_payload(1000), NAME)
    assert not isinstance(caught.value, RemoteFileExists)
    assert caught.value.details["attempts"] == 1
    assert sleeps == []
    assert list(read_only_sshd.root.iterdir()) == []


def test_unauthorised_client_key_is_permanent(sshd_server: Sshd, inbox: Path, stranger_key: Path,
                                              make_payload: Callable[..., Path]) -> None:
    sleeps: list[float] = []
    transport = SftpTransport(sshd_server.endpoint(private_key_path=stranger_key), str(inbox),
                              sleep=sleeps.append)
    with pytest.raises(PermanentError, match="authentication failed") as caught:
        transport.deliver(make_payload(1000), NAME)
    assert caught.value.details["attempts"] == 1
    assert sleeps == []
    assert list(inbox.iterdir()) == []


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP server that accepts connections and never says a word (no SSH banner)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        done.set()
        # shutdown() wakes the blocked accept(); close() alone would not on Linux.
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)
        server.close()
        for conn in held:
            conn.close()
        thread.join(timeout=5)


def test_server_without_banner_times_out_and_retries(sshd_server: Sshd, silent_listener: int,
                                                     make_payload: Callable[..., Path]) -> None:
    sleeps: list[float] = []
    endpoint = sshd_server.endpoint(port=silent_listener, connect_timeout=2.0, banner_timeout=1.0)
    transport = SftpTransport(endpoint, "/nowhere", retries=2, backoff=0.5, sleep=sleeps.append)
    started = time.monotonic()
    with pytest.raises(TransientError) as caught:
        transport.deliver(make_payload(100), NAME)
    elapsed = time.monotonic() - started
    assert caught.value.details["attempts"] == 2
    assert sleeps == [0.5]  # exponential backoff: backoff * 2**(attempt-1) between attempts
    # A correctness bound, not a speed measure: two attempts honouring a 1 s banner timeout end long
    # before even one attempt at paramiko's 15 s default would.
    assert elapsed < 10, f"two attempts took {elapsed:.1f}s: the banner timeout was not honoured"


def test_a_banner_slower_than_the_connect_timeout_waits_for_the_banner_timeout(
        sshd_server: Sshd, silent_listener: int, caplog: pytest.LogCaptureFixture) -> None:
    """banner_timeout is honoured past connect_timeout: paramiko's client gives the whole negotiation only
    its connect timeout, then fails with "No existing session" and closes the socket under its own thread
    still reading the banner ("[Errno 9] Bad file descriptor" in the log, once mistaken for a descriptor
    closed twice). The attempt must end on the banner, in paramiko's thread, before the socket is closed."""
    endpoint = sshd_server.endpoint(port=silent_listener, connect_timeout=0.5, banner_timeout=2.0)
    transport = SftpTransport(endpoint, "/nowhere", retries=1, sleep=lambda _: None)
    with caplog.at_level(logging.DEBUG, logger="paramiko"), pytest.raises(TransientError) as caught:
        transport.stat(NAME)
    assert caught.value.details["cause"] == "SSHException"
    assert "Error reading SSH protocol banner" in str(caught.value), str(caught.value)
    assert "No existing session" not in str(caught.value)
    paramiko_log = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("paramiko"))
    assert "Error reading SSH protocol banner" in paramiko_log, "the search below would prove nothing"
    assert "Bad file descriptor" not in paramiko_log, paramiko_log[-2000:]


def test_connection_dropped_mid_upload_is_retried_to_one_complete_file(
        sshd_server: Sshd, inbox: Path, make_payload: Callable[..., Path]) -> None:
    local = make_payload(12 * 1024 * 1024)
    killed: list[int] = []

    def drop_once(sent: int, total: int) -> None:
        # Kill the server side of the session a quarter of the way through the first attempt.
        if not killed and sent >= total // 4:
            killed.append(sshd_server.kill_connections())

    sleeps: list[float] = []
    transport = SftpTransport(sshd_server.endpoint(), str(inbox), retries=3, backoff=0.25,
                              progress=drop_once, sleep=sleeps.append)
    receipt = transport.deliver(local, NAME)

    assert killed and killed[0] >= 1
    assert receipt.attempts == 2
    assert sleeps == [0.25]
    assert [p.name for p in inbox.iterdir()] == [NAME]
    assert _digest(inbox / NAME) == _digest(local)


@pytest.mark.parametrize("bad", ["", "a/b", "../up", "..", ".hidden", "x\x00y", "tab\tname"])
def test_remote_name_must_be_a_plain_file_name(sshd_server: Sshd, inbox: Path, bad: str,
                                               make_payload: Callable[..., Path]) -> None:
    transport = SftpTransport(sshd_server.endpoint(), str(inbox))
    with pytest.raises(Refused):
        transport.deliver(make_payload(10), bad)
    with pytest.raises(Refused):
        transport.stat(bad)
    assert list(inbox.iterdir()) == []


# ------------------------------------------------------------------ remote checksum (check-file)
def test_openssh_offers_no_check_file_and_delivery_falls_back_to_the_size(
        sshd_server: Sshd, inbox: Path, make_payload: Callable[..., Path],
        caplog: pytest.LogCaptureFixture) -> None:
    local = make_payload(200_000)
    (inbox / "probe").write_bytes(b"x" * 1000)
    session = _Session(sshd_server.endpoint(), paramiko.PKey.from_path(sshd_server.client_key_path))
    try:
        # What the server itself answers: SSH_FX_OP_UNSUPPORTED, which paramiko raises as a bare IOError.
        with session.sftp.open(f"{inbox}/probe", "rb") as fh, pytest.raises(OSError, match=r"(?i)unsupported"):
            fh.check("sha256")
        assert _remote_sha256(session, f"{inbox}/probe") is None  # "not offered", not a failure
        with pytest.raises(FileNotFoundError):  # a real error is still an error
            _remote_sha256(session, f"{inbox}/absent")
    finally:
        session.close()

    with caplog.at_level(logging.DEBUG, logger="carrierfeeds.transport.sftp"):
        receipt = SftpTransport(sshd_server.endpoint(), str(inbox)).deliver(local, NAME)
    assert receipt.attempts == 1 and _digest(inbox / NAME) == _digest(local)
    assert any(r.levelno == logging.DEBUG and NAME in r.getMessage() and "size check only" in r.getMessage()
               for r in caplog.records)


# --------------------------------------------------- connection lost just after the server's rename
class _DropAfterRename:
    """A TCP relay to the sshd that cuts the first connection as soon as the final file exists.

    The server answers a rename only after performing it, so any server-to-client bytes seen once the
    final name exists come no earlier than the rename: the client never learns the rename succeeded.
    """

    def __init__(self, target: tuple[str, int], final: Path) -> None:
        self.target = target
        self.final = final
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.connections = 0
        self.dropped = 0
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            cut = self.connections == 1
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, cut), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, cut: bool) -> None:
        try:
            while data := src.recv(65536):
                if cut and self.final.exists():
                    self.dropped += 1
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()


def test_connection_lost_after_the_rename_is_taken_as_delivered_on_the_retry(
        sshd_server: Sshd, inbox: Path, make_payload: Callable[..., Path]) -> None:
    local = make_payload(300_000)
    relay = _DropAfterRename((sshd_server.host, sshd_server.port), inbox / NAME)
    try:
        endpoint = sshd_server.endpoint(port=relay.port,
                                        known_hosts=f"[127.0.0.1]:{relay.port} {sshd_server.host_public_key_line}\n")
        sleeps: list[float] = []
        receipt = SftpTransport(endpoint, str(inbox), retries=3, backoff=0.1, sleep=sleeps.append).deliver(
            local, NAME)
    finally:
        relay.close()
    assert relay.dropped == 1 and relay.connections == 2  # cut after the rename, one retry
    assert receipt.attempts == 2 and sleeps == [0.1]
    assert receipt.remote_path == f"{inbox}/{NAME}" and receipt.size == local.stat().st_size
    assert [p.name for p in inbox.iterdir()] == [NAME] and _digest(inbox / NAME) == _digest(local)


def test_a_final_file_of_another_size_after_a_lost_rename_is_still_refused(
        sshd_server: Sshd, inbox: Path, make_payload: Callable[..., Path]) -> None:
    local = make_payload(300_000)
    relay = _DropAfterRename((sshd_server.host, sshd_server.port), inbox / NAME)
    original_pump = relay._pump

    def pump_then_tamper(src: socket.socket, dst: socket.socket, cut: bool) -> None:
        original_pump(src, dst, cut)
        if cut and relay.dropped:
            # Between the lost reply and the retry, the final file is no longer what we uploaded.
            (inbox / NAME).write_bytes(b"someone else's file")

    relay._pump = pump_then_tamper  # type: ignore[method-assign]
    try:
        endpoint = sshd_server.endpoint(port=relay.port,
                                        known_hosts=f"[127.0.0.1]:{relay.port} {sshd_server.host_public_key_line}\n")
        with pytest.raises(RemoteFileExists):
            SftpTransport(endpoint, str(inbox), retries=3, backoff=0.2, sleep=time.sleep).deliver(local, NAME)
    finally:
        relay.close()
    assert (inbox / NAME).read_bytes() == b"someone else's file"


# --------------------------------------------------------------- a server stalling after auth
def test_server_stalling_mid_upload_hits_the_operation_timeout_as_transient(
        sshd_server: Sshd, inbox: Path, make_payload: Callable[..., Path]) -> None:
    local = make_payload(64 * 1024 * 1024)  # far more than the SSH window: the upload must wait on the server
    stopped: list[int] = []

    def stall_once(sent: int, total: int) -> None:
        if not stopped and sent >= total // 8:
            for pid in sshd_server.connection_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)

    transport = SftpTransport(sshd_server.endpoint(op_timeout=1.0), str(inbox), retries=1, progress=stall_once)
    started = time.monotonic()
    try:
        with pytest.raises(TransientError) as caught:
            transport.deliver(local, NAME)
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGCONT)
    elapsed = time.monotonic() - started
    assert stopped, "the server was never stalled"
    assert caught.value.details["attempts"] == 1
    assert caught.value.details["cause"] == "TimeoutError"
    # A correctness bound: a 1 s per-operation timeout, not the 60 s default, ended the stalled upload.
    assert elapsed < 30, f"the stalled upload took {elapsed:.1f}s to fail"
    assert NAME not in {p.name for p in inbox.iterdir()}
