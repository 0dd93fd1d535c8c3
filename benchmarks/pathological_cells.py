"""Reading and validating a small census holding one pathological cell, timed per cell shape and length.

The per-cell checks (the reader's formula and "is it a number?" test, the suite's regexes, the cross-row
rules) must take time linear in the cell's length. This puts one cell of each shape (a long digit run
after a sign and ending in a letter, repeated signs, nested quotes, a plain long cell) into a 50-family
census and times ``read_census`` then ``validate_census``, with the schema's ``max_cell_length`` raised
past the cell so that the checks themselves are measured rather than the cap. Runs against whatever
``carrierfeeds`` is importable (set ``PYTHONPATH`` to compare two trees).

    python -m benchmarks.pathological_cells --lengths 5000 10000 20000
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from datetime import date
from pathlib import Path

SHAPES = {
    "signed-digits-then-letter": lambda n: "-" + "1" * (n - 2) + "x",
    "repeated-signs": lambda n: "+-" * (n // 2 - 1) + "1x",
    "nested-quotes": lambda n: '"' * (n // 2) + "a" + '"' * (n // 2),
    "digits-only": lambda n: "1" * n,
}
COLUMNS = ("first_name", "zip", "ssn", "dob", "phone")


def _time_one(shape: str, column: str, length: int, workdir: Path) -> tuple[float, str]:
    from carrierfeeds.census.generate import generate_census
    from carrierfeeds.census.readers import read_census
    from carrierfeeds.census.tokens import MemberTokenizer
    from carrierfeeds.config import load_schema
    from carrierfeeds.errors import DataError
    from carrierfeeds.validation import validate_census

    root = Path(__file__).resolve().parents[1]
    schema = load_schema(root / "schemas" / "census-v1.yaml")
    # model_copy does not validate: on a tree without the setting, the extra attribute is simply unread
    schema = schema.model_copy(update={"max_cell_length": 4 * length})
    frame = generate_census(50, 5, as_of=date(2026, 11, 20)).drop(columns=["row_number"], errors="ignore")
    frame = frame.astype(str)
    if column not in frame.columns:
        return 0.0, "absent"
    frame.iloc[3, frame.columns.get_loc(column)] = SHAPES[shape](length)
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    path = workdir / f"{shape}-{column}-{length}.csv"
    path.write_text(buf.getvalue())
    started = time.perf_counter()
    try:
        census = read_census(path, schema)
        report = validate_census(census, root / "schemas" / schema.suite, schema, MemberTokenizer(b"t" * 32),
                                 as_of=date(2026, 11, 20), source_name=path.name, workers=1)
        outcome = f"{len(report.findings)} finding(s)"
    except DataError as exc:
        outcome = f"DataError {exc.rule}"
    return time.perf_counter() - started, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[5000, 10000, 20000])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES))
    parser.add_argument("--columns", nargs="+", default=list(COLUMNS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes:
            for column in args.columns:
                for length in args.lengths:
                    seconds, outcome = _time_one(shape, column, length, Path(tmp))
                    print(f"{shape:28} {column:12} {length:>9}  {seconds:8.3f} s  {outcome}")


if __name__ == "__main__":
    main()
