"""The declared rule that keeps X12 structure intact: text is folded to the basic character set.

X12 5010 has no escape character, so a value holding a delimiter would change the file's structure.
The rule, applied to every free-text value before rendering: letters NFKD cannot decompose are
transliterated (Ł -> L, Ø -> O, ß -> SS), Unicode is NFKD-decomposed and accents dropped (É -> E),
letters are upper-cased, every character outside the X12 basic character set (A-Z, 0-9, space and
``! " & ' ( ) + , - . / ; ? =``) becomes a space (so ``* : ^ ~``, CR, LF, tabs and ``@ # %`` all do),
runs of spaces collapse to one and ends are trimmed. Only then is the value cut to its maximum length
(and trimmed again).
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import pandas as pd

#: Characters kept by the rule; everything else becomes a space.
BASIC_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 !\"&'()+,-./;?=")

#: Letters NFKD does not decompose, spelt the way they are usually written in ASCII.
_LATIN = str.maketrans({"Ł": "L", "ł": "l", "Ø": "O", "ø": "o", "Đ": "D", "đ": "d", "ß": "ss", "Æ": "AE",
                        "æ": "ae", "Œ": "OE", "œ": "oe", "Þ": "TH", "þ": "th", "\u0131": "i",
                        "Ħ": "H", "ħ": "h"})

_NOT_BASIC = re.compile(r"[^A-Z0-9 !\"&'()+,\-./;?=]+")
_SPACES = re.compile(r" {2,}")
#: A value the rule leaves as it is (after upper-casing and trimming): basic characters, single spaces.
_CLEAN_PATTERN = r"(?:[A-Z0-9!\"&'()+,\-./;?=]+(?: [A-Z0-9!\"&'()+,\-./;?=]+)*)?"


def fold_text(value: str, max_length: int | None = None) -> str:
    """One value through the rule (the scalar form; :func:`fold_series` is the vectorised one)."""
    text = value if value.isascii() else (
        unicodedata.normalize("NFKD", value.translate(_LATIN)).encode("ascii", "ignore").decode("ascii"))
    text = _SPACES.sub(" ", _NOT_BASIC.sub(" ", text.upper())).strip()
    if max_length is not None:
        text = text[:max_length].rstrip()
    return text


def fold_series(values: pd.Series, max_length: int | None = None) -> tuple[pd.Series, int]:
    """The rule over a column; returns the folded column (object dtype) and how many values it changed.

    Most values are already clean once upper-cased, which one vectorised regex finds; the rest repeat
    (names, cities), so each distinct one goes through :func:`fold_text` once and is spread back.
    Upper-casing, trimming and cutting to length are formatting, not normalisation: a value counts as
    changed only when the character rule itself altered it.
    """
    upper = values.astype(str).str.upper().str.strip()
    clean = upper.str.fullmatch(_CLEAN_PATTERN).fillna(False).to_numpy(dtype=bool)
    result = upper.to_numpy(dtype=object)
    changed = 0
    dirty = np.flatnonzero(~clean)
    if len(dirty):
        codes, uniques = pd.factorize(values.iloc[dirty].astype(str), use_na_sentinel=False)
        distinct = [str(v) for v in uniques.tolist()]
        full = [fold_text(v) for v in distinct]
        flags = np.fromiter((f != v.upper().strip() for f, v in zip(full, distinct, strict=True)),
                            dtype=bool, count=len(distinct))
        changed = int(np.bincount(codes, minlength=len(distinct))[flags].sum())
        result[dirty] = np.asarray(full, dtype=object)[codes]
    folded = pd.Series(result, index=values.index, dtype=object)
    if max_length is not None:
        lengths = upper.str.len().fillna(0).to_numpy(dtype=np.int64, copy=True)
        if len(dirty):
            lengths[dirty] = [len(v) for v in result[dirty]]
        too_long = lengths > max_length
        if too_long.any():
            folded[too_long] = [v[:max_length].rstrip() for v in result[too_long]]
    return folded, changed
