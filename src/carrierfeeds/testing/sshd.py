"""A real OpenSSH sshd on 127.0.0.1 playing a carrier's SFTP server, for tests, the demo and benchmarks."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from carrierfeeds.credentials import SftpEndpoint
from carrierfeeds.errors import ConfigError

log = logging.getLogger(__name__)

SSHD = Path("/usr/sbin/sshd")
_START_TIMEOUT = 15.0


def write_ed25519_key(path: Path, *, comment: str = "") -> str:
    """A fresh ed25519 key in OpenSSH format at ``path`` (0600); returns ``ssh-ed25519 AAAA...``."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    line = f"{public} {comment}".strip()
    path.with_name(path.name + ".pub").write_text(line + "\n")
    return public


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc; Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses; fields after the last ')' are fixed.
        fields = stat_line.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = _children(todo.pop())
        out.extend(kids)
        todo.extend(kids)
    return out


@dataclass
class Sshd:
    """A running sshd; uploads land under ``root`` (use it, or a folder in it, as an absolute remote_dir)."""

    host: str
    port: int
    username: str
    client_key_path: Path
    host_public_key_line: str
    workdir: Path
    root: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def known_hosts_text(self) -> str:
        return f"[{self.host}]:{self.port} {self.host_public_key_line}\n"

    def endpoint(self, *, private_key_path: Path | None = None, known_hosts: str | None = None,
                 username: str | None = None, port: int | None = None, **timeouts: float) -> SftpEndpoint:
        """An endpoint for this server; override a part to test a refusal (another key, another host key)."""
        return SftpEndpoint(host=self.host, port=port or self.port, username=username or self.username,
                            private_key_path=private_key_path or self.client_key_path,
                            known_hosts=self.known_hosts_text if known_hosts is None else known_hosts,
                            **timeouts)

    def write_keys_dir(self, keys_dir: Path, connection_id: str) -> Path:
        """Write ``<connection_id>.json``, the client key and ``known_hosts`` for load_sftp_endpoint."""
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_name = f"{connection_id}_ed25519"
        key_dst = keys_dir / key_name
        key_dst.unlink(missing_ok=True)
        fd = os.open(key_dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(self.client_key_path.read_bytes())
        known = keys_dir / "known_hosts"
        lines = known.read_text().splitlines() if known.exists() else []
        mine = self.known_hosts_text.strip()
        if mine not in lines:
            lines.append(mine)
        known.write_text("\n".join(lines) + "\n")
        spec = {"host": self.host, "port": self.port, "login": self.username, "key_file": key_name,
                "known_hosts_file": "known_hosts"}
        path = keys_dir / f"{connection_id}.json"
        path.write_text(json.dumps(spec, indent=2) + "\n")
        return path

    def connection_pids(self) -> list[int]:
        """The per-connection sshd processes (children of the listener) and their descendants."""
        if self.process is None:
            return []
        return _descendants(self.process.pid)

    def kill_connections(self) -> int:
        """SIGKILL every per-connection child, dropping live sessions mid-transfer; returns how many."""
        pids = self.connection_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log.info("killed %d sshd connection process(es)", len(pids))
        return len(pids)

    def log_text(self, *, after: int = 0) -> str:
        """The sshd log (LogLevel DEBUG1) from character offset ``after``."""
        return self.log_path.read_text(errors="replace")[after:] if self.log_path.exists() else ""

    def wait_for_log(self, pattern: str, *, after: int = 0, timeout: float = 10.0) -> str:
        """Wait until the log after ``after`` matches the regex ``pattern``; return that part of the log.

        sshd writes a connection's log lines asynchronously (through its monitor), so a test that
        inspects them waits for the line that closes the connection first.
        """
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text(after=after)
            if re.search(pattern, text):
                return text
            if time.monotonic() > deadline:
                raise TimeoutError(f"sshd log did not show {pattern!r} within {timeout}s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the listener and every connection it spawned; safe to call twice."""
        if self.process is None:
            return
        with contextlib.suppress(OSError):
            self.kill_connections()
        proc, self.process = self.process, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _write_config(workdir: Path, *, port: int, host_key: Path, authorized_keys: Path,
                  read_only: bool) -> Path:
    sftp = "internal-sftp -R" if read_only else "internal-sftp"
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {host_key}",
        f"PidFile {workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized_keys}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        "StrictModes no",
        "AllowAgentForwarding no",
        "AllowTcpForwarding no",
        "X11Forwarding no",
        "PermitTTY no",
        "MaxStartups 50",
        # DEBUG1 so tests can see whether a client ever reached authentication ("userauth-request").
        "LogLevel DEBUG1",
        f"Subsystem sftp {sftp}",
    ]
    path = workdir / "sshd_config"
    path.write_text("\n".join(lines) + "\n")
    return path


def _wait_for_banner(proc: subprocess.Popen[bytes], host: str, port: int, log_path: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    last = "no attempt"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"sshd exited with status {proc.returncode} while starting:\n{tail}")
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                s.settimeout(2)
                if s.recv(256).startswith(b"SSH-2.0-"):
                    return
                last = "no SSH banner"
        except OSError as exc:
            last = type(exc).__name__
        time.sleep(0.05)
    raise RuntimeError(f"sshd on {host}:{port} did not send its banner within {_START_TIMEOUT}s ({last})")


@contextlib.contextmanager
def running_sshd(workdir: Path, *, port: int | None = None, read_only: bool = False) -> Iterator[Sshd]:
    """Start ``/usr/sbin/sshd -D -e`` on 127.0.0.1 with fresh host and client keys; stopped on exit.

    Runs as the current user, who is also the only login it accepts (a non-root sshd can only log in
    as itself). ``read_only`` serves SFTP read-only (``internal-sftp -R``): every write is refused with
    "permission denied", which is how tests get a permission failure even when running as root.
    """
    if not SSHD.is_file():
        raise ConfigError(f"{SSHD} not found: install the OpenSSH server (apt-get install openssh-server) "
                          "to run the loopback SFTP server")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    root = workdir / "inbox"
    root.mkdir(exist_ok=True)
    host_key = workdir / "ssh_host_ed25519_key"
    host_public = write_ed25519_key(host_key, comment="carrierfeeds-test-host")
    client_key = workdir / "client_ed25519"
    client_public = write_ed25519_key(client_key, comment="carrierfeeds-test-client")
    authorized_keys = workdir / "authorized_keys"
    authorized_keys.write_text(client_public + "\n")
    if os.geteuid() == 0:
        # sshd started as root insists on its privilege separation directory.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    username = pwd.getpwuid(os.geteuid()).pw_name
    log_path = workdir / "sshd.log"
    chosen = port or _free_port()
    config = _write_config(workdir, port=chosen, host_key=host_key, authorized_keys=authorized_keys,
                           read_only=read_only)
    log_fh: IO[bytes] = log_path.open("ab")
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                            stdout=log_fh, stderr=log_fh, start_new_session=True)
    server = Sshd(host="127.0.0.1", port=chosen, username=username, client_key_path=client_key,
                  host_public_key_line=host_public, workdir=workdir, root=root, log_path=log_path,
                  process=proc)
    try:
        _wait_for_banner(proc, server.host, chosen, log_path)
        log.info("sshd listening on %s:%d (pid %d)", server.host, chosen, proc.pid)
        yield server
    finally:
        server.stop()
        log_fh.close()

