"""The accepted census file between validate and build (carrierfeeds.census.accepted): low-cardinality
columns as Arrow dictionaries from validation's codes, taken through the accepted rows (a quarantined
family's texts may stay in a dictionary, used by no row); the file reads back as the accepted rows and
builds the same view; a file staged before (plain text, uncompressed or LZ4) reads as it did."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from tests.enrollment.test_enrollment_build import AS_OF, ROOT

from carrierfeeds.census.accepted import (
    accepted_table,
    low_cardinality,
    read_accepted,
    worth_a_dictionary,
    write_accepted,
)
from carrierfeeds.census.generate import generate_census
from carrierfeeds.census.tokens import MemberTokenizer
from carrierfeeds.config import ValidationPolicy, load_feed, load_mapping, load_schema
from carrierfeeds.enrollment import Enrollment, build_enrollment
from carrierfeeds.validation import ColumnCodes, apply_policy, validate_census, validate_census_coded

FEED = load_feed(ROOT / "feeds" / "acme-sunrise-medical.yaml")
MAPPING = load_mapping(ROOT / "mappings" / "sunrise-health.yaml")
SCHEMA = load_schema(ROOT / "schemas" / "census-v1.yaml")
SUITE = ROOT / "schemas" / "census-v1.suite.json"
TOKENS = MemberTokenizer(b"t" * 32)


def assert_same_enrollment(got: Enrollment, want: Enrollment) -> None:
    """Equal 834 views and equal counts (members, subscribers, coverages, exclusions, rules)."""
    pd.testing.assert_frame_equal(got.table, want.table, check_exact=True)
    assert (got.member_count, got.subscriber_count, got.coverage_count) == (
        want.member_count, want.subscriber_count, want.coverage_count)
    assert (got.excluded, got.sanitized, got.normalised) == (want.excluded, want.sanitized, want.normalised)


def _quarantined() -> tuple[pd.DataFrame, dict[str, ColumnCodes | None], np.ndarray | None]:
    """A census, its accepted rows under quarantine (some families held back, some of their texts in no
    accepted row), validation's codes and the accepted rows' positions."""
    census = generate_census(150, 9, as_of=AS_OF)
    held = census["subscriber_id"] == census["subscriber_id"].iloc[0]
    census.loc[held, "city"] = "Heldtown"
    census.loc[held, "last_name"] = "Onlyheld"
    census.loc[held & (census["relationship"] != "EE"), "dob"] = "1980-13-45"  # fails real_date
    census["row_number"] = np.arange(2, len(census) + 2)
    report, codes = validate_census_coded(census, SUITE, SCHEMA, TOKENS, as_of=AS_OF, source_name="c.csv")
    assert report == validate_census(census, SUITE, SCHEMA, TOKENS, as_of=AS_OF, source_name="c.csv")
    outcome = apply_policy(census, report, ValidationPolicy(policy="quarantine"))
    assert outcome.held_back_families == 1 and outcome.rows is not None
    assert outcome.accepted.equals(census.iloc[outcome.rows])
    return outcome.accepted, low_cardinality(codes, len(census)), outcome.rows


def test_accepted_file_reads_back_as_the_accepted_rows(tmp_path: Path) -> None:
    accepted, codes, rows = _quarantined()
    table = accepted_table(accepted, codes, rows)
    kinds = {f.name: pa.types.is_dictionary(f.type) for f in table.schema}
    assert kinds["plan_code"] and kinds["last_name"] and kinds["city"]  # from validation / encoded here
    assert not kinds["member_id"] and not kinds["ssn"] and not kinds["row_number"]
    path = tmp_path / "accepted.arrow"
    write_accepted(path, table)
    assert pa.ipc.open_file(pa.memory_map(str(path))).num_record_batches == 1
    frame = read_accepted(path)
    assert list(frame.columns) == list(accepted.columns)
    assert isinstance(frame["plan_code"].dtype, pd.CategoricalDtype)
    assert "Onlyheld" in frame["last_name"].cat.categories  # a held-back family's text, used by no row
    plain = pd.DataFrame({c: s.astype("str") if isinstance(s.dtype, pd.CategoricalDtype) else s
                          for c, s in frame.items()})
    pd.testing.assert_frame_equal(plain, accepted.reset_index(drop=True), check_exact=True)
    pd.testing.assert_frame_equal(frame, pd.read_feather(path), check_exact=True)  # what pandas reads too
    assert_same_enrollment(build_enrollment(frame, FEED, MAPPING, as_of=AS_OF),
                            build_enrollment(accepted, FEED, MAPPING, as_of=AS_OF))


@pytest.mark.parametrize("compression", ["uncompressed", "lz4"])
def test_accepted_rows_staged_before_as_plain_text_read_as_before(
        tmp_path: Path, compression: Literal["uncompressed", "lz4"]) -> None:
    accepted, _, _ = _quarantined()
    path = tmp_path / "accepted.arrow"
    accepted.reset_index(drop=True).to_feather(path, compression=compression)  # what validate wrote before
    frame = read_accepted(path)
    pd.testing.assert_frame_equal(frame, pd.read_feather(path), check_exact=True)
    assert all(s.dtype == "str" for c, s in frame.items() if c != "row_number")


def test_missing_cells_of_a_column_validation_did_not_encode_stay_missing(tmp_path: Path) -> None:
    frame = pd.DataFrame({"city": pd.Series(["A", None, "A", "A", "A", "A", "A", "A"], dtype="str"),
                          "row_number": np.arange(2, 10)})
    table = accepted_table(frame)
    assert pa.types.is_dictionary(table.schema.field("city").type)
    write_accepted(tmp_path / "a.arrow", table)
    back = read_accepted(tmp_path / "a.arrow")
    assert back["city"].isna().tolist() == frame["city"].isna().tolist()


def test_worth_a_dictionary_at_a_quarter_of_the_rows() -> None:
    assert worth_a_dictionary(25, 100) and not worth_a_dictionary(26, 100) and not worth_a_dictionary(0, 0)


def test_dictionary_columns_in_many_record_batches_read_as_pandas_reads_them(tmp_path: Path) -> None:
    """pandas' own to_feather writes 64k-row batches: each batch's codes, one dictionary, nulls kept."""
    cells = pd.Series(np.array(["A", "B", None, "C"], dtype=object)[np.arange(70_000) % 4], dtype="str")
    frame = pd.DataFrame({"plan_code": cells.astype("category"), "row_number": np.arange(70_000)})
    path = tmp_path / "batches.arrow"
    frame.to_feather(path)
    assert pa.ipc.open_file(pa.memory_map(str(path))).num_record_batches > 1
    pd.testing.assert_frame_equal(read_accepted(path), pd.read_feather(path), check_exact=True)
