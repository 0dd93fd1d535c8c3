"""The conformance gate: a rendered file's structure checked whole, and pyx12 on it or on a sample.

pyx12 may read pieces of the sample in child processes. The run raises the verdict's error before
anything is encrypted or sent; the preview shows it."""

from __future__ import annotations

import hashlib
from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from carrierfeeds.errors import ConformanceFailed
from carrierfeeds.files import read_mapped, write_private
from carrierfeeds.run.context import RunContext
from carrierfeeds.run.state import GateState

if TYPE_CHECKING:
    from collections.abc import Callable

    from carrierfeeds.settings import FeedBundle
    from carrierfeeds.x12.check import ConformanceReport

#: From this size of 834 up the gate starts pyx12's children before it reads the file (its size from
#: stat), so that their start is hidden behind the mapping, hashing and cutting of a large file, and runs
#: pyx12 in children whatever the target's size; with one CPU, in one child, beside the structural check.
PYX12_CHILD_MIN_BYTES = 64 << 20
#: The most pyx12 pieces (and child processes) the gate runs at once.
PYX12_MAX_PIECES = 4
#: From this size of pyx12 target (the file, or its sample: ~240 bytes and ~10 segments a member) up, with
#: more than one CPU, the gate cuts the target into one piece per CPU and runs pyx12 on each in a child
#: process, where each child's start is won back: from ~1,000 members, so the demo's and the tests' files
#: stay in this process (figures: benchmarks/README.md). A worker pool that already fills every CPU (many
#: feeds at once) pins each worker to one CPU (os.sched_setaffinity, taskset) to keep pyx12 in-process:
#: the children cost CPU.
PYX12_PIECES_MIN_BYTES = 256 << 10


def pyx12_workers() -> int:
    """How many pyx12 processes the gate runs at once: the CPUs this process may use, at most
    :data:`PYX12_MAX_PIECES`."""
    from carrierfeeds.threads import thread_count

    return thread_count(None, most=PYX12_MAX_PIECES)


@dataclass(frozen=True)
class GateVerdict:
    """What the gate found, PHI-free: passed, or the failure a run raises (``error``) and the first
    problem by position and rule (``first``, what the preview shows); the file's segments (834) or records
    (flat file), and the ST count of an 834 that passed."""

    format: str
    check: str
    error: ConformanceFailed | None = None
    problems: int = 0
    first: dict[str, str | int | None] | None = None
    segments: int | None = None
    records: int | None = None
    transaction_sets: int | None = None
    #: pyx12 read the whole file or a sample of it (834 only, once the structure passed).
    pyx12: str | None = None
    #: pyx12 errors waived under the mapping's conformance.hd03_beyond_tr3 (HD03 LIF/ADD/HSA), counted.
    waived: int = 0

    @property
    def passed(self) -> bool:
        return self.error is None


def run_gate(ctx: RunContext, detail: dict[str, Any], *,
             before_state: Callable[[], None] | None = None) -> dict[str, Any]:
    """Check the run's rendered file (its hash, then its structure and pyx12 for an 834, its layout for a
    flat file); record ``conformance: passed`` in the state or raise ConformanceFailed. ``before_state``
    runs once the file passed, before that record (the stage lets gpg's work ahead settle there)."""
    built = ctx.state().build
    verdict = check_file(ctx.fetch(built.file_name), ctx.bundle, payload_sha256=built.payload_sha256,
                         members=built.members, records=built.flatfile_records,
                         pyx12_max_members=ctx.settings.pyx12_max_members, scratch=ctx.run_dir, detail=detail)
    if verdict.error is not None:
        raise verdict.error
    if verdict.format == "x12-834":
        _check_usage(ctx, ctx.fetch(built.file_name), built.endpoint, detail)
    if before_state is not None:
        before_state()
    # The ST count, for matching 999s: split sets carry ST02 0001..N, not the ledger's ST02.
    ctx.save_state(gate=GateState(conformance="passed", transaction_sets=verdict.transaction_sets))
    if verdict.format == "pdf":
        return {"run_id": ctx.run_id, "format": "pdf"}
    if verdict.format == "flatfile":
        return {"run_id": ctx.run_id, "format": "flatfile", "records": verdict.records}
    return {"run_id": ctx.run_id, "segments": verdict.segments}


def _check_usage(ctx: RunContext, path: Path, endpoint: str | None, detail: dict[str, Any]) -> None:
    """The file's own ISA15 against the feed's lifecycle (fail closed, whatever the build decided): a test
    file must say T, and a production file (P) passes only while the feed is in production."""
    from carrierfeeds.lifecycle import LifecycleRefused, current, isa15

    with path.open("rb") as f:
        found = isa15(f.read(106))
    detail.update(isa15=found)
    if endpoint == "test" and found != "T":
        raise LifecycleRefused("a file for the carrier's test endpoint does not carry ISA15 T",
                               details={"feed_id": ctx.feed_id, "isa15": found})
    if found == "P" and (state := current(ctx.ledger, ctx.bundle.feed).state) != "production":
        raise LifecycleRefused(f"a production file (ISA15 P) for feed {ctx.feed_id}, which is {state}",
                               details={"feed_id": ctx.feed_id, "state": state, "isa15": found})


def check_file(path: Path, bundle: FeedBundle, *, payload_sha256: str, members: int, records: int | None,
               pyx12_max_members: int, scratch: Path, detail: dict[str, Any]) -> GateVerdict:
    """The gate over one rendered file: its hash must be ``payload_sha256`` (else ConformanceFailed is
    raised: the file changed after it was rendered); then a PDF passes on its hash, a flat file is checked
    against its layout and ``records``, an 834 structurally (``members`` members) and by pyx12, its
    pieces written in ``scratch`` and removed. ``detail`` gets the PHI-free account the ledger records."""
    from carrierfeeds.x12.check import check_834, pyx12_target, release_pages
    from carrierfeeds.x12.pyx12_adapter import pyx12_job, validate_with_pyx12

    output = bundle.feed.output.format
    # pyx12 on the whole file up to the configured size, else on a deterministic sample of families
    # cut from it (x12.check.pyx12_target). pyx12 is pure Python and slow, so from
    # PYX12_PIECES_MIN_BYTES of target up, with more than one CPU, its families are cut into one piece
    # per CPU, each its own 834, and each piece is read by a child process, beside this one's
    # structural check of the whole file; the verdicts are still reported in their old order:
    # structure, member count, pyx12 (piece by piece). For a large file (PYX12_CHILD_MIN_BYTES, from
    # stat) the children are started before the file is read: they start Python, import pyx12 and
    # load the maps while this process maps, hashes and samples the file, then wait for their piece's path.
    workers = pyx12_workers()
    early = output == "x12-834" and path.stat().st_size >= PYX12_CHILD_MIN_BYTES
    # Beside a large file's structural check (as long as pyx12 on the sample) this process keeps a CPU
    # busy: its pieces go to the others (on 2 CPUs, two pieces were no faster than one child).
    count = max(1, workers - 1) if early else workers
    with ExitStack() as leaving:
        # Unwound in reverse: the children (if any) are killed and reaped, then the pieces unlinked, on
        # every way out of the stage.
        piece_paths: list[Path] = []

        def unlink_pieces() -> None:
            for piece_path in piece_paths:
                piece_path.unlink(missing_ok=True)

        leaving.callback(unlink_pieces)
        children = [leaving.enter_context(pyx12_job()) for _ in range(count)] if early else []
        # The run's own copy of the file, mapped read-only rather than read: no anonymous copy
        # of a large file; closed before the wait for pyx12.
        with read_mapped(path) as data:
            if _sha256(data) != payload_sha256:
                raise ConformanceFailed("the rendered file changed after it was built",
                                        details={"file_name": path.name})
            if output == "pdf":
                # A printable document has no X12 structure to check; its integrity is its hash.
                detail.update(format="pdf", bytes=len(data))
                return GateVerdict(format="pdf", check="hash only")
            if output == "flatfile":
                from carrierfeeds.outputs.flatfile import check_flatfile, layout_for

                # Fail closed: a state without the build's record count can never match (-1).
                flat = check_flatfile(data[:], layout_for(bundle.mapping),
                                      expected_records=-1 if records is None else records)
                detail.update(format="flatfile", records=flat.records, problems=flat.problem_count)
                verdict = GateVerdict(format="flatfile", check="structure", records=flat.records)
                if flat.ok:
                    return verdict
                flaw = flat.problems[0]
                return replace(verdict, problems=flat.problem_count, error=ConformanceFailed(
                    f"{flat.problem_count} structural problem(s) in the flat file; first at record "
                    f"{flaw.record} column {flaw.column}: {flaw.message}",
                    details={"problems": flat.problem_count, "record": flaw.record,
                             "column": flaw.column, "rule": flaw.code}),
                    first={"record": flaw.record, "column": flaw.column, "rule": flaw.code, "message": flaw.message})
            require_dmg = "dob" in bundle.mapping.allowlist
            # The sample and the structural check each find the terminators a window at a time: a scan
            # shared between them would be an array over every segment, growing with the file (8 bytes a
            # segment, ~80 MB at 1M members), for one scan saved (benchmarks/README.md).
            try:
                target = pyx12_target(data, max_members=pyx12_max_members)
                several = early or (count > 1 and target.size >= PYX12_PIECES_MIN_BYTES)
                pieces = target.pieces(count if several else 1)
            except (ValueError, IndexError):
                # A file too broken to cut: the structural check names its problem first, as before.
                unsound = _unsound_834(check_834(data, require_dmg=require_dmg), members, detail)
                if unsound is not None:
                    return unsound
                raise
            sampled = target.sampled
            process = "child" if several else "this"
            if pieces[0] is not data:  # else the file itself, whole
                names = (["pyx12-sample.834"] if len(pieces) == 1
                         else [f"pyx12-piece-{k}.834" for k in range(1, len(pieces) + 1)])
                for name, cut in zip(names, pieces, strict=True):
                    piece_paths.append(scratch / name)
                    write_private(piece_paths[-1], [cast(bytes, cut)])  # a cut piece is always bytes
            targets = piece_paths or [path]
            del pieces, target
            release_pages(data)(len(data))  # the sample's families were read from all over the file
            detail.update(pyx12_process=process, pyx12_pieces=len(targets))
            if several:
                for child in children[len(targets):]:
                    child.close()  # fewer families than CPUs
                for child, piece_path in zip(children, targets, strict=False):
                    child.check(piece_path)
                children = children[:len(targets)] + [leaving.enter_context(pyx12_job(piece_path))
                                                       for piece_path in targets[len(children):]]
            report = check_834(data, require_dmg=require_dmg)
            waivable: set[str] = set(bundle.mapping.conformance.hd03_beyond_tr3)
            beyond = hd03_beyond_tr3(data) if waivable else set()
        unsound = _unsound_834(report, members, detail)
        if unsound is not None:
            return unsound
        verdicts = ([child.verdict() for child in children] if several
                    else [validate_with_pyx12(targets[0], with_999=False)])
    ok = all(v.ok for v in verdicts)
    waived = 0
    if not ok and waivable:
        ok, waived = _waive_hd03(verdicts, beyond, waivable)
        if waived:
            # Never silent: the ledger's gate detail says which codes and how many pyx12 errors.
            detail.update(pyx12_waived=waived, hd03_beyond_tr3=",".join(sorted(beyond)))
    detail.update(pyx12="sample" if sampled else "full", pyx12_ok=ok,
                  pyx12_segments=sum(v.segments for v in verdicts))
    if not ok:
        # Errors from every piece, in piece order; a piece's segment positions are within that piece.
        errors = [(k, e) for k, v in enumerate(verdicts, 1) for e in v.errors]
        piece, first_error = errors[0] if errors else (next(k for k, v in enumerate(verdicts, 1) if not v.ok),
                                                       None)
        where = f"piece {piece} of {len(verdicts)}, " if len(verdicts) > 1 else ""
        error = ConformanceFailed(
            f"pyx12 rejected the file ({len(errors)} error(s))"
            + (f"; first: {where}segment {first_error.segment_position} {first_error.segment_id} "
               f"{first_error.element} code {first_error.code}" if first_error else ""),
            details={"errors": len(errors), "sampled": sampled, "pyx12_process": process,
                     "pyx12_pieces": len(verdicts), "pyx12_piece": piece})
        first: dict[str, str | int | None] | None = None if first_error is None else {
            "segment_position": first_error.segment_position, "segment": first_error.segment_id,
            "element": first_error.element, "rule": first_error.code}
        return GateVerdict(format="x12-834", check="structure+pyx12", error=error, problems=len(errors),
                           first=first, segments=report.segment_count, pyx12="sample" if sampled else "full")
    return GateVerdict(format="x12-834", check="structure+pyx12", segments=report.segment_count,
                       transaction_sets=report.transaction_sets, pyx12="sample" if sampled else "full",
                       waived=waived)


def _sha256(data: Any) -> str:
    """The file's sha256, a window at a time, a map's pages dropped from this process behind it
    (x12.check.release_pages): the hash does not keep the whole 834 resident for the checks after it."""
    from carrierfeeds.x12.check import CHECK_WINDOW_BYTES, release_pages

    digest = hashlib.sha256()
    release = release_pages(data)
    with memoryview(data) as view:
        for lo in range(0, len(view), CHECK_WINDOW_BYTES):
            digest.update(view[lo:lo + CHECK_WINDOW_BYTES])
            release(lo + CHECK_WINDOW_BYTES)
    return digest.hexdigest()


def hd03_beyond_tr3(data: Any, *, window_bytes: int | None = None) -> set[str]:
    """The HD03 codes in an 834 that are outside the 005010X220A1 list (LIF, ADD, HSA, or anything else).

    Read a window of about ``window_bytes`` (default x12.check.CHECK_WINDOW_BYTES) at a time, each cut
    just after a segment terminator, a read-only map's pages dropped behind it (x12.check.release_pages):
    an HD03 never spans a terminator, so the windows find what one pass over the whole file finds, and a
    large 834 does not become resident for it."""
    import re

    from carrierfeeds.x12.check import CHECK_WINDOW_BYTES, release_pages
    from carrierfeeds.x12.codes import HD03_BEYOND_TR3, InsuranceLine, values

    tr3 = values(InsuranceLine) - HD03_BEYOND_TR3
    e, t = re.escape(bytes(data[3:4])), re.escape(bytes(data[105:106]))
    hd = (rb"\s*HD" + e + rb"[^" + e + t + rb"]*" + e + rb"[^" + e + t + rb"]*" + e + rb"([^" + e + t
          + rb"]*)")
    # An HD at the file's start or after a terminator. Led by the terminator, the pattern is tried only
    # where one is (a literal prefix re searches for), not at every byte as "(?:^|~)" made it
    # (benchmarks/README.md); at a window's start, just after a terminator or the file's start, it is
    # tried once without it.
    after_terminator, at_start = re.compile(t + hd), re.compile(hd)
    window = max(1, window_bytes or CHECK_WINDOW_BYTES)
    terminator = bytes(data[105:106])
    release = release_pages(data)
    found: set[bytes] = set()
    lo = 0
    while lo < len(data):
        at = data.find(terminator, min(len(data), lo + window) - 1) if terminator else -1
        hi = len(data) if at < 0 else at + 1
        chunk = data[lo:hi]
        first = at_start.match(chunk)
        if first is not None:
            found.add(first.group(1))
        found.update(after_terminator.findall(chunk))
        release(hi)
        lo = hi
    return {m.decode("ascii", "replace") for m in found} - tr3


def _waive_hd03(verdicts: list[Any], beyond: set[str], waivable: set[str]) -> tuple[bool, int]:
    """pyx12 passes after the mapping's declared waiver when every error it found is HD03's code list and
    every HD03 code outside the TR3 list in the file is one the mapping names (conformance.hd03_beyond_tr3);
    else nothing is waived. Returns (ok, errors waived)."""
    errors = [e for v in verdicts for e in v.errors]
    if not errors or not beyond or not beyond <= waivable:
        return False, 0
    if any(not v.ok and not v.errors for v in verdicts):
        return False, 0
    if any((e.segment_id, e.element) != ("HD", "HD03") for e in errors):
        return False, 0
    return True, len(errors)


def _unsound_834(report: ConformanceReport, members: int, detail: dict[str, Any]) -> GateVerdict | None:
    """The verdict on a file the structural check faults, or one whose member count is not the build's;
    None for a sound one."""
    detail.update(segments=report.segment_count, members=report.member_count, problems=len(report.problems))
    failed = partial(GateVerdict, format="x12-834", check="structure+pyx12", segments=report.segment_count)
    if not report.ok:
        first = report.problems[0]
        return failed(problems=len(report.problems), error=ConformanceFailed(
            f"{len(report.problems)} structural problem(s); first at segment {first.segment_position} "
            f"{first.segment_id} {first.element}: {first.message}",
            details={"problems": len(report.problems), "segment_position": first.segment_position,
                     "element": first.element, "rule": first.code}),
            first={"segment_position": first.segment_position, "segment": first.segment_id,
                   "element": first.element, "rule": first.code})
    if report.member_count != members:
        return failed(problems=1, error=ConformanceFailed(
            f"file holds {report.member_count} members, build counted {members}"))
    return None


