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


# ------------------------------------------------------------- a child started before its file exists
def test_a_waiting_child_gives_the_in_process_verdict(tmp_path: Path) -> None:
    good, broken = tmp_path / "good.834", tmp_path / "long-name.834"
    good.write_bytes(_good())
    broken.write_bytes(_name_too_long(_good()))
    for path in (good, broken):
        with Pyx12Child() as child:
            assert child.returncode is None
            child.check(path)
            verdict = child.verdict()
        assert _core(verdict) == _core(validate_with_pyx12(path)) == _core(validate_in_child(path))
        assert verdict.ack_999 is None and PLANTED_NAME not in repr(verdict)
    assert not verdict.ok and "NM105" in {p.element for p in verdict.errors}


def _ack_body(ack: bytes) -> bytes:
    return ack.partition(b"ST*999")[2].partition(b"\nGE*")[0]


def test_maps_loaded_ahead_are_the_ones_pyx12_uses_and_give_the_same_verdict(tmp_path: Path) -> None:
    import pyx12.map_if
    import pyx12.params

    from carrierfeeds.x12.pyx12_adapter import _maps_loaded_ahead

    loader = pyx12.map_if.load_map_file
    for data in (_good(), _name_too_long(_good())):
        path = tmp_path / "file.834"
        path.write_bytes(data)
        param = pyx12.params.params()
        with _maps_loaded_ahead(param) as ready:
            assert sorted(ready) == ["834.5010.X220.A1.xml", "x12.control.00501.xml"]
            ahead = validate_with_pyx12(path, param=param)
            assert ready == {}  # both taken: pyx12 loaded none of its own
            again = validate_with_pyx12(path)  # maps once taken, or another run's: loaded as usual
        assert pyx12.map_if.load_map_file is loader
        assert _core(ahead) == _core(again) == _core(validate_with_pyx12(path))
        # The 999's envelope carries the time and a random GS06 (in GE02 too); ST..SE is the verdict.
        assert ahead.ack_999 and again.ack_999
        assert _ack_body(ahead.ack_999) == _ack_body(again.ack_999) != b""


def test_a_waiting_child_never_given_a_file_is_killed_and_reaped() -> None:
    with pytest.raises(RuntimeError), Pyx12Child() as child:
        raise RuntimeError("the file changed after it was built")
    assert child.returncode is not None
    with Pyx12Child() as idle:
        pass
    assert idle.returncode is not None


def test_a_waiting_child_wants_its_file_once_and_before_its_verdict(tmp_path: Path) -> None:
    path = tmp_path / "good.834"
    path.write_bytes(_good())
    with Pyx12Child() as child:
        with pytest.raises(RuntimeError):
            child.verdict()
        child.check(path)
        with pytest.raises(RuntimeError):
            child.check(path)
        assert child.verdict().ok
    with Pyx12Child(path) as given, pytest.raises(RuntimeError):
        given.check(path)


def test_a_waiting_childs_missing_file_fails_closed(tmp_path: Path) -> None:
    with Pyx12Child() as child, pytest.raises(ConformanceFailed) as caught:
        child.check(tmp_path / "absent.834")
        child.verdict()
    assert caught.value.details == {"pyx12_worker": "exit", "exit_code": 1, "exception": "FileNotFoundError"}


def test_a_waiting_child_that_died_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "good.834"
    path.write_bytes(_good())
    with Pyx12Child() as child:
        child._proc.kill()
        child._proc.wait()
        child.check(path)  # a broken pipe is not raised here
        with pytest.raises(ConformanceFailed) as caught:
            child.verdict()
    assert caught.value.details["pyx12_worker"] == "exit" and caught.value.details["exit_code"] < 0


def test_a_waiting_childs_time_limit_runs_from_its_file(tmp_path: Path) -> None:
    path = tmp_path / "good.834"
    path.write_bytes(_good())
    with Pyx12Child() as child:
        assert child.timeout == 0.0
        child.check(path)
        assert child.timeout == timeout_for(path)
    with Pyx12Child(timeout=0.0) as late, pytest.raises(ConformanceFailed) as caught:
        late.check(path)
        late.verdict()
    assert caught.value.details["pyx12_worker"] == "timeout"
    assert late.returncode is not None


def test_a_path_with_a_line_break_is_refused_before_it_reaches_the_child(tmp_path: Path) -> None:
    with Pyx12Child() as child, pytest.raises(ConformanceFailed) as caught:
        child.check(tmp_path / "two\nlines.834")
    assert caught.value.details == {"pyx12_worker": "path"}
    assert child.returncode is not None


@pytest.mark.parametrize("stdin", [b"", b"\n", b"{path}", b"{path}\n\n", b"{path}\nextra", b"{path}\x00\n",
                                   b"/" * 70_000 + b"\n"])
def test_a_waiting_child_refuses_anything_but_one_line_and_prints_nothing(tmp_path: Path, stdin: bytes) -> None:
    import os
    import subprocess
    import sys

    path = tmp_path / "good.834"
    path.write_bytes(_good())
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run([sys.executable, "-P", "-m", "carrierfeeds.x12.pyx12_adapter", "--stdin"],
                          input=stdin.replace(b"{path}", os.fsencode(path)), capture_output=True, env=env,
                          timeout=120, check=False)
    assert done.returncode == 2 and done.stdout == b""
    ok = subprocess.run([sys.executable, "-P", "-m", "carrierfeeds.x12.pyx12_adapter", "--stdin"],
                        input=os.fsencode(path) + b"\n", capture_output=True, env=env, timeout=120, check=False)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
