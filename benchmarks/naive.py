"""The naive baseline: the feed written by hand the obvious way, timed on the same census and checked
against the pipeline's own 834 for identical output.

What "naive" means here (GitHub issue 9): a per-row loop renders the 834
(:func:`carrierfeeds.x12.render.render_834_naive`, the reference the vectorised renderer must equal byte
for byte); Great Expectations runs the same suite with its default result format; pyx12 validates the
whole file, not a sample; python-gnupg encrypts with gpg's default options; paramiko's default
``SFTPClient.put`` uploads. Reading the census (pandas' default C engine), the mapping and the cross-row
rules are the ordinary pandas code a user would write too; they are timed but not made slower on
purpose. The output check compares the naive 834 with the pipeline's byte for byte (same envelope,
same control numbers) and, apart from the bytes, member by member: the same members (subscriber id
REF*0F, member id REF*23, relationship INS02) with the same maintenance codes (INS03), so that a
difference is named by what differs, not only by a digest.

    python -m benchmarks.naive --members 10000     # standalone: pipeline once, naive once, speed-up
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

#: The naive steps, in order; each is timed on its own.
NAIVE_STEPS = ("read", "validate_gx_default", "cross_row_rules", "build", "render_row_loop",
               "pyx12_whole_file", "gpg_default", "paramiko_put")


@dataclass(frozen=True)
class NaiveResult:
    """One naive run: seconds per step, the 834's size and digest, and how it compares to the pipeline's.

    ``identical`` is True when the naive 834 equals the pipeline's byte for byte; ``members`` and
    ``pipeline_members`` are the INS segments in each file; ``same_members`` whether both files hold the
    same members (:func:`member_codes` without INS03) and ``same_maintenance_codes`` whether each has
    the same INS03 in both; ``pyx12_ok`` is pyx12's verdict on the whole naive file; ``gx_success``
    whether GX (default result format) found the suite satisfied.
    """

    steps_s: dict[str, float]
    total_s: float
    payload_bytes: int
    payload_sha256: str
    members: int
    pipeline_members: int
    identical: bool
    same_members: bool
    same_maintenance_codes: bool
    pyx12_ok: bool
    pyx12_segments: int
    gx_success: bool
    cipher_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {"steps_s": {k: round(v, 3) for k, v in self.steps_s.items()}, "total_s": round(self.total_s, 3),
                "payload_bytes": self.payload_bytes, "payload_sha256": self.payload_sha256,
                "members": self.members, "pipeline_members": self.pipeline_members,
                "identical": self.identical, "same_members": self.same_members,
                "same_maintenance_codes": self.same_maintenance_codes, "pyx12_ok": self.pyx12_ok,
                "pyx12_segments": self.pyx12_segments,
                "gx_success": self.gx_success, "cipher_bytes": self.cipher_bytes}


def count_members(data: bytes) -> int:
    """INS segments in an 834 (element separator from ISA, segment terminator from ISA16's neighbour)."""
    if len(data) < 106:
        return 0
    e, t = re.escape(data[3:4]), re.escape(data[105:106])
    return len(re.findall(t + rb"\s*INS" + e, data))


def member_codes(data: bytes) -> Counter[tuple[bytes, bytes, bytes, bytes]]:
    """Every member loop of an 834 as (subscriber id REF*0F, member id REF*23 or empty, INS02, INS03), counted.

    The member loop runs from one INS to the next; the identifiers are the loop's first REF*0F and
    REF*23. Returns a multiset, so a member sent twice counts twice. Nothing here is logged.
    """
    if len(data) < 106:
        return Counter()
    e, t = data[3:4], data[105:106]
    out: Counter[tuple[bytes, bytes, bytes, bytes]] = Counter()
    current: list[bytes] | None = None
    for raw in data.split(t):
        fields = raw.strip().split(e)
        tag = fields[0]
        if tag == b"INS":
            if current is not None:
                out[(current[0], current[1], current[2], current[3])] += 1
            current = [b"", b"", fields[2] if len(fields) > 2 else b"", fields[3] if len(fields) > 3 else b""]
        elif current is not None and tag == b"REF" and len(fields) > 2:
            if fields[1] == b"0F" and not current[0]:
                current[0] = fields[2]
            elif fields[1] == b"23" and not current[1]:
                current[1] = fields[2]
        elif tag in (b"SE", b"GE", b"IEA") and current is not None:
            out[(current[0], current[1], current[2], current[3])] += 1
            current = None
    if current is not None:
        out[(current[0], current[1], current[2], current[3])] += 1
    return out


def compare_members(naive: bytes, pipeline: bytes) -> tuple[bool, bool]:
    """(same members, same maintenance code for each member) between two 834s."""
    a, b = member_codes(naive), member_codes(pipeline)

    def who(c: Counter[tuple[bytes, bytes, bytes, bytes]]) -> Counter[tuple[bytes, bytes, bytes]]:
        people: Counter[tuple[bytes, bytes, bytes]] = Counter()
        for (sub, mem, rel, _code), n in c.items():
            people[(sub, mem, rel)] += n
        return people

    same_members = who(a) == who(b)
    return same_members, same_members and a == b


def _read_naive(census: Path, schema: Any) -> pd.DataFrame:
    """pandas' default C engine, everything as text, stripped; canonical names and row numbers."""
    from carrierfeeds.census.columns import CANONICAL_COLUMNS, ROW_NUMBER

    frame = pd.read_csv(census, dtype=str, keep_default_na=False, sep=schema.delimiter,
                        encoding=schema.encoding)
    frame.columns = [str(c).strip() for c in frame.columns]
    wanted = {schema.header_for(c): c for c in CANONICAL_COLUMNS}
    frame = frame[[c for c in frame.columns if c in wanted]].rename(columns=wanted)
    for column in CANONICAL_COLUMNS:
        frame[column] = frame[column].str.strip() if column in frame.columns else ""
    frame = frame[list(CANONICAL_COLUMNS)]
    frame[ROW_NUMBER] = np.arange(2, len(frame) + 2, dtype=np.int64)
    return frame


def _gx_default(census: pd.DataFrame, suite_path: Path) -> bool:
    """The suite through GX with its default result format (SUMMARY); True when every expectation passed."""
    os.environ["GX_ANALYTICS_ENABLED"] = "False"
    import great_expectations as gx
    from great_expectations.core import ExpectationSuite

    data = json.loads(suite_path.read_text(encoding="utf-8"))
    suite = ExpectationSuite(**{k: v for k, v in data.items() if k not in ("id", "notes")})
    frame = census.replace("", None)
    context = gx.get_context(mode="ephemeral")
    suite = context.suites.add(suite)
    batch = (context.data_sources.add_pandas("naive").add_dataframe_asset("census")
             .add_batch_definition_whole_dataframe("census").get_batch(batch_parameters={"dataframe": frame}))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This pattern is interpreted as a regular")
        result = batch.validate(suite)
    return bool(result.success)


def _timed(steps: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    value = fn()
    steps[name] = time.perf_counter() - start
    return value


def run_naive(*, census: Path, bundle: Any, pipeline_payload: Path, state: dict[str, Any], created: datetime,
              as_of: date, keys: Any, endpoint: Any, remote_path: str, work: Path) -> NaiveResult:
    """The naive feed over ``census``; ``state`` is the pipeline run's state (control numbers) and
    ``created`` its clock, so that the naive 834 can be compared byte for byte with ``pipeline_payload``."""
    import gnupg
    import paramiko

    from carrierfeeds.config import Party
    from carrierfeeds.enrollment import build_enrollment
    from carrierfeeds.validation.rules import cross_row_rules
    from carrierfeeds.x12.check import validate_with_pyx12
    from carrierfeeds.x12.envelope import ControlNumbers, Delimiters, TransactionHeader
    from carrierfeeds.x12.render import render_834_naive

    feed, mapping, schema = bundle.feed, bundle.mapping, bundle.schema
    steps: dict[str, float] = {}
    frame = _timed(steps, "read", lambda: _read_naive(census, schema))
    gx_ok = _timed(steps, "validate_gx_default", lambda: _gx_default(frame, bundle.suite_path))
    raws = _timed(steps, "cross_row_rules", lambda: cross_row_rules(frame, schema, as_of))
    if raws:
        log.warning("naive baseline: cross-row rules found %d rule(s) broken", len(raws))
    enrollment = _timed(steps, "build", lambda: build_enrollment(frame, feed, mapping, as_of=as_of))
    header = TransactionHeader(
        ids=mapping.envelope, created=created, reference=f"CF{int(state['isa13']):09d}",
        sponsor=Party(name=feed.employer.name, id_qualifier="FI", id=feed.employer.tax_id),
        payer=mapping.payer, action=mapping.full_file.bgn08, group_number=mapping.group_number)
    control = ControlNumbers(isa13=int(state["isa13"]), gs06=int(state["gs06"]), st02=int(state["st02"]))
    payload = work / "naive.834"

    def render() -> bytes:
        data = render_834_naive(enrollment, header, control, Delimiters())
        payload.write_bytes(data)
        return data

    data = _timed(steps, "render_row_loop", render)
    verdict = _timed(steps, "pyx12_whole_file", lambda: validate_with_pyx12(payload))

    cipher = work / "naive.834.gpg"

    def encrypt() -> None:
        gpg = gnupg.GPG(gnupghome=str(keys.ours.home))
        with payload.open("rb") as fh:
            result = gpg.encrypt_file(fh, [keys.carrier_fingerprint], sign=keys.signer_fingerprint,
                                      output=str(cipher), always_trust=True, armor=False)
        if not result.ok:
            raise RuntimeError(f"gpg failed: {result.status}")

    _timed(steps, "gpg_default", encrypt)
    known = work / "naive_known_hosts"
    known.write_text(endpoint.known_hosts)

    def upload() -> None:
        client = paramiko.SSHClient()
        client.load_host_keys(str(known))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(endpoint.host, port=endpoint.port, username=endpoint.username,
                       key_filename=str(endpoint.private_key_path), look_for_keys=False, allow_agent=False)
        try:
            sftp = client.open_sftp()
            sftp.put(str(cipher), remote_path)
        finally:
            client.close()

    _timed(steps, "paramiko_put", upload)
    pipeline_bytes = pipeline_payload.read_bytes()
    same_members, same_codes = compare_members(data, pipeline_bytes)
    return NaiveResult(
        steps_s=steps, total_s=sum(steps.values()), payload_bytes=len(data),
        payload_sha256=hashlib.sha256(data).hexdigest(), members=count_members(data),
        pipeline_members=count_members(pipeline_bytes), identical=data == pipeline_bytes,
        same_members=same_members, same_maintenance_codes=same_codes,
        pyx12_ok=verdict.ok, pyx12_segments=verdict.segments, gx_success=gx_ok,
        cipher_bytes=cipher.stat().st_size)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Standalone: one pipeline run and one naive run at ``--members``; prints both and the speed-up."""
    from benchmarks.e2e import main as e2e_main

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    return e2e_main(["--members", str(args.members), "--seed", str(args.seed), "--repeat", "1",
                     "--naive", "always"])


if __name__ == "__main__":
    main()
