"""OpenPGP messages checked without decrypting them: the packet structure a whole ciphertext has.

:func:`check_openpgp_message` walks a message encrypted to public keys (binary or ASCII-armored) and
raises :class:`CiphertextMalformed` unless it is whole: pure, no gpg, no key, bounded memory.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Iterator
from typing import Protocol

_CHUNK = 1024 * 1024


class CiphertextMalformed(ValueError):
    """What :func:`check_openpgp_message` finds wrong with a file (turned into our errors by the caller)."""


class _Reads(Protocol):
    def read(self, size: int, /) -> bytes: ...


class ByteSource(_Reads, Protocol):
    """A binary file as the packet walk reads it: in blocks, or (armored) by lines."""

    def __iter__(self) -> Iterator[bytes]: ...


# OpenPGP packet tags (RFC 9580 section 5): what a message encrypted to public keys is made of.
_PKESK, _SED, _SEIPD, _AEAD = 1, 9, 18, 20
_DATA_PACKETS = frozenset({_SED, _SEIPD, _AEAD})
_ARMOR_BEGIN = b"-----BEGIN PGP MESSAGE-----"
_ARMOR_END = b"-----END PGP MESSAGE-----"


class _Exact:
    """A binary stream read in exact amounts; a short read is a truncated file."""

    def __init__(self, raw: _Reads) -> None:
        self._raw = raw
        self._block = b""
        self._at = 0  # how much of ``_block`` is consumed (an offset: slicing it off would copy the rest)

    def _fill(self) -> bool:
        self._block, self._at = self._raw.read(_CHUNK), 0
        return bool(self._block)

    def take(self, count: int) -> bytes:
        parts = []
        while count > 0:
            if self._at >= len(self._block) and not self._fill():
                raise CiphertextMalformed("the file ends inside a packet (truncated)")
            part = self._block[self._at:self._at + count]
            self._at += len(part)
            count -= len(part)
            parts.append(part)
        return b"".join(parts)

    def skip(self, count: int) -> None:
        while count > 0:
            if self._at >= len(self._block) and not self._fill():
                raise CiphertextMalformed("the file ends inside a packet (truncated)")
            step = min(count, len(self._block) - self._at)
            self._at += step
            count -= step

    def at_end(self) -> bool:
        return self._at >= len(self._block) and not self._fill()


class _Dearmored:
    """The binary packets of an ASCII-armored message, decoded line by line (bounded memory)."""

    def __init__(self, raw: ByteSource) -> None:
        self._lines = iter(raw)
        self._ended = False
        self._buffer = bytearray()
        line = next(self._lines, b"").strip()
        if line != _ARMOR_BEGIN:
            raise CiphertextMalformed("the armored file does not begin with the message header")
        for line in self._lines:  # armor headers ("Version: ...") end at the first blank line
            if not line.strip():
                break
            if b":" not in line:
                raise CiphertextMalformed("the armor headers are not followed by a blank line")
        else:
            raise CiphertextMalformed("the armored file ends in its headers (truncated)")

    def read(self, size: int) -> bytes:
        while len(self._buffer) < size and not self._ended:
            batch: list[bytes] = []
            for line in self._lines:
                text = line.strip()
                if text.startswith(b"=") or text == _ARMOR_END:
                    self._finish(text)
                    break
                batch.append(text)
                if len(batch) >= 4096:
                    break
            else:
                if not batch:
                    raise CiphertextMalformed("the armored file has no end line (truncated)")
            try:
                self._buffer += binascii.a2b_base64(b"".join(batch), strict_mode=True)
            except binascii.Error:
                raise CiphertextMalformed("the armored body is not base64") from None
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def _finish(self, text: bytes) -> None:
        # The CRC24 line is optional (RFC 9580 6.1) and a short write cannot produce a complete END line;
        # the packet walk checks every length, so the checksum is not recomputed here.
        if text.startswith(b"="):
            text = next(self._lines, b"").strip()
        if text != _ARMOR_END:
            raise CiphertextMalformed("the armored file has no end line (truncated)")
        if any(line.strip() for line in self._lines):
            raise CiphertextMalformed("the armored file has data after its end line")
        self._ended = True


def _body_length(stream: _Exact) -> tuple[int, bool]:
    """A new-format packet's body length and whether it is a partial one (more parts follow)."""
    first = stream.take(1)[0]
    if first < 192:
        return first, False
    if first < 224:
        return ((first - 192) << 8) + stream.take(1)[0] + 192, False
    if first == 255:
        return int.from_bytes(stream.take(4), "big"), False
    return 1 << (first & 0x1F), True


def _packets(stream: _Exact) -> list[tuple[int, bytes]]:
    """Every packet as (tag, body kept for PKESK packets only), each header parsed and each body read to
    its last byte: a file cut short anywhere, even at a partial-length boundary, raises."""
    found: list[tuple[int, bytes]] = []
    while not stream.at_end():
        header = stream.take(1)[0]
        if not header & 0x80:
            raise CiphertextMalformed("a byte that is not a packet header where a packet should begin")
        body = b""
        if header & 0x40:  # new format: tag in the low six bits, lengths possibly in parts
            tag = header & 0x3F
            length, partial = _body_length(stream)
            if partial and tag not in _DATA_PACKETS:
                raise CiphertextMalformed("a partial body length on a packet that may not have one")
            while partial:
                stream.skip(length)
                length, partial = _body_length(stream)
            if tag == _PKESK:
                body = stream.take(length)
            else:
                stream.skip(length)
        else:  # old format: tag in bits 5-2, length type in bits 1-0
            tag = (header >> 2) & 0x0F
            kind = header & 0x03
            if kind == 3:
                raise CiphertextMalformed("an indeterminate packet length (gpg never writes one to a file)")
            length = int.from_bytes(stream.take((1, 2, 4)[kind]), "big")
            if tag == _PKESK:
                body = stream.take(length)
            else:
                stream.skip(length)
        found.append((tag, body))
    return found


def check_openpgp_message(source: ByteSource, *, armor: bool) -> tuple[str, ...]:
    """Walk an OpenPGP message encrypted to public keys without decrypting it: every packet header
    parses, every body is there to its last byte and the lengths add up to the end of the file; it is
    one or more public-key session-key packets followed by exactly one encrypted-data packet, the last.
    Returns the key ids (16 hex, upper case) the session key is encrypted to; CiphertextMalformed else.

    A write cut short (full disk, I/O error) always breaks this: gpg writes the encrypted data with
    partial lengths and the final part's length last, so a file cut anywhere ends inside a packet or
    where a further part is due. It cannot tell a flipped bit inside the encrypted data: that is the
    carrier's decryption (MDC/AEAD tag) to find, and nothing on our side writes such a file.
    """
    stream = _Exact(_Dearmored(source) if armor else source)
    packets = _packets(stream)
    tags = [tag for tag, _ in packets]
    if not tags:
        raise CiphertextMalformed("the file holds no packets")
    if tags[-1] not in _DATA_PACKETS or any(t != _PKESK for t in tags[:-1]) or len(tags) < 2:
        raise CiphertextMalformed("not a message of session-key packets and one encrypted-data packet",
                                  tags)
    key_ids = []
    for _, body in packets[:-1]:
        if len(body) < 10 or body[0] != 3:
            raise CiphertextMalformed("a session-key packet of an unknown version or too short")
        key_ids.append(body[1:9].hex().upper())
    return tuple(key_ids)


class HashingFile:
    """A binary file read through, every block hashed and counted (the check and the hash in one read)."""

    def __init__(self, raw: ByteSource) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int, /) -> bytes:
        data = self._raw.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data

    def __iter__(self) -> Iterator[bytes]:
        for line in self._raw:
            self.digest.update(line)
            self.size += len(line)
            yield line

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass
