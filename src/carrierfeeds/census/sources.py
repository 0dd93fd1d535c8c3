"""Where a feed's census comes from: pick the file a run should read (local folder for now)."""

from __future__ import annotations

from pathlib import Path

from carrierfeeds.config import LocalSource
from carrierfeeds.errors import ConfigError, DataError


def pick_census(source: LocalSource, data_dir: Path) -> Path:
    """The newest regular file in the source folder matching the pattern (by modification time)."""
    folder = (data_dir / source.path).resolve()
    if not folder.is_dir():
        raise ConfigError(f"census folder {folder} does not exist", field="census.source.path")
    candidates = [p for p in folder.glob(source.pattern) if p.is_file() and not p.is_symlink()]
    if not candidates:
        raise DataError(f"no file matching {source.pattern!r} in {folder}", file=str(folder))
    return max(candidates, key=lambda p: (p.stat().st_mtime_ns, p.name))
