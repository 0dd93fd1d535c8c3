"""pyx12, the reference 834 validator, behind our own types: in this process or in a child process.

:func:`validate_with_pyx12` runs pyx12 in-process over the 005010X220A1 map and returns our own
verdict (errors stripped of data values) plus the 999 pyx12 generates; it first installs
:mod:`carrierfeeds.x12.pyx12_speedups` (the same verdict, faster) unless ``CARRIERFEEDS_PYX12_SPEEDUPS=0``.

:class:`Pyx12Child` runs the same adapter in a child process (``python -m
carrierfeeds.x12.pyx12_adapter <file>``), so the gate checks the whole file's structure while pyx12,
pure Python and slow (benchmarks/README.md), reads its sample on another core. The child prints its verdict
as one JSON object on stdout holding only positions, segment ids, element ids, rule codes and counts
(never a message or the 999, which can quote data); its stderr is discarded. Any doubt fails closed: a
crash, a non-zero exit, a timeout or output that is not exactly that object raises ConformanceFailed.

pyx12 gives up on some broken files by raising (a file without GS, a GS08 it has no map for): in this
process or in a child, that is ConformanceFailed with rule ``pyx12_unreadable`` and the name of what it
raised (:func:`unreadable`), never pyx12's own exception or its text.

``python -m carrierfeeds.x12.pyx12_adapter --stdin`` is the same child started before its file exists:
it starts Python, imports pyx12 and loads the 834 maps, then reads the file's path, one line, from
stdin (:meth:`Pyx12Child.check`), so the gate can start it before it reads and samples the 834.

:class:`Pyx12Worker` is the same child kept for many files (``--serve``): started once, it checks one
file per line of its stdin and answers each with one line on its stdout, and loads fresh maps for the
next file while it waits. :func:`pyx12_job` hands the gate a worker from this process's pool
(:class:`Pyx12Workers`) behind :class:`Pyx12Child`'s interface, so many small feeds in one process pay
a child's start (Python, imports, maps) once instead of once per file. A worker that does not answer
in time, dies, answers anything but a verdict or is left with a question unanswered is killed and
reaped, and the gate fails closed as before; the pool starts a fresh one for the next file.
"""

from __future__ import annotations

import atexit
import io
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

from carrierfeeds.errors import ConformanceFailed
from carrierfeeds.x12.verdicts import Problem, Pyx12Verdict

log = logging.getLogger(__name__)

_QUOTED = re.compile(r"\"([^\"]*)\"|'([^']*)'|\(([^()]*)\)")


@cache
def _map_vocabulary() -> frozenset[str]:
    """Every name and id in the 834 and control maps: the only quoted text a message may keep."""
    import xml.etree.ElementTree as ET  # reading pyx12's own bundled maps
    from importlib.resources import files

    words: set[str] = set()
    for name in ("834.5010.X220.A1.xml", "x12.control.00501.xml"):
        root = ET.fromstring(files("pyx12").joinpath("map", name).read_bytes())  # noqa: S314
        for node in root.iter():
            if node.tag == "name" and node.text:
                words.add(node.text.strip())
            for attr in ("xid",):
                if node.get(attr):
                    words.add(str(node.get(attr)))
    return frozenset(words)


def _scrub(message: str, value: str | None) -> str:
    """pyx12's message with every quoted or bracketed part that is not a map name or id removed."""
    vocabulary = _map_vocabulary()

    def keep(m: re.Match[str]) -> str:
        inner = next(g for g in m.groups() if g is not None)
        if inner in vocabulary or re.fullmatch(r"[PRCLE]\d{4,}|max_len|min_len", inner):
            return m.group(0)
        return m.group(0)[0] + "…" + m.group(0)[-1]

    # "Segment N3*<first element> not found": the first element may be data (an address line).
    text = re.sub(r"Segment ([A-Z][A-Z0-9]{1,2})\*.*? not found\.", r"Segment \1 not found.", message)
    text = _QUOTED.sub(keep, text)
    if value:
        text = text.replace(value, "…")
    # Unbracketed values pyx12 appends after a colon (e.g. "len(...) = 12 > 10") are counts, not data;
    # anything else after "found" or "value of" is dropped.
    return re.sub(r"(with a value of|Segment identifier|is empty).*$", r"\1 …", text)


def _json_problems(doc: dict[str, Any]) -> list[Problem]:
    """Flatten pyx12's JSON error tree into PHI-free problems (positions, ids, codes, scrubbed text)."""
    out: list[Problem] = []

    def add(pos: Any, seg: str, element: str, code: Any, message: Any, value: Any) -> None:
        out.append(Problem(int(pos or 0), seg, element, str(code), _scrub(str(message or ""),
                                                                          str(value) if value else None)))

    for isa in doc.get("interchanges", []):
        for err in isa.get("errors", []):
            add(isa.get("cur_line"), "ISA", "", err["err_cde"], err["err_str"], None)
        for gs in isa.get("groups", []):
            for err in gs.get("errors", []):
                add(gs.get("cur_line"), "GS", "", err["err_cde"], err["err_str"], None)
            for st in gs.get("transactions", []):
                for err in st.get("errors", []):
                    add(st.get("cur_line"), "ST", "", err["err_cde"], err["err_str"], None)
                for seg in st.get("segments", []):
                    seg_id = str(seg.get("seg_id") or "")
                    for err in seg.get("errors", []):
                        add(seg.get("cur_line"), seg_id, "", err["err_cde"], err["err_str"],
                            err.get("err_val"))
                    for ele in seg.get("elements", []):
                        ref = f"{seg_id}{int(ele['ele_pos']):02d}" if ele.get("ele_pos") else str(
                            ele.get("ele_ref_num") or "")
                        for err in ele.get("errors", []):
                            add(seg.get("cur_line"), seg_id, ref, err["err_cde"], err["err_str"],
                                err.get("err_val"))
    return out


def validate_with_pyx12(path: Path, *, with_999: bool = True, param: Any = None) -> Pyx12Verdict:
    """Run pyx12 over ``path`` in-process; read its verdict from its error tree, never an exit code.

    ``errors`` come from pyx12's JSON error report (positions are its 1-based file line, which is the
    segment position in our one-segment-per-line files); ``ack_999`` is the 999 it generates (None
    without ``with_999``). ``param``: pyx12's run parameters, if made ahead (:func:`_maps_loaded_ahead`),
    else its defaults made now.
    """
    import pyx12.params
    import pyx12.x12n_document

    from carrierfeeds.x12 import pyx12_speedups

    # The same verdict, faster (pyx12_speedups; CARRIERFEEDS_PYX12_SPEEDUPS=0 runs pyx12 stock).
    pyx12_speedups.apply()
    if param is None:
        param = pyx12.params.params()
    ack = io.StringIO()
    report = io.StringIO()
    segments = 0

    def count(*_: Any) -> None:
        nonlocal segments
        segments += 1

    pyx12_logger = logging.getLogger("pyx12")
    level = pyx12_logger.level
    # pyx12 logs segment text when it fails; keep it out of our logs (PHI).
    pyx12_logger.setLevel(logging.CRITICAL)
    try:
        ok = bool(pyx12.x12n_document.x12n_document(
            param=param, src_file=str(path), fd_997=ack if with_999 else None, fd_html=None, fd_xmldoc=None,
            fd_json=report, callback=count))
    except _gives_up() as exc:
        # Its text may quote the file: only the exception's name goes on, and no chained traceback.
        raise unreadable(type(exc).__name__) from None
    finally:
        pyx12_logger.setLevel(level)
    text = report.getvalue()
    errors = tuple(_json_problems(json.loads(text))) if text else ()
    ack_text = ack.getvalue()
    verdict = Pyx12Verdict(ok=ok and not errors, errors=errors, segments=segments,
                           ack_999=ack_text.encode("ascii", "replace") if ack_text else None)
    log.info("pyx12: ok=%s, %d segment(s), %d error(s)", verdict.ok, segments, len(errors))
    return verdict


#: The rule a file pyx12 gave up on is refused under.
UNREADABLE_RULE = "pyx12_unreadable"


def _gives_up() -> tuple[type[Exception], ...]:
    """What pyx12 raises when it gives up on a file: its own errors, and the plain Python ones its walk
    raises on input it did not expect (a missing GS: IndexError; no BGN with an XML report:
    AttributeError). Not OSError (a file that cannot be opened is not pyx12's verdict on it)."""
    import pyx12.errors

    return (pyx12.errors.EngineError, pyx12.errors.X12Error, pyx12.errors.X12PathError, pyx12.errors.IsValidError,
            pyx12.errors.IterOutOfBounds, AttributeError, IndexError, KeyError, TypeError, ValueError)


def unreadable(exception: str, **details: Any) -> ConformanceFailed:
    """The refusal of a file pyx12 gave up on, raising ``exception`` (a type name only)."""
    name = exception if _TYPE_NAME.fullmatch(exception) else "Exception"
    return ConformanceFailed(f"pyx12 could not read the file (it raised {name}); the file is refused",
                             details={"rule": UNREADABLE_RULE, "exception": name, **details})


def _failure_reply(exc: Exception) -> dict[str, str]:
    """What a child prints for an exception: its type name, and for a file pyx12 gave up on, the rule
    and the name of what pyx12 raised."""
    if isinstance(exc, ConformanceFailed) and exc.details.get("rule") == UNREADABLE_RULE:
        return {"failed": str(exc.details["exception"]), "rule": UNREADABLE_RULE}
    name = type(exc).__name__
    return {"failed": name if _TYPE_NAME.fullmatch(name) else "Exception"}


_FAILED = re.compile(rb'\{"failed": "([A-Za-z_][A-Za-z0-9_]{0,63})"(, "rule": "' + UNREADABLE_RULE.encode()
                     + rb'")?\}')


def _child_failure(out: bytes, **details: Any) -> ConformanceFailed | None:
    """The refusal a child's failure line (:func:`_failure_reply`) stands for; None if ``out`` is not one."""
    found = _FAILED.fullmatch(out.strip())
    if found is None:
        return None
    failure = found.group(1).decode("ascii")
    if found.group(2):
        return unreadable(failure, pyx12_process="child")
    return ConformanceFailed(f"pyx12 (child process) failed ({failure})", details={**details, "exception": failure})


#: The maps pyx12 loads for one of our interchanges: the control map (ISA12 00501), then the 834's (GS
#: 005010X220A1), as x12n_document names them.
_MAPS_AHEAD = ("x12.control.00501.xml", "834.5010.X220.A1.xml")


@contextmanager
def _maps_loaded_ahead(param: Any) -> Iterator[dict[str, Any]]:
    """pyx12's maps for an 834 loaded now, before the file is known; inside the block, pyx12 takes each
    of them once instead of parsing its own (benchmarks/README.md).

    x12n_document loads its maps by calling ``pyx12.map_if.load_map_file`` when it meets ISA and GS, so
    within the block that name hands out a map made here, if the call asks for one of these, with
    ``param`` and pyx12's own map folder; anything else loads as it always does. Each map is handed out
    at most once, so a document gets a map exactly as freshly loaded as its own would be. Yields the maps
    not yet taken. For the waiting child, which checks one file and exits.
    """
    import pyx12.map_if

    load = pyx12.map_if.load_map_file
    ready: dict[str, Any] = {name: load(name, param, None) for name in _MAPS_AHEAD}

    def take(map_file: str, given: Any, map_path: str | None = None) -> Any:
        if given is param and map_path is None and map_file in ready:
            return ready.pop(map_file)
        return load(map_file, given, map_path)

    pyx12.map_if.load_map_file = take
    try:
        yield ready
    finally:
        pyx12.map_if.load_map_file = load
        ready.clear()


# ------------------------------------------------------------------------------------ child process
_MODULE = "carrierfeeds.x12.pyx12_adapter"
#: The child's time limit, independent of settings: a floor about 100x pyx12's cost on a 2,000-member
#: sample, plus a second per 10 kB of file (about 50x pyx12's reading time; figures in
#: benchmarks/README.md), so only a hung child ever reaches it.
_TIMEOUT_FLOOR_S = 300.0
_TIMEOUT_BYTES_PER_S = 10_000
# What may cross the pipe: a segment id, an element reference, a rule code, or "?" in their place.
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{1,2}|\?")
_ELEMENT = re.compile(r"[A-Z0-9]{0,8}|\?")
_CODE = re.compile(r"[A-Za-z0-9_]{1,16}|\?")
_TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _wire(verdict: Pyx12Verdict) -> dict[str, Any]:
    """The verdict as the child prints it: positions, ids, codes and counts, nothing that quotes data."""

    def only(pattern: re.Pattern[str], text: str) -> str:
        return text if pattern.fullmatch(text) else "?"

    return {"ok": verdict.ok, "segments": verdict.segments,
            "errors": [[p.segment_position, only(_SEGMENT_ID, p.segment_id), only(_ELEMENT, p.element),
                        only(_CODE, p.code)] for p in verdict.errors]}


def _unwire(text: bytes) -> Pyx12Verdict:
    """The child's verdict back from its stdout; anything but exactly :func:`_wire`'s shape is refused."""
    try:
        doc = json.loads(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        doc = None
    if not (isinstance(doc, dict) and set(doc) == {"ok", "segments", "errors"}
            and isinstance(doc["ok"], bool) and type(doc["segments"]) is int and doc["segments"] >= 0
            and isinstance(doc["errors"], list)):
        raise ConformanceFailed("pyx12 (child process) gave no readable verdict",
                                details={"pyx12_worker": "output"})
    errors: list[Problem] = []
    for row in doc["errors"]:
        if not (isinstance(row, list) and len(row) == 4 and type(row[0]) is int and row[0] >= 0
                and all(isinstance(v, str) for v in row[1:]) and _SEGMENT_ID.fullmatch(row[1])
                and _ELEMENT.fullmatch(row[2]) and _CODE.fullmatch(row[3])):
            raise ConformanceFailed("pyx12 (child process) gave no readable verdict",
                                    details={"pyx12_worker": "output"})
        errors.append(Problem(row[0], row[1], row[2], row[3], ""))
    return Pyx12Verdict(ok=doc["ok"] and not errors, errors=tuple(errors), segments=doc["segments"])


def timeout_for(path: Path) -> float:
    """Seconds the child may take over ``path``: generous, from the file's size alone."""
    try:
        size = path.stat().st_size
    except OSError:  # the child reports a missing file itself
        size = 0
    return _TIMEOUT_FLOOR_S + size / _TIMEOUT_BYTES_PER_S


class Pyx12Child:
    """pyx12 over one file in a child process, started at once; :meth:`verdict` waits for its answer.

    Given ``path``, the child checks that file. Without one it starts in ``--stdin`` mode and gets ready
    (Python, imports, pyx12's maps: most of its fixed cost; benchmarks/README.md) while the caller is still
    making the file; :meth:`check` then names it. Use it as a context manager: leaving the block kills and
    reaps the child whatever happened, so a caller may unlink the file after it. The child imports the
    same carrierfeeds as this process.
    """

    def __init__(self, path: Path | None = None, *, timeout: float | None = None) -> None:
        self._timeout = timeout
        self.timeout = 0.0
        self._deadline: float | None = None
        self._path_pipe: int | None = None
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)}
        # -P: no working directory on the child's path, so nothing there can shadow a module.
        # A fixed argv: this interpreter, this module, one path or --stdin (the path then comes on a pipe
        # only this process holds the write end of: os.pipe's descriptors are not inherited).
        read_end: int | None = None
        if path is None:
            read_end, self._path_pipe = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-P", "-m", _MODULE, "--stdin" if path is None else os.fspath(path.absolute())],
                stdin=subprocess.DEVNULL if read_end is None else read_end, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, env=env)
        except BaseException:
            self._close_path_pipe()
            raise
        finally:
            if read_end is not None:
                os.close(read_end)
        if path is not None:
            self._start_clock(path)

    def _start_clock(self, path: Path) -> None:
        self.timeout = timeout_for(path) if self._timeout is None else self._timeout
        self._deadline = time.monotonic() + self.timeout

    def _close_path_pipe(self) -> None:
        if self._path_pipe is not None:
            os.close(self._path_pipe)
            self._path_pipe = None

    def check(self, path: Path) -> None:
        """Name the file a child started without one is to check; the time limit runs from now.

        The path goes as one line on the child's stdin, which is then closed. A child that has already
        died leaves the pipe broken: nothing is raised here, :meth:`verdict` reports its exit.
        """
        if self._path_pipe is None:
            raise RuntimeError("this pyx12 child already has its file")
        line = os.fsencode(path.absolute()) + b"\n"
        if line.count(b"\n") != 1:  # the child would refuse it; say so here, without the path
            self.close()
            raise ConformanceFailed("pyx12 (child process) cannot be given a path with a line break",
                                    details={"pyx12_worker": "path"})
        self._start_clock(path)
        try:
            # Well under PIPE_BUF, so one write that never blocks: the child reads it when it is ready.
            os.write(self._path_pipe, line)
        except BrokenPipeError:
            pass
        finally:
            self._close_path_pipe()

    @property
    def returncode(self) -> int | None:
        """The child's exit status once reaped (negative: killed by that signal), else None."""
        return self._proc.returncode

    def verdict(self) -> Pyx12Verdict:
        """Wait for the child; its verdict, or ConformanceFailed if it crashed, failed or overran."""
        if self._deadline is None:
            raise RuntimeError("this pyx12 child has not been given its file (check)")
        try:
            out, _ = self._proc.communicate(timeout=max(0.0, self._deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.close()
            raise ConformanceFailed(f"pyx12 (child process) did not finish within {self.timeout:.0f} s",
                                    details={"pyx12_worker": "timeout",
                                             "timeout_s": round(self.timeout)}) from None
        code = self._proc.returncode
        if code != 0:
            # A failing child prints only its exception's type name (never its text: it may hold data).
            failed = _child_failure(out, pyx12_worker="exit", exit_code=code)
            if failed is not None and failed.details.get("rule") == UNREADABLE_RULE:
                raise failed
            failure = failed.details["exception"] if failed is not None else None
            raise ConformanceFailed(
                f"pyx12 (child process) failed with exit code {code}" + (f" ({failure})" if failure else ""),
                details={"pyx12_worker": "exit", "exit_code": code, "exception": failure})
        verdict = _unwire(out)
        log.info("pyx12 (child process): ok=%s, %d segment(s), %d error(s)", verdict.ok, verdict.segments,
                 len(verdict.errors))
        return verdict

    def close(self) -> None:
        """Kill the child if it still runs and reap it; safe to call more than once."""
        self._close_path_pipe()
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> Pyx12Child:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def validate_in_child(path: Path, *, timeout: float | None = None) -> Pyx12Verdict:
    """:func:`validate_with_pyx12` in a child process (no 999); fails closed as :class:`Pyx12Child`."""
    with Pyx12Child(path, timeout=timeout) as child:
        return child.verdict()


# ------------------------------------------------------------------------------ persistent workers
#: Set to "0" to give every file a child of its own instead of a pooled worker.
PERSISTENT_ENV = "CARRIERFEEDS_PYX12_PERSISTENT"
#: A worker is retired (its stdin closed) after this many files, so nothing pyx12 keeps between
#: documents can grow without bound.
_WORKER_MAX_FILES = 200
#: The longest answer line read from a worker: a verdict of positions and ids, however many errors.
_MAX_ANSWER = 256 << 20


def _child_argv(mode: str) -> tuple[list[str], dict[str, str]]:
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)}
    # -P: no working directory on the child's path, so nothing there can shadow a module.
    return [sys.executable, "-P", "-m", _MODULE, mode], env


class Pyx12Worker:
    """One long-lived pyx12 process: :meth:`ask` sends a file's path, :meth:`answer` waits for its verdict.

    The protocol is one path line in, one JSON line out (:func:`_wire`, or ``{"failed": <type name>}``,
    after which the worker exits). The worker's stderr is discarded and its fd 1 is /dev/null, as for
    :class:`Pyx12Child`. Any doubt kills it: a question left unanswered, a late or unreadable answer.
    """

    def __init__(self) -> None:
        argv, env = _child_argv("--serve")
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, env=env)
        self.files = 0
        self.asked = False
        self.owner = os.getpid()

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def alive(self) -> bool:
        return self._proc.poll() is None

    def ask(self, path: Path) -> None:
        """Send the next file's path (one line); a dead worker shows in :meth:`answer`."""
        line = os.fsencode(path.absolute()) + b"\n"
        if line.count(b"\n") != 1:
            self.kill()
            raise ConformanceFailed("pyx12 (child process) cannot be given a path with a line break",
                                    details={"pyx12_worker": "path"})
        self.asked = True
        stdin = self._proc.stdin
        if stdin is None:
            raise RuntimeError("this pyx12 worker has no stdin")
        with suppress(OSError):  # a dead worker shows in answer()
            stdin.write(line)
            stdin.flush()

    def answer(self, timeout: float) -> Pyx12Verdict:
        """The verdict for the path asked, within ``timeout`` seconds; else the worker is killed and
        ConformanceFailed raised, as for a child of its own."""
        if self._proc.stdout is None:
            raise RuntimeError("this pyx12 worker has no stdout")
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        buf = bytearray()
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
            if not ready:
                self.kill()
                raise ConformanceFailed(f"pyx12 (child process) did not finish within {timeout:.0f} s",
                                        details={"pyx12_worker": "timeout", "timeout_s": round(timeout)})
            chunk = os.read(fd, 1 << 16)
            if not chunk or len(buf) + len(chunk) > _MAX_ANSWER:
                self.kill()
                code = self._proc.returncode
                raise ConformanceFailed(f"pyx12 (child process) failed with exit code {code}",
                                        details={"pyx12_worker": "exit", "exit_code": code, "exception": None})
            buf += chunk
        self.asked = False
        self.files += 1
        failed = _child_failure(bytes(buf), pyx12_worker="exit", exit_code=1)
        if failed is not None:
            self.kill()  # it exits after a failure anyway; its pyx12 is not trusted with another file
            raise failed
        try:
            verdict = _unwire(bytes(buf).strip())
        except ConformanceFailed:
            self.kill()
            raise
        log.info("pyx12 (worker process): ok=%s, %d segment(s), %d error(s)", verdict.ok, verdict.segments,
                 len(verdict.errors))
        return verdict

    def kill(self) -> None:
        """Kill and reap the worker; safe to call more than once."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._close_pipes()

    def retire(self, grace_s: float = 5.0) -> None:
        """Close its stdin (it exits at the end of its input); killed if it has not within ``grace_s``."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            with suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None and not pipe.closed:
                with suppress(OSError):
                    pipe.close()


class Pyx12Workers:
    """This process's idle workers: :meth:`lease` one (started if none is idle), :meth:`give_back` it.

    A worker goes back only alive, with no question pending and under :data:`_WORKER_MAX_FILES`;
    else it is retired or killed. A pool inherited through ``fork`` is not used by the child process
    (its workers' pipes belong to the parent): the child starts its own.
    """

    def __init__(self) -> None:
        self._idle: list[Pyx12Worker] = []
        self._lock = threading.Lock()

    def lease(self) -> Pyx12Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.owner == os.getpid() and worker.alive():
                    return worker
                if worker.owner == os.getpid():
                    worker.kill()
        return Pyx12Worker()

    def give_back(self, worker: Pyx12Worker) -> None:
        if worker.owner != os.getpid():
            return
        if worker.asked or not worker.alive():
            worker.kill()
        elif worker.files >= _WORKER_MAX_FILES:
            worker.retire()
        else:
            with self._lock:
                self._idle.append(worker)

    def close(self) -> None:
        """Kill and reap every idle worker (at exit: an idle worker holds no work, and a process that
        ends, an Airflow task's, should not wait for its workers to read the end of their input)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            if worker.owner == os.getpid():
                worker.kill()

    def __len__(self) -> int:
        return len(self._idle)


_WORKERS = Pyx12Workers()
atexit.register(_WORKERS.close)


def persistent_workers() -> bool:
    """Whether the gate's pyx12 runs in pooled workers (the default) rather than a child per file."""
    return os.environ.get(PERSISTENT_ENV, "1").strip() not in ("0", "false", "no")


class Pyx12Job:
    """:class:`Pyx12Child`'s interface over a pooled :class:`Pyx12Worker`: given ``path`` it is asked at
    once, else :meth:`check` names the file later; :meth:`verdict` waits (same time limit by file size);
    :meth:`close` gives the worker back if it answered, else kills it."""

    def __init__(self, path: Path | None = None, *, timeout: float | None = None,
                 pool: Pyx12Workers | None = None) -> None:
        self._pool = pool if pool is not None else _WORKERS
        self._timeout = timeout
        self.timeout = 0.0
        self._worker: Pyx12Worker | None = self._pool.lease()
        self._given = False
        if path is not None:
            self.check(path)

    @property
    def returncode(self) -> int | None:
        return None if self._worker is None else self._worker.returncode

    def check(self, path: Path) -> None:
        if self._given or self._worker is None:
            raise RuntimeError("this pyx12 job already has its file")
        self._given = True
        self.timeout = timeout_for(path) if self._timeout is None else self._timeout
        self._worker.ask(path)

    def verdict(self) -> Pyx12Verdict:
        if not self._given or self._worker is None:
            raise RuntimeError("this pyx12 job has not been given its file (check)")
        return self._worker.answer(self.timeout)

    def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            self._pool.give_back(worker)

    def __enter__(self) -> Pyx12Job:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class Pyx12Process(Protocol):
    """What the gate uses of :class:`Pyx12Child` and :class:`Pyx12Job`."""

    def check(self, path: Path) -> None: ...

    def verdict(self) -> Pyx12Verdict: ...

    def close(self) -> None: ...

    def __enter__(self) -> Pyx12Process: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


def pyx12_job(path: Path | None = None, *, timeout: float | None = None) -> Pyx12Process:
    """What the gate runs pyx12 in: a pooled worker (:class:`Pyx12Job`), or with
    :data:`PERSISTENT_ENV` set to 0 a child of its own (:class:`Pyx12Child`); the same interface."""
    if persistent_workers():
        return Pyx12Job(path, timeout=timeout)
    return Pyx12Child(path, timeout=timeout)


def _serve(stream: IO[bytes], out: IO[str]) -> int:
    """The worker: for each path line on ``stream``, one verdict line on ``out``, with maps loaded for
    the next file while waiting for it. Ends at the end of its input (0), on a line that is not a path
    (2), or after pyx12 raised (1, once that is answered)."""
    import pyx12.params

    from carrierfeeds.x12 import pyx12_speedups

    while True:
        pyx12_speedups.apply()  # checked and installed while waiting, not on the file's clock
        param = pyx12.params.params()
        with _maps_loaded_ahead(param):
            raw = stream.readline(_MAX_PATH_LINE + 1)
            if not raw:
                return 0
            if len(raw) > _MAX_PATH_LINE or not raw.endswith(b"\n") or b"\0" in raw or raw == b"\n":
                return 2
            try:
                reply: dict[str, Any] = _wire(validate_with_pyx12(Path(os.fsdecode(raw[:-1])), with_999=False,
                                                                  param=param))
            except Exception as exc:  # reported by type only; the parent fails closed on it
                reply = _failure_reply(exc)
        out.write(json.dumps(reply) + "\n")
        out.flush()
        if "failed" in reply:
            return 1


#: The longest stdin a waiting child reads for its path (a path is at most PATH_MAX, 4096 bytes, on Linux).
_MAX_PATH_LINE = 1 << 16


def _path_from(stream: IO[bytes]) -> Path | None:
    """The path a waiting child was sent: exactly one non-empty line and then the end of its stdin (the
    parent closes it), else None."""
    raw = stream.read(_MAX_PATH_LINE + 1)
    if len(raw) > _MAX_PATH_LINE or not raw.endswith(b"\n") or raw.count(b"\n") != 1 or b"\0" in raw:
        return None
    text = os.fsdecode(raw[:-1])
    return Path(text) if text else None


def main(argv: list[str] | None = None) -> int:
    """The child: validate one file, print the verdict's :func:`_wire` form as JSON; exit 0, else 1 or 2.

    The file is the one argument, or with ``--stdin`` the one line on stdin, read once pyx12 and its
    maps are loaded (:func:`_maps_loaded_ahead`).
    """
    args = sys.argv[1:] if argv is None else argv
    # Our JSON goes to a copy of stdout; fd 1 itself is pointed at /dev/null, so anything pyx12 prints
    # (its debug output quotes segments) cannot reach the parent or corrupt the verdict.
    out = os.fdopen(os.dup(1), "w", encoding="ascii")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    with out:
        if len(args) != 1:
            return 2
        if args[0] == "--serve":
            return _serve(sys.stdin.buffer, out)
        try:
            if args[0] == "--stdin":
                import pyx12.params

                from carrierfeeds.x12 import pyx12_speedups

                pyx12_speedups.apply()  # while waiting for the path, as the maps are
                param = pyx12.params.params()
                with _maps_loaded_ahead(param):
                    path = _path_from(sys.stdin.buffer)
                    if path is None:
                        return 2
                    verdict = validate_with_pyx12(path, with_999=False, param=param)
            else:
                verdict = validate_with_pyx12(Path(args[0]), with_999=False)
        except Exception as exc:  # reported by type only, and the parent fails closed on it
            out.write(json.dumps(_failure_reply(exc)))
            return 1
        out.write(json.dumps(_wire(verdict)))
    return 0


__all__ = ["UNREADABLE_RULE", "Pyx12Child", "Pyx12Job", "Pyx12Worker", "Pyx12Workers", "pyx12_job", "timeout_for",
           "unreadable", "validate_in_child", "validate_with_pyx12"]


if __name__ == "__main__":
    sys.exit(main())
