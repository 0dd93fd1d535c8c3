"""The census's columns as text and as codes, each factorised once and shared by every rule reading it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from carrierfeeds.threads import in_order_outcomes
from carrierfeeds.validation.report import ColumnCodes


@dataclass(frozen=True)
class CodedColumn:
    """A text column as one code per row into its distinct values: equal text, equal code."""

    codes: np.ndarray  # one int per row
    uniques: pd.Series  # the distinct texts (str), in order of first appearance
    blank: int  # the code of "" (a blank or missing cell); -1 when the column has none

    def spread(self, flags: np.ndarray) -> np.ndarray:
        """Per-distinct-value ``flags`` as per-row flags."""
        per_row: np.ndarray = flags[self.codes]
        return per_row


class EncodedColumns:
    """The census's columns as text, each factorised at most once and shared by every rule reading it.

    Most rules are functions of a cell's text alone, so they run once per distinct value and are spread
    back by code: a census repeats its dates, codes and names. Sharing one encoding per column keeps the
    suite and the cross-row rules from factorising or scanning the same column again and again.
    """

    def __init__(self, census: pd.DataFrame) -> None:
        self._census = census
        self._text: dict[str, pd.Series] = {}
        self._coded: dict[str, CodedColumn] = {}
        self._in: dict[tuple[str, str], np.ndarray] = {}  # codes_in results of the joint encoding

    def encode(self, names: Iterable[str], *, workers: int, joint: tuple[str, str] | None = None) -> None:
        """Encode the columns ``names`` (and ``joint``, the ``(name, of)`` of a later :meth:`codes_in`)
        ahead of the rules, on up to ``workers`` threads; the rules then read what they would have made.

        pyarrow's hashing releases the GIL, so the encodings overlap. Each result is a function of its
        column alone and is stored in the order of ``names``, whatever order the threads finish in. A
        column whose encoding raises is left as it was: the rule that first reads it encodes it again and
        raises there, as without this step.
        """
        census = self._census
        if joint is not None and (joint[0] == joint[1] or any(
                c not in census.columns or c in self._coded for c in joint)):
            joint = None
        wanted = [c for c in dict.fromkeys(names) if c in census.columns and c not in self._coded
                  and (joint is None or c not in joint)]
        calls: list[Callable[[], Any]] = []
        if joint is not None:  # the longest encoding first: the others fill the threads around it
            calls.append(partial(_encode_pair, census[joint[1]], census[joint[0]]))
        calls += [partial(_encode_one, census[c]) for c in wanted]
        results = in_order_outcomes(calls, workers, name="validation")
        if joint is not None:
            pair = results.pop(0)
            if not isinstance(pair, Exception):
                name, of = joint
                (of_text, self._coded[of]), (name_text, self._coded[name]), in_of = pair
                for column, text in ((of, of_text), (name, name_text)):
                    if text is not None:
                        self._text[column] = text
                if in_of is not None:
                    self._in[joint] = in_of
        for column, result in zip(wanted, results, strict=True):
            if not isinstance(result, Exception):
                text, self._coded[column] = result
                if text is not None:
                    self._text[column] = text

    def shared(self) -> dict[str, ColumnCodes]:
        """The columns encoded so far whose codes are those of the census's own text: ``str`` columns
        without a missing value (``as_text`` fills a missing one with "", so its codes would be of
        another text than the cell's)."""
        census = self._census
        return {name: ColumnCodes(codes=coded.codes, distinct=coded.uniques) for name, coded in self._coded.items()
                if (census[name].dtype == "str" or _coded_text(census[name])) and not census[name].hasnans}

    def blank(self, name: str) -> np.ndarray:
        """Per row: is the cell blank or missing? By code when the column is encoded already."""
        if name in self._coded:
            coded = self._coded[name]
            return coded.codes == coded.blank if coded.blank >= 0 else np.zeros(len(coded.codes), dtype=bool)
        return np.asarray(self.text(name) == "", dtype=bool)

    def text(self, name: str) -> pd.Series:
        if name not in self._text:
            self._text[name] = as_text(self._census[name])
        return self._text[name]

    def coded(self, name: str) -> CodedColumn:
        if name not in self._coded:
            from_codes = categorical_codes(self._census[name])
            self._coded[name] = from_codes if from_codes is not None else coded_column(*factorize(self.text(name)))
        return self._coded[name]

    def codes_in(self, name: str, of: str) -> np.ndarray:
        """Per row, the code in column ``of`` of the text of ``name`` (-1 where ``of`` has no such text).

        Both columns get factorised on the way. Arrow text is encoded in one dictionary, ``of`` first:
        its codes are then its own, and ``name``'s texts already in it need no second hash table
        (subscriber ids are member ids; figures in benchmarks/README.md).
        """
        if (name, of) in self._in:
            return self._in[(name, of)]
        if name not in self._coded and of not in self._coded and name != of:
            joint = _encode_joint(self.text(of), self.text(name))
            if joint is not None:
                self._coded[of], self._coded[name], self._in[(name, of)] = joint
                return self._in[(name, of)]
        return self.coded(name).spread(index_in(self.coded(name).uniques, self.coded(of).uniques))


def _encode_one(series: pd.Series) -> tuple[pd.Series | None, CodedColumn]:
    """A column as text and as codes (what :meth:`EncodedColumns.text` and :meth:`EncodedColumns.coded` make);
    a coded census's Categorical column as its own codes, with no text made (None)."""
    from_codes = categorical_codes(series)
    if from_codes is not None:
        return None, from_codes
    text = as_text(series)
    return text, coded_column(*factorize(text))


def _encode_pair(of: pd.Series, name: pd.Series) -> tuple[tuple[pd.Series | None, CodedColumn],
                                                          tuple[pd.Series | None, CodedColumn], np.ndarray | None]:
    """Columns ``of`` and ``name`` as text and codes, with ``name``'s codes in ``of`` when they are encoded
    in one dictionary (:func:`_encode_joint`); ``None`` for those when each is encoded alone."""
    if _coded_text(of) or _coded_text(name):
        return _encode_one(of), _encode_one(name), None
    of_text, name_text = as_text(of), as_text(name)
    joint = _encode_joint(of_text, name_text)
    if joint is None:
        return ((of_text, coded_column(*factorize(of_text))), (name_text, coded_column(*factorize(name_text))),
                None)
    return (of_text, joint[0]), (name_text, joint[1]), joint[2]


def _encode_joint(first: pd.Series, second: pd.Series) -> tuple[CodedColumn, CodedColumn, np.ndarray] | None:
    """``first`` and ``second`` (Arrow text of one type) encoded in one dictionary, ``first`` first: their
    codes, and per row of ``second`` its code in ``first`` (-1: not there); ``None`` for other text."""
    if (not isinstance(first.array, pd.arrays.ArrowStringArray)
            or not isinstance(second.array, pd.arrays.ArrowStringArray) or first.dtype != second.dtype):
        return None
    import pyarrow as pa

    values = [pa.array(first), pa.array(second)]
    if values[0].type != values[1].type:
        return None
    chunks = [c for v in values for c in (v.chunks if isinstance(v, pa.ChunkedArray) else [v])]
    encoded = pa.chunked_array(chunks, type=values[0].type).combine_chunks().dictionary_encode()
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int32)
    head, tail = codes[: len(first)], codes[len(first):]
    width = int(head.max()) + 1 if len(head) else 0  # ``first`` comes first: its codes are 0 .. width-1

    def distinct(positions: Any) -> pd.Series:
        values = encoded.dictionary.take(positions) if positions is not None else encoded.dictionary[:width]
        return pd.Series(values.to_pandas(types_mapper={values.type: first.dtype}.get))

    own, joint = pd.factorize(tail)  # ``second``'s own codes, in order of first appearance
    joint = np.asarray(joint, dtype=np.int64)
    in_first: np.ndarray = np.where(joint < width, joint, -1)[own]
    return (coded_column(head, distinct(None)),
            coded_column(np.asarray(own, dtype=np.int32), distinct(pa.array(joint))), in_first)


def _coded_text(series: pd.Series) -> bool:
    """Whether ``series`` is Categorical over ``str`` texts (a coded census's column, or the accepted file's)."""
    return isinstance(series.dtype, pd.CategoricalDtype) and series.cat.categories.dtype == "str"


def categorical_codes(series: pd.Series) -> CodedColumn | None:
    """A Categorical text column's own codes as a :class:`CodedColumn`, exactly what :func:`factorize` of
    its text gives (the distinct texts in order of first appearance, none that no row has), without
    hashing the text: categories already in that order (a coded census read's) are taken as they are,
    others are put in it by the codes alone. None for any other column, or one with a missing cell
    (:func:`as_text` makes that "", which may be a category too)."""
    if not _coded_text(series):
        return None
    codes = series.cat.codes.to_numpy()
    if len(codes) and int(codes.min()) < 0:
        return None
    distinct = pd.Series(series.cat.categories, dtype="str")
    seen = pd.unique(codes)  # the codes in order of first appearance
    if len(seen) == len(distinct) and bool((seen == np.arange(len(seen))).all()):
        return coded_column(np.asarray(codes, dtype=np.int32), distinct)
    order = np.full(len(distinct), -1, dtype=np.int32)
    order[seen] = np.arange(len(seen), dtype=np.int32)
    return coded_column(order[codes], distinct.iloc[seen].reset_index(drop=True))


def coded_column(codes: np.ndarray, distinct: pd.Series) -> CodedColumn:
    blank = np.flatnonzero(np.asarray(distinct == "", dtype=bool))
    return CodedColumn(codes=codes, uniques=distinct, blank=int(blank[0]) if len(blank) else -1)


def factorize(text: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """(codes, distinct values) of a text column without gaps, in order of first appearance.

    Arrow-backed text is encoded by pyarrow over its chunks joined into one array: the int32 indices
    come out as they are, where pandas' factorize unifies one dictionary per chunk (a large CSV reads as
    hundreds of chunks) and widens the indices to int64.
    """
    if isinstance(text.array, pd.arrays.ArrowStringArray):
        import pyarrow as pa

        values = pa.array(text)
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        encoded = values.dictionary_encode()
        distinct = pd.Series(encoded.dictionary.to_pandas(types_mapper={encoded.dictionary.type: text.dtype}.get))
        return np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int32), distinct
    codes, uniques = pd.factorize(text, use_na_sentinel=False)
    return np.asarray(codes, dtype=np.int64), pd.Series(uniques)


def as_text(series: pd.Series) -> pd.Series:
    if series.dtype == "str" and not series.hasnans:
        return series  # already text without gaps (what the readers produce): no copy
    return series.astype("str").fillna("")


def blank_as_missing(series: pd.Series) -> pd.Series:
    text = as_text(series)
    return text.where(text != "")


def index_in(values: pd.Series, of: pd.Series) -> np.ndarray:
    """For each text in ``values``, its position in ``of`` (distinct texts), or -1 when it is not there."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = pc.index_in(pa.array(values).cast(pa.large_string()), value_set=pa.array(of).cast(pa.large_string()))
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)

