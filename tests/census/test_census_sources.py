"""Census sources (local folder, SFTP drop on a real sshd, SQL on SQLite and PostgreSQL), size caps, archive
rules, and the CSV variants employers send (encodings, zips, formula-looking cells)."""

from __future__ import annotations

import io
import json
import os
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from carrierfeeds.census.archive import MAX_RATIO, extract_single, inspect_zip
from carrierfeeds.census.generate import generate_census
from carrierfeeds.census.readers import read_census
from carrierfeeds.census.sftp_source import RemoteCensus, SftpCensusDrop
from carrierfeeds.census.sources import (
    CensusIndex,
    CensusPick,
    NoNewCensus,
    accept_census,
    fetch_census,
    load_sql_url,
    sha256_file,
)
from carrierfeeds.config import CensusSchema, LocalSource, SftpSource, SqlSource, load_schema
from carrierfeeds.credentials import StaticConnections
from carrierfeeds.errors import ConfigError, DataError, HostKeyRefused, Refused, TransientError
from carrierfeeds.testing.postgres import read_only_login

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = load_schema(ROOT / "schemas" / "census-v1.yaml")
DAY = date(2026, 11, 20)
AT = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
CANARY = "Quillonius"


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    frame = generate_census(8, 5, as_of=DAY)
    frame.loc[:, "first_name"] = CANARY
    return frame


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    frame.drop(columns=["row_number"], errors="ignore").to_csv(buf, index=False)
    return buf.getvalue().encode("utf-8")


def _touch(path: Path, data: bytes, mtime: int) -> Path:
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def _no_phi(err: BaseException) -> None:
    assert CANARY not in str(err)
    if isinstance(err, DataError):
        assert CANARY not in json.dumps(err.as_dict(), default=str)


# -------------------------------------------------------------------------------------- local folder
def _local(tmp_path: Path, sample: pd.DataFrame) -> tuple[LocalSource, Path]:
    inbound = tmp_path / "data" / "inbound"
    inbound.mkdir(parents=True)
    _touch(inbound / "census_20261118.csv", _csv_bytes(sample.iloc[:4]), 1_700_000_000)
    _touch(inbound / "census_20261119.csv", _csv_bytes(sample), 1_700_000_100)
    return LocalSource(path="inbound", pattern="census_*.csv"), inbound


def _fetch(source: Any, tmp_path: Path, schema: CensusSchema = SCHEMA, **kw: Any) -> CensusPick:
    return fetch_census(source, feed_id="acme-test", schema=schema, data_dir=tmp_path / "data",
                        keys_dir=tmp_path / "keys", work_dir=tmp_path / "work", **kw)


def test_local_picks_the_newest_and_processes_it_once(tmp_path: Path, sample: pd.DataFrame) -> None:
    source, inbound = _local(tmp_path, sample)
    newest = inbound / "census_20261119.csv"
    # Never a symlink or a dot file, even when newer.
    (inbound / "census_zz_link.csv").symlink_to(newest)
    _touch(inbound / ".census_partial.csv", b"half", 1_700_000_500)

    pick = _fetch(source, tmp_path)
    assert (pick.name, pick.kind, pick.reprocessed, pick.origin) == (newest.name, "local", False, str(newest))
    # A private copy in the run's folder, read through the one descriptor the name was opened with.
    assert pick.path.parent == tmp_path / "work" and pick.path.stat().st_mode & 0o077 == 0
    assert pick.path.read_bytes() == newest.read_bytes()
    assert pick.sha256 == sha256_file(newest) and pick.size == newest.stat().st_size
    assert CensusPick.from_state(json.loads(json.dumps(pick.as_state()))) == pick

    # Not processed until accepted: a retry before acceptance finds the same file.
    assert _fetch(source, tmp_path).sha256 == pick.sha256
    accept_census(source, pick, feed_id="acme-test", data_dir=tmp_path / "data", keys_dir=tmp_path / "keys",
                  run_id="run-1", at=AT)
    index = json.loads((tmp_path / "data" / "census-index" / "acme-test.json").read_text())
    assert index["processed"][pick.sha256] == {"name": newest.name, "kind": "local", "run_id": "run-1",
                                               "recorded_at": AT.isoformat(), "mtime": 1_700_000_100}

    # The run that accepted it reads it again on a retry; any other run finds nothing new.
    assert _fetch(source, tmp_path, run_id="run-1").reprocessed is False
    with pytest.raises(NoNewCensus) as info:
        _fetch(source, tmp_path, run_id="run-2")
    assert info.value.rule == "already_processed" and info.value.file == newest.name
    forced = _fetch(source, tmp_path, force=True)
    assert forced.reprocessed and forced.sha256 == pick.sha256
    assert newest.exists(), "the employer's file is kept"

    # The same bytes under a new name are still processed; new bytes are new.
    _touch(inbound / "census_20261120.csv", newest.read_bytes(), 1_700_000_200)
    with pytest.raises(NoNewCensus):
        _fetch(source, tmp_path)
    _touch(inbound / "census_20261121.csv", _csv_bytes(sample.iloc[:5]), 1_700_000_300)
    assert _fetch(source, tmp_path).name == "census_20261121.csv"


def test_an_older_unprocessed_file_is_never_picked_over_a_processed_newer_one(tmp_path: Path,
                                                                               sample: pd.DataFrame) -> None:
    source, _ = _local(tmp_path, sample)
    pick = _fetch(source, tmp_path)
    accept_census(source, pick, feed_id="acme-test", data_dir=tmp_path / "data", keys_dir=tmp_path / "keys",
                  run_id=None, at=AT)
    with pytest.raises(NoNewCensus):
        _fetch(source, tmp_path)  # census_20261118.csv is older: superseded, not sent


def test_local_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        _fetch(LocalSource(path="nowhere"), tmp_path)
    (tmp_path / "data" / "empty").mkdir(parents=True)
    with pytest.raises(DataError) as info:
        _fetch(LocalSource(path="empty"), tmp_path)
    assert info.value.rule == "no_census"


def test_a_damaged_index_fails_closed(tmp_path: Path, sample: pd.DataFrame) -> None:
    source, _ = _local(tmp_path, sample)
    index = CensusIndex(tmp_path / "data", "acme-test")
    index.record("ab" * 32, name="x.csv", kind="local", run_id=None, at=AT)
    index.path.write_text("{not json")
    with pytest.raises(ConfigError):
        _fetch(source, tmp_path)
    with pytest.raises(ValueError):
        index.record("cd" * 32, name="x.csv", kind="local", run_id=None, at=datetime(2026, 1, 1))  # noqa: DTZ001


def test_a_2_gb_file_is_refused_before_it_is_read(tmp_path: Path, sample: pd.DataFrame) -> None:
    source, inbound = _local(tmp_path, sample)
    big = inbound / "census_20261125.csv"
    with big.open("wb") as fh:
        fh.truncate(2 * 1024**3)  # sparse: 2 GB on paper, no disk used
    os.utime(big, (1_700_001_000, 1_700_001_000))
    with pytest.raises(DataError) as info:
        _fetch(source, tmp_path)
    assert info.value.rule == "too_large" and info.value.file == big.name
    assert info.value.details["bytes"] == 2 * 1024**3
    with pytest.raises(DataError) as info:
        read_census(big, SCHEMA)
    assert info.value.rule == "too_large"
    assert big.stat().st_size == 2 * 1024**3, "the employer's file is kept"


# ------------------------------------------------------------------------------------ archive rules
ZIP_SCHEMA = SCHEMA.model_copy(update={"allow_zip": True})


def _zip(path: Path, members: dict[str, bytes], *, method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_a_zip_with_one_csv_is_read_when_the_schema_allows_zips(tmp_path: Path, sample: pd.DataFrame) -> None:
    _, inbound = _local(tmp_path, sample)
    _zip(inbound / "census_20261130.zip", {"export/census.csv": _csv_bytes(sample)})
    zsource = LocalSource(path="inbound", pattern="census_*.zip")
    with pytest.raises(DataError) as info:
        _fetch(zsource, tmp_path)  # the plain schema does not allow zips
    assert info.value.rule == "archive"
    pick = _fetch(zsource, tmp_path, schema=ZIP_SCHEMA)
    frame = read_census(pick.path, ZIP_SCHEMA)
    assert frame["member_id"].tolist() == sample["member_id"].tolist()
    with pytest.raises(DataError) as info:
        read_census(pick.path, SCHEMA)
    assert info.value.rule == "archive"


@pytest.mark.parametrize(("members", "rule"), [
    ({"../../etc/cron.d/census.csv": b"a,b\n1,2\n"}, "unsafe_archive_name"),
    ({"/abs/census.csv": b"a,b\n1,2\n"}, "unsafe_archive_name"),
    ({"dir\\census.csv": b"a,b\n1,2\n"}, "unsafe_archive_name"),
    ({"a.csv": b"a\n1\n", "b.csv": b"a\n1\n"}, "zip_members"),
    ({}, "zip_members"),
    ({"inner.zip": b"PK\x03\x04 not really"}, "nested_archive"),
    ({"census.csv": b"PK\x03\x04" + b"\x00" * 100}, "nested_archive"),  # a zip by content, not by name
    ({"census.csv": b"\x1f\x8b\x08" + b"\x00" * 100}, "nested_archive"),  # gzip inside
    ({"census.csv": b"0" * (8 * 1024 * 1024)}, "zip_bomb"),
])
def test_archive_rules(tmp_path: Path, members: dict[str, bytes], rule: str) -> None:
    path = _zip(tmp_path / "census.zip", members)
    with pytest.raises(DataError) as info:
        extract_single(path, name=path.name, max_bytes=1 << 30)
    assert info.value.rule == rule and info.value.file == path.name
    if rule != "nested_archive" or "inner.zip" in members:
        with pytest.raises(DataError):
            inspect_zip(path, name=path.name, max_bytes=1 << 30)


def test_zip_size_cap_and_damaged_and_encrypted_zips(tmp_path: Path, sample: pd.DataFrame) -> None:
    data = _csv_bytes(sample)
    path = _zip(tmp_path / "c.zip", {"c.csv": data})
    with pytest.raises(DataError) as info:
        extract_single(path, name="c.zip", max_bytes=len(data) - 1)
    assert info.value.rule == "too_large"
    member, got = extract_single(path, name="c.zip", max_bytes=len(data))
    assert got == data and member.name == "c.csv"

    cut = tmp_path / "cut.zip"
    cut.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError) as info:
        extract_single(cut, name="cut.zip", max_bytes=1 << 30)
    assert info.value.rule == "bad_archive"

    # zipfile cannot encrypt: set the "encrypted" bit in both headers, as a password tool would.
    raw = bytearray(path.read_bytes())
    for magic, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.index(magic) + offset
        raw[at] |= 0x1
    enc = tmp_path / "enc.zip"
    enc.write_bytes(bytes(raw))
    with pytest.raises(DataError) as info:
        inspect_zip(enc, name="enc.zip", max_bytes=1 << 30)
    assert info.value.rule == "encrypted_archive"


def test_the_bomb_ratio_is_generous_to_real_files(tmp_path: Path) -> None:
    big = generate_census(3000, 2, as_of=DAY)
    data = _csv_bytes(big)
    path = _zip(tmp_path / "real.zip", {"c.csv": data})
    _, got = extract_single(path, name="real.zip", max_bytes=1 << 30)
    assert got == data and len(data) / path.stat().st_size < MAX_RATIO


# ------------------------------------------------------------------------------------- CSV variants
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"])
def test_auto_detects_utf8_and_utf16_and_reads_names_exactly(tmp_path: Path, sample: pd.DataFrame,
                                                             encoding: str) -> None:
    frame = sample.copy()
    frame.loc[:, "last_name"] = "Núñez-Ødegård"
    path = tmp_path / "c.csv"
    path.write_bytes(_csv_bytes(frame).decode("utf-8").encode(encoding))
    got = read_census(path, SCHEMA.model_copy(update={"encoding": "auto"}))
    assert (got["last_name"] == "Núñez-Ødegård").all()
    assert got["member_id"].tolist() == sample["member_id"].tolist()


def test_declared_utf16_reads_and_a_utf16_file_declared_utf8_is_named(tmp_path: Path,
                                                                       sample: pd.DataFrame) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(_csv_bytes(sample).decode("utf-8").encode("utf-16"))
    got = read_census(path, SCHEMA.model_copy(update={"encoding": "utf-16"}))
    assert got["member_id"].tolist() == sample["member_id"].tolist()
    with pytest.raises(DataError) as info:
        read_census(path, SCHEMA)
    assert info.value.rule == "encoding" and "UTF-16" in str(info.value)


def test_auto_never_guesses_a_legacy_encoding(tmp_path: Path, sample: pd.DataFrame) -> None:
    frame = sample.copy()
    frame.loc[:, "last_name"] = "Núñez"
    path = tmp_path / "c.csv"
    path.write_bytes(frame.to_csv(index=False).encode("cp1252"))
    with pytest.raises(DataError) as info:
        read_census(path, SCHEMA.model_copy(update={"encoding": "auto"}))
    assert info.value.rule == "encoding" and info.value.row == 2
    _no_phi(info.value)


@pytest.mark.parametrize("value", ["=HYPERLINK(\"http://x\")", "@SUM(A1)", "+cmd|' /C calc'!A0", "-2+3+cmd"])
def test_formula_looking_cells_are_refused_by_row_and_column(tmp_path: Path, sample: pd.DataFrame,
                                                             value: str) -> None:
    frame = sample.copy()
    frame.loc[3, "address2"] = value
    frame.loc[5, "city"] = value
    path = tmp_path / "c.csv"
    path.write_bytes(_csv_bytes(frame))
    with pytest.raises(DataError) as info:
        read_census(path, SCHEMA)
    err = info.value
    assert (err.rule, err.row, err.column, err.details["cells"]) == ("formula_like_cell", 5, "address2", 2)
    assert value not in str(err)


def test_signed_numbers_and_phone_numbers_are_not_formulas(tmp_path: Path, sample: pd.DataFrame) -> None:
    frame = sample.copy()
    frame.loc[0, "phone"] = "+1 (555) 010-0199"
    frame.loc[1, "department"] = "-12.5"
    path = tmp_path / "c.csv"
    path.write_bytes(_csv_bytes(frame))
    got = read_census(path, SCHEMA)
    assert got.loc[0, "phone"] == "+1 (555) 010-0199"


def test_embedded_newlines_keep_record_row_numbers_and_stray_quotes_are_named(tmp_path: Path,
                                                                              sample: pd.DataFrame) -> None:
    frame = sample.copy()
    frame.loc[1, "address2"] = "Suite 5\nBuilding C"
    path = tmp_path / "c.csv"
    path.write_bytes(_csv_bytes(frame))
    got = read_census(path, SCHEMA)
    assert got.loc[1, "address2"] == "Suite 5\nBuilding C"
    assert got["row_number"].tolist() == list(range(2, len(frame) + 2))

    lines = _csv_bytes(sample).decode().splitlines()
    lines[4] = lines[4].replace(CANARY, f'{CANARY}"x', 1).replace(",", ',"', 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        read_census(path, SCHEMA)
    assert info.value.rule in ("csv_syntax", "field_count") and info.value.row is not None
    _no_phi(info.value)


# --------------------------------------------------------------------------------------- SFTP drop
@pytest.fixture
def drop(sshd_server: Any, tmp_path: Path, sample: pd.DataFrame) -> dict[str, Any]:
    folder = sshd_server.root / f"drop-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    _touch(folder / "census_old.csv", _csv_bytes(sample.iloc[:3]), 1_700_000_000)
    _touch(folder / "census_new.csv", _csv_bytes(sample), 1_700_000_100)
    # Newer, matching, but none of them a plain regular file: never picked.
    (folder / "census_zz_link.csv").symlink_to("/etc/passwd")
    os.utime(folder / "census_zz_link.csv", (1_700_000_900, 1_700_000_900), follow_symlinks=False)
    (folder / "census_dir.csv").mkdir()
    os.utime(folder / "census_dir.csv", (1_700_000_900, 1_700_000_900))
    _touch(folder / ".census_upload.csv", b"partial", 1_700_000_900)
    keys = tmp_path / "keys"
    sshd_server.write_keys_dir(keys, "acme-drop")
    return {"folder": folder, "keys": keys}


def test_sftp_drop_fetches_the_newest_regular_file_and_moves_it_when_accepted(
        tmp_path: Path, sshd_server: Any, drop: dict[str, Any], sample: pd.DataFrame) -> None:
    folder: Path = drop["folder"]
    source = SftpSource(connection_id="acme-drop", remote_dir=str(folder), pattern="census_*.csv",
                        processed_dir="processed")
    drop_api = SftpCensusDrop(sshd_server.endpoint(), str(folder), "census_*.csv")
    assert [f.name for f in drop_api.list_files()] == ["census_new.csv", "census_old.csv"]

    pick = _fetch(source, tmp_path)
    assert (pick.name, pick.remote_name, pick.kind) == ("census_new.csv", "census_new.csv", "sftp")
    assert pick.path.parent == tmp_path / "work" and pick.path.name == "sftp-census.download"
    assert pick.path.read_bytes() == (folder / "census_new.csv").read_bytes()
    assert pick.path.stat().st_mode & 0o077 == 0
    assert read_census(pick.path, SCHEMA, display_name=pick.name)["member_id"].tolist() == \
        sample["member_id"].tolist()
    assert (folder / "census_new.csv").exists(), "nothing moves before the census is accepted"

    moved = accept_census(source, pick, feed_id="acme-test", data_dir=tmp_path / "data",
                          keys_dir=drop["keys"], run_id="run-1", at=AT)
    assert moved == f"{folder}/processed/census_new.csv"
    assert (folder / "processed" / "census_new.csv").exists() and not (folder / "census_new.csv").exists()
    assert CensusIndex(tmp_path / "data", "acme-test").seen(pick.sha256)

    # The employer sends the same file again: recognised by sha256, and moved aside without overwriting.
    _touch(folder / "census_new.csv", (folder / "processed" / "census_new.csv").read_bytes(), 1_700_000_200)
    with pytest.raises(NoNewCensus):
        _fetch(source, tmp_path)
    again = _fetch(source, tmp_path, force=True)
    assert again.reprocessed
    moved = accept_census(source, again, feed_id="acme-test", data_dir=tmp_path / "data",
                          keys_dir=drop["keys"], run_id="run-2", at=AT)
    assert moved == f"{folder}/processed/census_new.csv.{again.sha256[:12]}"


def test_sftp_drop_refuses_an_unpinned_host_before_anything_is_read(
        tmp_path: Path, sshd_server: Any, drop: dict[str, Any]) -> None:
    from carrierfeeds.testing.sshd import write_ed25519_key

    other = write_ed25519_key(tmp_path / "other_host_key")
    wrong = f"[{sshd_server.host}]:{sshd_server.port} {other}\n"
    source = SftpSource(connection_id="acme-drop", remote_dir=str(drop["folder"]))
    with pytest.raises(HostKeyRefused):
        _fetch(source, tmp_path,
               connections=StaticConnections(sftp={source.connection_id: sshd_server.endpoint(known_hosts=wrong)}))
    assert not (tmp_path / "work" / "sftp-census.download").exists()


def test_sftp_drop_never_trusts_a_name_as_a_path_and_caps_size(
        tmp_path: Path, sshd_server: Any, drop: dict[str, Any]) -> None:
    folder: Path = drop["folder"]
    api = SftpCensusDrop(sshd_server.endpoint(), str(folder), "*", retries=1)
    for name in ("../../etc/passwd", "/etc/passwd", "..", ".census_upload.csv", "a/b.csv"):
        with pytest.raises(Refused):
            api.fetch(RemoteCensus(name=name, size=1, mtime=0), tmp_path / "x", max_bytes=1 << 20)
    with pytest.raises(Refused):
        api.fetch(RemoteCensus(name="census_zz_link.csv", size=1, mtime=0), tmp_path / "x", max_bytes=1 << 20)
    assert not (tmp_path / "x").exists()
    with pytest.raises(Refused):
        api.move("../census_new.csv", "processed", sha256="0" * 64)

    source = SftpSource(connection_id="acme-drop", remote_dir=str(folder), pattern="census_*.csv")
    small = SCHEMA.model_copy(update={"max_bytes": 100})
    with pytest.raises(DataError) as info:
        _fetch(source, tmp_path, schema=small)
    assert info.value.rule == "too_large" and info.value.file == "census_new.csv"
    assert not (tmp_path / "work" / "sftp-census.download").exists()

    empty = SftpSource(connection_id="acme-drop", remote_dir=str(folder), pattern="nothing_*.csv")
    with pytest.raises(DataError) as info:
        _fetch(empty, tmp_path)
    assert info.value.rule == "no_census"


def test_sftp_source_config() -> None:
    with pytest.raises(ValueError, match="file names only"):
        SftpSource(connection_id="x", pattern="../*.csv")


# ------------------------------------------------------------------------------------------- SQL
QUERY = ("SELECT member_id, subscriber_id, relationship, last_name, first_name, dob, gender, plan_code, "
         "coverage_level, coverage_start, coverage_end FROM hr_census ORDER BY line")


def _hr_table(url: str, frame: pd.DataFrame) -> None:
    import sqlalchemy as sa

    table = frame.drop(columns=["row_number"], errors="ignore").copy()
    table.insert(0, "line", range(len(table)))
    table["dob"] = pd.to_datetime(table["dob"]).dt.date  # a real DATE column
    table["coverage_end"] = table["coverage_end"].replace("", None)
    engine = sa.create_engine(url)
    table.to_sql("hr_census", engine, index=False)
    engine.dispose()


def _sql_key(keys: Path, url: str) -> None:
    keys.mkdir(parents=True, exist_ok=True)
    fd = os.open(keys / "acme-hr.json", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"url": url}, fh)


@dataclass(frozen=True)
class Hr:
    """The employer's HR database: ``admin`` makes its table, ``url`` is the read-only login we are given."""

    admin: str
    url: str


@pytest.fixture(params=["sqlite", "postgresql"])
def hr(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hr]:
    if request.param == "sqlite":
        yield Hr(f"sqlite:///{tmp_path / 'hr.sqlite'}", f"sqlite:///{tmp_path / 'hr.sqlite'}")
        return
    admin = str(request.getfixturevalue("pg_database"))
    with read_only_login(admin) as url:
        yield Hr(admin, url)


def test_sql_source_reads_the_query_as_a_census(tmp_path: Path, hr: Hr, sample: pd.DataFrame) -> None:
    _hr_table(hr.admin, sample)
    _sql_key(tmp_path / "keys", hr.url)
    source = SqlSource(connection_id="acme-hr", query=QUERY)
    pick = _fetch(source, tmp_path)
    assert (pick.kind, pick.name) == ("sql", "acme-hr.sql.csv")
    assert pick.path.parent == tmp_path / "work" and pick.path.stat().st_mode & 0o077 == 0
    got = read_census(pick.path, SCHEMA, display_name=pick.name)
    for column in ("member_id", "relationship", "first_name", "dob", "coverage_start", "coverage_end"):
        assert got[column].tolist() == sample[column].tolist(), column
    assert (got["address1"] == "").all()  # not selected: optional, left empty
    # A query result is this interval's census: accepting it records nothing, the next run reads again.
    accept_census(source, pick, feed_id="acme-test", data_dir=tmp_path / "data", keys_dir=tmp_path / "keys",
                  run_id="r", at=AT)
    assert not CensusIndex(tmp_path / "data", "acme-test").seen(pick.sha256)
    assert _fetch(source, tmp_path).sha256 == pick.sha256


def test_sql_source_errors(tmp_path: Path, hr: Hr, sample: pd.DataFrame) -> None:
    _hr_table(hr.admin, sample.iloc[:2])
    _sql_key(tmp_path / "keys", hr.url)
    with pytest.raises(ConfigError) as info:
        _fetch(SqlSource(connection_id="acme-hr", query="SELECT * FROM no_such_table"), tmp_path)
    assert "query" in str(info.value)
    with pytest.raises(DataError) as info_d:
        _fetch(SqlSource(connection_id="acme-hr", query=QUERY), tmp_path,
               schema=SCHEMA.model_copy(update={"max_bytes": 10}))
    assert info_d.value.rule == "too_large"
    assert not (tmp_path / "work" / "sql-census.csv").exists()
    header_only = _fetch(SqlSource(connection_id="acme-hr", query=QUERY.replace("ORDER BY", "WHERE 1=0 ORDER BY")),
                         tmp_path)
    with pytest.raises(DataError) as info_d:
        read_census(header_only.path, SCHEMA, display_name=header_only.name)
    assert info_d.value.rule == "no_data_rows"


def test_sql_source_runs_read_only_on_postgresql(tmp_path: Path, pg_database: str, sample: pd.DataFrame) -> None:
    import sqlalchemy as sa

    from carrierfeeds.errors import PermanentError

    _hr_table(pg_database, sample)
    sneaky = "WITH gone AS (DELETE FROM hr_census RETURNING *) SELECT * FROM gone"
    with read_only_login(pg_database) as url:
        _sql_key(tmp_path / "keys", url)
        with pytest.raises(PermanentError):
            _fetch(SqlSource(connection_id="acme-hr", query=sneaky), tmp_path)
    engine = sa.create_engine(pg_database)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM hr_census")).scalar_one() == len(sample)
    engine.dispose()


def test_sql_source_unreachable_database_is_transient(tmp_path: Path) -> None:
    _sql_key(tmp_path / "keys", "postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2")
    with pytest.raises(TransientError):
        _fetch(SqlSource(connection_id="acme-hr", query="SELECT 1 AS member_id"), tmp_path)


def test_sql_url_comes_from_an_owner_only_connection_file_never_from_yaml(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    _sql_key(keys, "sqlite:///x.db")
    assert load_sql_url(keys, "acme-hr") == "sqlite:///x.db"
    os.chmod(keys / "acme-hr.json", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_sql_url(keys, "acme-hr")
    with pytest.raises(ConfigError):
        load_sql_url(keys, "missing")
    with pytest.raises(ValueError, match="url"):
        SqlSource.model_validate({"kind": "sql", "connection_id": "x", "query": "SELECT 1",
                                  "url": "postgresql://u:secret@h/db"})
    for bad in ("DELETE FROM t", "SELECT 1; DROP TABLE t", "update t set a=1"):
        with pytest.raises(ValueError, match="single SELECT"):
            SqlSource(connection_id="x", query=bad)

