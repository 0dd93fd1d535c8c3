"""How a run can end: its status words, the exit codes, and which error ends it in which.

The one place the CLI, the Airflow DAG, the stages, the audit reports and the ledger take these from.
The values are the strings the ledger stores and ``--json`` prints, and the exit codes the README lists:
neither changes without a migration of what readers hold.

    error class (nearest base wins)   run status        exit code (raised)   exit code (run summary)
    NoChanges (code no_changes)       nothing_to_send   5                    0
    NoNewCensus (code no_new_census)  no_new_census     1                    0
    DataError, CensusRejected          rejected          1                    1
    ConfigError                       refused           2                    2 (code ``config``)
    Refused and its subclasses        refused           3                    3
    TransientError                    failed            4                    4 (code ``transient``)
    PermanentError                    failed            5                    5

A run summary's error overrides its status's exit code only by the base classes' own codes: a
TransientError subclass with a code of its own (``staging_full``) ends a run ``failed``, exit code 5.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Any

from carrierfeeds.errors import (
    CarrierFeedsError,
    ConfigError,
    DataError,
    PermanentError,
    Refused,
    TransientError,
)


class RunStatus(StrEnum):
    """A run's final status as ``finish_run`` records it (``running`` until then)."""

    RUNNING = "running"
    DELIVERED = "delivered"
    ALREADY_DELIVERED = "already_delivered"
    #: Placed in the manual outbox; a person confirms the hand-off later.
    PENDING_HANDOFF = "pending_handoff"
    HANDED_OFF = "handed_off"
    NOTHING_TO_SEND = "nothing_to_send"
    NO_NEW_CENSUS = "no_new_census"
    REJECTED = "rejected"
    REFUSED = "refused"
    FAILED = "failed"


#: The statuses a run can finish in (everything but ``running``).
FINAL_STATUSES = frozenset(s for s in RunStatus if s is not RunStatus.RUNNING)
#: Finished with nothing new to send: Airflow skips the later stages instead of failing them.
NOTHING_NEW = frozenset({RunStatus.NOTHING_TO_SEND, RunStatus.NO_NEW_CENSUS})
#: Finished without the file reaching anyone because something must be fixed first.
UNSUCCESSFUL = frozenset({RunStatus.REJECTED, RunStatus.REFUSED, RunStatus.FAILED})


class ExitCode(IntEnum):
    """What a ``carrierfeeds`` command's exit code tells the caller to do next."""

    OK = 0
    REJECTED = 1
    USAGE = 2
    REFUSED = 3
    TRANSIENT = 4
    FAILED = 5

    @property
    def meaning(self) -> str:
        return EXIT_MEANINGS[self]


#: Each exit code in the words the README and ``carrierfeeds --help`` use (their first words).
EXIT_MEANINGS: Mapping[ExitCode, str] = MappingProxyType({
    ExitCode.OK: "done",
    ExitCode.REJECTED: "census rejected",
    ExitCode.USAGE: "usage or configuration error",
    ExitCode.REFUSED: "refused",
    ExitCode.TRANSIENT: "transient",
    ExitCode.FAILED: "permanent failure of an outside system",
})

#: The exit code of a finished run, by its status.
STATUS_EXIT: Mapping[str, ExitCode] = MappingProxyType({
    RunStatus.DELIVERED: ExitCode.OK,
    RunStatus.ALREADY_DELIVERED: ExitCode.OK,
    RunStatus.HANDED_OFF: ExitCode.OK,
    RunStatus.PENDING_HANDOFF: ExitCode.OK,
    RunStatus.NOTHING_TO_SEND: ExitCode.OK,
    RunStatus.NO_NEW_CENSUS: ExitCode.OK,
    RunStatus.REJECTED: ExitCode.REJECTED,
    RunStatus.REFUSED: ExitCode.REFUSED,
    RunStatus.FAILED: ExitCode.FAILED,
})

#: Errors that are outcomes, not failures, matched by ``code`` so this module imports no stage module.
OUTCOME_CODES: Mapping[str, RunStatus] = MappingProxyType({
    "no_changes": RunStatus.NOTHING_TO_SEND,
    "no_new_census": RunStatus.NO_NEW_CENSUS,
})

#: The run status an error ends a run in: the first base class that matches, else ``failed``.
ERROR_STATUS: tuple[tuple[type[CarrierFeedsError], RunStatus], ...] = (
    (DataError, RunStatus.REJECTED),
    (Refused, RunStatus.REFUSED),
    (ConfigError, RunStatus.REFUSED),
)

#: The exit code of a command an error stopped: the first base class that matches, else ``FAILED``.
ERROR_EXIT: tuple[tuple[type[CarrierFeedsError], ExitCode], ...] = (
    (ConfigError, ExitCode.USAGE),
    (DataError, ExitCode.REJECTED),
    (Refused, ExitCode.REFUSED),
    (TransientError, ExitCode.TRANSIENT),
    (PermanentError, ExitCode.FAILED),
)

#: A failed run's summary overrides its status's exit code when its error is one of these base codes.
SUMMARY_CODE_EXIT: Mapping[str, ExitCode] = MappingProxyType({
    ConfigError.code: ExitCode.USAGE,
    TransientError.code: ExitCode.TRANSIENT,
    PermanentError.code: ExitCode.FAILED,
})


def status_of(error: type[CarrierFeedsError]) -> RunStatus:
    """The run status an error of this class ends a run in (the ledger's vocabulary)."""
    if error.code in OUTCOME_CODES:
        return OUTCOME_CODES[error.code]
    return next((status for base, status in ERROR_STATUS if issubclass(error, base)), RunStatus.FAILED)


def status_for(exc: CarrierFeedsError) -> RunStatus:
    """The run status ``exc`` ends a run in."""
    return status_of(type(exc))


def exit_code_of(error: type[CarrierFeedsError]) -> ExitCode:
    """The exit code of a command an error of this class stopped."""
    return next((code for base, code in ERROR_EXIT if issubclass(error, base)), ExitCode.FAILED)


def exit_code_for(exc: CarrierFeedsError) -> ExitCode:
    """The exit code of a command ``exc`` stopped."""
    return exit_code_of(type(exc))


def exit_code_for_run(status: str, error: Mapping[str, Any] | None) -> ExitCode:
    """The exit code of a finished run: by its status, unless its error's code says configuration,
    transient or permanent (an ``already_delivered`` run is done whatever its error says)."""
    if error is not None and status != RunStatus.ALREADY_DELIVERED:
        code = SUMMARY_CODE_EXIT.get(str(error.get("code", "")))
        if code is not None:
            return code
    return STATUS_EXIT.get(status, ExitCode.FAILED)


__all__ = [
    "ERROR_EXIT",
    "ERROR_STATUS",
    "EXIT_MEANINGS",
    "FINAL_STATUSES",
    "NOTHING_NEW",
    "OUTCOME_CODES",
    "STATUS_EXIT",
    "SUMMARY_CODE_EXIT",
    "UNSUCCESSFUL",
    "ExitCode",
    "RunStatus",
    "exit_code_for",
    "exit_code_for_run",
    "exit_code_of",
    "status_for",
    "status_of",
]
