"""carrierfeeds: employer census in, validated and encrypted eligibility feeds out, every delivery ledgered."""

from __future__ import annotations

__version__ = "0.1.0"
