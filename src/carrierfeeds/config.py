"""Typed, frozen configuration (feeds, carrier mappings, census schemas) checked when loaded.

A wrong field is a :class:`~carrierfeeds.errors.ConfigError` naming the file, the line, the field path
and what was expected, with a "did you mean" for misspelt keys, before anything runs.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from carrierfeeds.census.columns import CANONICAL_COLUMNS, IDENTITY_FIELDS
from carrierfeeds.errors import ConfigError
from carrierfeeds.flatfile import CsvFlatLayout, FixedWidthFlatLayout

_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_FPR = r"^[0-9A-F]{40}$"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


# --------------------------------------------------------------------------------------------- feeds
class Authorization(_Model):
    """The employer's authorisation for this carrier to receive its members' data."""

    effective_from: date
    effective_to: date | None = None
    plans: tuple[str, ...] = Field(min_length=1, description="employer plan codes this carrier may see")

    def covers(self, day: date) -> bool:
        return self.effective_from <= day and (self.effective_to is None or day <= self.effective_to)


class Employer(_Model):
    id: str = Field(pattern=_ID)
    name: str = Field(min_length=1, max_length=60)
    tax_id: str = Field(pattern=r"^\d{9}$", description="FEIN, sent as the sponsor id (N104)")
    contract_end: date | None = None
    legal_hold: bool = False


class Carrier(_Model):
    id: str = Field(pattern=_ID)
    name: str = Field(min_length=1, max_length=60)
    electronic: bool = Field(True, description="False: the carrier gets a printable fallback document")


class LocalSource(_Model):
    kind: Literal["local"] = "local"
    path: str = Field(description="folder the employer's files land in, relative to the data directory")
    pattern: str = "*.csv"

    @field_validator("pattern")
    @classmethod
    def _plain_pattern(cls, v: str) -> str:
        # The folder is opened once and files are opened relative to it: a pattern never walks folders.
        if "/" in v or "\\" in v:
            raise ValueError("must match file names only, no folders")
        return v


class SftpSource(_Model):
    """The employer's SFTP drop, reached through pinned-host-key endpoint files (``<keys_dir>/<id>.json``)."""

    kind: Literal["sftp"] = "sftp"
    connection_id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$",
                               description="Airflow connection id, or <keys_dir>/<id>.json under the CLI")
    remote_dir: str = Field("/", description="the drop folder (absolute, or relative to the login folder)")
    pattern: str = "*.csv"
    processed_dir: str | None = Field(
        None, description="server folder an accepted census is moved to; null: leave it where it is")

    @field_validator("pattern")
    @classmethod
    def _plain_pattern(cls, v: str) -> str:
        if "/" in v or "\\" in v:
            raise ValueError("must match file names only, no folders")
        return v


class SqlSource(_Model):
    """A query against the employer's HR database; the URL (with its secret) comes from a connection."""

    kind: Literal["sql"] = "sql"
    connection_id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$",
                               description="Airflow connection id, or <keys_dir>/<id>.json holding the URL")
    query: str = Field(min_length=1, description="one read-only SELECT (or WITH ... SELECT) statement")

    @field_validator("query")
    @classmethod
    def _select_only(cls, v: str) -> str:
        body = v.strip().rstrip(";").strip()
        if not re.match(r"(?is)^(select|with)\b", body) or ";" in body:
            raise ValueError("must be a single SELECT (or WITH ... SELECT) statement")
        return body


CensusSource = Annotated[LocalSource | SftpSource | SqlSource, Field(discriminator="kind")]


class CensusSpec(_Model):
    source: CensusSource
    schema_id: str = Field(pattern=_ID, description="name of a schemas/<schema_id>.yaml census schema")


class OutputSpec(_Model):
    format: Literal["x12-834", "pdf", "flatfile"] = Field(
        "x12-834", description="flatfile: the carrier mapping's flatfile layout (CSV or fixed width)")
    mode: Literal["full"] = Field(
        "full", description="always full: change detection (change files) is the mapping's mode, not the feed's")


class EncryptionSpec(_Model):
    """Who can read the file: the carrier's key, or for a manual hand-off the hand-off team's key."""

    recipient_fingerprint: str = Field(pattern=_FPR, description="carrier's key, full 40-hex fingerprint")
    signer_fingerprint: str = Field(pattern=_FPR, description="our signing key, full 40-hex fingerprint")
    armor: bool = False
    compress_level: int = Field(1, ge=0, le=9)
    suffix: str = Field(".pgp", pattern=r"^\.[A-Za-z0-9.]{1,10}$")
    expiry_warning_days: int = Field(30, ge=0)
    recipient_user_id: str | None = Field(
        None, min_length=1, max_length=256,
        description="optional pin: one of the carrier key's user ids, exactly (e.g. 'EDI <edi@carrier.example>')")
    recipient_encryption_subkey: str | None = Field(
        None, pattern=_FPR, description="optional pin: full fingerprint of the subkey gpg must encrypt to")

    @field_validator("recipient_fingerprint", "signer_fingerprint", "recipient_encryption_subkey", mode="before")
    @classmethod
    def _normalise_fpr(cls, v: Any) -> Any:
        return v.replace(" ", "").upper() if isinstance(v, str) else v


class SftpDelivery(_Model):
    kind: Literal["sftp"] = "sftp"
    connection_id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$",
                               description="Airflow connection id, or <keys_dir>/<id>.json under the CLI")
    remote_dir: str = "/inbox"


class LocalDelivery(_Model):
    kind: Literal["local"] = "local"
    path: str = Field(description="a carrier inbox folder, relative to the data directory")


class ManualDelivery(_Model):
    """A person hands the (encrypted) printable document over; the ledger tracks it until confirmed."""

    kind: Literal["manual"] = "manual"
    outbox: str = Field(description="private outbox folder, relative to the data directory")


Delivery = Annotated[SftpDelivery | LocalDelivery | ManualDelivery, Field(discriminator="kind")]


class ValidationPolicy(_Model):
    policy: Literal["reject", "quarantine", "threshold"] = "reject"
    threshold_pct: float = Field(0.0, ge=0, le=100,
                                 description="with policy threshold: reject when more families fail")


class NotifySpec(_Model):
    """Where a failed run's PHI-free notice goes: a webhook, named by Airflow connection or URL."""

    webhook_connection_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$",
                                              description="Airflow connection holding the webhook URL")
    webhook_url: str | None = Field(None, pattern=r"^https?://[^\s]+$",
                                    description="the URL itself, when it holds no secret")

    @model_validator(mode="after")
    def _one_target(self) -> NotifySpec:
        if (self.webhook_connection_id is None) == (self.webhook_url is None):
            raise ValueError("give exactly one of webhook_connection_id and webhook_url")
        return self


class ReturnSourceSpec(_Model):
    """Where the carrier leaves its return file (read by the reconciliation intake): its SFTP outbox."""

    connection: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="connection id of the carrier's SFTP")
    remote_dir: str = Field("/outbox", description="the carrier's outbox folder")
    pattern: str = Field("*", description="file names to collect (glob)")
    signed_by: str | None = Field(None, pattern=_FPR, description="the carrier's signing key (40-hex "
                                  "fingerprint); when set, an unsigned or otherwise signed file is refused")


class ReconciliationSpec(_Model):
    """Comparing what the carrier holds (its return file) with what we sent; off unless present."""

    format: Literal["834", "csv", "fixed_width"] = "834"
    layout: Literal["mapping"] | CsvFlatLayout | FixedWidthFlatLayout | None = Field(
        None, description="flat exports: 'mapping' (the carrier mapping's flatfile layout) or a layout inline")
    max_bytes: int = Field(512 << 20, ge=1, description="a return file larger than this is refused unread")
    alert_threshold: int | None = Field(None, ge=0, description="webhook alert when more discrepancies than "
                                        "this are open after a comparison (needs notify); null: no alert")
    source: ReturnSourceSpec | None = None

    @model_validator(mode="after")
    def _layout_fits_format(self) -> ReconciliationSpec:
        if self.format == "834" and self.layout is not None:
            raise ValueError("layout is for csv or fixed_width return files, not 834")
        if self.format != "834" and self.layout is None:
            raise ValueError(f"format {self.format} needs a layout ('mapping' or an inline layout)")
        kind = {"csv": "csv", "fixed_width": "fixed-width"}.get(self.format)
        if isinstance(self.layout, CsvFlatLayout | FixedWidthFlatLayout) and self.layout.kind != kind:
            raise ValueError(f"layout kind {self.layout.kind!r} does not match format {self.format!r}")
        return self


#: Airflow's cron presets (``airflow.utils.dates.cron_presets``) and ``@once``; ``@continuous`` is not
#: offered: a feed run back to back all day would resend nothing but load the carrier's server.
SCHEDULE_PRESETS = ("@once", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")


@functools.cache
def _timezone_names() -> frozenset[str]:
    # available_timezones() walks the tz database on every call: once per process is enough.
    from zoneinfo import available_timezones

    return frozenset(available_timezones())


class Feed(_Model):
    """One employer's data to one carrier: what to read, how to map it, where it goes."""

    feed_id: str = Field(pattern=_ID)
    description: str = ""
    employer: Employer
    carrier: Carrier
    authorization: Authorization
    schedule: str | None = Field("0 2 * * *", description="five-field cron expression, an Airflow preset "
                                 "(@daily, @hourly, ...), or null for manual runs")
    timezone: str = "UTC"
    census: CensusSpec
    mapping_id: str = Field(pattern=_ID, description="name of a mappings/<mapping_id>.yaml")
    output: OutputSpec = OutputSpec()
    encryption: EncryptionSpec
    delivery: Delivery
    validation: ValidationPolicy = ValidationPolicy()
    notify: NotifySpec | None = None
    reconciliation: ReconciliationSpec | None = None

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, v: str | None) -> str | None:
        # Checked here, not left to Airflow: a bad cron raises while the one DAG file builds every
        # feed's DAG, so one typo would hide all of them, and the CLI would never notice.
        if v is None or v in SCHEDULE_PRESETS:
            return v
        from croniter import croniter  # type: ignore[import-untyped]  # Airflow's own cron parser

        if v.startswith("@"):
            raise ValueError(f"unknown schedule preset {v!r}; expected one of {', '.join(SCHEDULE_PRESETS)}")
        if len(v.split()) != 5 or not croniter.is_valid(v, strict=True):
            raise ValueError(f"{v!r} is not a five-field cron expression (minute hour day-of-month month "
                             "day-of-week, e.g. '0 2 * * *') with values in range, nor an Airflow preset "
                             "such as @daily")
        return v

    @field_validator("output", mode="before")
    @classmethod
    def _mode_is_the_mappings(cls, v: Any, info: ValidationInfo) -> Any:
        # Change detection lives in one place, the carrier mapping: a feed saying "changes" here would
        # otherwise read as if it were on while the mapping still sends full files (or the reverse).
        mode = v.get("mode", "full") if isinstance(v, dict) else "full"
        if mode != "full":
            mapping_id = info.data.get("mapping_id") or "<mapping_id>"
            raise ValueError(f"output.mode {mode!r} is not a feed setting: change detection is set in the "
                             f"mapping (mappings/{mapping_id}.yaml: mode: changes); output.mode takes only "
                             "'full' (or leave it out)")
        return v

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, v: str) -> str:
        zones = _timezone_names()
        if v not in zones:
            close = difflib.get_close_matches(v, sorted(zones), n=1)
            raise ValueError(f"unknown timezone {v!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
        return v

    @model_validator(mode="after")
    def _electronic_matches_output(self) -> Feed:
        if not self.carrier.electronic and self.output.format != "pdf":
            raise ValueError("carrier.electronic is false, so output.format must be 'pdf'")
        if not self.carrier.electronic and self.delivery.kind != "manual":
            raise ValueError("carrier.electronic is false, so delivery.kind must be 'manual'")
        return self


# ------------------------------------------------------------------------------------------ mappings
class EnvelopeIds(_Model):
    """Interchange and group ids (ISA05-08, GS02/GS03) and the usage indicator (ISA15)."""

    sender_qualifier: str = Field("ZZ", pattern=r"^[0-9A-Z]{2}$")
    sender_id: str = Field(pattern=r"^[0-9A-Z ]{1,15}$")
    receiver_qualifier: str = Field("ZZ", pattern=r"^[0-9A-Z]{2}$")
    receiver_id: str = Field(pattern=r"^[0-9A-Z ]{1,15}$")
    gs_sender: str = Field(pattern=r"^[0-9A-Z]{2,15}$")
    gs_receiver: str = Field(pattern=r"^[0-9A-Z]{2,15}$")
    usage: Literal["T", "P"] = "T"
    ta1_requested: bool = Field(
        False, description="ISA14: true asks the carrier for a TA1 interchange acknowledgment on every file")


class Party(_Model):
    """An N1 party: the payer (1000B) named by the mapping."""

    name: str = Field(min_length=1, max_length=60)
    id_qualifier: Literal["FI", "XV", "94"] = "FI"
    id: str = Field(min_length=2, max_length=80)


class PlanCode(_Model):
    insurance_line: Literal["HLT", "DEN", "VIS", "LIF", "ADD", "STD", "LTD", "EPO", "HMO", "PPO", "POS",
                            "HSA", "FAC", "PDG", "MM", "AH", "AK", "AJ", "AG", "DCP", "PRA"]
    description: str = Field(min_length=1, max_length=50, description="HD04 plan coverage description")
    policy_number: str | None = Field(
        None, min_length=1, max_length=50, pattern=r"^[A-Z0-9][A-Z0-9 &'()+,\-./;?=]*$",
        description="the carrier's group or policy number for this plan, sent as REF*1L in each of its "
                    "Loop 2300s (basic characters, upper case)")


class ClientReporting(_Model):
    """REF*17 client reporting category: a fixed ``value``, or a census ``field`` on the allowlist."""

    value: str | None = Field(None, min_length=1, max_length=50, pattern=r"^[A-Z0-9][A-Z0-9 &'()+,\-./;?=]*$")
    field: str | None = None

    @field_validator("field")
    @classmethod
    def _canonical(cls, v: str | None) -> str | None:
        if v is not None and v not in CANONICAL_COLUMNS:
            close = difflib.get_close_matches(v, CANONICAL_COLUMNS, n=1)
            raise ValueError(f"unknown census field {v!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
        return v

    @model_validator(mode="after")
    def _one_source(self) -> ClientReporting:
        if (self.value is None) == (self.field is None):
            raise ValueError("give exactly one of value and field")
        return self


class MemberReferences(_Model):
    """Loop 2000 REF segments beyond REF*0F (every member) and REF*23 (every dependent's own id),
    written in the guide's order: REF*0F, REF*1L, REF*17, REF*23, REF*DX."""

    group_policy_number: bool = Field(False, description="REF*1L: the mapping's group_number on every member")
    client_reporting_category: ClientReporting | None = Field(None, description="REF*17")
    department: bool = Field(False, description="REF*DX: the census department (must be on the allowlist)")


#: Loop 2000 DTP dates a mapping may ask for, and the census field each comes from.
MEMBER_DATE_SOURCES: dict[str, str] = {
    "hire": "hire_date",                  # DTP*336 employment begin, subscribers only
    "eligibility_begin": "coverage_start",  # DTP*356: the member's earliest coverage start
    "eligibility_end": "coverage_end",    # DTP*357: the member's latest coverage end, once every coverage ends
}
MemberDate = Literal["hire", "eligibility_begin", "eligibility_end"]


class FullFileSpec(_Model):
    maintenance_type: Literal["030"] = Field("030", description="INS03 on every member of a full file")
    bgn08: Literal["4", "RX"] = Field("4", description="BGN08 action: 4 verify, RX replace")


CoverageLevelCode = Literal["EMP", "ESP", "ECH", "FAM", "E1D", "E2D", "E3D", "SPC", "CHD", "DEP", "IND", "TWO",
                           "E5D", "E6D", "E7D", "E8D", "E9D", "ELF", "EMP1", "ESP1"]
Relationship = Literal["EE", "SP", "CH"]
Gender = Literal["M", "F", "U"]


def _default_coverage_levels() -> dict[str, CoverageLevelCode]:
    return {"EMP": "EMP", "ESP": "ESP", "ECH": "ECH", "FAM": "FAM"}


class SftpAckSource(_Model):
    """The carrier's SFTP response folder, reached with the same pinned-host-key endpoint files."""

    kind: Literal["sftp"] = "sftp"
    connection_id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    remote_dir: str = "/outbox"
    pattern: str = "*"


class LocalAckSource(_Model):
    """A folder on this machine the carrier's acknowledgments land in (relative to the data directory)."""

    kind: Literal["local"] = "local"
    path: str
    pattern: str = "*"


class AckSpec(_Model):
    """Where a carrier puts its TA1/999 acknowledgments and how they are protected.

    ``signer_fingerprint``: the carrier's signing key; when set, every encrypted acknowledgment must
    carry its valid signature.
    """

    source: Annotated[SftpAckSource | LocalAckSource, Field(discriminator="kind")]
    encrypted: bool = False
    signer_fingerprint: str | None = Field(None, pattern=_FPR)
    max_file_bytes: int = Field(64 << 20, ge=1, description="a file larger than this (as received) is set "
                                "aside unread, recorded and alerted")
    max_decompressed_bytes: int = Field(64 << 20, ge=1, description="an encrypted file whose plaintext "
                                        "would be larger than this is set aside, recorded and alerted")
    max_files_per_poll: int = Field(500, ge=1, description="new files read in one poll; the rest wait "
                                    "for the next (a warning says how many)")


class CarrierMapping(_Model):
    """A carrier's companion guide, as data."""

    mapping_id: str = Field(pattern=_ID)
    carrier_name: str
    envelope: EnvelopeIds
    payer: Party
    group_number: str | None = Field(None, max_length=50, description="master policy number, sent as REF*38")
    plans: dict[str, PlanCode] = Field(min_length=1)
    coverage_levels: dict[str, CoverageLevelCode] = Field(default_factory=_default_coverage_levels)
    allowlist: tuple[str, ...] = Field(description="canonical census fields this carrier may receive")
    full_file: FullFileSpec = FullFileSpec()
    mode: Literal["full", "changes"] = Field(
        "full", description="full: every run sends the full file (030); changes: only the changes "
                            "against the last delivered snapshot (021/001/024/025), full file on schedule")
    term_policy: Literal["explicit", "omission"] = Field(
        "explicit", description="explicit: members gone from the census are sent as 024 with DTP*349; "
                                "omission: the carrier terms them when they are missing from a full file")
    term_end: Literal["end_of_month", "day_before"] = Field(
        "end_of_month", description="DTP*349 for a member gone from the census: the last day of the run's "
                                    "month, or the day before the run")
    retro_window_days: int = Field(60, ge=0, le=366,
                                   description="how far back an add, change or term may take effect")
    plan_change: Literal["term_and_add", "change"] = Field(
        "term_and_add", description="another plan on the same insurance line (HD03): term_and_add sends the "
                                    "old plan as HD*024 (DTP*349 the day before the new start) and the new "
                                    "plan as HD*021 (DTP*348); change sends HD*001 with the new plan")
    full_file_weekday: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
                               "sunday"] | None = Field(
        None, description="in changes mode, send the full audit file (030) on this weekday instead")
    acks: AckSpec | None = Field(None, description="where the carrier returns TA1/999 acknowledgments")
    ack_window_hours: int = Field(24, ge=1, description="an acknowledgment later than this is overdue")
    name_max_length: int = Field(35, ge=10, le=60)
    last_name_max_length: int | None = Field(None, ge=1, le=60, description="NM103; default name_max_length")
    first_name_max_length: int | None = Field(None, ge=1, le=35, description="NM104; default name_max_length")
    name_case: Literal["upper", "as_is"] = Field(
        "upper", description="member names upper-cased, or as the census has them (needs charset extended)")
    charset: Literal["basic", "extended"] = Field(
        "basic", description="X12 character set of every free-text value; characters outside it are "
                             "transliterated, then replaced (see carrierfeeds.x12.sanitize), counted by rule")
    member_references: MemberReferences = MemberReferences()
    member_dates: tuple[MemberDate, ...] | None = Field(
        None, description="Loop 2000 DTP dates: hire (336), eligibility_begin (356), eligibility_end (357); "
                          "each needs its census field on the allowlist; null: hire when hire_date is on it")
    max_members_per_transaction: int | None = Field(
        None, ge=1, description="split the interchange into several ST/SE transaction sets of at most this "
                                "many members each (whole families only); null: one set")
    file_name: str = Field("{sender}_{receiver}_{isa13}_{date}.834",
                           description="fields: sender, receiver, isa13, date, feed")
    flatfile: CsvFlatLayout | FixedWidthFlatLayout | None = Field(
        None, discriminator="kind",
        description="the carrier's flat-file layout (CSV or fixed width), for feeds with output.format flatfile; "
                    "it may name only fields whose census source is on the allowlist")

    @model_validator(mode="after")
    def _flatfile_allowlisted(self) -> CarrierMapping:
        if self.flatfile is not None:
            bad = self.flatfile.not_allowed(self.allowlist)
            if bad:
                where = ", ".join(f"flatfile.columns.{i} (field {f!r})" for i, f in bad)
                raise ValueError(f"{where}: not on the carrier's allowlist (minimum necessary)")
        return self

    @model_validator(mode="after")
    def _x12_options_consistent(self) -> CarrierMapping:
        allow = set(self.allowlist)
        refs = self.member_references
        if refs.group_policy_number and not self.group_number:
            raise ValueError("member_references.group_policy_number needs group_number (the REF*1L value)")
        if refs.department and "department" not in allow:
            raise ValueError("member_references.department (REF*DX) needs 'department' on the allowlist "
                             "(minimum necessary)")
        reporting = refs.client_reporting_category
        if reporting is not None and reporting.field is not None and reporting.field not in allow:
            raise ValueError(f"member_references.client_reporting_category.field {reporting.field!r} is not "
                             "on the allowlist (minimum necessary)")
        dates = self.member_dates or ()
        off = [d for d in dates if MEMBER_DATE_SOURCES[d] not in allow]
        if off:
            raise ValueError(f"member_dates {off} need their census fields "
                             f"{[MEMBER_DATE_SOURCES[d] for d in off]} on the allowlist")
        if len(set(dates)) != len(dates):
            raise ValueError("member_dates names a date twice")
        if self.name_case == "as_is" and self.charset != "extended":
            raise ValueError("name_case as_is needs charset extended (the basic set has no lower case)")
        return self

    @property
    def dates_sent(self) -> tuple[str, ...]:
        """The Loop 2000 dates this carrier gets: member_dates, or hire when hire_date is allowlisted."""
        if self.member_dates is not None:
            return self.member_dates
        return ("hire",) if "hire_date" in self.allowlist else ()

    @field_validator("allowlist")
    @classmethod
    def _allowlist_known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [f for f in v if f not in CANONICAL_COLUMNS]
        if unknown:
            hints = {f: difflib.get_close_matches(f, CANONICAL_COLUMNS, n=1) for f in unknown}
            text = ", ".join(f"{f!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for f, h in hints.items())
            raise ValueError(f"unknown census field(s) {text}")
        missing = sorted(IDENTITY_FIELDS - set(v))
        if missing:
            raise ValueError(f"must include the identity fields {missing}")
        return v

    @field_validator("file_name")
    @classmethod
    def _safe_file_name(cls, v: str) -> str:
        if "/" in v or "\\" in v or v.startswith("."):
            raise ValueError("must be a plain file name, no folders")
        allowed = {"sender", "receiver", "isa13", "date", "feed"}
        used = set(re.findall(r"{(\w+)}", v))
        if not used <= allowed:
            raise ValueError(f"unknown placeholder(s) {sorted(used - allowed)}; allowed: {sorted(allowed)}")
        if "isa13" not in used:
            raise ValueError("must contain {isa13} so every interchange gets its own file name")
        return v


# ------------------------------------------------------------------------------------- census schema
class FixedWidthField(_Model):
    """One field of a fixed-width census record: 1-based ``start`` and ``width`` in characters."""

    column: str = Field(description="canonical census column")
    start: int = Field(ge=1)
    width: int = Field(ge=1)

    @field_validator("column")
    @classmethod
    def _canonical(cls, v: str) -> str:
        if v not in CANONICAL_COLUMNS:
            close = difflib.get_close_matches(v, CANONICAL_COLUMNS, n=1)
            raise ValueError(f"unknown canonical column {v!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
        return v


class FixedWidthLayout(_Model):
    """A fixed-width census layout: fields by position; ``header_lines`` leading lines are skipped."""

    fields: tuple[FixedWidthField, ...] = Field(min_length=1)
    header_lines: int = Field(0, ge=0, le=10)
    record_length: int | None = Field(None, ge=1, description="when set, every record is exactly this long")

    @model_validator(mode="after")
    def _no_overlap(self) -> FixedWidthLayout:
        spans = sorted((f.start, f.start + f.width, f.column) for f in self.fields)
        for (_, end, a), (start, _, b) in itertools.pairwise(spans):
            if start < end:
                raise ValueError(f"fields {a!r} and {b!r} overlap")
        names = [f.column for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError("a column appears twice")
        if self.record_length is not None and spans[-1][1] - 1 > self.record_length:
            raise ValueError("a field ends after record_length")
        return self


class CensusSchema(_Model):
    """How one employer's file maps onto the canonical census, and which GX suite checks it."""

    schema_id: str = Field(pattern=_ID)
    format: Literal["csv", "xlsx", "fixed_width"] = "csv"
    delimiter: str = Field(",", min_length=1, max_length=1)
    encoding: Literal["utf-8", "utf-8-sig", "cp1252", "utf-16", "auto"] = Field(
        "utf-8-sig", description="auto: by byte order mark (UTF-8, UTF-16), else strict UTF-8")
    sheet: str | None = Field(None, description="xlsx: the sheet to read; null: the first visible sheet")
    fixed_width: FixedWidthLayout | None = Field(None, description="fixed_width: the record layout")
    max_bytes: int = Field(1 << 30, ge=1, description="a census file (or zip member) larger than this is refused")
    allow_zip: bool = Field(False, description="accept a zip holding exactly one census file")
    max_cell_length: int = Field(
        1024, ge=1, le=1 << 20,
        description="a cell (after its surrounding blanks are stripped) longer than this many characters "
                    "makes the file a DataError (rule cell_too_long), before any per-cell check runs")
    columns: dict[str, str] = Field(
        default_factory=dict, description="canonical name -> the employer's header (identity if absent)")
    relationship_codes: dict[str, Relationship] = Field(
        default_factory=lambda: dict[str, Relationship]({"EE": "EE", "SP": "SP", "CH": "CH"}))
    gender_codes: dict[str, Gender] = Field(
        default_factory=lambda: dict[str, Gender]({"M": "M", "F": "F", "U": "U"}))
    plan_codes: dict[str, str] = Field(
        default_factory=dict, description="the employer's plan name -> canonical plan code (the code the "
                                          "feed's mapping names); a name not listed is kept as it is")
    date_format: str = "%Y-%m-%d"
    suite: str = Field(description="Great Expectations suite file in schemas/")
    dependent_age_limit: int = Field(26, ge=18, le=30)
    dependent_coverage_ends: Literal["birthday", "end_of_month", "end_of_year"] = Field(
        "end_of_month", description="the latest day a child's coverage may end at the age limit: the birthday "
                                    "itself, the last day of its month, or the last day of its year")
    plans_not_sent: tuple[str, ...] = Field(
        (), description="canonical plan codes the census may hold that no carrier mapping here lists (a plan "
                        "the employer runs elsewhere): known, so their rows are left out, not findings")

    @field_validator("columns")
    @classmethod
    def _canonical_keys(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = [k for k in v if k not in CANONICAL_COLUMNS]
        if unknown:
            raise ValueError(f"unknown canonical column(s) {unknown}")
        return v

    @field_validator("plan_codes")
    @classmethod
    def _plan_codes(cls, v: dict[str, str]) -> dict[str, str]:
        # entries are stripped like the cells they match; a blank one is a typo (a blank cell is missing)
        bad = [k for k, code in v.items() if not k or not code]
        if bad:
            raise ValueError(f"plan names and codes must not be blank: {bad}")
        return v

    @model_validator(mode="after")
    def _format_needs(self) -> CensusSchema:
        if (self.format == "fixed_width") != (self.fixed_width is not None):
            raise ValueError("fixed_width (the layout) is required with format fixed_width, and only then")
        if self.sheet is not None and self.format != "xlsx":
            raise ValueError("sheet applies to format xlsx only")
        return self

    def header_for(self, canonical: str) -> str:
        return self.columns.get(canonical, canonical)


@dataclass(frozen=True)
class PlanCatalogue:
    """The canonical plan codes a feed's census may hold, as validation judges them.

    ``authorised``: the feed's authorised plans (sent to its carrier). ``known``: every code some carrier
    mapping lists, the feed's authorised plans and the schema's ``plans_not_sent``; a known code that is
    not authorised is an expected exclusion (counted by reason), any other code is a finding
    (``unknown_plan``): its rows would otherwise reach no carrier, silently.
    """

    authorised: frozenset[str]
    known: frozenset[str]

    @classmethod
    def for_feed(cls, feed: Feed, schema: CensusSchema, mappings: Iterable[CarrierMapping]) -> PlanCatalogue:
        authorised = frozenset(feed.authorization.plans)
        known = set(authorised) | set(schema.plans_not_sent)
        for mapping in mappings:
            known.update(mapping.plans)
        return cls(authorised=authorised, known=frozenset(known))


# ------------------------------------------------------------------------------------------- loading
M = TypeVar("M", bound=BaseModel)


def _line_of(node: yaml.Node | None, path: tuple[int | str, ...]) -> int | None:
    """1-based line of ``path`` in a composed YAML tree (the deepest node that exists)."""
    line = None
    for part in path:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if node is None:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
    if node is not None:
        line = node.start_mark.line + 1
    return line


def _model_of(annotation: Any, tag: object = None) -> Any:
    """The model class inside an annotation (Optional, Annotated, tagged union by ``tag``)."""
    args = [a for a in getattr(annotation, "__args__", (annotation,)) if hasattr(a, "model_fields")]
    for arg in args:
        kind = arg.model_fields.get("kind")
        if tag is None or (kind is not None and kind.default == tag):
            return arg
    return args[0] if args else annotation


def _clean_loc(model: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Drop pydantic's tagged-union markers from a location, so it reads as the YAML path."""
    out: list[int | str] = []
    current: Any = model
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        fields = getattr(current, "model_fields", None)
        if fields is not None and part in fields:
            out.append(part)
            annotation = fields[part].annotation
            tag = parts[0] if parts and isinstance(parts[0], str) and parts[0] not in (
                getattr(_model_of(annotation), "model_fields", {})) else None
            current = _model_of(annotation, tag)
            if tag is not None and hasattr(current, "model_fields") and tag not in current.model_fields:
                parts.pop(0)
        else:
            out.append(part)
            current = None
    return tuple(out)


def _allowed_keys(model: type[BaseModel], path: tuple[int | str, ...]) -> list[str]:
    current: Any = model
    for part in path[:-1]:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        current = _model_of(ann)
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def load_model(model: type[M], path: Path) -> M:
    """Load YAML ``path`` into ``model``; every problem becomes one ConfigError listing them all."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ConfigError(f"not valid YAML at {where}: {getattr(exc, 'problem', exc)}", file=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of fields at the top level", file=str(path))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            loc = _clean_loc(model, tuple(err["loc"]))
            line = _line_of(node, loc)
            field = ".".join(str(p) for p in loc) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                close = difflib.get_close_matches(str(loc[-1]), _allowed_keys(model, loc), n=1)
                msg = "unknown field" + (f"; did you mean {close[0]!r}?" if close else "")
            problems.append((f"line {line}: " if line else "") + f"{field}: {msg}")
        first = ".".join(str(p) for p in _clean_loc(model, tuple(exc.errors()[0]["loc"])))
        raise ConfigError("; ".join(problems), file=str(path), field=None,
                          details={"problems": problems, "first_field": first}) from None


def load_feed(path: Path) -> Feed:
    """Load and check ``feeds/<feed_id>.yaml``; the file name must match its feed_id."""
    feed = load_model(Feed, path)
    if path.stem != feed.feed_id:
        raise ConfigError(f"feed_id {feed.feed_id!r} does not match the file name", file=str(path),
                          field="feed_id")
    return feed


def load_mapping(path: Path) -> CarrierMapping:
    mapping = load_model(CarrierMapping, path)
    if path.stem != mapping.mapping_id:
        raise ConfigError(f"mapping_id {mapping.mapping_id!r} does not match the file name",
                          file=str(path), field="mapping_id")
    return mapping


def load_schema(path: Path) -> CensusSchema:
    schema = load_model(CensusSchema, path)
    if path.stem != schema.schema_id:
        raise ConfigError(f"schema_id {schema.schema_id!r} does not match the file name",
                          file=str(path), field="schema_id")
    return schema
