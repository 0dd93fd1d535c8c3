"""A feed (``feeds/<feed_id>.yaml``): one employer's data to one carrier, what to read, where it goes."""

from __future__ import annotations

import difflib
import functools
import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from carrierfeeds.config.base import _FPR, _ID, _Model
from carrierfeeds.outputs.layouts import CsvFlatLayout, FixedWidthFlatLayout


class Authorization(_Model):
    """The employer's authorisation for this carrier to receive its members' data."""

    effective_from: date = Field(description="the first day the carrier may receive the employer's data")
    effective_to: date | None = Field(None, description="the last day it may (null: open); a run after it is refused")
    plans: tuple[str, ...] = Field(min_length=1, description="employer plan codes this carrier may see")
    reference: str | None = Field(None, min_length=1, max_length=200,
                                  description="the employer's document it rests on, e.g. \"MSA-2024-017 §4\" "
                                              "(recorded in the ledger with the authorisation)")

    def covers(self, day: date) -> bool:
        return self.effective_from <= day and (self.effective_to is None or day <= self.effective_to)


class Employer(_Model):
    id: str = Field(
        pattern=_ID, description="short id of the employer (letters, digits, - and _), used in file names and "
                                 "the ledger")
    name: str = Field(
        min_length=1, max_length=60, description="the employer's name as sent to the carrier (N102 of the sponsor)")
    tax_id: str = Field(pattern=r"^\d{9}$", description="FEIN, sent as the sponsor id (N104)")
    contract_end: date | None = Field(
        None, description="the last day of our contract with the employer; `purge` removes its data after retention")
    legal_hold: bool = Field(
        False, description="true: the employer's data is kept past its retention (`purge` skips it)")


class Carrier(_Model):
    id: str = Field(pattern=_ID, description="short id of the carrier (letters, digits, - and _), used in the ledger")
    name: str = Field(min_length=1, max_length=60, description="the carrier's name, as printed on reports and the PDF")
    electronic: bool = Field(True, description="False: the carrier gets a printable fallback document")


class LocalSource(_Model):
    kind: Literal["local"] = "local"
    path: str = Field(description="folder the employer's files land in, relative to the data directory")
    pattern: str = Field(
        "*.csv", description="file name pattern (glob) in the folder; the newest matching regular file is read")

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
    pattern: str = Field(
        "*.csv", description="file name pattern (glob) in remote_dir; the newest matching regular file is read")
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


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ArrivalWindow(_Model):
    """When a new census is due: by ``by`` (HH:MM in the feed's time zone) on each of ``days``."""

    by: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="HH:MM, the feed's time zone")
    days: tuple[Weekday, ...] = Field(WEEKDAYS, min_length=1, description="mon ... sun")

    @field_validator("by", mode="before")
    @classmethod
    def _sexagesimal(cls, v: Any) -> Any:
        # YAML 1.1 reads an unquoted 01:30 as the base-60 integer 90: take it back as the time it was.
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 24 * 60:
            return f"{v // 60:02d}:{v % 60:02d}"
        return v

    @field_validator("days")
    @classmethod
    def _once_each(cls, v: tuple[Weekday, ...]) -> tuple[Weekday, ...]:
        if len(set(v)) != len(v):
            raise ValueError("names a day twice")
        return v


class CensusSpec(_Model):
    source: CensusSource = Field(description="where the census file comes from: kind local, sftp or sql")
    schema_id: str = Field(pattern=_ID, description="name of a schemas/<schema_id>.yaml census schema")
    expected: ArrivalWindow | None = Field(
        None, description="when a new census is due; past it without one the feed is late (alert, ledger "
                          "event); null: never checked")


class OutputSpec(_Model):
    format: Literal["x12-834", "pdf", "flatfile"] = Field(
        "x12-834", description="flatfile: the carrier mapping's flatfile layout (CSV or fixed width)")
    mode: Literal["full"] = Field(
        "full", description="always full: change detection (change files) is the mapping's mode, not the feed's")


class EncryptionSpec(_Model):
    """Who can read the file: the carrier's key, or for a manual hand-off the hand-off team's key."""

    recipient_fingerprint: str = Field(pattern=_FPR, description="carrier's key, full 40-hex fingerprint")
    signer_fingerprint: str = Field(pattern=_FPR, description="our signing key, full 40-hex fingerprint")
    armor: bool = Field(
        False, description="true: ASCII-armoured output (.asc) for a carrier that asks for it; false: binary")
    compress_level: int = Field(1, ge=0, le=9, description="zlib level gpg compresses with before encrypting (0: none)")
    suffix: str = Field(
        ".pgp", pattern=r"^\.[A-Za-z0-9.]{1,10}$", description="added to the file name of the encrypted file")
    expiry_warning_days: int = Field(
        30, ge=0, description="`keys check` reports a pinned key as expiring this many days before it expires")
    recipient_user_id: str | None = Field(
        None, min_length=1, max_length=256,
        description="optional pin: one of the carrier key's user ids, exactly (e.g. 'EDI <edi@carrier.example>')")
    recipient_encryption_subkey: str | None = Field(
        None, pattern=_FPR, description="optional pin: full fingerprint of the subkey gpg must encrypt to")

    @field_validator("recipient_fingerprint", "signer_fingerprint", "recipient_encryption_subkey", mode="before")
    @classmethod
    def _normalise_fpr(cls, v: Any) -> Any:
        return v.replace(" ", "").upper() if isinstance(v, str) else v


class SftpEndpoint(_Model):
    kind: Literal["sftp"] = "sftp"
    connection_id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$",
                               description="Airflow connection id, or <keys_dir>/<id>.json under the CLI")
    remote_dir: str = Field(
        "/inbox", description="folder on the carrier's server the file is uploaded to (temporary name, then renamed)")


class LocalEndpoint(_Model):
    kind: Literal["local"] = "local"
    path: str = Field(description="a carrier inbox folder, relative to the data directory")


#: The carrier's test endpoint: where a feed in testing or certified sends its files (ISA15 T).
TestEndpoint = Annotated[SftpEndpoint | LocalEndpoint, Field(discriminator="kind")]


class SftpDelivery(SftpEndpoint):
    test: TestEndpoint | None = Field(
        None, description="the carrier's test endpoint, used while the feed is in testing or certified")


class LocalDelivery(LocalEndpoint):
    test: TestEndpoint | None = Field(
        None, description="the carrier's test endpoint, used while the feed is in testing or certified")


class ManualDelivery(_Model):
    """A person hands the (encrypted) printable document over; the ledger tracks it until confirmed."""

    kind: Literal["manual"] = "manual"
    outbox: str = Field(description="private outbox folder, relative to the data directory")


Delivery = Annotated[SftpDelivery | LocalDelivery | ManualDelivery, Field(discriminator="kind")]


class ValidationPolicy(_Model):
    policy: Literal["reject", "quarantine", "threshold"] = Field(
        "reject", description="reject: any finding rejects the file; quarantine: families with findings are held "
                              "back and the rest go; threshold: reject when more than threshold_pct of the "
                              "families fail, else quarantine")
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

    format: Literal["834", "csv", "fixed_width"] = Field(
        "834", description="the carrier's return file: an 834, or a CSV or fixed-width layout")
    layout: Literal["mapping"] | CsvFlatLayout | FixedWidthFlatLayout | None = Field(
        None, description="flat exports: 'mapping' (the carrier mapping's flatfile layout) or a layout inline")
    max_bytes: int = Field(512 << 20, ge=1, description="a return file larger than this is refused unread")
    alert_threshold: int | None = Field(None, ge=0, description="webhook alert when more discrepancies than "
                                        "this are open after a comparison (needs notify); null: no alert")
    source: ReturnSourceSpec | None = None
    census_view: bool = Field(
        False, description="the scheduled collect also reads the feed's current census (its source's newest "
        "file) as `reconcile import --census` does, and labels each discrepancy by the side its fix is on")

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


class LifecycleSpec(_Model):
    """Where a feed stands before its ledger says otherwise (see ``carrierfeeds.lifecycle``).

    ``testing``: files carry ISA15 T and the mapping's test marker, and go to ``delivery.test`` until the
    carrier's approval and go-live date are recorded (``carrierfeeds feeds certify``). ``production``: an
    existing live feed, declared so in its config. A feed without this block is unmanaged: it runs as it
    always did, except that a production file (ISA15 P) is refused until its state is declared.
    """

    initial: Literal["testing", "production"] = Field(
        "testing", description="the state the feed starts in before any lifecycle row in the ledger")


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

    feed_id: str = Field(
        pattern=_ID, description="the feed's id: the file name without .yaml, and its name in the ledger and Airflow")
    description: str = Field("", description="free text for people")
    employer: Employer = Field(description="the employer whose census this feed reads")
    carrier: Carrier = Field(description="the carrier that receives the file")
    authorization: Authorization
    schedule: str | None = Field("0 2 * * *", description="five-field cron expression, an Airflow preset "
                                 "(@daily, @hourly, ...), or null for manual runs")
    timezone: str = Field(
        "UTC", description="IANA time zone of the schedule, the run date and census.expected (America/New_York, ...)")
    census: CensusSpec = Field(description="where the census comes from and which census schema reads it")
    mapping_id: str = Field(pattern=_ID, description="name of a mappings/<mapping_id>.yaml")
    output: OutputSpec = Field(
        OutputSpec(), description="what is rendered: an X12 834, the carrier's flat file, or a printable PDF")
    encryption: EncryptionSpec
    delivery: Delivery = Field(
        description="where the encrypted file goes: the carrier's SFTP server, a local folder, or a manual "
                    "hand-off")
    validation: ValidationPolicy = Field(
        ValidationPolicy(), description="what a census with findings does: reject the file, quarantine the "
                                        "families, or a threshold")
    notify: NotifySpec | None = None
    reconciliation: ReconciliationSpec | None = None
    lifecycle: LifecycleSpec | None = Field(
        None, description="test-to-production lifecycle; null: unmanaged (production files refused)")

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
    def _testing_has_a_test_endpoint(self) -> Feed:
        # A feed in testing sends to the carrier's test system only: without one it could not run at all.
        if self.lifecycle is not None and self.lifecycle.initial == "testing" and \
                getattr(self.delivery, "test", None) is None:
            raise ValueError("lifecycle.initial is testing, so delivery.test (the carrier's test endpoint: "
                             "{kind: sftp, connection_id: ..., remote_dir: ...} or {kind: local, path: ...}) "
                             "is required")
        return self

    @model_validator(mode="after")
    def _electronic_matches_output(self) -> Feed:
        if not self.carrier.electronic and self.output.format != "pdf":
            raise ValueError("carrier.electronic is false, so output.format must be 'pdf'")
        if not self.carrier.electronic and self.delivery.kind != "manual":
            raise ValueError("carrier.electronic is false, so delivery.kind must be 'manual'")
        return self
