"""The accepted census between the validate and build stages: Arrow IPC, read memory-mapped, whole or
as family-whole chunks.

Low-cardinality text columns (distinct texts at most a quarter of the rows: plans, levels, dates, names,
cities, zips, even subscriber ids and street addresses on a large census) are written as Arrow dictionaries:
integer codes into the distinct texts, taken from the codes validation already made
(:func:`carrierfeeds.validation.validate_census_coded`) through the accepted rows, so neither stage
hashes them again. The build reads them back as pandas ``Categorical`` columns and works on the
distinct texts (:func:`carrierfeeds.x12.sanitize.dictionary_of`); the other columns stay plain text.

A dictionary may hold texts no accepted row uses (a family held back by validation): nothing downstream
counts a dictionary's entries, only its rows' codes. A file staged by an older version (plain
``large_string`` columns, or LZ4-compressed) still reads.

A chunked file is an Arrow IPC *stream* (a dictionary may be replaced between batches) of one or more
record batches per chunk; every row of one family (one folded ``subscriber_id``) is in one chunk, chunks
in the order of their families' first rows, rows in census order, ``row_number`` the census row. Where a
chunk ends is told by each batch's custom metadata (:data:`CHUNK_KEY`: the batch's chunk number) or by a
PHI-free sidecar ``<name>.chunks.json`` (``{"rows": [rows of chunk 1, ...]}``). :func:`read_accepted_chunks`
yields the chunks (an IPC file, or a stream that says nothing of chunks, is one chunk);
:func:`read_accepted` reads any of them whole.
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Callable, Iterable, Iterator, Mapping
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


#: Custom metadata key of a chunked stream's record batches: the batch's chunk number (ASCII digits).
CHUNK_KEY = b"carrierfeeds.chunk"
_FILE_MAGIC = b"ARROW1"


def chunks_sidecar(path: Path) -> Path:
    """The sidecar naming a stream's chunk sizes: ``accepted.chunks.json`` beside ``accepted.arrow``."""
    return path.with_suffix(".chunks.json")


def _is_ipc_file(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(len(_FILE_MAGIC)) == _FILE_MAGIC


def read_accepted(path: Path) -> pd.DataFrame:
    """The accepted rows, memory-mapped: an uncompressed file's plain columns are the file's pages (kept
    by the page cache, not copied), dictionary columns come back as ``Categorical``; an LZ4 file (staged
    by an older version) is decompressed. A chunked stream reads as its rows in census order (by
    ``row_number``), as a file written whole holds them."""
    source = pa.memory_map(str(path))
    if _is_ipc_file(path):
        return _frame(pa.ipc.open_file(source).read_all())
    frame = _frame(pa.ipc.open_stream(source).read_all())
    rows = frame[ROW_NUMBER].to_numpy() if ROW_NUMBER in frame.columns else None
    if rows is not None and len(rows) > 1 and bool((rows[1:] < rows[:-1]).any()):
        # chunks hold families together: the whole census is its rows back in census order, as every
        # consumer (and the whole census's view: families by first row, else census order) reads it
        frame = frame.take(np.argsort(rows, kind="stable")).reset_index(drop=True)
    return frame


def read_accepted_chunks(path: Path) -> Iterator[pd.DataFrame]:
    """The accepted rows chunk by chunk, in order, each family-whole (see the module docstring), read
    memory-mapped one chunk at a time. A file staged by an older version (IPC file format) or a stream
    that names no chunks is one chunk; an empty stream is one empty chunk."""
    if _is_ipc_file(path):
        yield read_accepted(path)
        return
    with path.open("rb") as fh:
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    whole = pa.py_buffer(mapped)
    reader = pa.ipc.open_stream(whole)
    # A chunk's pages are dropped from this process once the next is asked for (a read-only map of the
    # file: they stay in the page cache), so the mapped file does not stay resident beside the build.
    release = _page_release(mapped, whole.address)
    sidecar = chunks_sidecar(path)
    sizes: list[int] | None = (json.loads(sidecar.read_text())["rows"] if sidecar.exists() else None)
    batches: list[pa.RecordBatch] = []
    held, current, yielded = 0, None, 0
    while True:
        try:
            batch, metadata = reader.read_next_batch_with_custom_metadata()
        except StopIteration:
            break
        if sizes is not None:
            # the sidecar's sizes: a batch may end a chunk or lie inside one, never straddle two
            while batch.num_rows:
                take = min(batch.num_rows, sizes[yielded] - held) if yielded < len(sizes) else batch.num_rows
                batches.append(batch.slice(0, take))
                held += take
                batch = batch.slice(take)
                if yielded < len(sizes) and held == sizes[yielded]:
                    yield _frame(pa.Table.from_batches(batches, reader.schema))
                    batches, held, yielded = release(batches), 0, yielded + 1
            continue
        number = metadata.get(CHUNK_KEY) if metadata is not None else None
        if batches and number != current:
            yield _frame(pa.Table.from_batches(batches, reader.schema))
            batches, yielded = release(batches), yielded + 1
        batches.append(batch)
        current = number
    if batches or not yielded:
        yield _frame(pa.Table.from_batches(batches, reader.schema))


def _page_release(mapped: mmap.mmap, base: int) -> Callable[[list[pa.RecordBatch]], list[pa.RecordBatch]]:
    """A function that drops from this process the mapped pages up to the end of the batches given (a
    chunk read), returning a new empty list for the next chunk's batches."""
    done = 0

    def release(batches: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
        nonlocal done
        ends = [buf.address + buf.size - base for batch in batches for column in batch.columns
                for buf in column.buffers() if buf is not None and base <= buf.address < base + len(mapped)]
        upto = min(max(ends, default=0), len(mapped)) // mmap.PAGESIZE * mmap.PAGESIZE
        if upto > done and hasattr(mapped, "madvise"):
            mapped.madvise(mmap.MADV_DONTNEED, done, upto - done)
            done = upto
        return []

    return release


def _frame(table: pa.Table) -> pd.DataFrame:
    """An accepted table as the build's frame: dictionary columns as Categoricals, the rest as pandas
    reads them (an uncompressed map's plain columns stay the file's pages)."""
    coded = [f.name for f in table.schema if pa.types.is_dictionary(f.type)]
    if not coded:
        frame: pd.DataFrame = table.to_pandas()
        return frame
    plain = table.drop_columns(coded).to_pandas()
    columns = {name: pd.Series(as_categorical(table.column(name)), name=name) if name in coded else plain[name]
               for name in table.column_names}
    return pd.DataFrame(columns, copy=False)


def family_chunks(frame: pd.DataFrame, families_per_chunk: int) -> Iterator[pd.DataFrame]:
    """``frame`` (accepted rows in census order) cut into family-whole chunks of at most
    ``families_per_chunk`` families: a family is its rows with one folded ``subscriber_id`` (the key
    ``build_enrollment`` groups by), chunks in the order of their families' first rows, rows in census
    order. ``row_number`` is added (the census row, as the build numbers rows) when the frame lacks it."""
    from carrierfeeds.x12.sanitize import fold_column

    if families_per_chunk < 1:
        raise ValueError("a chunk holds at least one family")
    if ROW_NUMBER not in frame.columns:
        frame = frame.assign(**{ROW_NUMBER: np.arange(2, len(frame) + 2)})
    frame = frame.reset_index(drop=True)
    family = pd.factorize(fold_column(frame["subscriber_id"], 50).values, use_na_sentinel=False)[0]
    chunk = family // families_per_chunk
    order = np.argsort(chunk, kind="stable")
    bounds = np.flatnonzero(np.diff(chunk[order])) + 1
    for rows in np.split(order, bounds) if len(order) else [order]:
        yield frame.iloc[rows].reset_index(drop=True)


def write_accepted_chunks(path: Path, chunks: Iterable[pa.Table]) -> list[int]:
    """Write family-whole chunks (tables of one schema; a dictionary column may hold another dictionary
    in each) as a chunked stream, one record batch per chunk numbered in its metadata; the rows per
    chunk. Uncompressed, like :func:`write_accepted`."""
    sizes: list[int] = []
    writer: pa.ipc.RecordBatchStreamWriter | None = None
    with pa.OSFile(str(path), "wb") as sink:
        for table in chunks:
            if writer is None:
                writer = pa.ipc.new_stream(sink, table.schema)
            for batch in table.combine_chunks().to_batches(max_chunksize=max(len(table), 1)) or \
                    [pa.RecordBatch.from_pylist([], table.schema)]:
                writer.write_batch(batch, custom_metadata={CHUNK_KEY: str(len(sizes)).encode()})
            sizes.append(len(table))
        if writer is not None:
            writer.close()
    return sizes
