"""pyx12 in a child process: the in-process adapter's verdict, and every doubt fails closed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import x12_helpers as h

from carrierfeeds.errors import ConformanceFailed
from carrierfeeds.x12.check import check_834, sample_834, validate_with_pyx12
from carrierfeeds.x12.pyx12_adapter import Pyx12Child, _unwire, _wire, main, timeout_for, validate_in_child
from carrierfeeds.x12.render import render_834_bytes
from carrierfeeds.x12.verdicts import Problem, Pyx12Verdict

#: Planted in the broken files below; never in anything the child prints.
PLANTED_NAME = "ZQXWVKJHPLMNBRTSDFGQWERTYUIOPZX"


def _good() -> bytes:
    return render_834_bytes(h.enrollment(), h.header(), h.CONTROL)


def _name_too_long(data: bytes) -> bytes:
    """NM105 longer than the guide allows: the structural check does not read names, pyx12 does."""
    broken = data.replace(b"NM1*IL*1*RIVERA*TEO~", b"NM1*IL*1*RIVERA*TEO*" + PLANTED_NAME.encode() + b"~")
    assert broken != data
    return broken


def _core(verdict: Pyx12Verdict) -> tuple[bool, int, list[tuple[int, str, str, str]]]:
    return verdict.ok, verdict.segments, [(p.segment_position, p.segment_id, p.element, p.code)
                                          for p in verdict.errors]


def test_child_gives_the_in_process_verdict_on_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "good.834"
    path.write_bytes(_good())
    child = validate_in_child(path)
    assert child.ok and child.segments == 64 and child.errors == ()
    assert _core(child) == _core(validate_with_pyx12(path))
    assert child.ack_999 is None  # the 999 can quote data; it never crosses the pipe


def test_child_gives_the_in_process_verdict_on_a_sample(tmp_path: Path) -> None:
    sample, sampled = sample_834(_good(), max_members=2)
    assert sampled
    path = tmp_path / "sample.834"
    path.write_bytes(sample)
    child = validate_in_child(path)
    assert child.ok and 0 < child.segments < 64
    assert _core(child) == _core(validate_with_pyx12(path))


def test_a_file_pyx12_rejects_and_the_structure_passes_is_rejected_by_the_child(tmp_path: Path) -> None:
    data = _name_too_long(_good())
    assert check_834(data).ok
    path = tmp_path / "long-name.834"
    path.write_bytes(data)
    child = validate_in_child(path)
    assert not child.ok and child.errors
    assert "NM105" in {p.element for p in child.errors}
    assert _core(child) == _core(validate_with_pyx12(path))
    assert PLANTED_NAME not in repr(child)


def test_the_childs_output_holds_only_positions_ids_codes_and_counts(tmp_path: Path,
                                                                     capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "long-name.834"
    path.write_bytes(_name_too_long(_good()))
    assert main([str(path)]) == 0
    out, _ = capfd.readouterr()
    doc = json.loads(out)
    assert set(doc) == {"ok", "segments", "errors"} and doc["ok"] is False
    assert all(len(row) == 4 for row in doc["errors"])
    assert PLANTED_NAME not in out and "RIVERA" not in out


def test_a_missing_file_fails_closed(tmp_path: Path) -> None:
    with pytest.raises(ConformanceFailed) as caught:
        validate_in_child(tmp_path / "absent.834")
    assert caught.value.details["pyx12_worker"] == "exit"
    assert caught.value.details["exit_code"] == 1
    assert caught.value.details["exception"] == "FileNotFoundError"


def test_a_garbage_file_is_never_passed(tmp_path: Path) -> None:
    path = tmp_path / "garbage.834"
    path.write_bytes(b"not an interchange " + PLANTED_NAME.encode() + b"\n")
    verdict = validate_in_child(path)
    assert not verdict.ok
    assert PLANTED_NAME not in repr(verdict)


def test_an_overrun_fails_closed_and_the_child_is_reaped(tmp_path: Path) -> None:
    path = tmp_path / "good.834"
    path.write_bytes(_good())
    child = Pyx12Child(path, timeout=0.0)
    with child, pytest.raises(ConformanceFailed) as caught:
        child.verdict()
    assert caught.value.details["pyx12_worker"] == "timeout"
    assert child.returncode is not None


def test_leaving_the_block_early_kills_and_reaps_the_child(tmp_path: Path) -> None:
    path = tmp_path / "good.834"
    path.write_bytes(_good())
    with pytest.raises(RuntimeError), Pyx12Child(path) as child:
        assert child.returncode is None
        raise RuntimeError("the structural check refused the file")
    assert child.returncode is not None
    child.close()  # again: harmless


def test_the_child_is_given_ample_time_by_file_size(tmp_path: Path) -> None:
    path = tmp_path / "good.834"
    path.write_bytes(_good())
    assert timeout_for(path) >= 300
    assert timeout_for(tmp_path / "absent.834") >= 300


@pytest.mark.parametrize("text", [
    b"", b"garbage", b"[]", b'{"ok": true}', b'{"ok": "yes", "segments": 1, "errors": []}',
    b'{"ok": true, "segments": -1, "errors": []}', b'{"ok": true, "segments": true, "errors": []}',
    b'{"ok": true, "segments": 1, "errors": [], "message": "x"}',
    b'{"ok": false, "segments": 1, "errors": [[1, "NM1", "NM103", "6", "RIVERA"]]}',
    b'{"ok": false, "segments": 1, "errors": [[1, "RIVERA", "NM103", "6"]]}',
    b'{"ok": false, "segments": 1, "errors": [[1, "NM1", "NM103", "6 RIVERA"]]}',
    '{"ok": true, "segments": 1, "errors": [[1, "N\u00c9", "", "1"]]}'.encode(),
])
def test_anything_but_the_exact_verdict_shape_is_refused(text: bytes) -> None:
    with pytest.raises(ConformanceFailed) as caught:
        _unwire(text)
    assert caught.value.details == {"pyx12_worker": "output"}


def test_the_wire_form_round_trips_and_hides_odd_ids() -> None:
    verdict = Pyx12Verdict(ok=False, segments=9, errors=(
        Problem(3, "NM1", "NM105", "6", "scrubbed text"), Problem(4, "RIVERA", "x y", "a b", "")))
    back = _unwire(json.dumps(_wire(verdict)).encode())
    assert _core(back) == (False, 9, [(3, "NM1", "NM105", "6"), (4, "?", "?", "?")])
    # A verdict that claims ok while listing errors is not ok.
    assert not _unwire(b'{"ok": true, "segments": 1, "errors": [[1, "NM1", "NM105", "6"]]}').ok
