"""pyx12 in a persistent worker: many files, one process; the in-process verdict; every doubt kills it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from test_gate_pyx12_child import PLANTED_NAME, _core, _good, _name_too_long

from carrierfeeds.errors import ConformanceFailed
from carrierfeeds.x12.check import validate_with_pyx12
from carrierfeeds.x12.pyx12_adapter import (
    PERSISTENT_ENV,
    Pyx12Child,
    Pyx12Job,
    Pyx12Workers,
    _serve,
    pyx12_job,
)


@pytest.fixture
def pool() -> Pyx12Workers:
    workers = Pyx12Workers()
    yield workers
    workers.close()


def _files(tmp_path: Path) -> tuple[Path, Path]:
    good, broken = tmp_path / "good.834", tmp_path / "long-name.834"
    good.write_bytes(_good())
    broken.write_bytes(_name_too_long(_good()))
    return good, broken


def test_one_worker_checks_many_files_with_the_in_process_verdict(tmp_path: Path, pool: Pyx12Workers) -> None:
    good, broken = _files(tmp_path)
    pids = set()
    verdicts = []
    for path in (good, broken, good, broken):
        with Pyx12Job(path, pool=pool) as job:
            verdicts.append((path, job.verdict()))
            pids.add(job._worker._proc.pid)  # type: ignore[union-attr]
        assert len(pool) == 1  # given back, alive, for the next file
    assert len(pids) == 1  # one process for all four files
    for path, verdict in verdicts:
        assert _core(verdict) == _core(validate_with_pyx12(path))
        assert verdict.ack_999 is None and PLANTED_NAME not in repr(verdict)
    assert verdicts[0][1].ok and not verdicts[1][1].ok
    assert "NM105" in {p.element for p in verdicts[1][1].errors}


def test_a_job_named_later_gets_its_verdict(tmp_path: Path, pool: Pyx12Workers) -> None:
    good, _ = _files(tmp_path)
    with Pyx12Job(pool=pool) as job:
        job.check(good)
        assert job.verdict().ok
        with pytest.raises(RuntimeError):
            job.check(good)  # one file per job


def test_an_overrun_kills_the_worker_and_the_next_file_gets_a_fresh_one(tmp_path: Path,
                                                                         pool: Pyx12Workers) -> None:
    good, _ = _files(tmp_path)
    late = Pyx12Job(good, timeout=0.0, pool=pool)
    worker = late._worker
    with late, pytest.raises(ConformanceFailed) as caught:
        late.verdict()
    assert caught.value.details["pyx12_worker"] == "timeout"
    assert worker is not None and worker.returncode is not None  # killed and reaped
    assert len(pool) == 0
    with Pyx12Job(good, pool=pool) as job:
        assert job.verdict().ok


def test_a_worker_that_dies_mid_file_fails_closed(tmp_path: Path, pool: Pyx12Workers) -> None:
    good, _ = _files(tmp_path)
    with Pyx12Job(pool=pool) as job, pytest.raises(ConformanceFailed) as caught:
        assert job._worker is not None
        os.kill(job._worker._proc.pid, signal.SIGKILL)
        job.check(good)
        job.verdict()
    assert caught.value.details["pyx12_worker"] == "exit"
    assert len(pool) == 0


def test_a_dead_idle_worker_is_replaced(tmp_path: Path, pool: Pyx12Workers) -> None:
    good, _ = _files(tmp_path)
    with Pyx12Job(good, pool=pool) as job:
        job.verdict()
    (idle,) = pool._idle
    idle.kill()
    with Pyx12Job(good, pool=pool) as job:
        assert job._worker is not idle
        assert job.verdict().ok


def test_a_question_left_unanswered_kills_the_worker(tmp_path: Path, pool: Pyx12Workers) -> None:
    good, _ = _files(tmp_path)
    with pytest.raises(RuntimeError), Pyx12Job(good, pool=pool) as job:
        worker = job._worker
        raise RuntimeError("the structural check refused the file")
    assert worker is not None and worker.returncode is not None
    assert len(pool) == 0  # its answer could be read as the next file's


def test_pyx12_raising_is_reported_by_type_and_ends_the_worker(tmp_path: Path) -> None:
    import io

    out = io.StringIO()
    missing = tmp_path / "absent.834"
    code = _serve(io.BytesIO(os.fsencode(missing) + b"\n"), out)
    assert code == 1
    assert out.getvalue().startswith('{"failed": "') and str(missing) not in out.getvalue()
    # A line that is not a path ends it without an answer; the end of input ends it cleanly.
    assert _serve(io.BytesIO(b"\n"), io.StringIO()) == 2
    assert _serve(io.BytesIO(b""), io.StringIO()) == 0


def test_a_missing_file_fails_closed_through_the_pool(tmp_path: Path, pool: Pyx12Workers) -> None:
    with Pyx12Job(tmp_path / "absent.834", pool=pool) as job, pytest.raises(ConformanceFailed) as caught:
        job.verdict()
    assert caught.value.details["pyx12_worker"] == "exit" and caught.value.details["exception"]
    assert len(pool) == 0


def test_the_switch_gives_a_child_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good, _ = _files(tmp_path)
    monkeypatch.setenv(PERSISTENT_ENV, "0")
    with pyx12_job(good) as child:
        assert isinstance(child, Pyx12Child) and child.verdict().ok
    monkeypatch.delenv(PERSISTENT_ENV)
    with pyx12_job(good) as job:
        assert isinstance(job, Pyx12Job) and job.verdict().ok


def test_closing_the_pool_kills_and_reaps_its_idle_workers(tmp_path: Path) -> None:
    good, _ = _files(tmp_path)
    pool = Pyx12Workers()
    with Pyx12Job(good, pool=pool) as job:
        assert job.verdict().ok
    (idle,) = pool._idle
    assert idle.returncode is None
    pool.close()
    assert idle.returncode is not None and len(pool) == 0
