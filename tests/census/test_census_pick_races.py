"""A local census is opened once: a name swapped after the listing (for a link to another employer's file, a
FIFO or a folder) is refused, and what is hashed is what is staged. Real files on the real filesystem;
the swap happens at a fixed point (right after the listing) so the race is reproduced every time."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from carrierfeeds.census import sources
from carrierfeeds.census.sources import census_from_file, fetch_census
from carrierfeeds.config import LocalSource, load_schema
from carrierfeeds.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = load_schema(ROOT / "schemas" / "census-v1.yaml")
OTHER = b"member_id,first_name\nG0000001,Globexina\n"


@pytest.fixture
def no_hang() -> Iterator[None]:
    """A read that blocks on a FIFO must fail the test rather than hang the suite (a guard, not a timing)."""
    def _raise(signum: int, frame: FrameType | None) -> None:
        raise RuntimeError("blocked opening or reading the census (a FIFO was waited on)")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _drops(tmp_path: Path) -> tuple[Path, Path]:
    acme = tmp_path / "data" / "inbound" / "acme"
    globex = tmp_path / "data" / "inbound" / "globex"
    acme.mkdir(parents=True)
    globex.mkdir(parents=True)
    (acme / "census_20261120.csv").write_bytes(b"member_id,first_name\nA0000001,Acmeline\n")
    (globex / "census_20261120.csv").write_bytes(OTHER)
    return acme, globex


def _swap_after_listing(monkeypatch: pytest.MonkeyPatch, swap: Callable[[], None]) -> None:
    """Run ``swap`` the moment the newest file has been chosen, before it is opened."""
    real = sources._newest_local

    def list_then_swap(*args: Any, **kwargs: Any) -> Any:
        chosen = real(*args, **kwargs)
        swap()
        return chosen

    monkeypatch.setattr(sources, "_newest_local", list_then_swap)


def _replace_with_link(name: Path, target: Path) -> None:
    link = name.with_name(".swap")
    link.symlink_to(target)
    os.replace(link, name)  # atomic: the name is never missing


def _no_copy_of_other(tmp_path: Path) -> None:
    for path in (tmp_path / "work").rglob("*") if (tmp_path / "work").exists() else ():
        if path.is_file():
            assert OTHER not in path.read_bytes()


def _fetch(tmp_path: Path) -> Any:
    return fetch_census(LocalSource(path="inbound/acme", pattern="census_*.csv"), feed_id="acme-test",
                        schema=SCHEMA, data_dir=tmp_path / "data", keys_dir=tmp_path / "keys",
                        work_dir=tmp_path / "work")


def test_a_census_swapped_for_a_link_to_another_employers_file_after_listing_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    acme, globex = _drops(tmp_path)
    _swap_after_listing(monkeypatch, lambda: _replace_with_link(acme / "census_20261120.csv",
                                                                globex / "census_20261120.csv"))
    with pytest.raises(DataError) as info:
        _fetch(tmp_path)
    assert info.value.rule == "not_regular_file" and info.value.file == "census_20261120.csv"
    _no_copy_of_other(tmp_path)


def test_a_census_swapped_for_a_fifo_after_listing_is_refused_without_blocking(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_hang: None) -> None:
    acme, _ = _drops(tmp_path)

    def to_fifo() -> None:
        fifo = acme / ".swap"
        os.mkfifo(fifo)
        os.replace(fifo, acme / "census_20261120.csv")

    _swap_after_listing(monkeypatch, to_fifo)
    with pytest.raises(DataError) as info:
        _fetch(tmp_path)
    assert info.value.rule == "not_regular_file"


def test_a_census_swapped_for_a_folder_after_listing_is_refused(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    acme, _ = _drops(tmp_path)

    def to_folder() -> None:
        (acme / "census_20261120.csv").unlink()
        (acme / "census_20261120.csv").mkdir()

    _swap_after_listing(monkeypatch, to_folder)
    with pytest.raises(DataError) as info:
        _fetch(tmp_path)
    assert info.value.rule == "not_regular_file"


def test_an_explicit_census_that_is_a_link_is_refused(tmp_path: Path) -> None:
    acme, globex = _drops(tmp_path)
    link = acme / "census_link.csv"
    link.symlink_to(globex / "census_20261120.csv")
    with pytest.raises(DataError):
        census_from_file(link, feed_id="acme-test", schema=SCHEMA, data_dir=tmp_path / "data",
                         work_dir=tmp_path / "work")
    _no_copy_of_other(tmp_path)


def test_the_staged_copy_is_the_bytes_hashed_from_the_one_descriptor(tmp_path: Path) -> None:
    acme, globex = _drops(tmp_path)
    original = (acme / "census_20261120.csv").read_bytes()
    pick = _fetch(tmp_path)
    # The employer's name now points elsewhere: the pick is unaffected, and staging would see the change.
    _replace_with_link(acme / "census_20261120.csv", globex / "census_20261120.csv")
    assert pick.path.read_bytes() == original
    with pytest.raises(Exception, match="changed while it was staged"):
        sources.confirm_unchanged(pick)
