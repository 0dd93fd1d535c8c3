"""The package's layers hold: import-linter's contracts (pyproject.toml) are kept, and cover every room."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "carrierfeeds"


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_the_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "BROKEN" not in proc.stdout


def test_every_module_but_the_airflow_one_is_bound_by_the_airflow_contract() -> None:
    contract = next(c for c in _contracts() if "imports Airflow" in c["name"])
    bound = set(contract["source_modules"])
    rooms = {f"carrierfeeds.{p.stem}" for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert rooms - bound == {"carrierfeeds.airflow"}, "a module no contract binds: add it to pyproject.toml"
    assert bound <= rooms, "the contract names a module that no longer exists"
