"""XLSX safety rests on defusedxml: it is a declared dependency, openpyxl parses through it, a
workbook whose XML declares entities (a billion-laughs bomb) is refused, and an openpyxl that is not using
defusedxml makes an XLSX census a ConfigError rather than a file parsed by the plain parser."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

openpyxl = pytest.importorskip("openpyxl")

from carrierfeeds.census.readers import read_census  # noqa: E402
from carrierfeeds.config import load_schema  # noqa: E402
from carrierfeeds.errors import DataError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
XLSX = load_schema(ROOT / "schemas" / "census-v1.yaml").model_copy(update={"format": "xlsx"})
#: Entity declarations for a billion-laughs expansion (10**9 bytes from a few hundred), and its use.
ENTITIES = ('<!DOCTYPE worksheet [<!ENTITY a "aaaaaaaaaa">'
            + "".join(f'<!ENTITY {chr(98 + i)} "' + f"&{chr(97 + i)};" * 10 + '">' for i in range(8)) + "]>")


def _workbook(path: Path) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["member_id", "first_name"])
    ws.append(["E1", "Ann"])
    wb.save(path)
    return path


def test_defusedxml_is_a_declared_and_locked_dependency() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(re.match(r"defusedxml\b", d) for d in deps)
    lock = (ROOT / "requirements.lock").read_text()
    entry = re.search(r"^defusedxml==[\d.]+\n((?:    #.*\n)+)", lock, flags=re.M)
    assert entry is not None and "carrierfeeds (pyproject.toml)" in entry.group(1)


def test_a_workbook_with_an_entity_bomb_is_refused(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "census.xlsx")
    buf = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                text = data.decode().replace(">Ann<", ">&i;<")
                head, _, body = text.partition("?>") if text.startswith("<?xml") else ("", "", text)
                data = ((head + "?>" if head else "") + ENTITIES + body).encode()
                assert "&i;" in data.decode()
            dst.writestr(info, data)
    path.write_bytes(buf.getvalue())
    with pytest.raises(DataError) as info:
        read_census(path, XLSX)
    assert info.value.rule == "bad_xlsx"


def test_an_openpyxl_not_using_defusedxml_is_refused(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "census.xlsx")
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from carrierfeeds.census.readers import read_census\n"
        "from carrierfeeds.config import load_schema\n"
        "from carrierfeeds.errors import CarrierFeedsError\n"
        f"schema = load_schema(Path({str(ROOT / 'schemas' / 'census-v1.yaml')!r}))\n"
        "schema = schema.model_copy(update={'format': 'xlsx'})\n"
        "try:\n"
        f"    read_census(Path({str(path)!r}), schema)\n"
        "    print('RESULT ' + json.dumps({'read': True}))\n"
        "except CarrierFeedsError as exc:\n"
        "    print('RESULT ' + json.dumps({'read': False, 'code': exc.code, 'message': exc.message}))\n")
    env = {**os.environ, "OPENPYXL_DEFUSEDXML": "False"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    assert out["read"] is False and out["code"] == "config" and "defusedxml" in out["message"]
