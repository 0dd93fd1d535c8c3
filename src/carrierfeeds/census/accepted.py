"""The accepted census between the validate and build stages: one Arrow IPC file, read memory-mapped.

Low-cardinality text columns (distinct texts at most a quarter of the rows: plans, levels, dates, names,
cities, zips, even subscriber ids and street addresses at 1M members) are written as Arrow dictionaries:
integer codes into the distinct texts, taken from the codes validation already made
(:func:`carrierfeeds.validation.validate_census_coded`) through the accepted rows, so neither stage
hashes them again. The build reads them back as pandas ``Categorical`` columns and works on the
distinct texts (:func:`carrierfeeds.x12.sanitize.dictionary_of`); the other columns stay plain text.

A dictionary may hold texts no accepted row uses (a family held back by validation): nothing downstream
counts a dictionary's entries, only its rows' codes. A file staged before this (plain ``large_string``
columns, or LZ4-compressed) reads as it always did.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather

if TYPE_CHECKING:
    from carrierfeeds.validation import ColumnCodes

#: A text column is written as a dictionary when it has at most rows / DICTIONARY_SHARE distinct texts.
#: At 1M members (2.3M rows) that takes 20 of 22 columns, up to subscriber_id (520k) and address1
#: (458k); member_id (1M) and ssn (991k) stay plain: their codes would save little against the
#: dictionary's own offsets, and the build reads them per row anyway.
DICTIONARY_SHARE = 4


def worth_a_dictionary(distinct: int, rows: int) -> bool:
    """Whether a column of ``rows`` rows and ``distinct`` distinct texts is written as a dictionary."""
    return rows > 0 and distinct * DICTIONARY_SHARE <= rows


def low_cardinality(codes: Mapping[str, ColumnCodes], rows: int) -> dict[str, ColumnCodes | None]:
    """``codes`` for a census of ``rows`` rows, with None for the columns not worth a dictionary: those
    stay plain without being hashed again, and their codes can be let go at once (member ids and SSNs
    are 1M distinct texts each at 1M members)."""
    return {name: coded if worth_a_dictionary(len(coded.distinct), rows) else None
            for name, coded in codes.items()}


def _index_type(distinct: int) -> pa.DataType:
    """The narrowest signed integers that hold ``distinct`` codes: int8 for a plan or a state, int16
    for a date of coverage, int32 for addresses (12 of the 20 dictionary columns at 1M members take
    int8: 7 MB less each than int32; pandas keeps its codes that narrow anyway)."""
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
    if known or series.dtype != "str":
        return None
    # Not read by any rule (address1, city, department...): hashed once here, where the build would
    # otherwise fold every row. At 1M members 0.45 s for five columns, and it pays: 196 MB written
    # instead of 324, write + keep + read + build 3.19 s user + sys against 3.63 s (median of 3).
    chunks = _text_chunks(series)
    encoded = pc.dictionary_encode(chunks.combine_chunks() if chunks.num_chunks != 1 else chunks.chunk(0))
    if not worth_a_dictionary(len(encoded.dictionary), len(series)):
        return None
    # a missing cell stays a null code (the build reads it as "", as it does a missing text)
    return pa.DictionaryArray.from_arrays(encoded.indices.cast(_index_type(len(encoded.dictionary))),
                                          encoded.dictionary)


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
    # columns come in the CSV reader's blocks (104 at 1M members).
    plain = pa.Table.from_pandas(accepted[[c for c in accepted.columns if c not in coded]],
                                 preserve_index=False).combine_chunks()
    columns = {name: coded[name] if name in coded else plain.column(name) for name in accepted.columns}
    # pandas' metadata of the plain columns: they read back with the dtypes they were written with.
    return pa.table(columns).replace_schema_metadata(plain.schema.metadata)


def write_accepted(path: Path, table: pa.Table) -> None:
    """Write ``table`` uncompressed (build maps it; see benchmarks/README.md for the measurements).

    One record batch: a dictionary column read in many batches is unified batch by batch when pandas
    reads it (2.0 s against 0.1 s for one 520k-text column of 2.3M rows in 36 batches, measured)."""
    feather.write_feather(table, str(path), compression="uncompressed", chunksize=max(len(table), 1))


def _categorical(column: pa.ChunkedArray) -> pd.Categorical:
    """A dictionary column as a pandas Categorical over the same distinct texts, without hashing them
    (pyarrow's own conversion makes a Python str per distinct text: 0.48 s against 0.08 s for 520k)."""
    if column.num_chunks > 1 and any(not c.dictionary.equals(column.chunk(0).dictionary) for c in column.chunks):
        column = pa.table({"c": column}).unify_dictionaries().column(0)
    chunks = column.chunks or [pa.array([], column.type)]
    dictionary = chunks[0].dictionary
    parts = [np.asarray((c.indices.fill_null(-1) if c.null_count else c.indices).to_numpy(zero_copy_only=False))
             for c in chunks]
    codes = parts[0] if len(parts) == 1 else np.concatenate(parts)
    categories = pd.Index(dictionary.to_pandas(types_mapper={dictionary.type: pd.StringDtype(na_value=np.nan)}.get))
    # pandas checks that categories are distinct by a Python str per text (0.35 s for 520k subscriber
    # ids, measured). Every dictionary here is distinct texts by construction (validation's or Arrow's
    # own encoding, see accepted_table), and a staged file cannot change unnoticed (AES-GCM): the
    # dtype is made without that check where pandas offers it.
    from_fastpath = getattr(pd.CategoricalDtype, "_from_fastpath", None)
    if from_fastpath is None:
        return pd.Categorical.from_codes(codes, categories=categories)
    return pd.Categorical.from_codes(codes, dtype=from_fastpath(categories, ordered=False))


def read_accepted(path: Path) -> pd.DataFrame:
    """The accepted rows, memory-mapped: an uncompressed file's plain columns are the file's pages (kept
    by the page cache, not copied), dictionary columns come back as ``Categorical``; an LZ4 file (staged
    before) is decompressed."""
    table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    coded = [f.name for f in table.schema if pa.types.is_dictionary(f.type)]
    if not coded:
        frame: pd.DataFrame = table.to_pandas()
        return frame
    plain = table.drop_columns(coded).to_pandas()
    columns = {name: pd.Series(_categorical(table.column(name)), name=name) if name in coded else plain[name]
               for name in table.column_names}
    return pd.DataFrame(columns, copy=False)
