"""What a run's file discloses, worked out by build and recorded by deliver with the delivery's intent.

Build knows the members and fields (the enrollment it rendered); deliver writes the ledger row. In
between, the disclosure waits in the staging store (``DISCLOSURE``, sealed) beside the rendered file, so
a retried or separate deliver stage records exactly what build rendered. Member ids become member tokens
(``census.tokens``) here and go no further: the ledger holds tokens, never ids.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from carrierfeeds.errors import PermanentError
from carrierfeeds.files import sha256_file
from carrierfeeds.ledger.disclosures import Disclosure, MemberIndex

if TYPE_CHECKING:
    from carrierfeeds.census.tokens import MemberTokenizer
    from carrierfeeds.enrollment import Enrollment
    from carrierfeeds.run.context import RunContext
    from carrierfeeds.settings import FeedBundle, Settings

#: The staged disclosure (JSON, sealed): what build rendered, for deliver to record.
DISCLOSURE = "disclosure.json"


def _config_sha256(path: Path, fallback: str) -> str:
    """The sha256 of the config file the run loaded; of the model's JSON when it came from no file."""
    if path.is_file():
        return sha256_file(path)
    return hashlib.sha256(fallback.encode()).hexdigest()


def fields_present(enrollment: Enrollment) -> tuple[str, ...]:
    """The census fields the rendered file carries: those of view columns holding at least one value."""
    table = enrollment.table
    out = set()
    for col in table.columns:
        src = enrollment.options.source_of(col)
        if not src or src in out:
            continue
        values = table[col]
        present = values.notna()
        if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
            present &= values.ne("")
        if bool(present.any()):
            out.add(src)
    return tuple(sorted(out))


def disclosure_for(settings: Settings, bundle: FeedBundle, enrollment: Enrollment,
                   tokenizer: MemberTokenizer) -> Disclosure:
    """The allowlist, the fields present, the config hashes and the members (token, INS03) of a file."""
    tokens, codes = member_entries(enrollment, tokenizer)
    return disclosure_of(settings, bundle, fields_present(enrollment), MemberIndex.pack(tokens, codes))


def disclosure_of(settings: Settings, bundle: FeedBundle, fields: tuple[str, ...], members: MemberIndex
                  ) -> Disclosure:
    """:func:`disclosure_for` from its parts: the fields present, and the members' index (a view rendered
    part by part gathers them part by part: :func:`fields_present`, :func:`member_entries`,
    ``MemberIndex.entries`` and ``MemberIndex.from_entries``)."""
    feed, mapping, schema = bundle.feed, bundle.mapping, bundle.schema
    return Disclosure(
        allowlist=tuple(mapping.allowlist), fields=fields,
        feed_sha256=_config_sha256(settings.feeds_dir / f"{feed.feed_id}.yaml", feed.model_dump_json()),
        mapping_sha256=_config_sha256(settings.mappings_dir / f"{mapping.mapping_id}.yaml",
                                      mapping.model_dump_json()),
        schema_sha256=_config_sha256(settings.schemas_dir / f"{schema.schema_id}.yaml", schema.model_dump_json()),
        suite_sha256=sha256_file(bundle.suite_path),
        members=members)


def member_entries(enrollment: Enrollment, tokenizer: MemberTokenizer) -> tuple[list[str], list[str]]:
    """Each member of the view once: its token and its INS03 code (for ``MemberIndex.pack``)."""
    from carrierfeeds.enrollment import member_starts

    table = enrollment.table
    starts = member_starts(table) if len(table) else np.zeros(0, dtype=bool)
    first = table.loc[starts, ["member_id", "ins03"]] if len(table) else table
    tokens = tokenizer.tokens(first["member_id"]).tolist() if len(first) else []
    codes = first["ins03"].astype("str").tolist() if len(first) else []
    return tokens, codes


def stage_disclosure_of(ctx: RunContext, enrollment: Enrollment) -> None:
    """What a run's rendered file discloses (fields, config hashes, member tokens), staged for deliver."""
    from carrierfeeds.census.tokens import MemberTokenizer

    tokenizer = MemberTokenizer.from_key_file(ctx.settings.resolved_token_key_file)
    stage_disclosure(ctx, disclosure_for(ctx.settings, ctx.bundle, enrollment, tokenizer))


def stage_disclosure(ctx: RunContext, disclosure: Disclosure) -> None:
    ctx.store.put_bytes(ctx.feed_id, ctx.ref.interval_start, DISCLOSURE,
                        json.dumps(disclosure.as_json(), separators=(",", ":")).encode(), phi=True)


def staged_disclosure(ctx: RunContext) -> Disclosure:
    """The disclosure build staged; fail closed: no file leaves without the record of what it holds."""
    if not ctx.store.exists(ctx.feed_id, ctx.ref.interval_start, DISCLOSURE):
        raise PermanentError("the build stage left no disclosure record for this file; build it again",
                             details={"feed_id": ctx.feed_id})
    return Disclosure.from_json(json.loads(ctx.store.get_bytes(ctx.feed_id, ctx.ref.interval_start, DISCLOSURE)))
