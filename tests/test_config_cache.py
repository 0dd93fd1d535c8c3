"""ConfigCache: a mapping or schema file is loaded once per version; an edit is seen, a bad file fails alike."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from carrierfeeds.config import ConfigCache, load_mapping, load_schema
from carrierfeeds.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_a_file_is_loaded_once_and_equals_the_plain_load(tmp_path: Path) -> None:
    mapping = shutil.copy(ROOT / "mappings" / "sunrise-health.yaml", tmp_path)
    cache = ConfigCache()
    first = cache.mapping(Path(mapping))
    assert cache.mapping(Path(mapping)) is first
    assert first == load_mapping(Path(mapping))
    schema = ROOT / "schemas" / "census-v1.yaml"
    assert cache.schema(schema) == load_schema(schema)


def test_an_edited_file_is_loaded_again(tmp_path: Path) -> None:
    path = Path(shutil.copy(ROOT / "mappings" / "sunrise-health.yaml", tmp_path))
    cache = ConfigCache()
    before = cache.mapping(path)
    path.write_text(path.read_text() + "ack_window_hours: 48\n")  # the shipped file leaves the default
    after = cache.mapping(path)
    assert after is not before
    assert after.ack_window_hours == 48


def test_a_bad_or_missing_file_fails_every_time(tmp_path: Path) -> None:
    bad = tmp_path / "sunrise-health.yaml"
    bad.write_text("mapping_id: [unclosed\n")
    cache = ConfigCache()
    for _ in range(2):
        with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
            cache.mapping(bad)
        with pytest.raises(ConfigError, match="file not found"):
            cache.schema(tmp_path / "nowhere.yaml")
