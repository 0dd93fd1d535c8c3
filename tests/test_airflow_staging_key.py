"""The staging key's Airflow Variable has a name Airflow's secrets masker treats as sensitive; the
old name still works, with a DeprecationWarning and its value masked by hand. Real Airflow, a fresh
interpreter per case (Airflow reads its configuration once per process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from carrierfeeds.staging import StagingKey
from test_airflow import _airflow_env, _run_python

pytestmark = [pytest.mark.slow, pytest.mark.airflow]

ROOT = Path(__file__).resolve().parents[1]
CODE = """
    import json, logging, uuid, warnings
    from datetime import date
    from airflow.sdk._shared.secrets_masker import DEFAULT_SENSITIVE_FIELDS, redact
    from carrierfeeds import airflow as cf
    from carrierfeeds.settings import Settings

    def sensitive(name):
        return any(word in name.lower() for word in DEFAULT_SENSITIVE_FIELDS)

    out = {"new_sensitive": sensitive(cf.STAGING_KEY_VARIABLE),
           "old_sensitive": sensitive(getattr(cf, "LEGACY_STAGING_KEY_VARIABLE", "carrierfeeds_staging_key"))}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = cf.staging_store(Settings(), "memory://cf-" + uuid.uuid4().hex + "/staging")
    store.put_bytes("f1", date(2026, 11, 20), "census.csv", b"x")
    out["key_id"] = store.key.key_id
    out["deprecations"] = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)
                           and "staging" in str(w.message)]
    out["masked"] = redact("key is " + store.key.as_text()) == "key is ***"
    print("RESULT " + json.dumps(out))
"""


@pytest.fixture
def key() -> StagingKey:
    return StagingKey.generate()


def _env(tmp_path: Path, variables: dict[str, str]) -> dict[str, str]:
    return _airflow_env(tmp_path, {"CARRIERFEEDS_DATA_DIR": str(tmp_path / "var"),
                                   "CARRIERFEEDS_KEYS_DIR": str(tmp_path / "keys"), **variables})


def test_the_staging_key_variable_is_one_airflow_masks(tmp_path: Path, key: StagingKey) -> None:
    out = _run_python(CODE, _env(tmp_path, {"AIRFLOW_VAR_CARRIERFEEDS_STAGING_SECRET_KEY": key.as_text()}),
                      ROOT)
    assert out["new_sensitive"] and not out["old_sensitive"]
    assert out["key_id"] == key.key_id and out["deprecations"] == []
    assert out["masked"], "Airflow masks the key's value in logs"


def test_the_old_variable_name_still_works_with_a_deprecation_warning(tmp_path: Path, key: StagingKey) -> None:
    out = _run_python(CODE, _env(tmp_path, {"AIRFLOW_VAR_CARRIERFEEDS_STAGING_KEY": key.as_text()}),
                      ROOT)
    assert out["key_id"] == key.key_id
    (message,) = out["deprecations"]
    assert "carrierfeeds_staging_key" in message and "carrierfeeds_staging_secret_key" in message
    assert out["masked"], "the value is masked by hand, since the old name is not a sensitive one"
