"""Render a feed's file (834, flat file or PDF) from the enrollment view under given control numbers.

The run's build stage and the preview both call it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from carrierfeeds.enrollment import Enrollment
    from carrierfeeds.settings import FeedBundle

#: Writes a rendered file's chunks to a path; returns their sha256 (hex) and size.
Writer = Callable[[Path, Iterable[bytes]], tuple[str, int]]


@dataclass(frozen=True)
class RenderedFile:
    """A rendered file: where it is (a PDF is always written there; the others as ``write`` chose), its
    name, what it is, and for a flat file its record count (the gate checks it), for a PDF its pages."""

    path: Path
    file_name: str
    format: str
    sha256: str
    size: int
    records: int | None = None
    pages: int | None = None


def hash_only(path: Path, chunks: Iterable[bytes]) -> tuple[str, int]:
    """A writer that writes nothing: the chunks' sha256 and size (a resend's same-members check)."""
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def render_file(bundle: FeedBundle, enrollment: Enrollment | None, *, action: str, isa13: int, gs06: int, st02: int,
                created: datetime, day: date, folder: Path, write: Writer, pdf_prefix: str = "",
                changes: Enrollment | None = None, usage: str | None = None, marker: str = "",
                parts: Iterable[Enrollment] | None = None) -> RenderedFile:
    """Render ``enrollment`` as the feed's output format into ``folder`` through ``write``.

    ``action`` is BGN08 (the full file's code, or ``2`` for changes); ``created`` the numbers' allocation
    time (the run) or now (the preview). A PDF is written by its renderer under ``pdf_prefix`` + its name, with
    ``changes`` (a PDF roster's changes since the last roster, :func:`carrierfeeds.run.stages.roster_changes`)
    listed in it. ``usage`` overrides the mapping's ISA15 and ``marker`` goes before the file name: a test file
    of a feed in testing or certified (see ``carrierfeeds.lifecycle``).

    An 834 may be given as ``parts`` instead (the views of the census's family-whole chunks, in order,
    read lazily: :func:`carrierfeeds.enrollment.build_enrollment_chunks`): the same bytes, one part in
    memory at a time; members wait in a private spill file in ``folder`` when a set's header counts them.
    """
    from carrierfeeds.config import Party
    from carrierfeeds.x12.envelope import ControlNumbers, Delimiters, TransactionHeader
    from carrierfeeds.x12.render import render_834, render_834_parts

    feed, mapping = bundle.feed, bundle.mapping
    if parts is not None and feed.output.format != "x12-834":
        raise ValueError("only an 834 is rendered part by part")
    if parts is None and enrollment is None:
        raise ValueError("nothing to render")
    if feed.output.format == "pdf":
        # Imported here: reportlab is slow to import, and an X12 or flat-file build never needs it.
        from carrierfeeds.outputs.pdf import fallback_file_name, write_fallback_pdf

        # The same members and changes, printable, for a carrier that takes no electronic files.
        control_id = f"{isa13:09d}"
        file_name = marker + fallback_file_name(feed, day, control_id)
        out = folder / f"{pdf_prefix}{file_name}"
        assert enrollment is not None  # noqa: S101 - checked above
        doc = write_fallback_pdf(enrollment, out, feed=feed, interval_start=day, control_id=control_id,
                                 created=created, changes=changes)
        return RenderedFile(out, file_name, "pdf", doc.sha256, doc.size, pages=doc.pages)
    if feed.output.format == "flatfile":
        # The carrier's own CSV or fixed-width layout over the same view; the control number names it.
        from carrierfeeds.outputs.flatfile import flatfile_name, layout_for, render_flatfile

        assert enrollment is not None  # noqa: S101 - checked above
        layout = layout_for(mapping)
        file_name = marker + flatfile_name(layout, feed_id=feed.feed_id, control=isa13, day=day,
                                           sender=mapping.envelope.sender_id, receiver=mapping.envelope.receiver_id)
        sha256, size = write(folder / file_name, render_flatfile(enrollment, layout))
        return RenderedFile(folder / file_name, file_name, f"flatfile-{layout.kind}", sha256, size,
                            records=len(enrollment.table))
    control = ControlNumbers(isa13=isa13, gs06=gs06, st02=st02)
    header = TransactionHeader(
        ids=mapping.envelope if usage is None else mapping.envelope.model_copy(update={"usage": usage}),
        created=created, reference=f"CF{isa13:09d}",
        sponsor=Party(name=feed.employer.name, id_qualifier="FI", id=feed.employer.tax_id),
        payer=mapping.payer, action=action, group_number=mapping.group_number)
    file_name = marker + mapping.file_name.format(
        sender=mapping.envelope.sender_id.strip(), receiver=mapping.envelope.receiver_id.strip(),
        isa13=f"{isa13:09d}", date=day.strftime("%Y%m%d"), feed=feed.feed_id)
    if parts is None:
        assert enrollment is not None  # noqa: S101 - checked above
        sha256, size = write(folder / file_name, render_834(enrollment, header, control, Delimiters()))
        return RenderedFile(folder / file_name, file_name, "x12-834", sha256, size)
    if not mapping.file_header.control_totals and mapping.max_members_per_transaction is None:
        sha256, size = write(folder / file_name, render_834_parts(parts, header, control, Delimiters()))
        return RenderedFile(folder / file_name, file_name, "x12-834", sha256, size)
    with _spill(folder / f".{file_name}.members") as spill:
        sha256, size = write(folder / file_name, render_834_parts(parts, header, control, Delimiters(), spill=spill))
    return RenderedFile(folder / file_name, file_name, "x12-834", sha256, size)


@contextmanager
def _spill(path: Path) -> Iterator[BinaryIO]:
    """A private scratch file (0600, member data) for the 834's members, removed when the block ends."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        with os.fdopen(fd, "w+b") as fh:
            yield fh
    finally:
        path.unlink(missing_ok=True)
