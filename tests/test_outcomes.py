"""The outcome vocabulary: every error class ends a run in a status and a command in an exit code, and
the README and ``carrierfeeds --help`` list the exit codes the enum defines."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from typing import Any

import pytest

import carrierfeeds
import carrierfeeds.cli
from carrierfeeds.errors import CarrierFeedsError
from carrierfeeds.outcomes import (
    EXIT_MEANINGS,
    FINAL_STATUSES,
    STATUS_EXIT,
    ExitCode,
    RunStatus,
    exit_code_for_run,
    exit_code_of,
    status_of,
)

README = Path(__file__).resolve().parents[1] / "README.md"


def _every_error_class() -> list[type[CarrierFeedsError]]:
    for module in pkgutil.walk_packages(carrierfeeds.__path__, prefix="carrierfeeds."):
        importlib.import_module(module.name)
    found: list[type[CarrierFeedsError]] = []
    todo: list[type[CarrierFeedsError]] = [CarrierFeedsError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(set(found), key=lambda c: f"{c.__module__}.{c.__qualname__}")


ERRORS = _every_error_class()


def test_the_whole_package_was_searched() -> None:
    names = {c.__name__ for c in ERRORS}
    # One from each corner of the tree, including stage modules and the ledger.
    assert {"CensusRejected", "NoNewCensus", "NoChanges", "StagingFull", "CiphertextMismatch", "UnsafeLedgerValue",
            "PurgeRefused", "RemoteFileExists"} <= names


@pytest.mark.parametrize("error", ERRORS, ids=lambda c: c.__name__)
def test_every_error_class_maps_to_a_final_status_and_an_exit_code(error: type[CarrierFeedsError]) -> None:
    assert status_of(error) in FINAL_STATUSES
    assert isinstance(exit_code_of(error), ExitCode)
    assert status_of(error) in STATUS_EXIT


#: The mapping as the CLI, the DAG and the ledger have always read it: (run status, exit code if raised).
PINNED: dict[str, tuple[str, int]] = {
    "CarrierFeedsError": ("failed", 5),
    "ConfigError": ("refused", 2),
    "DataError": ("rejected", 1),
    "CensusRejected": ("rejected", 1),
    "NoNewCensus": ("no_new_census", 1),
    "OutsideRetroWindow": ("rejected", 1),
    "NoChanges": ("nothing_to_send", 5),
    "Refused": ("refused", 3),
    "NotAuthorized": ("refused", 3),
    "KeyRefused": ("refused", 3),
    "HostKeyRefused": ("refused", 3),
    "ConformanceFailed": ("refused", 3),
    "StagingTampered": ("refused", 3),
    "UnsafeLedgerValue": ("refused", 3),
    "TransientError": ("failed", 4),
    "StagingFull": ("failed", 4),
    "EncryptionIncomplete": ("failed", 4),
    "PermanentError": ("failed", 5),
    "LedgerError": ("failed", 5),
    "RemoteFileExists": ("failed", 5),
}


@pytest.mark.parametrize(("name", "expected"), sorted(PINNED.items()))
def test_status_and_exit_code_of_known_errors_are_unchanged(name: str, expected: tuple[str, int]) -> None:
    error = next(c for c in ERRORS if c.__name__ == name)
    assert (status_of(error), exit_code_of(error)) == expected


@pytest.mark.parametrize(("status", "error", "code"), [
    ("delivered", None, 0),
    ("already_delivered", None, 0),
    ("already_delivered", {"code": "config"}, 0),
    ("pending_handoff", None, 0),
    ("handed_off", None, 0),
    ("nothing_to_send", {"code": "no_changes"}, 0),
    ("no_new_census", {"code": "no_new_census"}, 0),
    ("rejected", {"code": "census_rejected"}, 1),
    ("refused", {"code": "config"}, 2),
    ("refused", {"code": "key_refused"}, 3),
    ("failed", {"code": "transient"}, 4),
    ("failed", {"code": "staging_full"}, 5),
    ("failed", {"code": "permanent"}, 5),
    ("failed", {"code": "internal"}, 5),
    ("running", None, 5),
])
def test_exit_code_of_a_finished_run(status: str, error: dict[str, Any] | None, code: int) -> None:
    assert exit_code_for_run(status, error) == code


def test_statuses_and_codes_are_the_stored_words_and_numbers() -> None:
    assert sorted(RunStatus) == sorted(["running", "delivered", "already_delivered", "pending_handoff", "handed_off",
                                        "nothing_to_send", "no_new_census", "rejected", "refused", "failed"])
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 5]
    assert set(STATUS_EXIT) == FINAL_STATUSES
    assert set(EXIT_MEANINGS) == set(ExitCode)


def _readme_exit_codes() -> dict[int, str]:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"^Exit codes: (.+?)(?:\n\n|\Z)", text, re.MULTILINE | re.DOTALL)
    assert found, "README lists the exit codes in a paragraph starting 'Exit codes:'"
    listed = " ".join(found.group(1).split())
    parts = re.split(r"(?:^|,\s)(\d)\s", listed)
    return {int(code): words.strip() for code, words in zip(parts[1::2], parts[2::2], strict=True)}


def test_readme_lists_every_exit_code_in_the_enums_words() -> None:
    listed = _readme_exit_codes()
    assert set(listed) == {int(c) for c in ExitCode}
    for code in ExitCode:
        assert listed[code].startswith(code.meaning), (code, listed[code])


def test_cli_help_lists_every_exit_code() -> None:
    doc = carrierfeeds.cli.__doc__ or ""
    listed = {int(n) for n in re.findall(r"^\s+(\d)\s\s", doc, re.MULTILINE)}
    assert listed == {int(c) for c in ExitCode}
