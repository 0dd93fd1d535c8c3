"""The carrierfeeds web console: :func:`create_app` and the :class:`Authorizer` protocol it needs."""

from carrierfeeds.console.app import create_app
from carrierfeeds.console.auth import Authorizer, Principal, StandaloneAuth

__all__ = ["Authorizer", "Principal", "StandaloneAuth", "create_app"]
