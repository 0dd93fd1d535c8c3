"""SFTP delivery (paramiko): pinned host key checked before auth; temp upload, size check, rename; retries.

Verification before the rename: the remote size, and the remote SHA-256 where the server offers the
``check-file`` extension (OpenSSH does not: there the size is the check, logged at debug). A connection
lost after the rename request went out is settled on the next attempt by the final file's SHA-256 (the
server's check-file, else its bytes read back): ours, delivered once; a file of the same size with
other bytes is never taken for ours. If neither the final nor the temp name is there any more, the
rename happened and the carrier collected the file: delivered, not re-verified, never sent again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import socket
import stat as stat_mod
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

import paramiko

from carrierfeeds.credentials import SftpEndpoint, parse_known_hosts
from carrierfeeds.errors import CarrierFeedsError, ConfigError, HostKeyRefused, PermanentError, TransientError
from carrierfeeds.transport.base import (
    Receipt,
    RemoteFile,
    RemoteFileExists,
    check_remote_name,
    mismatch,
    temp_name,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Progress = Callable[[int, int], None]

# Bigger SSH window and packets than paramiko's defaults keep more data in flight on each round trip.
WINDOW_SIZE = 64 * 1024 * 1024
MAX_PACKET_SIZE = 256 * 1024
READ_CHUNK = 1024 * 1024
# AES-GCM first: paramiko's default (aes-ctr + HMAC) spends as much CPU on the MAC as on the cipher;
# GCM roughly doubles loopback throughput. Servers without it still negotiate the others.
_FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
# SFTP errors that no retry can fix.
_PERMANENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EROFS,
                     errno.EEXIST}


class _RefuseUnknownHost(paramiko.RejectPolicy):
    """RejectPolicy that raises our own error, so an unknown host is never mistaken for a network fault."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> NoReturn:
        raise HostKeyRefused(f"host key of {hostname} is not pinned (offered {key.get_name()} "
                             f"{key.fingerprint}); refusing before authentication",
                             details={"host": hostname, "offered_fingerprint": key.fingerprint})


#: paramiko's AuthenticationException messages when the connection, not the server, ended authentication.
_AUTH_LOST: Final[tuple[str, ...]] = ("Authentication failed: transport shut down or saw EOF",
                                      "Authentication timeout.")


def _classify(exc: BaseException, what: str) -> CarrierFeedsError:
    """Our error for a paramiko/socket failure: TransientError is worth a retry, PermanentError is not."""
    if isinstance(exc, CarrierFeedsError):
        return exc
    name = type(exc).__name__
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyRefused(f"host key of {exc.hostname} changed: offered {exc.key.fingerprint}, pinned "
                              f"{exc.expected_key.fingerprint}; refusing before authentication",
                              details={"host": exc.hostname, "offered_fingerprint": exc.key.fingerprint,
                                       "pinned_fingerprint": exc.expected_key.fingerprint})
    if isinstance(exc, paramiko.AuthenticationException) and str(exc).startswith(_AUTH_LOST):
        # paramiko's words for a connection lost while authenticating (a hang-up, or no answer in time):
        # the server never said no, so another try may get through.
        return TransientError(f"{what}: connection lost while authenticating ({name})", details={"cause": name})
    if isinstance(exc, paramiko.AuthenticationException):
        return PermanentError(f"{what}: authentication failed ({name})", details={"cause": name})
    if isinstance(exc, OSError) and exc.errno in _PERMANENT_ERRNOS and not isinstance(exc, ConnectionError):
        return PermanentError(f"{what}: {exc.strerror or errno.errorcode.get(exc.errno or 0, name)}",
                              details={"cause": name, "errno": exc.errno})
    if isinstance(exc, socket.gaierror):
        return PermanentError(f"{what}: host name does not resolve", details={"cause": name})
    if isinstance(exc, EOFError | OSError | paramiko.SSHException | TimeoutError):
        # Resets, EOF, timeouts, a banner that never came, an SFTP "failure" without a code.
        return TransientError(f"{what}: {name}: {str(exc)[:200]}", details={"cause": name})
    raise exc


class _Transport(paramiko.Transport):
    """paramiko's Transport, its SSH negotiation (banner, then key exchange) given ``negotiation_timeout``.

    paramiko's ``SSHClient.connect(timeout=...)`` passes its TCP connect timeout to ``start_client`` as the
    deadline of the whole negotiation, and on that deadline ``start_client`` returns without a word: a
    banner slower than the connect timeout then fails as "No existing session" however long
    ``banner_timeout`` is, and the client closes the socket while paramiko's own thread is still reading
    the banner from it (that thread then logs "[Errno 9] Bad file descriptor"; no other descriptor is
    involved). With the deadline past the banner timeout, a missing banner ends in paramiko's thread as
    "Error reading SSH protocol banner" and the thread is done before the socket is closed.
    """

    negotiation_timeout: float | None = None

    def start_client(self, event: Any = None, timeout: float | None = None) -> None:
        if self.negotiation_timeout is not None:
            timeout = max(timeout or 0.0, self.negotiation_timeout)
        super().start_client(event=event, timeout=timeout)


def _make_transport(sock: Any, *, negotiation_timeout: float | None = None, **kwargs: Any) -> paramiko.Transport:
    transport = _Transport(sock, default_window_size=WINDOW_SIZE,
                           default_max_packet_size=MAX_PACKET_SIZE, **kwargs)
    transport.negotiation_timeout = negotiation_timeout
    options = transport.get_security_options()
    offered = tuple(options.ciphers)
    options.ciphers = tuple(c for c in _FAST_CIPHERS if c in offered) + \
        tuple(c for c in offered if c not in _FAST_CIPHERS)
    return transport


class _Session:
    """One authenticated connection and its SFTP channel."""

    def __init__(self, endpoint: SftpEndpoint, pkey: paramiko.PKey) -> None:
        self.client = paramiko.SSHClient()
        host_keys = self.client.get_host_keys()
        for name, entry in parse_known_hosts(endpoint.known_hosts).items():
            for keytype, key in entry.items():
                host_keys.add(name, keytype, key)
        self.client.set_missing_host_key_policy(_RefuseUnknownHost())
        try:
            # The host key is verified inside connect() after key exchange and before any auth request.
            self.client.connect(endpoint.host, port=endpoint.port, username=endpoint.username, pkey=pkey,
                                timeout=endpoint.connect_timeout, banner_timeout=endpoint.banner_timeout,
                                auth_timeout=endpoint.auth_timeout, channel_timeout=endpoint.op_timeout,
                                look_for_keys=False, allow_agent=False,
                                # The banner's wait, then the key exchange's (the connect timeout).
                                transport_factory=partial(_make_transport, negotiation_timeout=(
                                    endpoint.banner_timeout + endpoint.connect_timeout)))
            transport = self.client.get_transport()
            if transport is None:
                raise TransientError("the SSH transport closed right after connecting")
            server_key = transport.get_remote_server_key()
            self.host_key_fingerprint: str = server_key.fingerprint
            self.sftp = self.client.open_sftp()
            channel = self.sftp.get_channel()
            if channel is not None:
                channel.settimeout(endpoint.op_timeout)
        except BaseException:
            self.client.close()
            raise

    def close(self) -> None:
        self.client.close()


class SftpTransport:
    """Deliver to ``remote_dir`` (absolute, or relative to the login directory) on a pinned SFTP server."""

    name = "sftp"

    def __init__(self, endpoint: SftpEndpoint, remote_dir: str, *, retries: int = 3, backoff: float = 1.0,
                 progress: Progress | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        if retries < 1:
            raise ValueError("retries must be at least 1")
        self.endpoint = endpoint
        self.remote_dir = remote_dir.rstrip("/") or "/"
        self.retries = retries
        self.backoff = backoff
        self.progress = progress
        self._sleep = sleep
        #: The session kept open inside a ``connected()`` block, for the next operation to reuse.
        self._kept: _Session | None = None
        self._keeping = False

    @contextlib.contextmanager
    def connected(self) -> Iterator[SftpTransport]:
        """Within the block, operations share one session (one key exchange and login instead of one per
        operation: the reconciling ``stat`` before ``deliver`` would cost a second handshake; see
        benchmarks/README.md).
        A failed operation's session is closed and its retry opens a fresh one, as outside the block; the
        kept session is closed when the block ends, whatever happened."""
        self._keeping = True
        try:
            yield self
        finally:
            self._keeping = False
            kept, self._kept = self._kept, None
            if kept is not None:
                kept.close()

    def _path(self, name: str) -> str:
        return f"{self.remote_dir}/{name}" if self.remote_dir != "/" else f"/{name}"

    def _load_key(self) -> paramiko.PKey:
        path = self.endpoint.private_key_path
        try:
            return paramiko.PKey.from_path(path)
        except paramiko.PasswordRequiredException:
            raise ConfigError("the SFTP client key is passphrase-protected; use an unencrypted key file "
                              "readable only by the service user", file=str(path)) from None
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise ConfigError(f"cannot load the SFTP client key ({type(exc).__name__})",
                              file=str(path)) from None

    def _with_retries(self, what: str, op: Callable[[_Session], T]) -> tuple[T, int]:
        """Run ``op`` in a fresh session, retrying transient faults with exponential backoff."""
        kept, self._kept = self._kept, None
        pkey = self._load_key()
        for attempt in range(1, self.retries + 1):
            session: _Session | None = None
            try:
                session, kept = kept, None
                if session is None:
                    session = _Session(self.endpoint, pkey)
                result = op(session)
                if self._keeping:
                    self._kept, session = session, None  # for the block's next operation
                return result, attempt
            except Exception as exc:  # classified at once: permanent ones re-raise, unknown ones propagate
                error = _classify(exc, what)
                error.details.update(attempts=attempt)
                if not isinstance(error, TransientError):
                    if error is exc:
                        raise
                    raise error from exc
                if attempt == self.retries:
                    log.warning("%s: giving up after %d attempt(s): %s", what, attempt, error.message)
                    if error is exc:
                        raise
                    raise error from exc
                delay = self.backoff * 2 ** (attempt - 1)
                log.warning("%s: attempt %d of %d failed (%s); retrying in %.1fs", what, attempt,
                            self.retries, error.message, delay)
                self._sleep(delay)
            finally:
                if session is not None:
                    session.close()
        raise AssertionError("unreachable")

    def check_access(self) -> str:
        """Connect, check the server's host key against the pinned one (before authenticating), log in,
        and look at ``remote_dir``: it must be a folder. Nothing is written. The server's host key
        fingerprint; HostKeyRefused, PermanentError (login refused, no such folder) or TransientError."""

        def op(session: _Session) -> str:
            try:
                attrs = session.sftp.stat(self.remote_dir)
            except OSError as exc:
                if isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOENT:
                    raise PermanentError(f"{self.remote_dir} does not exist on the server",
                                         details={"host": self.endpoint.host}) from None
                raise
            if attrs.st_mode is not None and not stat_mod.S_ISDIR(attrs.st_mode):
                raise PermanentError(f"{self.remote_dir} on the server is not a folder",
                                     details={"host": self.endpoint.host})
            return session.host_key_fingerprint

        fingerprint, _ = self._with_retries(f"connect to {self.endpoint.host_key_name}", op)
        return fingerprint

    def stat(self, remote_name: str) -> RemoteFile | None:
        """The final file by name, or None; used to reconcile a run interrupted after the rename."""
        check_remote_name(remote_name)

        def op(session: _Session) -> RemoteFile | None:
            attrs = _stat_or_none(session, self._path(remote_name))
            if attrs is None:
                return None
            return RemoteFile(name=remote_name, size=int(attrs.st_size or 0))

        found, _ = self._with_retries(f"stat {remote_name}", op)
        return found

    def temp_exists(self, remote_name: str) -> bool:
        """Whether ``remote_name``'s temp file is on the server (an upload not renamed into place)."""
        check_remote_name(remote_name)

        def op(session: _Session) -> bool:
            return _stat_or_none(session, self._path(temp_name(remote_name))) is not None

        found, _ = self._with_retries(f"stat temp of {remote_name}", op)
        return found

    def deliver(self, local: Path, remote_name: str, *, expect_sha256: str | None = None,
                before_rename: Callable[[], None] | None = None) -> Receipt:
        """Upload under a temp name, confirm the size, rename into place; never overwrite the final name.

        ``expect_sha256``: the bytes uploaded are hashed as they stream; unless they hash to it, the
        temp file is removed and :class:`CiphertextMismatch` raised before any rename.
        ``before_rename`` is called just before each rename request goes out (the pipeline records it in
        the ledger, so a later attempt that finds neither name knows the rename may have happened)."""
        check_remote_name(remote_name)
        size = local.stat().st_size
        final = self._path(remote_name)
        tmp = self._path(temp_name(remote_name))

        # Set once an attempt has sent the rename: from then on a final file may be our own upload.
        renamed: dict[str, str] = {}

        def op(session: _Session) -> Receipt:
            sftp = session.sftp
            existing = _stat_or_none(session, final)
            if existing is not None:
                if "sha256" in renamed:
                    found = int(existing.st_size or 0)
                    if found == size and _remote_digest(session, final, remote_name) == renamed["sha256"]:
                        # The connection dropped after our rename and before its reply reached us.
                        log.info("%s: found under its final name after a lost connection (%d bytes, sha256 "
                                 "checked); delivered, not sent again", remote_name, found)
                        return Receipt(remote_path=final, size=found,
                                       host_key_fingerprint=session.host_key_fingerprint, attempts=0)
                raise RemoteFileExists(f"{remote_name} already exists in {self.remote_dir}; not overwriting",
                                       details={"remote_name": remote_name})
            if "sha256" in renamed and _stat_or_none(session, tmp) is None:
                # Our rename went out and neither name is there: the server renamed it and the carrier
                # collected it at once (nothing else writes our temp name: one delivery of a run at a time,
                # see Ledger.delivery_lock). The file is the carrier's; sending it again would be a copy.
                log.warning("%s: renamed into place and collected before it could be looked at again after a "
                            "lost connection; delivered, not re-verified, not sent again", remote_name)
                return Receipt(remote_path=final, size=size, host_key_fingerprint=session.host_key_fingerprint,
                               attempts=0, verified=False)
            if _stat_or_none(session, tmp) is not None:
                # Left by an interrupted earlier attempt: ours to replace.
                sftp.remove(tmp)
            started = time.monotonic()
            digest = hashlib.sha256()
            with local.open("rb") as src, sftp.open(tmp, "wb") as dst:
                dst.set_pipelined(True)
                sent = 0
                while chunk := src.read(READ_CHUNK):
                    dst.write(chunk)
                    digest.update(chunk)
                    sent += len(chunk)
                    if self.progress is not None:
                        self.progress(sent, size)
            if expect_sha256 is not None and digest.hexdigest() != expect_sha256:
                # What was read is not what the ledger vouches for (a swapped local file): never renamed.
                sftp.remove(tmp)
                raise mismatch(remote_name, expect_sha256, digest.hexdigest())
            remote_size = int(sftp.stat(tmp).st_size or 0)
            if remote_size != size:
                raise TransientError(f"size mismatch after upload: {remote_size} of {size} bytes",
                                     details={"remote_name": remote_name})
            if not _remote_matches(session, tmp, digest.hexdigest(), remote_name):
                raise TransientError("remote checksum differs from the local file after upload",
                                     details={"remote_name": remote_name})
            renamed["sha256"] = digest.hexdigest()
            if before_rename is not None:
                before_rename()
            _rename_no_overwrite(session, tmp, final, remote_name, self.remote_dir)
            elapsed = max(time.monotonic() - started, 1e-9)
            log.info("delivered %s to %s:%d (%d bytes, %.1f MB/s, host key %s)", remote_name,
                     self.endpoint.host, self.endpoint.port, size, size / elapsed / 1e6,
                     session.host_key_fingerprint)
            return Receipt(remote_path=final, size=remote_size,
                           host_key_fingerprint=session.host_key_fingerprint, attempts=0)

        receipt, attempts = self._with_retries(f"deliver {remote_name}", op)
        return Receipt(remote_path=receipt.remote_path, size=receipt.size,
                       host_key_fingerprint=receipt.host_key_fingerprint, attempts=attempts,
                       verified=receipt.verified)

    def sha256(self, remote_name: str) -> str | None:
        """The SHA-256 of the final file by name (the server's ``check-file`` where offered, else its bytes
        read back over our own login), or None when there is no such file; to reconcile an interrupted run
        by content, never by size alone."""
        check_remote_name(remote_name)

        def op(session: _Session) -> str | None:
            path = self._path(remote_name)
            if _stat_or_none(session, path) is None:
                return None
            return _remote_digest(session, path, remote_name)

        digest, _ = self._with_retries(f"sha256 {remote_name}", op)
        return digest


def _stat_or_none(session: _Session, path: str) -> paramiko.SFTPAttributes | None:
    try:
        attrs = session.sftp.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    if attrs.st_mode is not None and not stat_mod.S_ISREG(attrs.st_mode):
        raise PermanentError(f"{path.rsplit('/', 1)[-1]} on the server is not a regular file")
    return attrs


def _is_unsupported(exc: OSError) -> bool:
    """SSH_FX_OP_UNSUPPORTED (paramiko raises it as a bare IOError with the server's text)."""
    return exc.errno is None and "unsupported" in str(exc).lower()


def _remote_sha256(session: _Session, path: str) -> str | None:
    """The server's SHA-256 of ``path`` through the ``check-file`` extension; None when not offered."""
    try:
        with session.sftp.open(path, "rb") as fh:
            return fh.check("sha256").hex()
    except OSError as exc:
        if _is_unsupported(exc):
            return None
        raise


def _remote_digest(session: _Session, path: str, remote_name: str) -> str:
    """The SHA-256 of a remote file: the server's ``check-file`` where offered, else its bytes read back
    (OpenSSH offers no check-file; our login may read what it wrote)."""
    offered = _remote_sha256(session, path)
    if offered is not None:
        return offered
    digest = hashlib.sha256()
    with session.sftp.open(path, "rb") as fh:
        fh.prefetch()
        while chunk := fh.read(READ_CHUNK):
            digest.update(chunk)
    log.debug("%s: sha256 of the remote file read back", remote_name)
    return digest.hexdigest()


def _remote_matches(session: _Session, path: str, sha256: str, remote_name: str) -> bool:
    """True when the server's checksum equals ``sha256``, or the server offers none (size was checked)."""
    remote = _remote_sha256(session, path)
    if remote is None:
        log.debug("%s: size check only (the server does not offer check-file)", remote_name)
        return True
    log.debug("%s: size and sha256 checked (check-file)", remote_name)
    return remote == sha256


def _rename_no_overwrite(session: _Session, tmp: str, final: str, remote_name: str, remote_dir: str) -> None:
    """Plain SFTP rename: the protocol (and OpenSSH's link-then-unlink) refuses an existing target, so
    the final name appears atomically and complete, and a file that raced us there is never replaced.
    posix-rename@openssh.com would replace it, which is why it is not used here."""
    try:
        session.sftp.rename(tmp, final)
    except OSError as exc:
        if _stat_or_none(session, final) is not None:
            raise RemoteFileExists(f"{remote_name} appeared in {remote_dir} during upload; not overwriting",
                                   details={"remote_name": remote_name}) from exc
        raise
