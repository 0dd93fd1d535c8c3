"""The pyx12 speedups oracle's child: pyx12's raw outputs for each file named, stock or patched.

    python tests/x12/pyx12_oracle_child.py [--sabotage KIND] <file>...

Whether pyx12 runs stock or patched is the adapter's own switch (CARRIERFEEDS_PYX12_SPEEDUPS in this
process's environment, through ``pyx12_speedups.apply``); the output says which it was. For each
file: pyx12's return value, the exception it raised if it gave up, its JSON error report, its 999 (the
ISA/GS/GE/IEA dates, times and control numbers pyx12 makes up masked), its HTML error report (its clock
time masked), its simple XML (the loop each segment was placed in) and, per segment, the map node it
matched and the running validity, plus what pyx12 logged. One JSON object on stdout. ``--sabotage
KIND`` swaps in one plausibly broken speedup (:data:`SABOTAGES`), so a test can check that the oracle's
corpus would notice it. Synthetic files only.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from typing import Any

#: Elements pyx12 fills from the clock or a random number when it writes its 999.
_MADE_UP = {"ISA": (9, 10, 13), "GS": (4, 5, 6), "GE": (2,), "IEA": (2,)}


def _masked_999(text: str) -> str:
    lines = []
    for line in text.split("~"):
        parts = line.split("*")
        for pos in _MADE_UP.get(parts[0].strip(), ()):
            if pos < len(parts):
                parts[pos] = "#"
        lines.append("*".join(parts))
    return "~".join(lines)


#: The clock time pyx12's HTML report opens with (time.strftime("%m/%d/%Y %H:%M:%S")).
_HTML_CLOCK = re.compile(r"\d\d/\d\d/\d{4} \d\d:\d\d:\d\d")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def _outputs(path: str) -> dict[str, Any]:
    import pyx12.params
    import pyx12.x12n_document

    ack, html, xml, report = io.StringIO(), io.StringIO(), io.StringIO(), io.StringIO()
    walked: list[list[Any]] = []

    def seen(seg: Any, src: Any, node: Any, valid: bool) -> None:
        walked.append([seg.get_seg_id(), src.get_cur_line(), node.get_path() if node is not None else None, valid])

    records = _Records()
    logger = logging.getLogger("pyx12")
    logger.addHandler(records)
    ok: bool | None = None
    raised: str | None = None
    try:
        ok = pyx12.x12n_document.x12n_document(param=pyx12.params.params(), src_file=path, fd_997=ack,
                                               fd_html=html, fd_xmldoc=xml, fd_json=report, callback=seen)
    except Exception as exc:  # pyx12 gives up on some broken files: how it does is part of its verdict
        raised = f"{type(exc).__name__}: {exc}"
    finally:
        logger.removeHandler(records)
    return {"ok": ok, "raised": raised, "json": report.getvalue(), "ack_999": _masked_999(ack.getvalue()),
            "html": _HTML_CLOCK.sub("#", html.getvalue(), count=1),
            "xml": xml.getvalue(), "walked": walked, "log": records.lines}


def _sabotage(kind: str) -> None:
    """Break one replacement the way a plausible bug would (on top of the installed speedups)."""
    import pyx12.map_if._composite
    import pyx12.map_if._element
    import pyx12.map_if._loop
    import pyx12.map_if._segment
    import pyx12.map_walker

    from carrierfeeds.x12 import pyx12_speedups as fast

    loop_if = pyx12.map_if._loop.loop_if
    element_if = pyx12.map_if._element.element_if
    segment_if = pyx12.map_if._segment.segment_if
    element_stock = fast._stock["element_is_valid_errors"]
    segment_stock = fast._stock["segment_is_valid_errors"]
    if kind == "counter":  # a loop start never resets the counts below it

        class NeverReset(fast.IndexedNodeCounter):
            def reset_to_node(self, xpath: Any) -> None:
                return None

        pyx12.map_walker.NodeCounter = NeverReset
    elif kind == "walker-skips-own-position":  # ">" for ">=": a repeat at the same position is not found
        fast._keys_from = lambda node, pos: tuple(a for a in fast._sorted_keys(node) if a > pos)
    elif kind == "loop-first-node-last":  # max for min
        loop_if.get_first_node = lambda self: self.pos_map[max(self.pos_map)][0] if self.pos_map else None
    elif kind == "loop-children-skip-last":  # an off-by-one: the last position's children never met
        loop_if.childIterator = lambda self: (c for k in fast._sorted_keys(self)[:-1] for c in self.pos_map[k])
    elif kind == "loop-len-segments-only":  # counts segment children only, not loops
        loop_if.__len__ = lambda self: sum(c.is_segment() for v in self.pos_map.values() for c in v)
    elif kind == "element-skips-codes":  # the code list check forgotten
        checked = fast._element_is_valid_errors_with(element_stock)

        def no_codes(self: Any, elem: Any, type_list: Any = None) -> Any:
            codes, external = self._valid_codes_set, self.external_codes
            self._valid_codes_set, self.external_codes = frozenset(), None
            try:
                return checked(self, elem, type_list)
            finally:
                self._valid_codes_set, self.external_codes = codes, external

        element_if.is_valid_errors = no_codes
    elif kind == "element-missing-always-passes":  # a missing element taken as fine whatever its usage
        checked = fast._element_is_valid_errors_with(element_stock)
        element_if.is_valid_errors = lambda self, elem, type_list=None: (
            (True, []) if elem is None else checked(self, elem, type_list))
    elif kind == "element-ignores-type-list":  # DTP03's and 1251's type list not checked
        checked = fast._element_is_valid_errors_with(element_stock)
        element_if.is_valid_errors = lambda self, elem, type_list=None: checked(self, elem, None)
    elif kind == "segment-trailing-never-checked":  # missing trailing elements taken as fine
        checked = fast._segment_is_valid_errors_with(segment_stock)

        def no_trailing(self: Any, seg_data: Any) -> Any:
            layout = fast._segment_layout(self, pyx12.map_if._composite.composite_if, element_if)
            if layout is not None:
                layout[1].update({n: True for n in range(len(layout[0]) + 1)})
            return checked(self, seg_data)

        segment_if.is_valid_errors = no_trailing
    elif kind == "segment-syntax-skipped":  # the segment's syntax rules (P, R, C, L, E) not read
        checked = fast._segment_is_valid_errors_with(segment_stock)

        def no_syntax(self: Any, seg_data: Any) -> Any:
            syntax, self.syntax = self.syntax, []
            try:
                return checked(self, seg_data)
            finally:
                self.syntax = syntax

        segment_if.is_valid_errors = no_syntax
    else:
        raise SystemExit(f"unknown sabotage {kind}")


#: Every sabotage :func:`_sabotage` knows, one per replacement (or per check inside one).
SABOTAGES = ("counter", "walker-skips-own-position", "loop-first-node-last", "loop-children-skip-last",
             "loop-len-segments-only", "element-skips-codes", "element-missing-always-passes",
             "element-ignores-type-list", "segment-trailing-never-checked", "segment-syntax-skipped")


def main(args: list[str]) -> int:
    from carrierfeeds.x12 import pyx12_speedups

    sabotage = args[1] if args[:1] == ["--sabotage"] else None
    paths = args[2:] if sabotage else args
    installed = pyx12_speedups.apply()
    if sabotage:
        assert installed, "a sabotage breaks the installed speedups"
        _sabotage(sabotage)
    logging.getLogger("pyx12").setLevel(logging.DEBUG)
    out = {"installed": installed, "files": {p: _outputs(p) for p in paths}}
    sys.stdout.write(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
