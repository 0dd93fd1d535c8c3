"""The declared rule that keeps X12 structure intact: text is folded to the carrier's character set.

X12 5010 has no escape character, so a value holding a delimiter would change the file's structure.
The rule, applied to every free-text value before rendering, in this order:

1. ``transliterate``: a value holding non-ASCII characters has letters NFKD cannot decompose spelt out
   (Ł -> L, Ø -> O, ß -> SS), is NFKD-decomposed and loses its accents (É -> E); what is still not
   ASCII (漢, emoji) is dropped.
2. case: upper-cased (``upper``, the default), or left as it is (``as_is``, extended set only).
3. ``outside_set``: every character outside the carrier's character set becomes a space.
   ``basic`` (:data:`BASIC_CHARACTERS`): A-Z, 0-9, space and ``! " & ' ( ) + , - . / ; ? =``.
   ``extended`` (:data:`EXTENDED_CHARACTERS`): basic plus a-z and ``% @ # $ _ [ ]``.
   Neither set holds a character usable as a delimiter by this writer (``* : ^ ~ | > { } \\``), CR, LF,
   tabs or other control characters, so no folded value can break the structure.
4. runs of spaces collapse to one and ends are trimmed; only then is the value cut to its maximum
   length (and trimmed again).

A value counts under a step's rule name only when that step changed it; the counts (by rule, never by
value) go into the run's report.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

Charset = Literal["basic", "extended"]
Case = Literal["upper", "as_is"]

#: The X12 basic character set less the characters this writer uses as delimiters (``*`` and ``:``).
BASIC_CHARACTERS: Final[frozenset[str]] = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 !\"&'()+,-./;?=")
#: The extended set as carrierfeeds writes it: basic, lower case and the symbols no delimiter can be.
EXTENDED_CHARACTERS: Final[frozenset[str]] = BASIC_CHARACTERS | frozenset("abcdefghijklmnopqrstuvwxyz%@#$_[]")
CHARACTER_SETS: Final[dict[str, frozenset[str]]] = {"basic": BASIC_CHARACTERS, "extended": EXTENDED_CHARACTERS}
#: Rule names the counts are reported under.
RULE_TRANSLITERATE: Final = "transliterate"
RULE_OUTSIDE_SET: Final = "outside_set"

#: Letters NFKD does not decompose, spelt the way they are usually written in ASCII.
_LATIN = str.maketrans({"Ł": "L", "ł": "l", "Ø": "O", "ø": "o", "Đ": "D", "đ": "d", "ß": "ss", "Æ": "AE",
                        "æ": "ae", "Œ": "OE", "œ": "oe", "Þ": "TH", "þ": "th", "\u0131": "i",
                        "Ħ": "H", "ħ": "h"})
_SPACES = re.compile(r" {2,}")


def set_class(charset: Charset) -> str:
    """The characters of ``charset`` as the inside of a regular-expression class (RE2 and re)."""
    extra = r"a-z%@#$_\[\]" if charset == "extended" else ""
    return r"A-Z0-9 !\"&'()+,\-./;?=" + extra


@dataclass(frozen=True)
class TextRule:
    """Which character set and case a column is folded to."""

    charset: Charset = "basic"
    case: Case = "upper"

    def __post_init__(self) -> None:
        if self.case == "as_is" and self.charset != "extended":
            raise ValueError("case as_is needs the extended character set (basic has no lower case)")

    @property
    def characters(self) -> frozenset[str]:
        return CHARACTER_SETS[self.charset]


BASIC_UPPER: Final = TextRule()


@dataclass(frozen=True)
class _Compiled:
    outside: re.Pattern[str]
    clean: re.Pattern[str]
    clean_pattern: str


_COMPILED: dict[Charset, _Compiled] = {}


def _compiled(charset: Charset) -> _Compiled:
    found = _COMPILED.get(charset)
    if found is None:
        cls = set_class(charset)
        no_space = cls.replace(" ", "")
        pattern = rf"(?:[{no_space}]+(?: [{no_space}]+)*)?"
        found = _COMPILED[charset] = _Compiled(re.compile(rf"[^{cls}]+"), re.compile(pattern), pattern)
    return found


def _transliterate(value: str) -> str:
    if value.isascii():
        return value
    return unicodedata.normalize("NFKD", value.translate(_LATIN)).encode("ascii", "ignore").decode("ascii")


def _cased(value: str, rule: TextRule) -> str:
    return value.upper() if rule.case == "upper" else value


def fold_steps(value: str, rule: TextRule = BASIC_UPPER) -> tuple[str, bool, bool]:
    """The rule over one value (no length cut): the result, and whether step 1 and step 3 changed it."""
    ascii_text = _transliterate(value)
    transliterated = ascii_text != value
    cased = _cased(ascii_text, rule)
    replaced_text = _compiled(rule.charset).outside.sub(" ", cased)
    return _SPACES.sub(" ", replaced_text).strip(), transliterated, replaced_text != cased


def fold_text(value: str, max_length: int | None = None, rule: TextRule = BASIC_UPPER) -> str:
    """One value through the rule (the scalar form; :func:`fold_series` is the vectorised one)."""
    text = fold_steps(value, rule)[0]
    if max_length is not None:
        text = text[:max_length].rstrip()
    return text


@dataclass(frozen=True)
class Folded:
    """A folded column, how many values the rule changed, and how many each step changed."""

    values: pd.Series
    changed: int
    by_rule: dict[str, int] = field(default_factory=dict)


def _text_array(values: pd.Series) -> pa.Array:
    """``values`` as one large_string array ("" for a missing value)."""
    arr = pa.array(values.astype("str").fillna(""), from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_string())
    return pc.fill_null(arr, "") if arr.null_count else arr


def dictionary_of(values: pd.Series) -> tuple[pa.Array, np.ndarray] | None:
    """A ``Categorical`` column as (its distinct texts as one large_string array, an int32 code per row
    into them), a missing value as the text "" (as :func:`_text_array` has it); None for other columns.

    No hashing: the accepted census's low-cardinality columns come from validation already factorised
    (:mod:`carrierfeeds.census.accepted`), so a rule of a value's text runs over the distinct texts and is
    taken back through the codes. Categories no row carries (a family validation held back) are left
    out, so every text here is one of the column's, as when the column is factorised from its rows: a
    rule only they break is not reported, not even with 0.
    """
    if not isinstance(values.dtype, pd.CategoricalDtype):
        return None
    dictionary = pa.array(values.cat.categories, from_pandas=True)
    if isinstance(dictionary, pa.ChunkedArray):
        dictionary = dictionary.combine_chunks()
    if not pa.types.is_large_string(dictionary.type):
        dictionary = dictionary.cast(pa.large_string())
    codes = np.asarray(values.cat.codes.to_numpy(), dtype=np.int32)
    missing = codes < 0
    if missing.any():
        codes = np.where(missing, len(dictionary), codes).astype(np.int32)
        dictionary = pa.concat_arrays([dictionary, pa.array([""], pa.large_string())])
    used = np.bincount(codes, minlength=len(dictionary)) > 0
    if not used.all():
        renumber = np.cumsum(used, dtype=np.int32) - 1
        codes = renumber[codes]
        dictionary = dictionary.filter(pa.array(used))
    return dictionary, codes


@functools.cache
def _outside_table(allowed: bytes) -> pa.Array:
    """A 256-entry uint8 look-up: 1 at each byte not in ``allowed``."""
    table = np.ones(256, dtype=np.uint8)
    table[np.frombuffer(allowed, dtype=np.uint8)] = 0
    return pa.array(table)


def bytes_outside(arr: pa.Array, allowed: bytes) -> bool:
    """Whether the data of a large_string array holds a byte not in ``allowed``: one Arrow take through
    :func:`_outside_table` over the data buffer viewed as uint8, which releases the GIL (``bytes.translate``
    holds it, so the 834 writer's checks would run one thread at a time)."""
    data = arr.buffers()[2]
    if not len(arr) or data is None:
        return False
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)
    lo, hi = int(offsets[arr.offset]), int(offsets[arr.offset + len(arr)])
    if hi == lo:
        return False
    as_bytes = pa.Array.from_buffers(pa.uint8(), hi - lo, [None, data], offset=lo)
    return bool(pc.max(pc.take(_outside_table(allowed), as_bytes)).as_py())


def _cleanliness(text: pa.Array, charset: Charset) -> Literal["clean", "padded", "dirty"]:
    """Whether every value of ``text`` (large_string) matches the clean pattern (only characters of the
    set, single inner spaces, no space at either end): ``clean``; ``padded`` when some value's only fault
    may be a space at an end; else ``dirty``. By passes over the column's bytes (an Arrow look-up, a space
    mask, one gather per end), not by value: no regex, no trim.

    Once every byte is in the set, a space is the only whitespace left, so a value with no space at
    either end is already trimmed; and then two values back to back never make a double space."""
    if not len(text) or text.buffers()[2] is None:
        return "clean"
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset:text.offset + len(text) + 1]
    data = np.frombuffer(text.buffers()[2], dtype=np.uint8)[int(offsets[0]):int(offsets[-1])]
    if bytes_outside(text, "".join(sorted(CHARACTER_SETS[charset])).encode("ascii")):
        return "dirty"
    starts, ends = offsets[:-1] - offsets[0], offsets[1:] - offsets[0]
    filled = ends > starts
    # A space mask, not ``b"  " in data``: faster on text full of single spaces (benchmarks/README.md).
    space = data == ord(" ")
    if bool(space[starts[filled]].any()) or bool(space[ends[filled] - 1].any()):
        return "padded"
    return "dirty" if bool((space[1:] & space[:-1]).any()) else "clean"


def _fold_distinct(distinct: pa.Array, weights: np.ndarray, rule: TextRule) -> tuple[pa.Array, int, dict[str, int]]:
    """The rule over distinct raw values (``weights`` rows each): the folded values, the rows changed and
    the rows each step changed. A value already clean once cased (Arrow's Unicode upper case) and trimmed
    is kept as that; the rest go through :func:`fold_steps` in Python."""
    cased = pc.utf8_upper(distinct) if rule.case == "upper" else distinct
    cased = pc.utf8_trim_whitespace(cased)
    compiled = _compiled(rule.charset)
    clean = pc.fill_null(pc.match_substring_regex(cased, f"^{compiled.clean_pattern}$"), False)
    clean_np = clean.to_numpy(zero_copy_only=False)
    dirty = np.flatnonzero(~clean_np)
    changed = 0
    by_rule: dict[str, int] = {}
    if not len(dirty):
        return cased, changed, by_rule
    dirty_weights = weights[dirty]
    originals = [str(v) for v in pc.take(distinct, pa.array(dirty)).to_pylist()]
    steps = [fold_steps(v, rule) for v in originals]
    full = [step[0] for step in steps]
    flags = np.fromiter((f != _cased(v, rule).strip() for f, v in zip(full, originals, strict=True)),
                        dtype=bool, count=len(originals))
    changed = int(dirty_weights[flags].sum())
    for name, index in ((RULE_TRANSLITERATE, 1), (RULE_OUTSIDE_SET, 2)):
        hit = np.fromiter((bool(step[index]) for step in steps), dtype=bool, count=len(steps))
        if hit.any():
            by_rule[name] = int(dirty_weights[hit].sum())
    folded = pc.replace_with_mask(cased, pc.invert(clean), pa.array(full, pa.large_string()))
    return folded, changed, by_rule


def _cut(folded: pa.Array, max_length: int | None) -> pa.Array:
    # Folded values are ASCII and hold no whitespace but single inner spaces, so a cut is trimmed by
    # rstrip(); when no value is longer than the limit there is nothing to cut (the common case).
    if max_length is None or not len(folded) or int(pc.max(pc.binary_length(folded)).as_py()) <= max_length:
        return folded
    return pc.utf8_rtrim(pc.utf8_slice_codeunits(folded, 0, max_length), characters=" ")


def fold_column(values: pd.Series, max_length: int | None = None, rule: TextRule = BASIC_UPPER, *,
                order: np.ndarray | None = None) -> Folded:
    """The rule over a column (Arrow-backed ``str`` result; a missing value folds as ""), with counts by rule.

    Most census columns are clean already: ASCII, in the set, single inner spaces. So the column is
    ASCII-upper-cased and trimmed in Arrow (whole buffers, no hashing) and one pass over its bytes tells
    whether every value is clean; if so, that is the result, with no hashing (benchmarks/README.md).
    Otherwise each distinct value is folded once by :func:`_fold_distinct` and spread back by its code
    (names repeat: a census holds far fewer distinct names than rows). No Python object is made
    per row. Casing, trimming and cutting to length are formatting, not normalisation: a value counts
    as changed only when the character rule itself altered it. ``order`` (positions) picks and orders
    the rows of the result, and only those rows count (a rule whose values are all among the rows left
    out is reported with 0).
    """
    index: pd.Index = values.index if order is None else pd.RangeIndex(len(order))
    coded = dictionary_of(values)
    if coded is not None:
        return _fold_coded(*coded, max_length, rule, order, index)
    arr = _text_array(values)
    # On ASCII text the ASCII upper case is the Unicode one; a non-ASCII value is never clean here.
    cased = pc.ascii_upper(arr) if rule.case == "upper" else arr
    changed = 0
    by_rule: dict[str, int] = {}
    state = _cleanliness(cased, rule.charset)
    if state == "padded":
        # Spaces at the ends (a padded census) are formatting: trimmed, the values may be clean.
        cased = pc.utf8_trim_whitespace(cased)
        state = _cleanliness(cased, rule.charset)
    if state == "clean":
        folded = _cut(cased if order is None else pc.take(cased, pa.array(order)), max_length)
    else:
        encoded = pc.dictionary_encode(arr)
        codes = encoded.indices if order is None else pc.take(encoded.indices, pa.array(order))
        weights = np.bincount(codes.to_numpy(zero_copy_only=False), minlength=len(encoded.dictionary))
        fixed, changed, by_rule = _fold_distinct(encoded.dictionary, weights, rule)
        folded = pc.take(_cut(fixed, max_length), codes)
    return Folded(pd.Series(folded, index=index, dtype="str"), changed, by_rule)


def _fold_coded(dictionary: pa.Array, codes: np.ndarray, max_length: int | None, rule: TextRule,
                order: np.ndarray | None, index: pd.Index) -> Folded:
    """:func:`fold_column` of a column given as distinct texts and codes (:func:`dictionary_of`): the rule
    runs over the distinct texts alone, counted by how many of the rows ``order`` picks carry each, and
    is taken back through the codes. The same values and counts as over the rows: each text folds alike
    wherever it is, and a text no picked row carries weighs nothing."""
    rows = codes if order is None else codes[order]
    cased = pc.ascii_upper(dictionary) if rule.case == "upper" else dictionary
    state = _cleanliness(cased, rule.charset)
    if state == "padded":
        cased = pc.utf8_trim_whitespace(cased)
        state = _cleanliness(cased, rule.charset)
    changed = 0
    by_rule: dict[str, int] = {}
    if state == "clean":
        fixed = cased
    else:
        weights = np.bincount(rows, minlength=len(dictionary))
        fixed, changed, by_rule = _fold_distinct(dictionary, weights, rule)
    folded = pc.take(_cut(fixed, max_length), pa.array(rows))
    return Folded(pd.Series(folded, index=index, dtype="str"), changed, by_rule)


def fold_series(values: pd.Series, max_length: int | None = None,
                rule: TextRule = BASIC_UPPER) -> tuple[pd.Series, int]:
    """:func:`fold_column` as (folded column, values changed)."""
    out = fold_column(values, max_length, rule)
    return out.values, out.changed
