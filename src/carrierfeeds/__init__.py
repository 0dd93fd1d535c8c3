"""carrierfeeds: employer census in, validated and encrypted eligibility feeds out, every delivery ledgered."""

from __future__ import annotations

import os
import sys

__version__ = "0.1.0"

# Arrow's allocator (mimalloc 3) asks for transparent huge pages on its 1 GiB arenas. Every fresh 2 MB
# page is then zeroed whole at its first touch, which on a VM with free-page reporting cost the census
# read more kernel time than user time (benchmarks/README.md, issue 23). mimalloc reads the option once,
# when pyarrow first allocates, so it can only be set before pyarrow is imported; an operator's own
# MIMALLOC_ALLOW_THP wins.
if "pyarrow" not in sys.modules:
    os.environ.setdefault("MIMALLOC_ALLOW_THP", "0")
