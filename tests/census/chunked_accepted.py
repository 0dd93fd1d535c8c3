"""Test helper: today's accepted table written as a chunked stream of family-whole chunks (the contract
between validate's writer and build's reader), each chunk's dictionaries its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from carrierfeeds.census.accepted import accepted_table, family_chunks, write_accepted_chunks
from carrierfeeds.census.columns import ROW_NUMBER


def chunk_tables(accepted: pd.DataFrame, families_per_chunk: int) -> Iterator[pa.Table]:
    """``accepted`` as today's table cut into family-whole chunks (:func:`family_chunks`), one schema for
    all, every dictionary column re-encoded over the chunk's own rows (a dictionary replaced per batch)."""
    if ROW_NUMBER not in accepted.columns:
        accepted = accepted.assign(**{ROW_NUMBER: np.arange(2, len(accepted) + 2)})
    accepted = accepted.reset_index(drop=True)
    whole = accepted_table(accepted)
    position = accepted.assign(_at=np.arange(len(accepted)))
    for chunk in family_chunks(position, families_per_chunk):
        part = whole.take(pa.array(chunk["_at"].to_numpy()))
        columns = []
        for field, column in zip(whole.schema, part.columns, strict=True):
            if pa.types.is_dictionary(field.type):
                plain = column.cast(field.type.value_type)
                encoded = pc.dictionary_encode(plain.combine_chunks())
                column = pa.chunked_array([pa.DictionaryArray.from_arrays(
                    encoded.indices.cast(field.type.index_type), encoded.dictionary)], field.type)
            columns.append(column)
        yield pa.Table.from_arrays(columns, schema=whole.schema)


def write_chunked(path: Path, accepted: pd.DataFrame, families_per_chunk: int) -> list[int]:
    """Write ``accepted`` as a chunked accepted stream; the rows per chunk."""
    return write_accepted_chunks(path, chunk_tables(accepted, families_per_chunk))
