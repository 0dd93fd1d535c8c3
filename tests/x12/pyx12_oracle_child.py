"""The pyx12 speedups oracle's child: pyx12's raw outputs for each file named, stock or patched.

    python tests/x12/pyx12_oracle_child.py [--sabotage] <file>...

Whether pyx12 runs stock or patched is the adapter's own switch (CARRIERFEEDS_PYX12_SPEEDUPS in this
process's environment, through ``pyx12_speedups.apply``); the output says which it was. For each
file: pyx12's return value, the exception it raised if it gave up, its JSON error report, its 999 (the
ISA/GS/GE/IEA dates, times and control numbers pyx12 makes up masked), its HTML error report (its clock
time masked), its simple XML (the loop each segment was placed in) and, per segment, the map node it
matched and the running validity, plus what pyx12 logged. One JSON object on stdout. ``--sabotage``
swaps in a counter that never resets (a broken speedup), so a test can check that the oracle's corpus
would notice one. Synthetic files only.
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


def main(args: list[str]) -> int:
    from carrierfeeds.x12 import pyx12_speedups

    sabotage = args[:1] == ["--sabotage"]
    paths = args[1:] if sabotage else args
    installed = pyx12_speedups.apply()
    if sabotage:
        import pyx12.map_walker

        class NeverReset(pyx12_speedups.IndexedNodeCounter):
            def reset_to_node(self, xpath: Any) -> None:
                return None

        pyx12.map_walker.NodeCounter = NeverReset
    logging.getLogger("pyx12").setLevel(logging.DEBUG)
    out = {"installed": installed, "files": {p: _outputs(p) for p in paths}}
    sys.stdout.write(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
