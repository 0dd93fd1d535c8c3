"""Faster pyx12 4.0.0 internals with the same verdict: installed explicitly, for that exact pyx12 only.

pyx12 spends much of a 2,000-member 834 re-parsing, re-formatting, re-sorting and re-checking the same
things (benchmarks/README.md, "pyx12 speedups"). :func:`install` replaces these internals, in this
process, with versions that compute exactly what pyx12's own do, only without repeating the work:

- ``map_walker.NodeCounter`` (the loop and segment counts behind every "exceeded max count" and
  "required loop missing" error) by :class:`IndexedNodeCounter`: stock ``reset_to_node`` scans every
  counted path at each loop start; this one keeps, for every path prefix, the counted paths below it.
- ``Segment._parse_refdes`` and ``Segment.get`` by ones that parse each reference designator string
  ("INS03", "03-1") once per process instead of building an ``X12Path`` on every element read.
- ``segment_if.get_child_node_by_idx`` and ``segment_if.is_match`` by ones that remember, per map node,
  the child at each index and where the segment's qualifier is (stock scans the children every call;
  both depend only on what the map sets while it loads).
- ``validation.contains_control_character`` by one that answers "none" with one regular-expression
  search and asks pyx12's own function whenever any control character is present.
- The map walker's ``walk_tree._scan_loop_at_position`` and ``loop_if.__len__``, ``get_first_node`` and
  ``childIterator`` by ones that sort a loop's positions once per map node, not on every call.
- ``element_if.is_valid_errors`` by a fast path that answers "valid, no errors" when every one of
  stock's checks passes, and hands anything else to stock; ``segment_if.is_valid_errors`` by stock's
  loop over a per-node layout, remembering per node and element count whether the missing trailing
  elements (whose verdict depends only on the map) all pass.

No data value is remembered: only what a map node fixes while it loads (and element counts). An error is
always made by stock's own code, so its text, order and fields are stock's.

``X12Path`` itself is left alone: pyx12 mutates paths after construction (``getnodebypath`` deletes
from ``loop_list``), so a formatted string cached on a path could go stale. The counter therefore keys
on a path's fields (exactly ``X12Path.__eq__``) and formats each distinct path once.

Guarded twice: pyx12's version must be :data:`PYX12_VERSION` and the source of everything replaced or
relied on (the classes whose methods are replaced, the walker that makes counters, the segment's
element classes) must hash to what these replacements were written against (:data:`_STOCK_SOURCES`);
else :func:`install` refuses (logs why, returns False) and pyx12 runs stock.
``CARRIERFEEDS_PYX12_SPEEDUPS=0`` (:data:`SPEEDUPS_ENV`) keeps stock pyx12 for comparison. The oracle
that the verdict is unchanged is tests/x12/test_pyx12_speedups_oracle.py (stock and patched pyx12 in
separate processes, and one sabotaged replacement at a time to show it would notice).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

#: The one pyx12 release these replacements were written against and checked by the oracle.
PYX12_VERSION = "4.0.0"
#: Set to "0" to run stock pyx12 (the comparison the benchmarks and the oracle make).
SPEEDUPS_ENV = "CARRIERFEEDS_PYX12_SPEEDUPS"

#: SHA-256 of the source (``inspect.getsource``) of everything replaced or re-implemented, in pyx12 4.0.0.
_STOCK_SOURCES: dict[str, str] = {
    "pyx12.map_walker.walk_tree": "4a62cc1070c48d05f5e1fbf66bfffa9109f12b54995b950c0cf5ae119b45488c",
    "pyx12.nodeCounter.NodeCounter": "6eb39bf54761c5cf631754518dcf4f7edc4961480bc2fce443569d5fefce4a4b",
    "pyx12.path.X12Path": "56d8e1b1b656b7ab6e317d654f9a4c95b22781120c6bc40bd4c2ddd574c2955b",
    "pyx12.segment.Segment": "7cc759628bc5a4464d62bd56e4711e7c0f177521f033bc823b38907bada9de1f",
    "pyx12.map_if._segment.segment_if": "578462ce2bec4f9bbb1528c7e587d0cff8c28dcf5dbeeaf87af11ce26e6ab546",
    "pyx12.validation.contains_control_character": "580cfc595e2866acd0cebe38b83ab5720dc96ad5ee4b3e398ad276fe16620cee",
    "pyx12.map_if._loop.loop_if": "7abc371bb6e506ae00a0c592416e7cff46f2b58fc40c19e5bcdf155ae654cce3",
    "pyx12.map_if._element.element_if": "a254a52158037c46bf49c5a12d3cc52292be586c4d72ce7da6595e90f3003db4",
    "pyx12.segment.Composite": "48a182ec5183872ca8a321f5920e28ca3f0b8bda78db69cddf66138c5ba991b2",
    "pyx12.segment.Element": "6d6260ff5ad17623b14f08919a3bd958c079a3cc7c72d5749de04621166716c1",
}

# Bound on each per-process memo (paths and reference designators, from pyx12's maps and code, never
# from the data: a few hundred in all); it only keeps a surprise from growing without limit.
_MEMO_MAX = 4096

_Key = tuple[tuple[str, ...], "str | None", "str | None", "int | None", "int | None", "bool | None"]


def _path_key(path: Any) -> _Key:
    """What ``X12Path.__eq__`` compares, as a hashable tuple: equal keys exactly when the paths are equal."""
    return (tuple(path.loop_list), path.seg_id, path.id_val, path.ele_idx, path.subele_idx, path.relative)


class IndexedNodeCounter:
    """pyx12's ``NodeCounter`` (counts per X12 path) with ``reset_to_node`` reading an index, not every path.

    Stock keys an ``OrderedDict`` by ``X12Path`` (hash: the formatted path; equality: the fields) and
    deletes, at each loop start, every key whose formatted path has the loop's path as a strict prefix
    of its "/"-separated parts. Here the counts are keyed by the fields (:func:`_path_key`), each
    distinct path is formatted once, and ``_below[prefix]`` holds the keys strictly below every prefix,
    so a reset deletes exactly the same keys without looking at the others.
    """

    def __init__(self, initialCounts: Mapping[Any, int] | None = None) -> None:
        self._counts: dict[_Key, int] = {}
        self._paths: dict[_Key, Any] = {}
        self._below: dict[str, set[_Key]] = {}
        if initialCounts is None:
            initialCounts = {}
        for k, v in initialCounts.items():
            self.setCount(k, v)

    def _key(self, xpath: Any) -> _Key:
        if isinstance(xpath, str):
            found = _STR_KEYS.get(xpath)
            if found is None:
                found = _path_key(_x12path(xpath))  # raises X12PathError as stock does
                if len(_STR_KEYS) < _MEMO_MAX:
                    _STR_KEYS[xpath] = found
            return found
        return _path_key(xpath)

    def _add(self, key: _Key, xpath: Any, count: int) -> None:
        if key not in self._counts:
            path = _x12path(xpath) if isinstance(xpath, str) else xpath
            self._paths[key] = path
            below = self._below
            for prefix in _prefixes(key, path):
                found = below.get(prefix)
                if found is None:
                    below[prefix] = {key}
                else:
                    found.add(key)
        self._counts[key] = count

    def reset_to_node(self, xpath: Any) -> None:
        """Delete the counts of every path below ``xpath`` (not its own)."""
        key = self._key(xpath)
        below = self._below.get(_formatted(key, xpath))
        if not below:
            return
        for child in list(below):
            del self._counts[child]
            path = self._paths.pop(child)
            for prefix in _prefixes(child, path):
                self._below[prefix].discard(child)

    def increment(self, xpath: Any) -> None:
        key = self._key(xpath)
        self._add(key, xpath, self._counts.get(key, 0) + 1)

    def setCount(self, xpath: Any, ct: int) -> None:
        self._add(self._key(xpath), xpath, ct)

    def get_count(self, xpath: Any) -> int:
        return self._counts.get(self._key(xpath), 0)

    def getState(self) -> OrderedDict[Any, int]:
        """The counts keyed by ``X12Path``, in stock's order (a copy: stock hands out its live dict)."""
        return OrderedDict((self._paths[k], v) for k, v in self._counts.items())

    @property
    def _dict(self) -> OrderedDict[Any, int]:
        return self.getState()

    @staticmethod
    def makeX12Path(xpath: Any) -> Any:
        return xpath if not isinstance(xpath, str) else _x12path(xpath)


_STR_KEYS: dict[str, _Key] = {}
_FORMATTED: dict[_Key, str] = {}
_PREFIXES: dict[_Key, tuple[str, ...]] = {}


def _x12path(text: str) -> Any:
    import pyx12.path

    return pyx12.path.X12Path(text)


def _formatted(key: _Key, xpath: Any) -> str:
    """``X12Path.format()`` of the path with fields ``key``: the same string for equal paths."""
    text = _FORMATTED.get(key)
    if text is None:
        text = (_x12path(xpath) if isinstance(xpath, str) else xpath).format()
        if len(_FORMATTED) < _MEMO_MAX:
            _FORMATTED[key] = text
    return text


def _prefixes(key: _Key, xpath: Any) -> tuple[str, ...]:
    """Every proper prefix of the path's formatted "/"-separated parts, joined: the paths it is below
    in stock's ``is_child_path`` (parts are "/"-free, so a prefix of the parts is one of the string)."""
    found = _PREFIXES.get(key)
    if found is None:
        parts = _formatted(key, xpath).split("/")
        found = tuple("/".join(parts[:i]) for i in range(1, len(parts)))
        if len(_PREFIXES) < _MEMO_MAX:
            _PREFIXES[key] = found
    return found


_REFDES: dict[str, tuple[str | None, int | None, int | None]] = {}


def _parsed(ref_des: str) -> tuple[str | None, int | None, int | None]:
    """The segment id and zero-based element and component indexes stock ``_parse_refdes`` reads from
    ``ref_des`` through an ``X12Path``, memoised (a pure function of the string)."""
    found = _REFDES.get(ref_des)
    if found is None:
        xp = _x12path(ref_des)  # raises X12PathError as stock does
        found = (xp.seg_id, xp.ele_idx - 1 if xp.ele_idx is not None else None,
                 xp.subele_idx - 1 if xp.subele_idx is not None else None)
        if len(_REFDES) < _MEMO_MAX:
            _REFDES[ref_des] = found
    return found


def _wrong_segment(ref_des: str, seg_id: str | None) -> Exception:
    from pyx12.errors import EngineError

    error: Exception = EngineError("Invalid Reference Designator: %s, seg_id: %s" % (ref_des, seg_id))  # noqa: UP031
    return error


def _parse_refdes(self: Any, ref_des: str) -> tuple[int | None, int | None]:
    """``Segment._parse_refdes`` with each reference designator parsed once per process."""
    seg_id, ele_idx, comp_idx = _parsed(ref_des)
    if seg_id is not None and seg_id != self.seg_id:
        raise _wrong_segment(ref_des, self.seg_id)
    return (ele_idx, comp_idx)


def _get(self: Any, ref_des: str) -> Any:
    """``Segment.get`` (the element or component ``ref_des`` names, or None) over the memoised parse;
    ``len(self.elements)`` is what stock's ``self.__len__()`` returns."""
    seg_id, ele_idx, comp_idx = _parsed(ref_des)
    if seg_id is not None and seg_id != self.seg_id:
        raise _wrong_segment(ref_des, self.seg_id)
    if ele_idx is None:
        raise IndexError(f"{ref_des} is not a valid element index")
    elements = self.elements
    if ele_idx >= len(elements):
        return None
    if comp_idx is None:
        return elements[ele_idx]
    if comp_idx >= elements[ele_idx].__len__():
        return None
    return elements[ele_idx][comp_idx]


def _child_by_idx_with(stock: Callable[[Any, int], Any]) -> Callable[[Any, int], Any]:
    def get_child_node_by_idx(self: Any, idx: int) -> Any:
        """``segment_if.get_child_node_by_idx``: stock's answer, remembered on the map node per index.

        Stock scans the segment's children for the one whose ``seq`` is ``idx + 1`` on every call. A
        map node's children and their ``seq`` are set while the map loads and never after (pyx12 4.0.0
        assigns them only in constructors); the memo is dropped if the children list is replaced or
        changes length. Only a found node is remembered: None and stock's errors come from stock each time.
        """
        children = self.children
        memo = self.__dict__.get("_carrierfeeds_by_idx")
        if memo is None or memo[0] is not children or memo[1] != len(children):
            memo = (children, len(children), {})
            self._carrierfeeds_by_idx = memo
        found = memo[2].get(idx)
        if found is None:
            found = stock(self, idx)
            if found is not None:
                memo[2][idx] = found
        return found

    return get_child_node_by_idx


#: Every character stock ``contains_control_character`` looks for (its two tables: 0x07, 0x09-0x0D,
#: 0x1C-0x1F; 0x01-0x06, 0x11-0x17).
_CONTROL = re.compile("[\x01-\x07\x09-\x0d\x11-\x17\x1c-\x1f]")


def _contains_control_character_with(stock: Callable[..., tuple[bool, str | None]]) -> Callable[..., Any]:
    def contains_control_character(str_val: str, charset: str = "B",
                                   icvn: str = "00401") -> tuple[bool, str | None]:
        """Stock's answer: (False, None) when none of its characters is present, else stock's own."""
        if _CONTROL.search(str_val) is None:
            return (False, None)
        return stock(str_val, charset, icvn)

    return contains_control_character


def _is_match_with(resolve: Callable[..., Any]) -> Callable[[Any, Any], bool]:
    def is_match(self: Any, seg: Any) -> bool:
        """``segment_if.is_match``: stock's test, with the qualifier's place found once per map node.

        Stock finds the child that carries the segment's qualifier (``_resolve_unique_key_field``, from
        the children's types, usage and code lists, all set while the map loads) and formats its
        reference designator on every call; both are remembered here, dropped as the children memo is.
        """
        seg_id = seg.get_seg_id()
        if seg_id != self.id:
            return False
        children = self.children
        memo = self.__dict__.get("_carrierfeeds_key")
        if memo is None or memo[0] is not children or memo[1] != len(children) or memo[2] != seg_id:
            key = resolve(self, seg_id, with_qual=False)
            path = None if key is None else (f"{key[1]:02d}-{key[2]}" if key[2] else f"{key[1]:02d}")
            memo = (children, len(children), seg_id, key, path)
            self._carrierfeeds_key = memo
        key, path = memo[3], memo[4]
        if key is None:
            return True
        return bool(seg.get_value(path) in key[0]._valid_codes_set)

    return is_match


# ------------------------------------------------------------------------------- the map walker
def _sorted_keys(node: Any) -> tuple[int, ...]:
    """``sorted(node.pos_map)``, remembered on the map node.

    A loop's (or the map root's) ``pos_map`` gets its keys while the map loads and never after (pyx12
    4.0.0 fills it only in constructors); the memo is dropped if the dict is replaced or changes size.
    """
    pos_map = node.pos_map
    memo = node.__dict__.get("_carrierfeeds_keys")
    if memo is None or memo[0] is not pos_map or memo[1] != len(pos_map):
        memo = (pos_map, len(pos_map), tuple(sorted(pos_map)), {})
        node._carrierfeeds_keys = memo
    keys: tuple[int, ...] = memo[2]
    return keys


def _keys_from(node: Any, node_pos: int) -> tuple[int, ...]:
    """``[a for a in sorted(node.pos_map) if a >= node_pos]``, remembered per map node and position."""
    keys = _sorted_keys(node)
    by_pos: dict[int, tuple[int, ...]] = node._carrierfeeds_keys[3]
    found = by_pos.get(node_pos)
    if found is None:
        found = tuple(a for a in keys if a >= node_pos)
        by_pos[node_pos] = found
    return found


def _scan_loop_at_position(self: Any, node: Any, node_pos: int, seg_data: Any, orig_node: Any, seg_count: int,
                           cur_line: int, ls_id: str | None, pop_node_list: list[Any]) -> Any:
    """``walk_tree._scan_loop_at_position`` with the loop's positions sorted once per map node, not per call."""
    for ord1 in _keys_from(node, node_pos):
        for child in node.pos_map[ord1]:
            if child.is_segment():
                result = self._try_match_segment_child(node, child, seg_data, orig_node, seg_count, cur_line,
                                                       ls_id, pop_node_list)
                if result is not None:
                    return result
            elif child.is_loop():
                result = self._try_match_loop_child(child, seg_data, seg_count, cur_line, ls_id, pop_node_list)
                if result is not None:
                    return result
    return None


def _loop_len(self: Any) -> int:
    """``loop_if.__len__``: the number of children, summed without sorting the positions first."""
    return sum(map(len, self.pos_map.values()))


def _loop_first_node(self: Any) -> Any:
    """``loop_if.get_first_node``: the first child at the lowest position (``min`` is ``sorted(...)[0]``)."""
    pos_map = self.pos_map
    if len(pos_map) > 0:
        return pos_map[min(pos_map)][0]
    return None


def _loop_children(self: Any) -> Any:
    """``loop_if.childIterator``: the children by position, over the remembered sorted positions."""
    for ord1 in _sorted_keys(self):
        yield from self.pos_map[ord1]


# ------------------------------------------------------------------------ element validation
#: Per-node constants of the fast element check (from the data element definition the node loaded
#: with), or None where only stock's own check is asked (no definition, or one stock would trip on).
_EleConsts = tuple[str | None, bool, int, int]


def _element_constants(node: Any) -> _EleConsts | None:
    data_ele = node.__dict__.get("_data_ele")
    if data_ele is None:
        return None
    data_type, min_len, max_len = data_ele["data_type"], data_ele["min_len"], data_ele["max_len"]
    if data_type == "" or type(min_len) is not int or type(max_len) is not int:
        return None
    numeric = data_type is not None and (data_type == "R" or data_type[0] == "N")
    return (data_type, numeric, min_len, max_len)


def _element_is_valid_errors_with(stock: Callable[..., tuple[bool, list[Any]]]) -> Callable[..., Any]:
    from pyx12 import validation
    from pyx12.segment import Composite, Element

    def is_valid_errors(self: Any, elem: Any, type_list: list[str | None] | None = None) -> tuple[bool, list[Any]]:
        """``element_if.is_valid_errors``: (True, []) when every one of stock's checks passes, else stock's own.

        A missing element (None) takes stock's branch for it directly. Otherwise the checks, in
        stock's terms, each a condition under which stock adds no error: not a composite, not empty,
        usage not "N", length within the data element's bounds (numeric types not counting "-" and
        "."), no control character, no trailing space, a listed code (when the node has codes), the
        data type (pyx12's own ``IsValidDataType``, with stock's arguments), any of the type list, the
        node's regular expression. Whenever one of them does not hold, stock runs and makes the
        errors, so every error, its text and its order is stock's.
        """
        if elem is None:
            # Stock's own branch for a missing element, without its preamble.
            if self.usage in ("N", "S"):
                return (True, [])
            empty = self._validate_when_empty()
            return (not empty, empty)
        consts = self.__dict__.get("_carrierfeeds_ele", False)
        if consts is False:
            consts = _element_constants(self)
            self._carrierfeeds_ele = consts
        kind = type(elem)
        if consts is None or (kind is not Element and (kind is not Composite or len(elem.elements) != 1)):
            return stock(self, elem, type_list)
        value = elem.value if kind is Element else elem.elements[0].value
        data_type, numeric, min_len, max_len = consts
        if value == "" or self.usage == "N" or value[-1] == " ":
            return stock(self, elem, type_list)
        size = len(value.replace("-", "").replace(".", "")) if numeric else len(value)
        if size < min_len or size > max_len or _CONTROL.search(value) is not None:
            return stock(self, elem, type_list)
        codes = self._valid_codes_set
        if (codes or self.external_codes is not None) and value not in codes:
            return stock(self, elem, type_list)
        charset = self.root.param.get("charset")
        if not validation.IsValidDataType(value, data_type, charset, self.root.icvn or "00401"):
            return stock(self, elem, type_list)
        if type_list and not any(validation.IsValidDataType(value, t, charset) for t in type_list if t is not None):
            return stock(self, elem, type_list)
        rec = self.rec
        if rec is not None and not rec.search(value):
            return stock(self, elem, type_list)
        return (True, [])

    return is_valid_errors


# ------------------------------------------------------------------------ segment validation
def _segment_layout(node: Any, composite_if: type, element_if: type) -> Any:
    """Per segment node: its children as stock's loop meets them (node and kind: 1 composite, 2
    element, 0 neither, by index) and a memo, per element count, of whether every missing trailing
    element and composite passes; None where stock's own loop has to run (a child stock cannot find
    raises there). Dropped if the children list is replaced or changes length."""
    from pyx12.errors import EngineError

    children = node.children
    memo = node.__dict__.get("_carrierfeeds_layout")
    if memo is not None and memo[0] is children and memo[1] == len(children):
        return memo[2]
    layout: tuple[list[tuple[Any, int]], dict[int, bool]] | None
    try:
        kids = [node.get_child_node_by_idx(i) for i in range(node.get_child_count())]
    except EngineError:  # stock raises it from inside its loop: let stock raise it there
        layout = None
    else:
        layout = ([(c, 1 if isinstance(c, composite_if) else 2 if isinstance(c, element_if) else 0) for c in kids],
                  {})
    node._carrierfeeds_layout = (children, len(children), layout)
    return layout


def _segment_is_valid_errors_with(stock: Callable[..., tuple[bool, list[Any]]]) -> Callable[..., Any]:
    import pyx12.map_if._segment as segment_module
    from pyx12.map_if._composite import composite_if
    from pyx12.map_if._element import element_if

    def is_valid_errors(self: Any, seg_data: Any) -> tuple[bool, list[Any]]:
        """``segment_if.is_valid_errors``: stock's loop over the children, run from a per-node layout.

        Each present element or composite is checked by its own node's ``is_valid_errors`` with the
        arguments stock gives it (DTP03's format from DTP02, 1251's type list from 1250's codes), in
        stock's order. The missing trailing ones depend only on the map (their usage), so whether
        they all pass is remembered per node and element count; when some do not, they run as in
        stock. Stock runs the whole segment when it has more elements than the map (an error), when
        a composite has more components than its node (an error), or when the layout cannot be made.
        Nothing here touches an error handler, so handing over to stock part way is exact.
        """
        layout = _segment_layout(self, composite_if, element_if)
        elements = seg_data.elements
        count = len(elements)
        if layout is None or count > len(layout[0]):
            return stock(self, seg_data)
        kids = layout[0]
        valid = True
        errors: list[Any] = []
        dtype: list[str | None] = []
        type_list: list[str | None] = []
        is_dtp = seg_data.seg_id == "DTP"
        for i in range(count):
            child, kind = kids[i]
            if kind == 1:
                comp_data = elements[i]
                if len(comp_data) > child.get_child_count() and child.usage != "N":
                    return stock(self, seg_data)
                ok, found = child.is_valid_errors(comp_data)
            elif kind == 2:
                if i == 1 and is_dtp:
                    qualifier = elements[1].format()
                    if qualifier in ("RD8", "D8", "D6", "DT", "TM"):
                        dtype = [qualifier]
                data_ele = child.data_ele
                if data_ele == "1250":
                    type_list.extend(child.valid_codes)
                if i == 2 and is_dtp:
                    ok, found = child.is_valid_errors(elements[i], dtype)
                elif data_ele == "1251" and len(type_list) > 0:
                    ok, found = child.is_valid_errors(elements[i], type_list)
                else:
                    ok, found = child.is_valid_errors(elements[i])
            else:
                continue
            valid &= ok
            errors += found
        clean = layout[1].get(count)
        if clean is None or not clean:
            trailing_ok = True
            for i in range(count, len(kids)):
                child, kind = kids[i]
                if kind:
                    ok, found = child.is_valid_errors(None)
                    trailing_ok = trailing_ok and ok and not found
                    valid &= ok
                    errors += found
            layout[1][count] = trailing_ok
        for syn in self.syntax:
            if not segment_module.is_syntax_valid(seg_data, syn)[0]:
                return stock(self, seg_data)
        return valid, errors

    return is_valid_errors


# ----------------------------------------------------------------------------------------- install
_lock = threading.Lock()
_stock: dict[str, Any] = {}


def _source_digest(obj: Any) -> str:
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()


def _targets() -> dict[str, Any]:
    import pyx12.map_if._element
    import pyx12.map_if._loop
    import pyx12.map_if._segment
    import pyx12.map_walker
    import pyx12.nodeCounter
    import pyx12.path
    import pyx12.segment
    import pyx12.validation

    return {"pyx12.map_walker.walk_tree": pyx12.map_walker.walk_tree,
            "pyx12.nodeCounter.NodeCounter": pyx12.nodeCounter.NodeCounter,
            "pyx12.path.X12Path": pyx12.path.X12Path,
            "pyx12.segment.Segment": pyx12.segment.Segment,
            "pyx12.map_if._segment.segment_if": pyx12.map_if._segment.segment_if,
            # Once installed, the module attribute is ours: the stock function is the one to check.
            "pyx12.validation.contains_control_character": _stock.get(
                "contains_control_character", pyx12.validation.contains_control_character),
            "pyx12.map_if._loop.loop_if": pyx12.map_if._loop.loop_if,
            "pyx12.map_if._element.element_if": pyx12.map_if._element.element_if,
            "pyx12.segment.Composite": pyx12.segment.Composite,
            "pyx12.segment.Element": pyx12.segment.Element}


def refusal() -> str | None:
    """Why :func:`install` would not patch this pyx12 (version or source not the one written for), or None."""
    import pyx12

    version = getattr(pyx12, "__version__", None)
    if version != PYX12_VERSION:
        return f"pyx12 {version} is not {PYX12_VERSION}"
    for name, obj in _targets().items():
        if _source_digest(obj) != _STOCK_SOURCES[name]:
            return f"{name} is not pyx12 {PYX12_VERSION}'s"
    return None


def enabled() -> bool:
    """Whether :data:`SPEEDUPS_ENV` allows the speedups (the default)."""
    return os.environ.get(SPEEDUPS_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def installed() -> bool:
    return bool(_stock)


def install() -> bool:
    """Install the speedups in this process (idempotent); False, pyx12 stock, if switched off or refused."""
    if not enabled():
        return False
    with _lock:
        if _stock:
            return True
        why = refusal()
        if why is not None:
            log.warning("pyx12 speedups not installed: %s; pyx12 runs stock", why)
            return False
        import pyx12.map_if._element
        import pyx12.map_if._loop
        import pyx12.map_if._segment
        import pyx12.map_walker
        import pyx12.segment
        import pyx12.validation

        segment_if = pyx12.map_if._segment.segment_if
        loop_if, element_if = pyx12.map_if._loop.loop_if, pyx12.map_if._element.element_if
        walk_tree = pyx12.map_walker.walk_tree
        _stock.update(NodeCounter=pyx12.map_walker.NodeCounter,
                      _parse_refdes=pyx12.segment.Segment._parse_refdes, get=pyx12.segment.Segment.get,
                      get_child_node_by_idx=segment_if.get_child_node_by_idx, is_match=segment_if.is_match,
                      contains_control_character=pyx12.validation.contains_control_character,
                      _scan_loop_at_position=walk_tree._scan_loop_at_position, __len__=loop_if.__len__,
                      get_first_node=loop_if.get_first_node, childIterator=loop_if.childIterator,
                      element_is_valid_errors=element_if.is_valid_errors,
                      segment_is_valid_errors=segment_if.is_valid_errors)
        pyx12.map_walker.NodeCounter = IndexedNodeCounter
        pyx12.segment.Segment._parse_refdes = _parse_refdes
        pyx12.segment.Segment.get = _get
        segment_if.get_child_node_by_idx = _child_by_idx_with(_stock["get_child_node_by_idx"])
        segment_if.is_match = _is_match_with(segment_if._resolve_unique_key_field)
        pyx12.validation.contains_control_character = _contains_control_character_with(
            _stock["contains_control_character"])
        walk_tree._scan_loop_at_position = _scan_loop_at_position
        loop_if.__len__ = _loop_len
        loop_if.get_first_node = _loop_first_node
        loop_if.childIterator = _loop_children
        element_if.is_valid_errors = _element_is_valid_errors_with(_stock["element_is_valid_errors"])
        segment_if.is_valid_errors = _segment_is_valid_errors_with(_stock["segment_is_valid_errors"])
        log.info("pyx12 speedups installed (pyx12 %s)", PYX12_VERSION)
        return True


def apply() -> bool:
    """What the adapter calls before each pyx12 run: :func:`install` if :data:`SPEEDUPS_ENV` allows,
    else :func:`uninstall`, so the switch holds for every run, not only a process's first. True if
    the speedups are in place."""
    if enabled():
        return install()
    uninstall()
    return False


def uninstall() -> None:
    """Put pyx12's own internals back (for tests and comparisons in one process)."""
    with _lock:
        if not _stock:
            return
        import pyx12.map_if._element
        import pyx12.map_if._loop
        import pyx12.map_if._segment
        import pyx12.map_walker
        import pyx12.segment
        import pyx12.validation

        pyx12.map_walker.NodeCounter = _stock["NodeCounter"]
        pyx12.segment.Segment._parse_refdes = _stock["_parse_refdes"]
        pyx12.segment.Segment.get = _stock["get"]
        pyx12.map_if._segment.segment_if.get_child_node_by_idx = _stock["get_child_node_by_idx"]
        pyx12.map_if._segment.segment_if.is_match = _stock["is_match"]
        pyx12.validation.contains_control_character = _stock["contains_control_character"]
        pyx12.map_walker.walk_tree._scan_loop_at_position = _stock["_scan_loop_at_position"]
        loop_if = pyx12.map_if._loop.loop_if
        loop_if.__len__ = _stock["__len__"]
        loop_if.get_first_node = _stock["get_first_node"]
        loop_if.childIterator = _stock["childIterator"]
        pyx12.map_if._element.element_if.is_valid_errors = _stock["element_is_valid_errors"]
        pyx12.map_if._segment.segment_if.is_valid_errors = _stock["segment_is_valid_errors"]
        _stock.clear()


__all__ = ["PYX12_VERSION", "SPEEDUPS_ENV", "IndexedNodeCounter", "apply", "enabled", "install", "installed", "refusal",
           "uninstall"]
