"""A TCP relay on 127.0.0.1 in front of a real sshd: a bandwidth limit, and resets on chosen connections.

The relay is the network between a worker and the carrier. It forwards bytes both ways, one thread
per direction, and never buffers more than one chunk per direction, so a throttled link pushes back on
the sender through TCP exactly as a slow WAN does (the client's socket buffer fills, its writes block).

Faults are decided per accepted connection (numbered from 1): ``reset_at(n)`` returns None to leave
connection ``n`` alone, or how many bytes (both directions together) may pass before it is reset: both
sockets are closed with ``SO_LINGER`` 0, so each side sees a TCP RST, as when a firewall or a NAT drops
a session. A reset at byte 0 drops the connection before the SSH banner; a reset deep into the session
lands in the upload, or after the rename went out and before its reply came back. ``trip(n)`` may
instead return a predicate, asked before each server-to-client chunk of connection ``n`` with the
chunks that connection has passed so far (("up"|"down", bytes), in order): when it turns true the
connection is faulted before that chunk passes (e.g. "a final file appeared on the server": the
server's reply to a rename is then never seen by the client).

``fault`` says what a planned fault is: ``reset`` (RST both ways), ``close`` (FIN both ways: the
server, or a proxy, hanging up) or ``stall`` (nothing passes any more and nobody is told: a black hole,
until the client's own timeout).
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

CHUNK = 64 * 1024
#: What a planned fault does to a connection: RST both ways, FIN both ways, or nothing ever again.
FAULTS = ("reset", "close", "stall")
#: A ``trip`` predicate: given a connection's chunks so far, fault it before the next server chunk?
Tripped = Callable[[list[tuple[str, int]]], bool]


class _Throttle:
    """At most ``rate`` bytes per second through one direction of one connection (a token bucket
    without burst: bytes sent so far never run ahead of ``rate`` times the time since the first)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start: float | None = None
        self.sent = 0
        self.waits = 0

    def take(self, n: int) -> None:
        now = time.monotonic()
        if self.start is None:
            self.start = now
        self.sent += n
        due = self.start + self.sent / self.rate
        if due > now:
            self.waits += 1
            time.sleep(due - now)


@dataclass
class RelayStats:
    """What the relay saw: connections accepted, connections it faulted (and at which byte), bytes
    forwarded each way, and how often the throttle held a sender back."""

    connections: int = 0
    resets: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    throttle_waits: int = 0
    reset_offsets: list[int] = field(default_factory=list)
    #: Bytes (both ways) of each connection that ended on its own, in the order they ended.
    session_bytes: list[int] = field(default_factory=list)
    #: With ``record``: each connection's chunks in the order they passed, as ("up"|"down", bytes).
    chunks: dict[int, list[tuple[str, int]]] = field(default_factory=dict)


class _Link:
    """One client connection and its upstream twin; either pump may reset both."""

    def __init__(self, relay: Relay, number: int, client: socket.socket, upstream: socket.socket,
                 budget: int | None, tripped: Tripped | None) -> None:
        self.relay = relay
        self.number = number
        self.client = client
        self.upstream = upstream
        self.budget = budget
        self.tripped = tripped
        self.chunks: list[tuple[str, int]] = []
        self.stalled = False
        self.passed = 0
        self.lock = threading.Lock()
        self.done = False

    def allow(self, n: int) -> int:
        """How many of the next ``n`` bytes may pass before the reset (all of them when none is due)."""
        with self.lock:
            if self.done:
                return 0
            if self.budget is None:
                self.passed += n
                return n
            room = max(self.budget - self.passed, 0)
            take = min(n, room)
            self.passed += take
            return take

    def stall(self) -> None:
        """Black-hole the link: nothing more passes either way and nobody is told (a NAT that dropped
        the session silently); the sockets stay open until the relay closes."""
        with self.lock:
            if self.done:
                return
            self.done = True
            self.stalled = True
        self.relay._count_reset(self.passed)

    def reset(self, *, injected: bool) -> None:
        """Drop both sockets with a TCP RST; ``injected`` when it is the relay's planned fault (counted),
        not a reset passed on from one side."""
        with self.lock:
            if self.done:
                return
            self.done = True
        if injected:
            self.relay._count_reset(self.passed)
        for s in (self.client, self.upstream):
            # SO_LINGER on, timeout 0: the last close sends RST instead of FIN. SHUT_RD first wakes the
            # other pump if it is blocked in recv() on this socket (sending nothing to the peer): a
            # close() alone would wait for that recv() to return, and the peer would see nothing at all.
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RD)
            with contextlib.suppress(OSError):
                s.close()

    def finish(self, *, injected: bool = False) -> None:
        """Close both sockets cleanly (FIN): one side ended (EOF), or the relay's planned fault."""
        with self.lock:
            if self.done:
                return
            self.done = True
        if injected:
            self.relay._count_reset(self.passed)
        else:
            with self.relay._lock:
                self.relay.stats.session_bytes.append(self.passed)
        for s in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()


class Relay:
    """Forward 127.0.0.1:<port> to ``target``; ``rate`` limits each direction of each connection (bytes/s)."""

    def __init__(self, target: tuple[str, int], *, rate: float | None = None,
                 reset_at: Callable[[int], int | None] | None = None,
                 trip: Callable[[int], Tripped | None] | None = None, fault: str = "reset",
                 record: bool = False) -> None:
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}")
        self.target = target
        self.fault = fault
        self.record = record
        self.rate = rate
        self.reset_at = reset_at or (lambda _n: None)
        self.trip = trip or (lambda _n: None)
        self.stats = RelayStats()
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._closed = False
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = int(self.listener.getsockname()[1])
        self._acceptor = threading.Thread(target=self._accept, name="relay-accept", daemon=True)
        self._acceptor.start()

    # ------------------------------------------------------------------ policies for ``reset_at``
    @staticmethod
    def every(k: int, *, at: int | Callable[[int], int] = 0) -> Callable[[int], int | None]:
        """Reset every ``k``-th connection (k, 2k, ...) after ``at`` bytes (a number, or a function of
        the connection number)."""
        if k < 1:
            raise ValueError("k must be at least 1")

        def policy(n: int) -> int | None:
            if n % k:
                return None
            return at(n) if callable(at) else at

        return policy

    @staticmethod
    def every_at_random(k: int, *, low: int, high: int, seed: int) -> Callable[[int], int | None]:
        """Reset every ``k``-th connection at a byte offset drawn (seeded, reproducible) from [low, high]."""
        rng = random.Random(seed)
        offsets: dict[int, int] = {}
        lock = threading.Lock()

        def at(n: int) -> int:
            with lock:
                if n not in offsets:
                    offsets[n] = rng.randint(low, high)
                return offsets[n]

        return Relay.every(k, at=at)

    @staticmethod
    def after_auth_request(connection: int) -> Callable[[int], Tripped | None]:
        """A ``trip`` policy: fault connection ``connection`` instead of passing the server's answer
        to the SSH authentication request. SSH is lockstep until then: after the banner and KEXINIT the
        client sends only small messages (ECDH init, NEWKEYS, SERVICE_REQUEST: under 100 bytes each)
        until the signed publickey request (over 150), and nothing more before its answer."""

        def policy(n: int) -> Tripped | None:
            if n != connection:
                return None

            def tripped(chunks: list[tuple[str, int]]) -> bool:
                ups = [size for way, size in chunks if way == "up"]
                return any(size > 150 for size in ups[2:])

            return tripped

        return policy

    @staticmethod
    def first_after(nbytes: int) -> Callable[[int], int | None]:
        """Cut only the first connection, after ``nbytes`` bytes."""
        return lambda n: nbytes if n == 1 else None

    # ------------------------------------------------------------------------------- endpoint
    def known_hosts(self, host_public_key_line: str) -> str:
        """known_hosts text pinning the real server's host key under the relay's address."""
        return f"[127.0.0.1]:{self.port} {host_public_key_line}\n"

    # ------------------------------------------------------------------------------- workings
    def _fault(self, link: _Link) -> None:
        if self.fault == "stall":
            link.stall()
        elif self.fault == "close":
            link.finish(injected=True)
        else:
            link.reset(injected=True)

    def _count_reset(self, offset: int) -> None:
        with self._lock:
            self.stats.resets += 1
            self.stats.reset_offsets.append(offset)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:
                    client.close()
                    return
                self.stats.connections += 1
                number = self.stats.connections
            budget = self.reset_at(number)
            tripped = self.trip(number)
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            link = _Link(self, number, client, upstream, budget, tripped)
            with self._lock:
                self._links.append(link)
            if budget == 0:
                self._fault(link)
                continue
            for src, dst, up in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(link, src, dst, up), daemon=True,
                                 name=f"relay-{number}-{'up' if up else 'down'}").start()

    def _pump(self, link: _Link, src: socket.socket, dst: socket.socket, up: bool) -> None:
        throttle = _Throttle(self.rate) if self.rate else None
        try:
            while True:
                data = src.recv(CHUNK)
                if not data:
                    link.finish()
                    return
                if not up and link.tripped is not None and link.tripped(link.chunks):
                    self._fault(link)
                    return
                allowed = link.allow(len(data))
                if throttle is not None and allowed:
                    throttle.take(allowed)
                if allowed:
                    # Noted before it is sent: the answer may come back before sendall() returns.
                    link.chunks.append(("up" if up else "down", allowed))
                    dst.sendall(data[:allowed])
                    with self._lock:
                        if self.record:
                            self.stats.chunks.setdefault(link.number, []).append(("up" if up else "down", allowed))
                        if up:
                            self.stats.bytes_up += allowed
                        else:
                            self.stats.bytes_down += allowed
                if allowed < len(data):
                    self._fault(link)
                    return
        except OSError:
            # The other side reset, or the other pump closed the link: pass the reset on.
            link.reset(injected=False)
        finally:
            if throttle is not None:
                with self._lock:
                    self.stats.throttle_waits += throttle.waits

    def close(self) -> None:
        """Stop accepting and drop every open link (stalled ones too)."""
        with self._lock:
            self._closed = True
            links = list(self._links)
        with contextlib.suppress(OSError):
            self.listener.close()
        for link in links:
            link.finish()
            if link.stalled:
                for s in (link.client, link.upstream):
                    with contextlib.suppress(OSError):
                        s.close()


@contextlib.contextmanager
def running_relay(target: tuple[str, int], *, rate: float | None = None,
                  reset_at: Callable[[int], int | None] | None = None,
                  trip: Callable[[int], Tripped | None] | None = None,
                  fault: str = "reset", record: bool = False) -> Iterator[Relay]:
    """A relay for the length of the block."""
    relay = Relay(target, rate=rate, reset_at=reset_at, trip=trip, fault=fault, record=record)
    try:
        yield relay
    finally:
        relay.close()
