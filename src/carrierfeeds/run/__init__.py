"""One feed run: its stages (CLI and Airflow call these), its context, and the preview of it."""

from __future__ import annotations

from carrierfeeds.outcomes import status_for
from carrierfeeds.run.context import STAGES, RunContext, RunRef, open_run, run_dir_for, scratch_dir_for, wipe_scratch
from carrierfeeds.run.stages import (
    RunSummary,
    anchor_run,
    build,
    confirm,
    conformance,
    deliver,
    encrypt,
    end_run,
    purge_plaintext,
    run_feed,
    stage_census,
    validate,
)

__all__ = [
    "STAGES",
    "RunContext",
    "RunRef",
    "RunSummary",
    "anchor_run",
    "build",
    "confirm",
    "conformance",
    "deliver",
    "encrypt",
    "end_run",
    "open_run",
    "purge_plaintext",
    "run_dir_for",
    "run_feed",
    "scratch_dir_for",
    "stage_census",
    "status_for",
    "validate",
    "wipe_scratch",
]
