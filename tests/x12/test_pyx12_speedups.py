"""pyx12_speedups piece by piece against the pyx12 functions they replace (the whole verdict: the oracle,
test_pyx12_speedups_oracle.py), and the guards: exact pyx12 version and source, the switch, uninstall."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
import pyx12
import pyx12.map_if
import pyx12.map_if._composite
import pyx12.map_if._element
import pyx12.map_if._loop
import pyx12.map_if._segment
import pyx12.map_walker
import pyx12.nodeCounter
import pyx12.params
import pyx12.path
import pyx12.segment
import pyx12.validation
import x12_helpers as h
from hypothesis import given, settings
from hypothesis import strategies as st
from pyx12.errors import EngineError, X12PathError

from carrierfeeds.x12 import pyx12_speedups
from carrierfeeds.x12.pyx12_speedups import SPEEDUPS_ENV, IndexedNodeCounter

STOCK_COUNTER = pyx12.nodeCounter.NodeCounter
STOCK_PARSE = pyx12.segment.Segment._parse_refdes
STOCK_GET = pyx12.segment.Segment.get
STOCK_CHILD = pyx12.map_if._segment.segment_if.get_child_node_by_idx
STOCK_IS_MATCH = pyx12.map_if._segment.segment_if.is_match
STOCK_CONTROL = pyx12.validation.contains_control_character
STOCK_SCAN = pyx12.map_walker.walk_tree._scan_loop_at_position
STOCK_LEN = pyx12.map_if._loop.loop_if.__len__
STOCK_FIRST = pyx12.map_if._loop.loop_if.get_first_node
STOCK_CHILDREN = pyx12.map_if._loop.loop_if.childIterator
STOCK_ELEMENT = pyx12.map_if._element.element_if.is_valid_errors
STOCK_SEGMENT = pyx12.map_if._segment.segment_if.is_valid_errors
MAPS = ("834.5010.X220.A1.xml", "x12.control.00501.xml")


@pytest.fixture(autouse=True)
def stock_after() -> Iterator[None]:
    pyx12_speedups.uninstall()
    yield
    pyx12_speedups.uninstall()
    assert pyx12.map_walker.NodeCounter is STOCK_COUNTER and pyx12.segment.Segment.get is STOCK_GET


#: Paths shaped like the walker's (loops, segments) and odd ones: relative, trailing "/", an element
#: index 0 that formats like no index (equal hash, unequal paths), qualifiers, sub-elements.
PATHS = ["/ISA_LOOP", "/ISA_LOOP/ISA", "/ISA_LOOP/GS_LOOP", "/ISA_LOOP/GS_LOOP/GS", "/ISA_LOOP/GS_LOOP/ST_LOOP",
         "/ISA_LOOP/GS_LOOP/ST_LOOP/ST", "/ISA_LOOP/GS_LOOP/ST_LOOP/DETAIL", "/ISA_LOOP/GS_LOOP/ST_LOOP/DETAIL/2000",
         "/ISA_LOOP/GS_LOOP/ST_LOOP/DETAIL/2000/INS", "/ISA_LOOP/GS_LOOP/ST_LOOP/DETAIL/2000/REF",
         "/ISA_LOOP/GS_LOOP/ST_LOOP/DETAIL/2000/2100A", "/ISA_LOOP/GS_LOOP/ST_LOOP/DETAIL/2000/2100A/NM1",
         "/ISA_LOOP/GS_LOOP/ST_LOOP/DETAIL/2000/2300", "/ISA_LOOP/GS_LOOP/ST_LOOP/DETAIL/2000/2300/HD",
         "/ISA_LOOP/GS_LOOP/ST_LOOP/DETAIL/2000/2300/DTP", "/ISA_LOOP/GS_LOOP/ST_LOOP/DETAIL/2000/2300/",
         "/ISA_LOOP/GS_LOOP/ST_LOOP/DETAIL/2000/INS00", "/ISA_LOOP/GS_LOOP/ST_LOOP/DETAIL/2000/INS03",
         "/ISA_LOOP/GS_LOOP/ST_LOOP/DETAIL/2000/REF[0F]02", "/ISA_LOOP/GS_LOOP/ST_LOOP/DETAIL/2000/HD05-1",
         "/ISA_LOOP/GS_LOOP/ST_LOOP/DETAIL/2000/HD05-0", "/2000", "/2000/INS", "2000", "2000/INS", "INS", "INS01",
         "", "/", "DETAIL/2000/2300", "/ISA_LOOP/GS_LOOP/ST_LOOP/HEADER", "/ISA_LOOP/GS_LOOP/ST_LOOP/HEADER/BGN"]


def _as_given(path: str, as_object: bool) -> str | pyx12.path.X12Path:
    return pyx12.path.X12Path(path) if as_object else path


OPS = st.lists(st.tuples(st.sampled_from(["increment", "reset_to_node", "setCount", "get_count"]),
                         st.sampled_from(PATHS), st.booleans(), st.integers(0, 5)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(initial=st.dictionaries(st.sampled_from(PATHS), st.integers(0, 3), max_size=5), ops=OPS)
def test_the_indexed_counter_counts_and_resets_as_pyx12s(initial: dict[str, int], ops: list[Any]) -> None:
    stock, fast = STOCK_COUNTER(initial), IndexedNodeCounter(initial)
    for op, path, as_object, n in ops:
        args: tuple[Any, ...] = (_as_given(path, as_object), n) if op == "setCount" else (_as_given(path, as_object),)
        assert getattr(fast, op)(*args) == getattr(stock, op)(*args)
        assert [(repr(k), k.seg_id, k.ele_idx, v) for k, v in fast.getState().items()] == [
            (repr(k), k.seg_id, k.ele_idx, v) for k, v in stock.getState().items()]
        for other in PATHS:
            assert fast.get_count(other) == stock.get_count(other), (op, path, other)


def test_the_indexed_counter_keeps_paths_that_only_format_alike_apart() -> None:
    """X12Path("INS00") formats as "INS" but is not equal to X12Path("INS"): two counts in stock, two here."""
    fast = IndexedNodeCounter()
    fast.increment("/A/INS")
    fast.increment(pyx12.path.X12Path("/A/INS00"))
    fast.increment("/A/INS00")
    assert fast.get_count("/A/INS") == 1 and fast.get_count("/A/INS00") == 2
    fast.reset_to_node("/A")
    assert fast.get_count("/A/INS") == 0 and fast.get_count("/A/INS00") == 0 and not fast.getState()


def test_the_indexed_counter_raises_on_a_bad_path_as_pyx12s() -> None:
    for make in (STOCK_COUNTER, IndexedNodeCounter):
        with pytest.raises(X12PathError):
            make().increment("/A/[0F]02")


REFDES = ["INS03", "03", "03-1", "HD05-2", "NM1", "01", "REF[0F]02", "INS", "", "INS00", "DMG99-9"]


class _Seg:
    def __init__(self, seg_id: str | None) -> None:
        self.seg_id = seg_id


@pytest.mark.parametrize("ref_des", [*REFDES, "[0F]02", "/A/INS03", "NM103"])
@pytest.mark.parametrize("seg_id", ["INS", "HD", "NM1", "REF", None])
def test_reference_designators_parse_as_pyx12s(ref_des: str, seg_id: str | None) -> None:
    seg = _Seg(seg_id)

    def outcome(parse: Any) -> Any:
        try:
            return parse(seg, ref_des)
        except (EngineError, X12PathError) as exc:
            return type(exc).__name__, str(exc)

    want = outcome(STOCK_PARSE)
    assert outcome(pyx12_speedups._parse_refdes) == want
    assert outcome(pyx12_speedups._parse_refdes) == want  # and again, from the memo


SEGMENTS = ["INS*Y*18*030*XN*A***FT", "HD*030**HLT*PPO GOLD*FAM:X:Y", "NM1*IL*1*RIVERA*ANA*L***34*900112222",
            "DMG*D8*19840309*F", "REF*0F", "N3", "AMT*C1*10.5", "HLH*T*:::*120"]


@pytest.mark.parametrize("text", SEGMENTS)
def test_elements_and_components_are_read_as_pyx12_reads_them(text: str) -> None:
    segment = pyx12.segment.Segment(text + "~", "~", "*", ":")
    seg_id = text.split("*")[0]
    refs = [*REFDES, "[0F]02", "/A/INS03", "NM103", "00", "00-0"]
    refs += [f"{ref}{n:02d}{sub}" for ref in ("", seg_id) for n in range(0, 12) for sub in ("", "-1", "-2", "-3", "-4")]

    def outcome(get: Any, ref_des: str) -> Any:
        try:
            found = get(segment, ref_des)
        except (EngineError, X12PathError, IndexError) as exc:
            return type(exc).__name__, str(exc)
        return None if found is None else (type(found).__name__, found.format())

    for ref_des in refs:
        assert outcome(pyx12_speedups._get, ref_des) == outcome(STOCK_GET, ref_des), ref_des


def test_segment_nodes_find_their_children_as_pyx12_finds_them() -> None:
    root = pyx12.map_if.load_map_file("834.5010.X220.A1.xml", pyx12.params.params())
    fast = pyx12_speedups._child_by_idx_with(STOCK_CHILD)
    segments = [n for n in root.loop_segment_iterator() if isinstance(n, pyx12.map_if._segment.segment_if)]
    assert len(segments) > 50
    for node in segments:
        for idx in range(len(node.children) + 2):
            for _ in range(2):  # and again, from the memo
                assert fast(node, idx) is STOCK_CHILD(node, idx)
    node = segments[0]
    node.children = node.children[:1]  # a replaced list is a new memo
    assert fast(node, 1) is None and fast(node, 0) is node.children[0]


def test_segment_nodes_match_data_segments_as_pyx12_matches_them() -> None:
    """Every segment node of the 834 and control maps against every distinct segment id and qualifier
    in the golden files (and odd ones), twice each (the second from the memo)."""
    fast = pyx12_speedups._is_match_with(pyx12.map_if._segment.segment_if._resolve_unique_key_field)
    lines = {line for path in h.FIXTURES.glob("*.834") for line in path.read_text().split("~\n") if line}
    texts = sorted({"*".join(line.split("*")[:3]) for line in lines} | {"HD", "REF*", "DTP*999*D8", "N1*ZZ*X"})
    segments = [pyx12.segment.Segment(text + "~", "~", "*", ":") for text in texts]
    matched = 0
    for name in ("834.5010.X220.A1.xml", "x12.control.00501.xml"):
        root = pyx12.map_if.load_map_file(name, pyx12.params.params())
        for node in root.loop_segment_iterator():
            if isinstance(node, pyx12.map_if._segment.segment_if):
                for seg in segments:
                    want = STOCK_IS_MATCH(node, seg)
                    assert fast(node, seg) is want and fast(node, seg) is want, (node.get_path(), seg.format())
                    matched += want
    assert matched > 100


def _nodes(kind: type) -> list[Any]:
    """Every node of ``kind`` in the 834's map and the control map, freshly loaded."""
    out: list[Any] = []

    def walk(node: Any) -> None:
        if isinstance(node, kind):
            out.append(node)
        children = [c for k in sorted(node.pos_map) for c in node.pos_map[k]] if hasattr(node, "pos_map") else \
            list(getattr(node, "children", None) or [])
        for child in children:
            walk(child)

    for name in MAPS:
        walk(pyx12.map_if.load_map_file(name, pyx12.params.params()))
    return out


def test_loops_count_find_and_list_their_children_as_pyx12s() -> None:
    loops = _nodes(pyx12.map_if._loop.loop_if)
    roots = _nodes(pyx12.map_if.map_if)
    assert len(loops) > 25 and len(roots) == 2
    for node in loops + roots:
        keys = sorted(node.pos_map)
        for pos in range(keys[0] - 2, keys[-1] + 3):
            for _ in range(2):  # and again, from the memo
                assert list(pyx12_speedups._keys_from(node, pos)) == [a for a in keys if a >= pos]
    for node in loops:
        for _ in range(2):
            assert pyx12_speedups._loop_len(node) == STOCK_LEN(node)
            assert pyx12_speedups._loop_first_node(node) is STOCK_FIRST(node)
            fast, stock = list(pyx12_speedups._loop_children(node)), list(STOCK_CHILDREN(node))
            assert len(fast) == len(stock) and all(a is b for a, b in zip(fast, stock, strict=True))
    node = loops[-1]
    node.pos_map = {}  # a replaced dict is a new memo
    assert pyx12_speedups._loop_len(node) == STOCK_LEN(node) == 0
    assert pyx12_speedups._loop_first_node(node) is STOCK_FIRST(node) is None
    assert list(pyx12_speedups._loop_children(node)) == [] and pyx12_speedups._keys_from(node, 0) == ()


def _errors(outcome: Any, node: Any = None) -> Any:
    """An is_valid_errors outcome as comparable values (errors by every field, map node by identity)."""
    ok, errors = outcome
    return ok, [(type(e).__name__, e.err_cde, e.err_str, e.err_val, e.refdes,
                 None if e.map_node is None else e.map_node is node or id(e.map_node)) for e in errors]


def _outcome(check: Any, *args: Any, node: Any = None) -> Any:
    try:
        return _errors(check(*args), node)
    except Exception as exc:  # stock's exception is part of its answer
        return type(exc).__name__, str(exc)


#: Element values of every shape the checks tell apart: codes, dates and ranges, times, numbers with
#: signs and points, lengths at and past the bounds, trailing spaces, control and lower-case characters.
VALUES = ["", " ", "A", "Y", "N", "030", "021", "ZZZ", "18", "01", "D8", "RD8", "XN", "FT", "HLT", "FAM", "IL",
          "34", "1", "20250101", "20251301", "2025011", "20250101-20251231", "20250101-2025", "0730", "2975",
          "RIVERA", "RIVERA ", "RIV\x07ERA", "Rivera", "R" * 80, "12.5", "-12", "1-2", "0", "00501", "T",
          "SHP-0042", "A B", "ÄB", "a|b", "9" * 16, "616021234", "US", "  ", "1.", ".5"]
TYPE_LISTS: list[Any] = [None, [], ["D8"], ["RD8"], ["TM"], [None, "D8", "TM"], ["DT", "D6"]]


def test_element_nodes_check_values_as_pyx12s() -> None:
    """Every element node of both maps, every value shape, every type list, as an element or a one-part
    component, missing, and as a composite of two: the same (ok, errors), or the same exception."""
    fast = pyx12_speedups._element_is_valid_errors_with(STOCK_ELEMENT)
    nodes = _nodes(pyx12.map_if._element.element_if)
    assert len(nodes) > 500
    for node in nodes:
        given: list[Any] = [None, pyx12.segment.Composite("A:B", ":")]
        given += [pyx12.segment.Composite(v, ":") for v in VALUES] + [pyx12.segment.Element(v) for v in VALUES[:8]]
        for elem in given:
            for type_list in TYPE_LISTS:
                want = _outcome(STOCK_ELEMENT, node, elem, type_list, node=node)
                assert _outcome(fast, node, elem, type_list, node=node) == want, (node.refdes, elem, type_list)


def test_an_element_with_a_regular_expression_checks_it_as_pyx12s() -> None:
    """pyx12's maps for an 834 carry no element regex: one set here, on every element node, is checked too."""
    import re

    fast = pyx12_speedups._element_is_valid_errors_with(STOCK_ELEMENT)
    failed = 0
    for node in _nodes(pyx12.map_if._element.element_if)[:200]:
        node.res, node.rec = "^[A-Z]+$", re.compile("^[A-Z]+$", re.S)
        for value in VALUES:
            elem = pyx12.segment.Composite(value, ":")
            want = _outcome(STOCK_ELEMENT, node, elem, None, node=node)
            assert _outcome(fast, node, elem, None, node=node) == want, (node.refdes, value)
            failed += any(e[1] == "7" and "regular expression" in e[2] for e in want[1])
    assert failed > 100


SEGMENT_TEXTS = ["DTP*348*RD8*20250101-20251231", "DTP*348*D8*2025", "DTP*348*TM*0730", "DTP*348*ZZ*20250101",
                 "DTP*348", "DTP", "HD*030**HLT*PPO*FAM:X", "HD*030**HLT:X*PPO", "N4*PEORIA*IL*616021234*US*CY*X*Y*Z",
                 "NM1*IL*1", "NM1*IL*1*RIVERA*ANA***34", "NM1*IL*1*RIVERA*ANA*L***34*900112222*XX",
                 "REF*0F", "REF**X", "INS*Y*18*030*XN*A***FT*N*N*N*N*N*N*N*N*N*N", "AMT*C1*10.5", "AMT*C1*1X",
                 "ISA*00*          *00*          *ZZ*A*ZZ*B*261121*0730*^*00501*000000042*0*T*:",
                 "DMG*D8*19840309*F**A:B:C:D:E", "DMG*D8*19840309*F**RET:2135-2:RD", "DMG*D8*19840309*F**:X",
                 "INS*Y*18*030*XN*A*C:D:E:F:G:H", "INS*Y*18*030*XN*A*C:D", "REF*0F*X**A:B", "REF*0F*X**A"]


def test_segment_nodes_check_segments_as_pyx12s() -> None:
    """Every segment node of both maps against every golden line with its id (and odd ones: too many and
    too few elements, composites with too many parts, DTP formats, syntax rules broken), twice each."""
    fast = pyx12_speedups._segment_is_valid_errors_with(STOCK_SEGMENT)
    lines = {line for path in h.FIXTURES.glob("*.834") for line in path.read_text().split("~\n") if line}
    texts = sorted(lines | set(SEGMENT_TEXTS))
    by_id: dict[str, list[Any]] = {}
    for text in texts:
        seg = pyx12.segment.Segment(text + "~", "~", "*", "^" if text.startswith("ISA") else ":")
        by_id.setdefault(str(seg.seg_id), []).append(seg)
    checked = with_errors = 0
    for node in _nodes(pyx12.map_if._segment.segment_if):
        for seg in by_id.get(str(node.id), []):
            want = _outcome(STOCK_SEGMENT, node, seg)
            assert _outcome(fast, node, seg) == want and _outcome(fast, node, seg) == want, (node.get_path(), seg)
            checked += 1
            with_errors += bool(want[1])
    assert checked > 300 and with_errors > 50, (checked, with_errors)


CONTROL = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=12)


@settings(max_examples=500, deadline=None)
@given(text=CONTROL | st.text(max_size=12))
def test_control_characters_are_found_as_pyx12_finds_them(text: str) -> None:
    fast = pyx12_speedups._contains_control_character_with(STOCK_CONTROL)
    assert fast(text) == STOCK_CONTROL(text)


@pytest.mark.parametrize("code", range(0x80))
def test_every_ascii_character_alone_and_among_others(code: int) -> None:
    fast = pyx12_speedups._contains_control_character_with(STOCK_CONTROL)
    for text in (chr(code), f"AB{chr(code)}C\x1f", f"{chr(code)}\x01"):
        assert fast(text) == STOCK_CONTROL(text)


def test_install_replaces_and_uninstall_restores_pyx12s_own() -> None:
    assert pyx12_speedups.install() and pyx12_speedups.installed()
    assert pyx12.map_walker.NodeCounter is IndexedNodeCounter
    assert pyx12.segment.Segment._parse_refdes is pyx12_speedups._parse_refdes
    assert pyx12.segment.Segment.get is pyx12_speedups._get
    assert pyx12.map_if._segment.segment_if.get_child_node_by_idx is not STOCK_CHILD
    assert pyx12.map_if._segment.segment_if.is_match is not STOCK_IS_MATCH
    assert pyx12.validation.contains_control_character is not STOCK_CONTROL
    assert pyx12.map_walker.walk_tree._scan_loop_at_position is pyx12_speedups._scan_loop_at_position
    assert pyx12.map_if._loop.loop_if.__len__ is pyx12_speedups._loop_len
    assert pyx12.map_if._loop.loop_if.get_first_node is pyx12_speedups._loop_first_node
    assert pyx12.map_if._loop.loop_if.childIterator is pyx12_speedups._loop_children
    assert pyx12.map_if._element.element_if.is_valid_errors is not STOCK_ELEMENT
    assert pyx12.map_if._segment.segment_if.is_valid_errors is not STOCK_SEGMENT
    assert pyx12_speedups.install()  # idempotent
    assert pyx12_speedups.refusal() is None  # it checks pyx12's own code, not the replacements
    pyx12_speedups.uninstall()
    assert pyx12.map_walker.NodeCounter is STOCK_COUNTER
    assert pyx12.segment.Segment._parse_refdes is STOCK_PARSE
    assert pyx12.segment.Segment.get is STOCK_GET
    assert pyx12.map_if._segment.segment_if.get_child_node_by_idx is STOCK_CHILD
    assert pyx12.map_if._segment.segment_if.is_match is STOCK_IS_MATCH
    assert pyx12.validation.contains_control_character is STOCK_CONTROL
    assert pyx12.map_walker.walk_tree._scan_loop_at_position is STOCK_SCAN
    assert pyx12.map_if._loop.loop_if.__len__ is STOCK_LEN
    assert pyx12.map_if._loop.loop_if.get_first_node is STOCK_FIRST
    assert pyx12.map_if._loop.loop_if.childIterator is STOCK_CHILDREN
    assert pyx12.map_if._element.element_if.is_valid_errors is STOCK_ELEMENT
    assert pyx12.map_if._segment.segment_if.is_valid_errors is STOCK_SEGMENT


def test_the_switch_keeps_pyx12_stock_for_every_run(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pyx12_speedups.apply() and pyx12.map_walker.NodeCounter is IndexedNodeCounter
    monkeypatch.setenv(SPEEDUPS_ENV, "0")
    assert not pyx12_speedups.apply() and not pyx12_speedups.install()
    assert pyx12.map_walker.NodeCounter is STOCK_COUNTER
    monkeypatch.setenv(SPEEDUPS_ENV, "1")
    assert pyx12_speedups.apply() and pyx12.map_walker.NodeCounter is IndexedNodeCounter


def test_another_pyx12_version_is_left_stock(monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(pyx12, "__version__", "4.0.1")
    assert pyx12_speedups.refusal() == "pyx12 4.0.1 is not 4.0.0"
    assert not pyx12_speedups.install() and not pyx12_speedups.apply()
    assert pyx12.map_walker.NodeCounter is STOCK_COUNTER
    assert pyx12.segment.Segment._parse_refdes is STOCK_PARSE
    assert pyx12.segment.Segment.get is STOCK_GET
    assert pyx12.map_if._segment.segment_if.get_child_node_by_idx is STOCK_CHILD
    assert pyx12.validation.contains_control_character is STOCK_CONTROL
    assert pyx12.map_walker.walk_tree._scan_loop_at_position is STOCK_SCAN
    assert pyx12.map_if._loop.loop_if.__len__ is STOCK_LEN
    assert pyx12.map_if._element.element_if.is_valid_errors is STOCK_ELEMENT
    assert pyx12.map_if._segment.segment_if.is_valid_errors is STOCK_SEGMENT
    assert "pyx12 4.0.1 is not 4.0.0" in caplog.text


def test_a_pyx12_whose_replaced_code_differs_is_left_stock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same version string, different code (a local patch, a re-release): refused too."""

    def contains_control_character(str_val: str, charset: str = "B", icvn: str = "00401") -> tuple[bool, None]:
        return (False, None)

    monkeypatch.setattr(pyx12.validation, "contains_control_character", contains_control_character)
    assert pyx12_speedups.refusal() == "pyx12.validation.contains_control_character is not pyx12 4.0.0's"
    assert not pyx12_speedups.install()
    assert pyx12.map_walker.NodeCounter is STOCK_COUNTER


@pytest.mark.parametrize("switch", ["1", "0"])
def test_a_worker_installs_the_speedups_before_it_waits_for_a_file(monkeypatch: pytest.MonkeyPatch,
                                                                   switch: str) -> None:
    """Checked and installed while the worker waits (with its maps), not on the first file's clock."""
    from carrierfeeds.x12.pyx12_adapter import _serve

    monkeypatch.setenv(SPEEDUPS_ENV, switch)
    seen: list[bool] = []

    class Waiting:
        def readline(self, limit: int = -1) -> bytes:
            seen.append(pyx12_speedups.installed())
            return b""  # the end of its input: the worker exits

    assert _serve(Waiting(), io.StringIO()) == 0  # type: ignore[arg-type]
    assert seen == [switch == "1"]
