"""Import what the stages import, ahead of any task: for a worker that forks its task processes.

Airflow's LocalExecutor and Celery workers fork a process per task; whatever the worker has imported
the task inherits instead of importing it again (pandas, pyarrow, the validation and rendering code).
A deployment calls :func:`preload_stage_modules` from its ``airflow_local_settings.py``, which every
Airflow process imports at start::

    from carrierfeeds.run.preload import preload_stage_modules
    preload_stage_modules()

Nothing here reads a setting, a file or the network, and nothing here imports Airflow (Airflow is still
being set up when its local settings are imported). The figures are in benchmarks/README.md.
"""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)

#: The modules the stages import lazily (validate and build pay most of a task's import time).
STAGE_MODULES = (
    "pandas",
    "pyarrow",
    "carrierfeeds.run",
    "carrierfeeds.census.accepted",
    "carrierfeeds.census.readers",
    "carrierfeeds.census.sources",
    "carrierfeeds.census.tokens",
    "carrierfeeds.validation",
    "carrierfeeds.enrollment",
    "carrierfeeds.changes",
    "carrierfeeds.x12.render",
    "carrierfeeds.x12.check",
    "carrierfeeds.x12.pyx12_adapter",
    "carrierfeeds.crypto",
    "carrierfeeds.transport.sftp",
    "carrierfeeds.ledger.anchor",
)


def preload_stage_modules() -> list[str]:
    """Import :data:`STAGE_MODULES`; returns those that did not import (logged, never raised: a
    worker without one of them still runs, and pays that import in its tasks)."""
    missing: list[str] = []
    for name in STAGE_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            log.warning("preload: %s did not import", name)
            missing.append(name)
    return missing
