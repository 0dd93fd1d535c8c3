"""The census in chunks of whole families: every rule validation runs is answered within one chunk.

A chunk is a run of families in order of their first appearance (a family: the rows whose folded
``subscriber_id`` is equal, as ``build_enrollment`` groups them), rows in census order. Validation's
rules that reach across families (a member id or an SSN on two families, a subscriber id naming an
employee row of another family) are kept whole by cutting only where no such link crosses: families
linked to each other, and every family between them, share a chunk. A census whose families link
across its whole length is then one chunk (exact, at the memory of the whole).

The plan is made from 64-bit hashes of the keys, a few per row, kept from a first pass over the census
in blocks; the blocks themselves wait in a private spill folder and each chunk is gathered from them.
A hash collision can only link more families (a larger chunk, never a different answer); two families
whose folded ids collide are found when their chunk is gathered, and the census is then one chunk.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from carrierfeeds.census.columns import READER_WARNINGS
from carrierfeeds.census.readers import BLOCK_BYTES, NotStreamable, ReadFaults, census_blocks, read_census
from carrierfeeds.config import CensusSchema
from carrierfeeds.validation.report import CODE_COLUMNS, CODE_DISTINCT_MAX
from carrierfeeds.x12.sanitize import fold_column

log = logging.getLogger(__name__)



class FamilyCollision(Exception):
    """Two families' folded ids hashed alike: the plan would misplace one of them."""


def hash_texts(series: pd.Series, *, fold: bool = False) -> np.ndarray:
    """A 64-bit hash per row of a text column (folded as the build folds ids, with ``fold``), hashing each
    distinct text of a coded column once (its categories); 0 for a blank cell, never for another text."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        texts = pd.Series(series.cat.categories, dtype="str")
        if fold:
            texts = fold_column(texts, 50).values
        per_row: np.ndarray = _hashed(pa.array(texts))[series.cat.codes.to_numpy()]
        return per_row
    text = series if series.dtype == "str" and not series.hasnans else series.astype("str").fillna("")
    return _hashed(pa.array(fold_column(text, 50).values if fold else text))


#: Odd multipliers (invertible modulo 2**64) of the polynomial hash and its finaliser (splitmix64's).
_P = np.uint64(0x100000001B3)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _hashed(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Each text's 64-bit hash, from the Arrow buffers without a Python object per text: a polynomial over
    its bytes (modulo 2**64) mixed with its length and finalised (splitmix64); 0 for "", never otherwise."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], pa.large_string())
    values = values.cast(pa.large_string())
    n = len(values)
    out = np.zeros(n, dtype=np.uint64)
    if not n:
        return out
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[values.offset:values.offset + n + 1]
    lengths = np.diff(offsets)
    filled = np.flatnonzero(lengths)
    if len(filled):
        data = np.frombuffer(values.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]].astype(np.uint64)
        starts = offsets[filled] - offsets[0]
        within = np.arange(len(data), dtype=np.int64) - np.repeat(starts, lengths[filled])
        table = np.full(int(lengths.max()), _P, dtype=np.uint64)  # P**k, k from 0, wrapping as arrays do
        table[0] = 1
        table = np.cumprod(table, dtype=np.uint64)
        sums = np.add.reduceat(data * table[within], starts)
        h = sums ^ (lengths[filled].astype(np.uint64) * _M2)
        h ^= h >> np.uint64(30)
        h *= _M1
        h ^= h >> np.uint64(27)
        h *= _M2
        h ^= h >> np.uint64(31)
        h[h == 0] = 1
        out[filled] = h
    return out


@dataclass
class _Keys:
    """Per census row: its family's hash, and the hashes of its member id, SSN and subscriber id."""

    family: list[np.ndarray] = field(default_factory=list)
    member: list[np.ndarray] = field(default_factory=list)
    ssn: list[np.ndarray] = field(default_factory=list)
    subscriber: list[np.ndarray] = field(default_factory=list)

    def add(self, frame: pd.DataFrame) -> None:
        self.family.append(hash_texts(frame["subscriber_id"], fold=True))
        self.member.append(hash_texts(frame["member_id"]))
        self.ssn.append(hash_texts(frame["ssn"]))
        self.subscriber.append(hash_texts(frame["subscriber_id"]))

    def plan(self, families_per_chunk: int | None) -> np.ndarray:
        # One array at a time, each list let go as it is joined, the family hashes as soon as the families
        # are numbered: at 10M members each of these is 184 MB (23M rows).
        def joined(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)

        family, self.family = joined(self.family), []
        at = families_in_order(family)
        del family
        member, self.member = joined(self.member), []
        ssn, self.ssn = joined(self.ssn), []
        subscriber, self.subscriber = joined(self.subscriber), []
        return _plan(at, member, ssn, subscriber, families_per_chunk=families_per_chunk)


def plan_chunks(family: np.ndarray, member: np.ndarray, ssn: np.ndarray, subscriber: np.ndarray, *,
                families_per_chunk: int | None) -> np.ndarray:
    """Per row, its chunk: families in order of first appearance, about ``families_per_chunk`` a chunk
    (None: one chunk), cut only where no link crosses. Links: rows with one member id or one SSN (not
    blank), and a row whose subscriber id is another row's member id. Each argument holds a hash per row
    (0: blank); the chunks are numbered from 0 in order."""
    return _plan(families_in_order(family), member, ssn, subscriber, families_per_chunk=families_per_chunk)


def families_in_order(family: np.ndarray) -> np.ndarray:
    """Each row's family (its hash in ``family``), numbered from 0 by first appearance."""
    codes, uniques = pd.factorize(family)
    return codes.astype(np.int32 if len(uniques) < 2**31 else np.int64, copy=False)


def _plan(at: np.ndarray, member: np.ndarray, ssn: np.ndarray, subscriber: np.ndarray, *,
          families_per_chunk: int | None) -> np.ndarray:
    """:func:`plan_chunks` from each row's family numbered by first appearance (``at``)."""
    if not len(at):
        return np.zeros(0, dtype=np.int32)
    count = int(at.max()) + 1
    if families_per_chunk is None or count <= families_per_chunk:
        return np.zeros(len(at), dtype=np.int32)
    los: list[np.ndarray] = []
    his: list[np.ndarray] = []
    member_keys, member_lo, member_hi = _spans(member, at)
    los.append(member_lo)
    his.append(member_hi)
    _, ssn_lo, ssn_hi = _spans(ssn, at)
    los.append(ssn_lo)
    his.append(ssn_hi)
    named = np.flatnonzero(subscriber != 0)
    if len(named) and len(member_keys):
        found = np.minimum(np.searchsorted(member_keys, subscriber[named]), len(member_keys) - 1)
        hit = member_keys[found] == subscriber[named]
        rows, found = named[hit], found[hit]
        los.append(np.minimum(at[rows], member_lo[found]))
        his.append(np.maximum(at[rows], member_hi[found]))
    lo, hi = np.concatenate(los), np.concatenate(his)
    crossing = lo < hi
    cover = np.zeros(count + 1, dtype=np.int64)
    np.add.at(cover, lo[crossing], 1)
    np.add.at(cover, hi[crossing], -1)
    # a cut after family k is allowed when no link spans families k and k + 1
    allowed = np.flatnonzero(np.cumsum(cover)[:count - 1] == 0)
    cuts: list[int] = []
    last = -1
    while True:
        i = int(np.searchsorted(allowed, last + families_per_chunk))
        if i >= len(allowed):
            break
        last = int(allowed[i])
        cuts.append(last)
    chunk: np.ndarray = np.searchsorted(np.asarray(cuts, dtype=np.int64), at, side="left").astype(np.int32)
    return chunk


def _spans(keys: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct non-blank ``keys`` (sorted) with the first and last family (``at``) holding each."""
    rows = np.flatnonzero(keys != 0)
    if not len(rows):
        empty = np.zeros(0, dtype=np.int64)
        return keys[:0], empty, empty
    order = rows[np.argsort(keys[rows], kind="stable")]
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    families = at[order]
    return sorted_keys[starts], np.minimum.reduceat(families, starts), np.maximum.reduceat(families, starts)


class CensusChunks:
    """The staged census read for validation: its chunks of whole families (:meth:`chunks`), with what
    the report needs of the whole file (``rows``, the reader's ``warnings``, ``code_texts``).

    Made by :func:`census_chunks`; :meth:`close` removes the spill folder (PHI)."""

    def __init__(self, *, rows: int, warnings: list[str], code_texts: dict[str, list[str] | None],
                 chunk_of_row: np.ndarray, spill: Path | None, block_starts: np.ndarray,
                 whole: pd.DataFrame | None) -> None:
        self.rows = rows
        self.warnings = warnings
        #: per code column, its distinct texts across the census (None: more than the report shows)
        self.code_texts = code_texts
        self._chunk_of_row = chunk_of_row
        self._spill = spill
        self._block_starts = block_starts
        self._whole = whole

    @property
    def count(self) -> int:
        return int(self._chunk_of_row.max()) + 1 if len(self._chunk_of_row) else 0

    def chunks(self) -> Iterator[pd.DataFrame]:
        """The chunks in order, each a coded census frame (``read_census(coded=True)``'s columns) of
        whole families, rows in census order. Raises :class:`FamilyCollision` (from the chunk it is
        found in) when two families' hashes collide; :func:`census_chunks` then gives one chunk."""
        order = np.argsort(self._chunk_of_row, kind="stable")
        bounds = np.r_[0, np.cumsum(np.bincount(self._chunk_of_row, minlength=self.count))]
        for c in range(self.count):
            rows = order[bounds[c]:bounds[c + 1]]
            frame = self._whole.iloc[rows].reset_index(drop=True) if self._whole is not None else self._gather(rows)
            if self.count > 1:
                _check_families(frame)
            yield frame

    def _gather(self, rows: np.ndarray) -> pd.DataFrame:
        from carrierfeeds.census.readers import _frame_of

        assert self._spill is not None  # noqa: S101 - made with one or the other
        blocks = np.searchsorted(self._block_starts, rows, side="right") - 1
        pieces = []
        for b in np.unique(blocks):
            with pa.OSFile(str(self._spill / f"{b:06d}.arrow")) as source:
                table = pa.ipc.open_file(source).read_all()
            local = rows[blocks == b] - self._block_starts[b]
            pieces.append(_widened(table.take(pa.array(local)) if len(local) < table.num_rows else table))
            del table
        tables = [pa.concat_tables(pieces)]
        del pieces
        return _frame_of(tables)

    def as_one_chunk(self) -> None:
        """Re-plan as one chunk (after a :class:`FamilyCollision`: exact, at the memory of the whole)."""
        self._chunk_of_row = np.zeros(len(self._chunk_of_row), dtype=np.int32)

    def close(self) -> None:
        if self._spill is not None:
            shutil.rmtree(self._spill, ignore_errors=True)
        self._whole = None


def _widened(table: pa.Table) -> pa.Table:
    """Dictionary columns with int32 codes over large_string (blocks narrow them differently)."""
    columns = []
    for column in table.columns:
        if pa.types.is_dictionary(column.type):
            column = pa.chunked_array(
                [pa.DictionaryArray.from_arrays(c.indices.cast(pa.int32()), c.dictionary.cast(pa.large_string()))
                 for c in column.chunks], type=pa.dictionary(pa.int32(), pa.large_string()))
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def _check_families(frame: pd.DataFrame) -> None:
    """Raise :class:`FamilyCollision` when two folded ids in ``frame`` hash alike."""
    folded = fold_column(frame["subscriber_id"], 50).values
    texts = pd.unique(folded.to_numpy(dtype=object))
    hashes = pd.util.hash_array(np.asarray(texts, dtype=object))
    if len(np.unique(hashes)) != len(texts):
        raise FamilyCollision


def census_chunks(path: Path, schema: CensusSchema, *, display_name: str, spill_dir: Path,
                  families_per_chunk: int | None, block_bytes: int = BLOCK_BYTES) -> CensusChunks:
    """The staged census at ``path`` (the run's own copy) planned into chunks of about
    ``families_per_chunk`` families (None: one chunk), read ``block_bytes`` of CSV at a time.

    A CSV is read block by block (:func:`~carrierfeeds.census.readers.census_blocks`): each canonical
    block goes to ``spill_dir`` (created private, removed by :meth:`CensusChunks.close`) and only its
    keys stay; any other census is read whole and planned the same way. Raises the reader's
    :class:`~carrierfeeds.errors.DataError` exactly as :func:`read_census` would."""
    keys = _Keys()
    codes: dict[str, set[str] | None] = {c: set() for c in CODE_COLUMNS}
    spill_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    starts: list[int] = []
    faults = ReadFaults()
    rows = 0
    try:
        for block, found in census_blocks(path, schema, display_name=display_name, block_bytes=block_bytes):
            faults.add(found)
            if faults.long_first is not None or faults.formula_first is not None:
                continue  # the file is refused once read: nothing more to keep of it
            keys.add(block)
            _collect_codes(codes, block)
            table = pa.Table.from_pandas(block, preserve_index=False)
            with pa.OSFile(str(spill_dir / f"{len(starts):06d}.arrow"), "wb") as sink, \
                    pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            starts.append(rows)
            rows += len(block)
            del block, table
    except NotStreamable:
        shutil.rmtree(spill_dir, ignore_errors=True)
        log.info("%s: read whole (not a CSV the block reader takes)", display_name)
        whole = read_census(path, schema, display_name=display_name, private=True, coded=True)
        keys = _Keys()
        keys.add(whole)
        codes = {c: set() for c in CODE_COLUMNS}
        _collect_codes(codes, whole)
        return CensusChunks(rows=len(whole), warnings=list(whole.attrs.get(READER_WARNINGS, ())),
                            code_texts=_listed(codes), chunk_of_row=keys.plan(families_per_chunk), spill=None,
                            block_starts=np.zeros(1, dtype=np.int64), whole=whole)
    except BaseException:
        shutil.rmtree(spill_dir, ignore_errors=True)
        raise
    try:
        faults.raise_first(schema, display_name)
    except BaseException:
        shutil.rmtree(spill_dir, ignore_errors=True)
        raise
    chunk_of_row = keys.plan(families_per_chunk)
    log.info("%s: read %d rows in %d blocks; %d chunk(s)", display_name, rows, len(starts),
             int(chunk_of_row.max()) + 1 if rows else 0)
    return CensusChunks(rows=rows, warnings=faults.date_warnings(schema, display_name),
                        code_texts=_listed(codes), chunk_of_row=chunk_of_row, spill=spill_dir,
                        block_starts=np.asarray(starts, dtype=np.int64), whole=None)


def _collect_codes(codes: dict[str, set[str] | None], frame: pd.DataFrame) -> None:
    for column in CODE_COLUMNS:
        seen = codes[column]
        if seen is None or column not in frame.columns:
            continue
        values = frame[column]
        if isinstance(values.dtype, pd.CategoricalDtype):
            used = np.unique(values.cat.codes.to_numpy())
            texts = pd.Series(values.cat.categories, dtype="str").iloc[used[used >= 0]]
        else:
            texts = pd.Series(values.astype("str").unique(), dtype="str")
        seen.update(texts.tolist())
        if len(seen) > CODE_DISTINCT_MAX:
            codes[column] = None


def _listed(codes: dict[str, set[str] | None]) -> dict[str, list[str] | None]:
    return {c: (sorted(v) if v is not None else None) for c, v in codes.items()}
