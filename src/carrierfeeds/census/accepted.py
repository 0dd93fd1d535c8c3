"""The accepted census between the validate and build stages: Arrow IPC read memory-mapped, in chunks of
whole families.

The file is a sequence of Arrow IPC streams, one per chunk (:class:`AcceptedWriter`), each a table of
whole families (every row whose folded ``subscriber_id`` is equal), chunks in order of their families'
first appearance in the census, rows in census order, ``row_number`` the census row. A stream ends with
its end-of-stream marker, so the chunks need no index: each is read where the last ended, with its own
schema and dictionaries (a column may be a dictionary in one chunk and plain text in another).
:func:`read_accepted_chunks` yields them; :func:`read_accepted` reads them all as one frame. A file
staged by an older version (one IPC file, starting ``ARROW1``) reads as one chunk.

Low-cardinality text columns (distinct texts at most a quarter of the rows: plans, levels, dates, names,
cities, zips, even subscriber ids and street addresses on a large census) are written as Arrow dictionaries:
integer codes into the distinct texts, taken from the codes validation already made
(:func:`carrierfeeds.validation.validate_census_coded`) through the accepted rows, so neither stage
hashes them again. The build reads them back as pandas ``Categorical`` columns and works on the
distinct texts (:func:`carrierfeeds.x12.sanitize.dictionary_of`); the other columns stay plain text.

A dictionary may hold texts no accepted row uses (a family held back by validation): nothing downstream
counts a dictionary's entries, only its rows' codes. A file staged by an older version (plain
``large_string`` columns, or LZ4-compressed) still reads.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather

from carrierfeeds.census.columns import ROW_NUMBER

if TYPE_CHECKING:
    from carrierfeeds.validation import ColumnCodes

#: A text column is written as a dictionary when it has at most rows / DICTIONARY_SHARE distinct texts.
#: On a large census that takes most text columns, up to subscriber_id and address1; member_id and ssn
#: (about one text per member) stay plain: their codes would save little against the dictionary's own
#: offsets, and the build reads them per row anyway (column counts in benchmarks/README.md).
DICTIONARY_SHARE = 4


def worth_a_dictionary(distinct: int, rows: int) -> bool:
    """Whether a column of ``rows`` rows and ``distinct`` distinct texts is written as a dictionary."""
    return rows > 0 and distinct * DICTIONARY_SHARE <= rows


def low_cardinality(codes: Mapping[str, ColumnCodes], rows: int) -> dict[str, ColumnCodes | None]:
    """``codes`` for a census of ``rows`` rows, with None for the columns not worth a dictionary: those
    stay plain without being hashed again, and their codes can be let go at once (member ids and SSNs
    are about one distinct text per member)."""
    return {name: coded if worth_a_dictionary(len(coded.distinct), rows) else None
            for name, coded in codes.items()}


def _index_type(distinct: int) -> pa.DataType:
    """The narrowest signed integers that hold ``distinct`` codes: int8 for a plan or a state, int16
    for a date of coverage, int32 for addresses (most dictionary columns fit int8, a quarter of int32's
    bytes; pandas keeps its codes that narrow anyway)."""
    return pa.int8() if distinct <= 127 else pa.int16() if distinct <= 32767 else pa.int32()


def _text_chunks(series: pd.Series) -> pa.ChunkedArray:
    """A text column's Arrow data as it is (pandas' ``str`` is Arrow-backed: no copy)."""
    arr = pa.array(series, from_pandas=True)
    return arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr], type=arr.type)


def _dictionary(series: pd.Series, coded: ColumnCodes | None, rows: np.ndarray | None, *,
                known: bool) -> pa.DictionaryArray | None:
    """``series`` (the accepted rows of a census column) as a dictionary array, or None when it stays
    plain: from validation's ``coded`` taken through ``rows`` (positions in the census); a column
    validation did not encode (not ``known``) is encoded here when it is text."""
    if coded is not None:
        codes = coded.codes if rows is None else coded.codes[rows]
        if len(codes) != len(series) or not worth_a_dictionary(len(coded.distinct), len(series)):
            return None
        distinct = pa.array(coded.distinct, from_pandas=True)
        if isinstance(distinct, pa.ChunkedArray):
            distinct = distinct.combine_chunks()
        kind = _index_type(len(distinct))
        return pa.DictionaryArray.from_arrays(pa.array(np.asarray(codes, dtype=kind.to_pandas_dtype())), distinct)
    if isinstance(series.dtype, pd.CategoricalDtype):
        return None if known else _recoded(series)
    if known or series.dtype != "str":
        return None
    # Not read by any rule (address1, city, department...): hashed once here, where the build would
    # otherwise fold every row. The hashing costs less than it saves in bytes written and in the build
    # (figures in benchmarks/README.md).
    chunks = _text_chunks(series)
    encoded = pc.dictionary_encode(chunks.combine_chunks() if chunks.num_chunks != 1 else chunks.chunk(0))
    if not worth_a_dictionary(len(encoded.dictionary), len(series)):
        return None
    # a missing cell stays a null code (the build reads it as "", as it does a missing text)
    return pa.DictionaryArray.from_arrays(encoded.indices.cast(_index_type(len(encoded.dictionary))),
                                          encoded.dictionary)


def _recoded(series: pd.Series) -> pa.DictionaryArray | None:
    """A Categorical column (a coded census's; see ``read_census(coded=True)``) as the dictionary array
    :func:`_dictionary` makes of its text, from its codes: the texts its rows hold, in order of first
    appearance, with the narrowest codes; None when not worth a dictionary (it is then written plain)."""
    codes = series.cat.codes.to_numpy()
    if len(codes) and int(codes.min()) < 0:  # a missing cell: left to the text path
        return None
    seen = pd.unique(codes)  # the codes in order of first appearance, as Arrow's encoding has them
    if not worth_a_dictionary(len(seen), len(series)):
        return None
    order = np.full(len(series.cat.categories), -1, dtype=np.int64)
    order[seen] = np.arange(len(seen))
    distinct = pa.array(pd.Series(series.cat.categories, dtype="str").iloc[seen], from_pandas=True)
    if isinstance(distinct, pa.ChunkedArray):
        distinct = distinct.combine_chunks()
    kind = _index_type(len(distinct))
    return pa.DictionaryArray.from_arrays(pa.array(order[codes].astype(kind.to_pandas_dtype())), distinct)


def accepted_table(accepted: pd.DataFrame, codes: Mapping[str, ColumnCodes | None] | None = None,
                   rows: np.ndarray | None = None) -> pa.Table:
    """The accepted rows as the Arrow table build reads: low-cardinality text columns as dictionaries
    (``codes`` by column, validation's, of the census whose rows at positions ``rows`` are ``accepted``,
    None: all of them; a column named with None stays plain), the rest as pandas hands them to Arrow."""
    accepted = accepted.reset_index(drop=True)
    codes = codes or {}
    coded = {name: arr for name in accepted.columns
             if (arr := _dictionary(accepted[name], codes.get(name), rows, known=name in codes)) is not None}
    # One chunk per plain column, so the file is one record batch (see write_accepted): the census's
    # columns come in the CSV reader's blocks (about a hundred on a large census).
    # a coded census's Categorical column not written as a dictionary is written as its text
    plain = pa.Table.from_pandas(pd.DataFrame(
        {c: (accepted[c].astype("str") if isinstance(accepted[c].dtype, pd.CategoricalDtype) else accepted[c])
         for c in accepted.columns if c not in coded}), preserve_index=False).combine_chunks()
    columns = {name: coded[name] if name in coded else plain.column(name) for name in accepted.columns}
    # pandas' metadata of the plain columns: they read back with the dtypes they were written with.
    return pa.table(columns).replace_schema_metadata(plain.schema.metadata)


def write_accepted(path: Path, table: pa.Table) -> None:
    """Write ``table`` uncompressed (build maps it; figures in benchmarks/README.md).

    One record batch: a dictionary column read in many batches is unified batch by batch when pandas
    reads it, many times slower than one batch (benchmarks/README.md)."""
    feather.write_feather(table, str(path), compression="uncompressed", chunksize=max(len(table), 1))


def as_categorical(column: pa.ChunkedArray) -> pd.Categorical:
    """A dictionary column as a pandas Categorical over the same distinct texts, without hashing them
    (pyarrow's own conversion makes a Python str per distinct text, several times slower). Chunks with
    different dictionaries are unified first: the first chunk's texts, then each later chunk's new ones."""
    if column.num_chunks > 1 and any(not c.dictionary.equals(column.chunk(0).dictionary) for c in column.chunks):
        column = pa.table({"c": column}).unify_dictionaries().column(0)
    chunks = column.chunks or [pa.array([], column.type)]
    dictionary = chunks[0].dictionary
    # the codes go straight into the narrowest integers pandas keeps for this many categories: no
    # int32 copy of the whole column first (a census read has one per column; figures in benchmarks/README.md)
    codes = np.empty(len(column), dtype=np.int8 if len(dictionary) < 127 else np.int16 if len(dictionary) < 32767
                     else np.int32)
    at = 0
    for chunk in chunks:
        codes[at:at + len(chunk)] = (chunk.indices.fill_null(-1) if chunk.null_count else chunk.indices
                                     ).to_numpy(zero_copy_only=False)
        at += len(chunk)
    del column, chunks
    categories = pd.Index(dictionary.to_pandas(types_mapper={dictionary.type: pd.StringDtype(na_value=np.nan)}.get))
    return categorical_from(codes, categories)


def categorical_from(codes: np.ndarray, categories: pd.Index) -> pd.Categorical:
    """``pd.Categorical.from_codes`` over ``categories``, distinct texts by construction.

    pandas checks that categories are distinct by a Python str per text (benchmarks/README.md). Every
    caller's are (validation's or Arrow's own encoding, see accepted_table; the census reader's
    dictionaries, factorised again after a strip or a code table), and a staged file cannot change
    unnoticed (AES-GCM): the dtype is made without that check where pandas offers it."""
    from_fastpath = getattr(pd.CategoricalDtype, "_from_fastpath", None)
    if from_fastpath is None:
        return pd.Categorical.from_codes(codes, categories=categories)
    return pd.Categorical.from_codes(codes, dtype=from_fastpath(categories, ordered=False))


class AcceptedWriter:
    """Writes the accepted file chunk by chunk (:meth:`add`): each table one IPC stream of one record
    batch, uncompressed (build maps it; figures in benchmarks/README.md)."""

    def __init__(self, path: Path) -> None:
        self._sink = pa.OSFile(str(path), "wb")
        self.chunks: list[int] = []

    def add(self, table: pa.Table) -> None:
        """Append ``table`` (the accepted rows of whole families, see :func:`accepted_table`) as a chunk."""
        # One record batch: a dictionary column read in many batches is unified batch by batch when
        # pandas reads it, many times slower than one batch (benchmarks/README.md).
        table = table.combine_chunks()
        with pa.ipc.new_stream(self._sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=max(len(table), 1))
        self.chunks.append(len(table))

    def add_accepted(self, accepted: pd.DataFrame, codes: Mapping[str, ColumnCodes], rows: np.ndarray | None,
                     chunk_rows: int) -> None:
        """Append a chunk's accepted rows (``validation.chunked.validate_chunks``'s ``on_accepted``): its
        table made from validation's codes for the chunk of ``chunk_rows`` rows (:func:`accepted_table`)."""
        self.add(accepted_table(accepted, low_cardinality(codes, chunk_rows), rows))

    def close(self) -> None:
        self._sink.close()

    def __enter__(self) -> AcceptedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def family_chunks(frame: pd.DataFrame, families_per_chunk: int) -> Iterator[pd.DataFrame]:
    """``frame`` (a census, or its accepted rows) as chunks of ``families_per_chunk`` whole families
    (folded ``subscriber_id`` as ``build_enrollment`` groups them), in order of first appearance, rows
    in frame order. A pure function: what the accepted file's chunks hold, for tests and tools."""
    from carrierfeeds.x12.sanitize import fold_column

    if not len(frame):
        yield frame  # an empty census is one empty chunk: its columns, no family
        return
    family, _ = pd.factorize(fold_column(frame["subscriber_id"], 50).values)
    chunk = np.asarray(family, dtype=np.int64) // max(families_per_chunk, 1)
    order = np.argsort(chunk, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(chunk))]
    for c in range(len(bounds) - 1):
        yield frame.iloc[order[bounds[c]:bounds[c + 1]]]


def _tables(path: Path, *, release: bool = False) -> Iterator[pa.Table]:
    """The accepted file's chunks as Arrow tables over the mapped file (an older version's: one). With
    ``release``, each chunk's pages are dropped from this process once the next chunk is asked for (a
    read-only map of the file: they stay in the page cache and fault back in if still read), so the
    mapped file does not stay resident beside the build."""
    with path.open("rb") as fh:
        if not fh.read(1):
            return
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    whole = pa.py_buffer(mapped)
    source = pa.BufferReader(whole)
    if source.read(6) == b"ARROW1":
        yield pa.ipc.open_file(whole).read_all()
        return
    source.seek(0)
    size, done = len(mapped), 0
    while source.tell() < size:
        table = pa.ipc.open_stream(source).read_all()
        end = source.tell()
        yield table
        del table
        upto = end // mmap.PAGESIZE * mmap.PAGESIZE
        if release and upto > done and hasattr(mapped, "madvise"):
            mapped.madvise(mmap.MADV_DONTNEED, done, upto - done)
            done = upto


def write_accepted_chunks(path: Path, tables: Iterable[pa.Table]) -> list[int]:
    """Write ``tables`` (each the accepted rows of whole families, in order) as the accepted file; the
    rows of each chunk."""
    with AcceptedWriter(path) as writer:
        for table in tables:
            writer.add(table)
    return writer.chunks


def _frame(table: pa.Table) -> pd.DataFrame:
    """One table of the accepted file as pandas: dictionary columns as Categoricals, the rest as Arrow
    hands them (plain columns' pages stay the file's)."""
    coded = [f.name for f in table.schema if pa.types.is_dictionary(f.type)]
    if not coded:
        frame: pd.DataFrame = table.to_pandas()
        return frame
    plain = table.drop_columns(coded).to_pandas()
    columns = {name: pd.Series(as_categorical(table.column(name)), name=name) if name in coded else plain[name]
               for name in table.column_names}
    return pd.DataFrame(columns, copy=False)


def read_accepted_chunks(path: Path) -> Iterator[pd.DataFrame]:
    """The accepted rows chunk by chunk, in order, each whole families (see the module's docstring),
    memory-mapped; dictionary columns as ``Categorical``. A file staged by an older version is one chunk."""
    for table in _tables(path, release=True):
        yield _frame(table)


def read_accepted(path: Path) -> pd.DataFrame:
    """The accepted rows, memory-mapped: an uncompressed file's plain columns are the file's pages (kept
    by the page cache, not copied), dictionary columns come back as ``Categorical``; an LZ4 file (staged
    by an older version) is decompressed. The chunks of a chunked file as one frame: a column that is a
    dictionary in every chunk stays one (its dictionaries unified), any other is text."""
    tables = list(_tables(path))
    if len(tables) == 1:
        return _frame(tables[0])
    if not tables:
        return pd.DataFrame()
    return _in_census_order(_frame(_concatenated(tables)))


def _in_census_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Chunks hold families together: the whole census is its rows back in census order (by
    ``row_number``), as every consumer reads it and as the whole census's view orders families (by their
    first row the view keeps, which need not be their first row)."""
    rows = frame[ROW_NUMBER].to_numpy() if ROW_NUMBER in frame.columns else None
    if rows is None or len(rows) < 2 or not bool((rows[1:] < rows[:-1]).any()):
        return frame
    return frame.take(np.argsort(rows, kind="stable")).reset_index(drop=True)


def _concatenated(tables: list[pa.Table]) -> pa.Table:
    """The chunks' tables as one: a column that is a dictionary in every chunk stays one (its
    dictionaries unified), any other is text."""
    names = tables[0].column_names
    columns = {}
    for name in names:
        parts = [t.column(name) for t in tables]
        if all(pa.types.is_dictionary(p.type) for p in parts):
            columns[name] = pa.chunked_array(
                [pa.DictionaryArray.from_arrays(c.indices.cast(pa.int32()), c.dictionary.cast(pa.large_string()))
                 for p in parts for c in p.chunks], type=pa.dictionary(pa.int32(), pa.large_string()))
        elif any(pa.types.is_dictionary(p.type) or pa.types.is_string(p.type) or pa.types.is_large_string(p.type)
                 for p in parts):
            columns[name] = pa.chunked_array([c.cast(pa.large_string()) for p in parts for c in p.chunks],
                                             type=pa.large_string())
        else:
            columns[name] = pa.chunked_array([c for p in parts for c in p.chunks], type=parts[0].type)
    return pa.table(columns).replace_schema_metadata(tables[0].schema.metadata)
