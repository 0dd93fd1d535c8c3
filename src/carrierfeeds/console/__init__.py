"""The carrierfeeds web console: :func:`create_app` and the :class:`Authorizer` protocol it needs.

Its names are imported on first use, so that importing a console module (the Airflow plugin, which every
Airflow process loads) does not import FastAPI and the app.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from carrierfeeds.console.app import create_app
    from carrierfeeds.console.auth import Authorizer, Principal, StandaloneAuth

__all__ = ["Authorizer", "Principal", "StandaloneAuth", "create_app"]
_WHERE = {"create_app": "carrierfeeds.console.app", "Authorizer": "carrierfeeds.console.auth",
          "Principal": "carrierfeeds.console.auth", "StandaloneAuth": "carrierfeeds.console.auth"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
