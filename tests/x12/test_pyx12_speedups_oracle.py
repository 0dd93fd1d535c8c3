"""The oracle for pyx12_speedups: stock and patched pyx12, each in a process of its own, give the same
verdict on every file of a corpus: the golden 834s, the certification packet's scenarios, a generated
file of hundreds of families and deliberately broken files. Same return value, JSON error report
(segment, element, codes, positions, messages), 999, HTML report, simple XML, matched map node per
segment and log lines. Synthetic data only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import x12_helpers as h

from carrierfeeds.x12.pyx12_speedups import SPEEDUPS_ENV

CHILD = Path(__file__).with_name("pyx12_oracle_child.py")
BASE = h.FIXTURES / "full-file-family.834"


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def _swap(old: bytes, new: bytes, count: int = 1) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        changed = data.replace(old, new, count)
        assert changed != data, old
        return changed
    return edit


def _drop(prefix: bytes, nth: int = 0) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        lines = _lines(data)
        at = [i for i, line in enumerate(lines) if line.startswith(prefix)][nth]
        return b"".join(lines[:at] + lines[at + 1:])
    return edit


def _move(prefix: bytes, before: bytes) -> Callable[[bytes], bytes]:
    """The first line starting with ``prefix`` moved to just before the first line starting with ``before``."""
    def edit(data: bytes) -> bytes:
        lines = _lines(data)
        line = lines.pop(next(i for i, x in enumerate(lines) if x.startswith(prefix)))
        at = next(i for i, x in enumerate(lines) if x.startswith(before))
        return b"".join([*lines[:at], line, *lines[at:]])
    return edit


def _repeat(prefix: bytes, times: int) -> Callable[[bytes], bytes]:
    """The first line starting with ``prefix`` (and the line after it, when that is its DTP) ``times`` times."""
    def edit(data: bytes) -> bytes:
        lines = _lines(data)
        at = next(i for i, x in enumerate(lines) if x.startswith(prefix))
        block = lines[at:at + 2] if lines[at + 1].startswith(b"DTP") else lines[at:at + 1]
        return b"".join(lines[:at] + block * times + lines[at + len(block):])
    return edit


#: Broken copies of BASE, by what is wrong: counts, codes, missing and extra segments, loop order,
#: repeats beyond a segment's or loop's maximum, element lengths and types, control characters.
BROKEN: dict[str, Callable[[bytes], bytes]] = {
    "se01-count-wrong": _swap(b"SE*60*", b"SE*61*"),
    "se02-control-mismatch": _swap(b"SE*60*0001", b"SE*60*0002"),
    "ge01-count-wrong": _swap(b"GE*1*42", b"GE*2*42"),
    "iea01-count-wrong": _swap(b"IEA*1*", b"IEA*3*"),
    "ins03-bad-maintenance-type": _swap(b"INS*Y*18*030*XN", b"INS*Y*18*ZZZ*XN"),
    "ins02-bad-relationship": _swap(b"INS*N*01*", b"INS*N*99*"),
    "hd03-life-and-add-lines": lambda d: _swap(b"HD*030**DEN*", b"HD*030**LIF*", 2)(d).replace(b"**DEN*", b"**ADD*"),
    "hd03-hsa-line": _swap(b"HD*030**HLT*HDHP", b"HD*030**HSA*HDHP"),
    "missing-ref0f": _drop(b"REF*0F*"),
    "missing-1000b-payer": _drop(b"N1*IN*"),
    "missing-1000a-sponsor": _drop(b"N1*P5*"),
    "missing-nm1-of-2100a": _drop(b"NM1*IL*", 1),
    "missing-se": _drop(b"SE*"),
    "missing-ge-and-iea": lambda d: _drop(b"IEA*")(_drop(b"GE*")(d)),
    "missing-bgn": _drop(b"BGN*"),
    "2300-before-2100a": _move(b"HD*030**HLT*PPO", b"NM1*IL*"),
    "payer-before-sponsor": _move(b"N1*IN*", b"N1*P5*"),
    "ref-before-bgn": _move(b"REF*38*", b"BGN*"),
    "dtp-before-hd": _move(b"DTP*348*", b"HD*"),
    "n3-twice": _repeat(b"N3*", 2),
    "two-nm1-il-in-one-member": _repeat(b"NM1*IL*", 2),
    "2300-beyond-99-repeats": _repeat(b"HD*030**HLT*PPO", 101),
    "dtp-348-beyond-max": lambda d: _swap(b"DTP*348*D8*20250101~\n", b"DTP*348*D8*20250101~\n" * 3)(d),
    "unknown-segment": _swap(b"DMG*D8*19840309*F~\n", b"DMG*D8*19840309*F~\nZZZ*1*2~\n"),
    "name-too-long": _swap(b"NM1*IL*1*RIVERA*TEO~", b"NM1*IL*1*RIVERA*TEO*" + b"Q" * 40 + b"~"),
    "last-name-too-long": _swap(b"*RIVERA*ANA*", b"*" + b"R" * 70 + b"*ANA*"),
    "empty-required-element": _swap(b"NM1*IL*1*RIVERA*ANA", b"NM1*IL**RIVERA*ANA"),
    "required-elements-cut-off": _swap(b"REF*0F*E1001~", b"REF*0F~"),
    "ins-cut-after-relationship": _swap(b"INS*N*01*030*XN*A~", b"INS*N*01~"),
    "bad-date": _swap(b"DMG*D8*19840309", b"DMG*D8*19841309"),
    "bad-date-format": _swap(b"DTP*348*D8*20250101", b"DTP*348*D8*2025011"),
    "bad-time-in-bgn": _swap(b"BGN*00*CF000000042*20261121*0730", b"BGN*00*CF000000042*20261121*2975"),
    "control-bel-in-name": _swap(b"*RIVERA*ANA*", b"*RIV\x07ERA*ANA*"),
    "control-soh-and-tab": _swap(b"*SPRINGFIELD*", b"*SPRING\x01FIE\tLD*"),
    "trailing-spaces": _swap(b"N4*SPRINGFIELD*", b"N4*SPRINGFIELD   *"),
    "too-many-elements": _swap(b"N4*PEORIA*IL*616021234", b"N4*PEORIA*IL*616021234*US*CY*X*Y*Z*W*V*U"),
    "not-used-element": _swap(b"REF*38*SHP-0042", b"REF*38*SHP-0042*NOTUSED"),
    "bad-id-code-in-dmg": _swap(b"DMG*D8*19840309*F", b"DMG*D8*19840309*Q"),
    "bad-gender-and-qualifier": _swap(b"DMG*D8*19831130*M", b"DMG*XX*19831130*Z"),
    "isa15-bad": _swap(b"*0*T*:~", b"*0*X*:~"),
    "composite-too-many-parts": _swap(b"HD*030**DEN*DENTAL STANDARD*FAM", b"HD*030**DEN*DENTAL STANDARD*FAM:X:Y"),
    "numeric-with-letters": _swap(b"SE*60*", b"SE*6X*"),
}


def _scenarios(folder: Path) -> list[Path]:
    """The certification packet's scenario 834s for the all-options mapping."""
    from carrierfeeds.certify.scenarios import build_scenarios
    from carrierfeeds.config import load_feed, load_mapping

    feed = load_feed(h.ROOT / "feeds" / "acme-sunrise-medical.yaml")
    feed = feed.model_copy(update={"authorization": feed.authorization.model_copy(
        update={"plans": (*feed.authorization.plans, "STD-CORE")})})
    mapping = load_mapping(h.ROOT / "tests" / "certify" / "sunrise-certify.yaml")
    out = []
    for scenario in build_scenarios(feed, mapping, seed=7, as_of=h.AS_OF).scenarios:
        out.append(folder / f"cert-{scenario.file_name}")
        out[-1].write_bytes(scenario.data)
    return out


def _generated(folder: Path, members: int) -> list[Path]:
    """A rendered 834 of ``members`` generated members, and the same with its middle families cut out
    (their INS loops gone, SE's count now wrong)."""
    from carrierfeeds.census.generate import generate_census
    from carrierfeeds.x12.render import render_834_bytes

    frame = generate_census(members, 23, as_of=h.AS_OF)
    frame["row_number"] = range(2, len(frame) + 2)
    data = render_834_bytes(h.enrollment(frame), h.header(), h.CONTROL)
    whole, cut = folder / f"generated-{members}.834", folder / f"broken-generated-{members}-cut.834"
    whole.write_bytes(data)
    lines = _lines(data)
    middle = len(lines) // 2
    cut.write_bytes(b"".join(lines[:middle - 200] + lines[middle + 200:]))
    return [whole, cut]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("oracle")
    files = sorted(h.FIXTURES.glob("*.834"))
    base = BASE.read_bytes()
    for name, edit in BROKEN.items():
        files.append(folder / f"broken-{name}.834")
        files[-1].write_bytes(edit(base))
    return files + _scenarios(folder) + _generated(folder, 400)


def _run(files: list[Path], *, speedups: bool, sabotage: str | None = None) -> dict[str, Any]:
    env = {**os.environ, SPEEDUPS_ENV: "1" if speedups else "0",
           "PYTHONPATH": os.pathsep.join([str(h.ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, str(CHILD), *(["--sabotage", sabotage] if sabotage else []), *map(str, files)]
    done = subprocess.run(argv, env=env, capture_output=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="module")
def stock(corpus: list[Path]) -> dict[str, Any]:
    return _run(corpus, speedups=False)


def test_patched_pyx12_gives_stocks_verdict_on_every_file(corpus: list[Path], stock: dict[str, Any]) -> None:
    patched = _run(corpus, speedups=True)
    assert stock["installed"] is False and patched["installed"] is True
    assert set(patched["files"]) == set(stock["files"]) == {str(p) for p in corpus}
    for name, want in stock["files"].items():
        got = patched["files"][name]
        for part in ("ok", "raised", "json", "ack_999", "html", "xml", "walked", "log"):
            assert got[part] == want[part], (Path(name).name, part)


def test_the_corpus_holds_good_and_rejected_files_and_every_error_kind(stock: dict[str, Any]) -> None:
    """The oracle means something only if pyx12 finds errors of every kind in the corpus."""
    verdicts = {Path(name).name: out for name, out in stock["files"].items()}
    assert all(v["ok"] for name, v in verdicts.items() if not name.startswith("broken-"))
    # pyx12 itself gives up (raises) on some broken files; the gate fails closed on that.
    assert {"broken-missing-bgn.834", "broken-too-many-elements.834"} == {
        name for name, v in verdicts.items() if v["raised"]}
    assert [n for n, v in verdicts.items() if n.startswith("broken-") and v["ok"] is not False] == [
        "broken-missing-bgn.834", "broken-too-many-elements.834"]
    codes: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "err_cde" in node:
                codes.add(str(node["err_cde"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for v in verdicts.values():
        if v["json"]:
            walk(json.loads(v["json"]))
    # Segment and element codes (1-10) and the envelope's ("021": IEA01, "023": no GE/IEA); "4" is also
    # a segment or loop beyond its maximum.
    assert {"1", "3", "4", "5", "6", "7", "8", "9", "10", "021", "023"} <= codes, sorted(codes)
    assert any("exceeded max count" in line for v in verdicts.values() for line in v["html"].splitlines())


#: One plausible bug per replacement (or per check inside one); pyx12_oracle_child.SABOTAGES.
SABOTAGES = ("counter", "walker-skips-own-position", "loop-first-node-last", "loop-children-skip-last",
             "loop-len-segments-only", "element-skips-codes", "element-missing-always-passes",
             "element-ignores-type-list", "segment-trailing-never-checked", "segment-syntax-skipped")


def test_every_replacement_has_a_sabotage() -> None:
    import pyx12_oracle_child

    assert pyx12_oracle_child.SABOTAGES == SABOTAGES


@pytest.mark.parametrize("sabotage", SABOTAGES)
def test_the_oracle_notices_a_broken_speedup(corpus: list[Path], stock: dict[str, Any], sabotage: str) -> None:
    """Each sabotaged replacement changes some verdict on part of the corpus: the file the broken ones
    are made from and the broken ones (the others are left out for time: a part that notices means
    the whole corpus does)."""
    small = [p for p in corpus if p == BASE or (p.name.startswith("broken-") and "generated" not in p.name)]
    broken = _run(small, speedups=True, sabotage=sabotage)
    differ = [Path(name).name for name, got in broken["files"].items() if got != stock["files"][name]]
    assert differ, sabotage
