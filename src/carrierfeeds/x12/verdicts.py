"""The conformance gate's PHI-free results: a problem by position, ids and rule code; pyx12's verdict.

Kept apart from the checks so that the pyx12 child process (:mod:`carrierfeeds.x12.pyx12_adapter`)
loads these and pyx12, not numpy and the configuration models the structural check needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class Problem(NamedTuple):
    """One conformance problem: where (1-based segment position in the file), what, and a rule code."""

    segment_position: int
    segment_id: str
    element: str
    code: str
    message: str


@dataclass(frozen=True)
class Pyx12Verdict:
    """pyx12's verdict in our terms: ``segments`` it read, PHI-free ``errors``, its 999 (or None)."""

    ok: bool
    errors: tuple[Problem, ...]
    segments: int
    ack_999: bytes | None = None
    sampled: bool = False


__all__ = ["Problem", "Pyx12Verdict"]
