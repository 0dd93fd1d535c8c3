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


def fold_column(values: pd.Series, max_length: int | None = None, rule: TextRule = BASIC_UPPER, *,
                order: np.ndarray | None = None) -> Folded:
    """The rule over a column (Arrow-backed ``str`` result; a missing value folds as ""), with counts by rule.

    Each distinct value is folded once and spread back by its code (names, cities, plan names and
    dates repeat: at 1M members 2.3M rows hold a few hundred thousand distinct addresses and a few
    thousand names). Among the distinct values, those already clean once cased and trimmed are found by
    one vectorised regex; only the rest go through :func:`fold_steps` in Python. No Python object is
    made per row. Casing, trimming and cutting to length are formatting, not normalisation: a value
    counts as changed only when the character rule itself altered it. ``order`` (positions) picks and
    orders the rows of the result, and only those rows count.
    """
    codes, uniques = pd.factorize(values.astype("str").fillna(""), use_na_sentinel=False)
    if order is not None:
        codes = codes[order]
    distinct = pd.Series(uniques, dtype="str")
    cased = (distinct.str.upper() if rule.case == "upper" else distinct).str.strip()
    compiled = _compiled(rule.charset)
    clean = cased.str.fullmatch(compiled.clean_pattern).fillna(False).to_numpy(dtype=bool)
    folded = pa.array(cased, from_pandas=True).cast(pa.large_string())
    changed = 0
    by_rule: dict[str, int] = {}
    dirty = np.flatnonzero(~clean)
    if len(dirty):
        weights = np.bincount(codes, minlength=len(distinct))[dirty]
        originals = [str(v) for v in distinct.iloc[dirty].tolist()]
        steps = [fold_steps(v, rule) for v in originals]
        full = [step[0] for step in steps]
        flags = np.fromiter((f != _cased(v, rule).strip() for f, v in zip(full, originals, strict=True)),
                            dtype=bool, count=len(originals))
        changed = int(weights[flags].sum())
        for name, index in ((RULE_TRANSLITERATE, 1), (RULE_OUTSIDE_SET, 2)):
            hit = np.fromiter((bool(step[index]) for step in steps), dtype=bool, count=len(steps))
            if hit.any():
                by_rule[name] = int(weights[hit].sum())
        mask = np.zeros(len(distinct), dtype=bool)
        mask[dirty] = True
        folded = pc.replace_with_mask(folded, pa.array(mask), pa.array(full, pa.large_string()))
    if max_length is not None:
        # Folded values hold no whitespace but single inner spaces, so trimming the cut is rstrip().
        folded = pc.utf8_rtrim(pc.utf8_slice_codeunits(folded, 0, max_length), characters=" ")
    result = pc.take(folded, pa.array(codes))
    rows: pd.Index = values.index if order is None else pd.RangeIndex(len(codes))
    return Folded(pd.Series(result, index=rows, dtype="str"), changed, by_rule)


def fold_series(values: pd.Series, max_length: int | None = None,
                rule: TextRule = BASIC_UPPER) -> tuple[pd.Series, int]:
    """:func:`fold_column` as (folded column, values changed)."""
    out = fold_column(values, max_length, rule)
    return out.values, out.changed
