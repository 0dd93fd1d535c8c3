"""Size caps and archive rules for census files: refuse an oversized file, a zip bomb or a nested archive early.

A census may arrive as a zip holding exactly one file, when its schema allows zips. Everything else
that looks like an archive is refused: several members, a member whose name is a path (absolute,
``..``, backslashes), an encrypted member, a member that is itself an archive, a member larger than the
cap or compressed more than :data:`MAX_RATIO` times. Declared sizes in a zip directory can lie, so
the member is also counted byte by byte as it is decompressed, and refused the moment it passes the cap.
"""

from __future__ import annotations

import io
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from carrierfeeds.errors import DataError

log = logging.getLogger(__name__)

#: Uncompressed / compressed size above which a zip member is treated as a bomb. Real census CSVs
#: compress 5-15x; a bomb compresses thousands of times.
MAX_RATIO = 200
#: Ratio checks start above this size, so a tiny, very regular file is not refused.
RATIO_FLOOR = 1 << 20
_CHUNK = 1 << 20

#: Leading bytes of archive and container formats we recognise (and refuse, except a zip when allowed).
MAGIC: dict[str, tuple[bytes, ...]] = {
    "zip": (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"),
    "gzip": (b"\x1f\x8b",),
    "bzip2": (b"BZh",),
    "xz": (b"\xfd7zXZ\x00",),
    "7z": (b"7z\xbc\xaf\x27\x1c",),
    "rar": (b"Rar!\x1a\x07",),
    "zstd": (b"\x28\xb5\x2f\xfd",),
    "ole": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",),  # legacy .xls, or an encrypted (password) .xlsx
}
_TAR_MAGIC_OFFSET = 257
_ARCHIVE_SUFFIXES = (".zip", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".tar", ".zst", ".jar")


@dataclass(frozen=True)
class ZipMember:
    """The one file inside an accepted zip: its base name (for messages), declared and compressed sizes."""

    name: str
    size: int
    compressed_size: int


def sniff_format(head: bytes) -> str | None:
    """The archive or container format ``head`` (a file's first bytes) starts with, else None."""
    for name, magics in MAGIC.items():
        if head.startswith(magics):
            return name
    if head[_TAR_MAGIC_OFFSET:_TAR_MAGIC_OFFSET + 5] == b"ustar":
        return "tar"
    return None


def sniff_file(path: Path) -> str | None:
    with path.open("rb") as fh:
        return sniff_format(fh.read(512))


def check_size(size: int, max_bytes: int, *, name: str) -> None:
    """DataError when ``size`` passes the schema's cap; checked before a byte is read."""
    if size > max_bytes:
        raise DataError(f"file is {size} bytes, over the census size cap of {max_bytes} bytes",
                        file=name, rule="too_large", details={"bytes": size, "max_bytes": max_bytes})


def check_zip_container(zf: zipfile.ZipFile, *, name: str, max_bytes: int) -> None:
    """Refuse a container zip (an XLSX) whose members would decompress past the cap or like a bomb."""
    total = sum(i.file_size for i in zf.infolist())
    packed = sum(i.compress_size for i in zf.infolist())
    check_size(total, max_bytes, name=name)
    if total > RATIO_FLOOR and total > MAX_RATIO * max(packed, 1):
        raise DataError(f"archive expands {total // max(packed, 1)}x; refused as a possible zip bomb",
                        file=name, rule="zip_bomb", details={"bytes": total, "compressed_bytes": packed})


def inspect_zip(source: Path | bytes, *, name: str, max_bytes: int) -> ZipMember:
    """The single member of the census zip at ``source``, after every rule in the module docstring."""
    try:
        with _open_zip(source) as zf:
            return _single_member(zf, name=name, max_bytes=max_bytes)
    except zipfile.BadZipFile:
        raise DataError("not a readable zip archive (truncated or damaged)", file=name,
                        rule="bad_archive") from None


def extract_single(source: Path | bytes, *, name: str, max_bytes: int) -> tuple[ZipMember, bytes]:
    """The single member's bytes, decompressed under the cap (counted, not trusted from the directory)."""
    try:
        with _open_zip(source) as zf:
            member = _single_member(zf, name=name, max_bytes=max_bytes)
            out = io.BytesIO()
            with zf.open(zf.infolist()[_member_index(zf)]) as fh:
                _copy_capped(fh, out, name=name, max_bytes=max_bytes, packed=member.compressed_size)
            data = out.getvalue()
    except zipfile.BadZipFile:
        raise DataError("not a readable zip archive (truncated or damaged, or a member's checksum is wrong)",
                        file=name, rule="bad_archive") from None
    except (EOFError, zipfile.LargeZipFile, NotImplementedError) as exc:
        raise DataError(f"cannot unpack the zip archive ({type(exc).__name__})", file=name,
                        rule="bad_archive") from None
    inner = sniff_format(data[:512])
    if inner is not None:
        raise DataError(f"the zip holds another archive ({inner}); nested archives are refused", file=name,
                        rule="nested_archive", details={"member": member.name, "format": inner})
    log.info("%s: unpacked zip member (%d bytes)", name, len(data))
    return member, data


def _open_zip(source: Path | bytes) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)


def _member_index(zf: zipfile.ZipFile) -> int:
    return next(i for i, info in enumerate(zf.infolist()) if not info.is_dir())


def _single_member(zf: zipfile.ZipFile, *, name: str, max_bytes: int) -> ZipMember:
    infos = zf.infolist()
    for info in infos:
        _check_member_name(info.filename, name)
    files = [i for i in infos if not i.is_dir()]
    if len(files) != 1:
        raise DataError(f"the zip holds {len(files)} files; a census zip must hold exactly one", file=name,
                        rule="zip_members", details={"members": len(files)})
    info = files[0]
    base = PurePosixPath(info.filename).name
    if info.flag_bits & 0x1:
        raise DataError("the zip member is encrypted (password-protected); send it unencrypted inside "
                        "the encrypted channel", file=name, rule="encrypted_archive")
    if base.lower().endswith(_ARCHIVE_SUFFIXES):
        raise DataError("the zip holds another archive; nested archives are refused", file=name,
                        rule="nested_archive", details={"member": base})
    check_size(info.file_size, max_bytes, name=name)
    if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise DataError(f"the zip member expands {info.file_size // max(info.compress_size, 1)}x; refused "
                        "as a possible zip bomb", file=name, rule="zip_bomb",
                        details={"bytes": info.file_size, "compressed_bytes": info.compress_size})
    return ZipMember(name=base, size=info.file_size, compressed_size=info.compress_size)


def _check_member_name(member: str, name: str) -> None:
    """Member names are never trusted as paths, even though we never write them to disk."""
    parts = member.replace("\\", "/").split("/")
    if (member.startswith(("/", "\\")) or "\\" in member or ".." in parts or (len(member) > 1 and member[1] == ":")
            or any(ord(c) < 32 for c in member)):
        raise DataError("the zip holds a member whose name is a path (absolute, '..' or backslashes); "
                        "refused", file=name, rule="unsafe_archive_name")


def _copy_capped(src: IO[bytes], dst: IO[bytes], *, name: str, max_bytes: int, packed: int) -> int:
    total = 0
    while chunk := src.read(_CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise DataError(f"the zip member decompresses past the census size cap of {max_bytes} bytes "
                            "(its declared size is wrong)", file=name, rule="too_large",
                            details={"max_bytes": max_bytes})
        if total > RATIO_FLOOR and total > MAX_RATIO * max(packed, 1):
            raise DataError("the zip member expands more than its declared compression allows; refused as "
                            "a possible zip bomb", file=name, rule="zip_bomb")
        dst.write(chunk)
    return total
