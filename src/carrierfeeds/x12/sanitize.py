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


def fold_column(values: pd.Series, max_length: int | None = None, rule: TextRule = BASIC_UPPER) -> Folded:
    """The rule over a column (object dtype result), with counts by rule.

    Most values are already clean once cased and trimmed, which one vectorised regex finds; the rest
    repeat (names, cities), so each distinct one goes through :func:`fold_steps` once and is spread
    back. Casing, trimming and cutting to length are formatting, not normalisation: a value counts as
    changed only when the character rule itself altered it.
    """
    text = values.astype(str)
    cased = (text.str.upper() if rule.case == "upper" else text).str.strip()
    compiled = _compiled(rule.charset)
    clean = cased.str.fullmatch(compiled.clean_pattern).fillna(False).to_numpy(dtype=bool)
    result = cased.to_numpy(dtype=object)
    changed = 0
    by_rule: dict[str, int] = {}
    dirty = np.flatnonzero(~clean)
    if len(dirty):
        codes, uniques = pd.factorize(text.iloc[dirty], use_na_sentinel=False)
        distinct = [str(v) for v in uniques.tolist()]
        steps = [fold_steps(v, rule) for v in distinct]
        full = [s[0] for s in steps]
        weights = np.bincount(codes, minlength=len(distinct))
        flags = np.fromiter((f != _cased(v, rule).strip() for f, v in zip(full, distinct, strict=True)),
                            dtype=bool, count=len(distinct))
        changed = int(weights[flags].sum())
        for name, index in ((RULE_TRANSLITERATE, 1), (RULE_OUTSIDE_SET, 2)):
            hit = np.fromiter((bool(s[index]) for s in steps), dtype=bool, count=len(steps))
            if hit.any():
                by_rule[name] = int(weights[hit].sum())
        result[dirty] = np.asarray(full, dtype=object)[codes]
    folded = pd.Series(result, index=values.index, dtype=object)
    if max_length is not None:
        lengths = cased.str.len().fillna(0).to_numpy(dtype=np.int64, copy=True)
        if len(dirty):
            lengths[dirty] = [len(v) for v in result[dirty]]
        too_long = lengths > max_length
        if too_long.any():
            folded[too_long] = [v[:max_length].rstrip() for v in result[too_long]]
    return Folded(folded, changed, by_rule)


def fold_series(values: pd.Series, max_length: int | None = None,
                rule: TextRule = BASIC_UPPER) -> tuple[pd.Series, int]:
    """:func:`fold_column` as (folded column, values changed)."""
    out = fold_column(values, max_length, rule)
    return out.values, out.changed
