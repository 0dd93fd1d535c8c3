"""Config is checked when loaded: errors name the file, the line, the field and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from carrierfeeds.config import load_feed, load_mapping
from carrierfeeds.errors import ConfigError
from carrierfeeds.settings import Settings, bundle_from_feed, feed_paths

ROOT = Path(__file__).resolve().parents[1]
FEED = ROOT / "feeds" / "acme-sunrise-medical.yaml"


def _variant(tmp_path: Path, old: str, new: str, name: str = "acme-sunrise-medical.yaml") -> Path:
    text = FEED.read_text()
    assert old in text, old
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1))
    return path


def test_every_shipped_feed_loads_with_everything_it_names() -> None:
    settings = Settings(feeds_dir=ROOT / "feeds", mappings_dir=ROOT / "mappings", schemas_dir=ROOT / "schemas")
    paths = feed_paths(settings)
    assert paths, "no feeds shipped"
    for path in paths:
        bundle = bundle_from_feed(settings, load_feed(path), path)
        assert bundle.feed.feed_id == path.stem
        assert set(bundle.feed.authorization.plans) <= set(bundle.mapping.plans)


def test_misspelt_field_names_file_line_and_suggests(tmp_path: Path) -> None:
    path = _variant(tmp_path, "  remote_dir: /inbox", "  remote_dri: /inbox")
    with pytest.raises(ConfigError) as info:
        load_feed(path)
    message = str(info.value)
    assert str(path) in message
    assert "delivery.remote_dri" in message
    assert "did you mean 'remote_dir'" in message
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "remote_dri" in text)
    assert f"line {line}" in message


def test_out_of_range_value_names_field_and_expectation(tmp_path: Path) -> None:
    path = _variant(tmp_path, "compress_level: 1", "compress_level: 11")
    with pytest.raises(ConfigError, match=r"encryption\.compress_level: must be at most 9"):
        load_feed(path)


def test_short_key_id_is_not_a_pin(tmp_path: Path) -> None:
    path = _variant(tmp_path, '"0000000000000000000000000000000000000001"', '"DEADBEEF"')
    with pytest.raises(ConfigError, match="recipient_fingerprint"):
        load_feed(path)


def test_feed_id_must_match_file_name(tmp_path: Path) -> None:
    path = _variant(tmp_path, "x", "x", name="other-name.yaml")
    with pytest.raises(ConfigError, match="does not match the file name"):
        load_feed(path)


def test_broken_yaml_names_line(tmp_path: Path) -> None:
    path = _variant(tmp_path, "  armor: false", "  armor: [false")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_feed(path)


def test_non_electronic_carrier_needs_printable_output(tmp_path: Path) -> None:
    path = _variant(tmp_path, "  electronic: true", "  electronic: false")
    with pytest.raises(ConfigError, match=r"output\.format must be 'pdf'"):
        load_feed(path)


def test_unknown_timezone_suggests(tmp_path: Path) -> None:
    path = _variant(tmp_path, "timezone: America/New_York", "timezone: America/New_Yrok")
    with pytest.raises(ConfigError, match="did you mean 'America/New_York'"):
        load_feed(path)


def test_authorised_plan_missing_from_mapping_is_refused(tmp_path: Path) -> None:
    path = _variant(tmp_path, "plans: [MED-PPO, MED-HDHP, DEN-STD]", "plans: [MED-PPO, MED-GOLD]")
    settings = Settings(feeds_dir=tmp_path, mappings_dir=ROOT / "mappings", schemas_dir=ROOT / "schemas")
    with pytest.raises(ConfigError, match=r"authorised plan\(s\) \['MED-GOLD'\]"):
        bundle_from_feed(settings, load_feed(path), path)


def test_mapping_allowlist_must_name_known_fields_and_identity(tmp_path: Path) -> None:
    text = (ROOT / "mappings" / "sunrise-health.yaml").read_text()
    bad = tmp_path / "sunrise-health.yaml"
    bad.write_text(text.replace("  - ssn\n", "  - snn\n"))
    with pytest.raises(ConfigError, match="'snn' \\(did you mean 'ssn'\\?\\)"):
        load_mapping(bad)
    bad.write_text(text.replace("  - first_name\n", ""))
    with pytest.raises(ConfigError, match="identity fields \\['first_name'\\]"):
        load_mapping(bad)
    bad.write_text(text.replace('file_name: "{sender}_{receiver}_{isa13}_{date}.834"', 'file_name: "../x_{isa13}"'))
    with pytest.raises(ConfigError, match="plain file name"):
        load_mapping(bad)


def test_flatfile_feed_needs_a_layout_in_its_mapping(tmp_path: Path) -> None:
    path = _variant(tmp_path, "output: {format: x12-834, mode: full}", "output: {format: flatfile, mode: full}")
    settings = Settings(feeds_dir=tmp_path, mappings_dir=ROOT / "mappings", schemas_dir=ROOT / "schemas")
    with pytest.raises(ConfigError, match="has no flatfile layout"):
        bundle_from_feed(settings, load_feed(path), path)


@pytest.mark.parametrize("schedule", ["61 2 * * *", "0 24 * * *", "0 2 * *", "0 2 * * * *", "0 2 30 2 *",
                                      "@fortnightly", "@continuous", "nightly"])
def test_bad_schedule_names_file_field_and_expectation(tmp_path: Path, schedule: str) -> None:
    path = _variant(tmp_path, 'schedule: "0 2 * * *"', f'schedule: "{schedule}"')
    with pytest.raises(ConfigError) as info:
        load_feed(path)
    message = str(info.value)
    assert str(path) in message and "schedule" in message
    assert "five-field cron expression" in message or "unknown schedule preset" in message
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("schedule:"))
    assert f"line {line}" in message


@pytest.mark.parametrize("schedule", ["@daily", "@hourly", "@once", "*/15 6-18 * * mon-fri", "30 3 1 */3 *"])
def test_cron_expressions_and_airflow_presets_load(tmp_path: Path, schedule: str) -> None:
    path = _variant(tmp_path, 'schedule: "0 2 * * *"', f'schedule: "{schedule}"')
    assert load_feed(path).schedule == schedule


def test_null_schedule_means_manual_runs(tmp_path: Path) -> None:
    path = _variant(tmp_path, 'schedule: "0 2 * * *"', "schedule: null")
    assert load_feed(path).schedule is None


def test_timezone_database_is_scanned_once_per_process(tmp_path: Path) -> None:
    """available_timezones() walks the tz database; a DAG folder of 500 feeds must not walk it 500 times."""
    from carrierfeeds.config.feed import _timezone_names

    load_feed(FEED)
    before = _timezone_names.cache_info()
    for _ in range(3):
        load_feed(FEED)
    after = _timezone_names.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 3


def test_change_mode_in_the_feed_says_it_is_set_in_the_mapping(tmp_path: Path) -> None:
    """Change detection has one home, the carrier mapping: a feed asking for it
    is told where it lives, not merely that only 'full' is allowed."""
    path = _variant(tmp_path, "output: {format: x12-834, mode: full}", "output: {format: x12-834, mode: changes}")
    with pytest.raises(ConfigError) as info:
        load_feed(path)
    message = str(info.value)
    assert str(path) in message and "output" in message
    assert "change detection is set in the mapping (mappings/sunrise-health.yaml: mode: changes)" in message
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("output:"))
    assert f"line {line}" in message
    # full (or no mode at all) still loads
    assert load_feed(_variant(tmp_path, "output: {format: x12-834, mode: full}", "output: {format: x12-834}"))


#: Edits of the shipped feed, and what the loader must say: the field path and the project's words, never
#: pydantic's ("Value error, ", "Input should be", "String should match pattern").
WORDED = {
    "tax_id": ('tax_id: "990000002"', 'tax_id: "99-0002"', "employer.tax_id: is not in the expected form"),
    "cron": ('schedule: "0 2 * * *"', 'schedule: "61 2 * * *"', "schedule: '61 2 * * *' is not a five-field cron"),
    "timezone": ("timezone: America/New_York", "timezone: America/New_Yrok",
                 "timezone: unknown timezone 'America/New_Yrok'; did you mean 'America/New_York'?"),
    "boolean": ("armor: false", "armor: maybe", "encryption.armor: must be true or false"),
    "range": ("compress_level: 1", "compress_level: 12", "encryption.compress_level: must be at most 9"),
    "choice": ("policy: reject", "policy: rejct",
               "validation.policy: must be one of 'reject', 'quarantine' or 'threshold'; did you mean 'reject'?"),
    "missing": ("  name: ACME WIDGETS INC\n", "", "employer.name: is required"),
    "date": ("effective_from: 2024-01-01", "effective_from: 2024-13-01",
             "not valid YAML at line 14, column 19: '2024-13-01' is not a real date"),
}


@pytest.mark.parametrize("case", sorted(WORDED))
def test_config_errors_are_in_the_projects_words_with_file_and_field(tmp_path: Path, case: str) -> None:
    old, new, says = WORDED[case]
    path = _variant(tmp_path, old, new)
    with pytest.raises(ConfigError) as info:
        load_feed(path)
    message = info.value.message
    assert message.startswith(f"{path}: ") and says in message, message
    for pydantic_words in ("Value error", "Input should", "String should", "Field required", "validation error"):
        assert pydantic_words not in message
