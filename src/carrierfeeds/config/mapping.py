"""A carrier mapping (``mappings/<mapping_id>.yaml``): the carrier's companion guide, as data."""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from carrierfeeds.census.columns import CANONICAL_COLUMNS, IDENTITY_FIELDS, RELATIONSHIP_CODES
from carrierfeeds.config.base import _FPR, _ID, _Model
from carrierfeeds.outputs.layouts import CsvFlatLayout, FixedWidthFlatLayout


class EnvelopeIds(_Model):
    """Interchange and group ids (ISA05-08, GS02/GS03) and the usage indicator (ISA15)."""

    sender_qualifier: str = Field(
        "ZZ", pattern=r"^[0-9A-Z]{2}$",
        description="ISA05: qualifier of our sender id (ZZ mutually defined, 30 FEIN, ...)")
    sender_id: str = Field(
        pattern=r"^[0-9A-Z ]{1,15}$", description="ISA06: our sender id, as the carrier's companion guide gives it")
    receiver_qualifier: str = Field(
        "ZZ", pattern=r"^[0-9A-Z]{2}$", description="ISA07: qualifier of the carrier's receiver id")
    receiver_id: str = Field(pattern=r"^[0-9A-Z ]{1,15}$", description="ISA08: the carrier's receiver id")
    gs_sender: str = Field(pattern=r"^[0-9A-Z]{2,15}$", description="GS02: application sender code")
    gs_receiver: str = Field(pattern=r"^[0-9A-Z]{2,15}$", description="GS03: application receiver code")
    usage: Literal["T", "P"] = Field("T", description="ISA15: T test, P production")
    ta1_requested: bool = Field(
        False, description="ISA14: true asks the carrier for a TA1 interchange acknowledgment on every file")


class Party(_Model):
    """An N1 party: the payer (1000B) named by the mapping."""

    name: str = Field(min_length=1, max_length=60, description="N102: the party's name")
    id_qualifier: Literal["FI", "XV", "94"] = Field(
        "FI", description="N103: FI federal tax id, XV CMS plan id, 94 code assigned by the organisation")
    id: str = Field(min_length=2, max_length=80, description="N104: the party's id")


class PlanCode(_Model):
    insurance_line: Literal["AG", "AH", "AJ", "AK", "DCP", "DEN", "EPO", "FAC", "HE", "HLT", "HMO", "LTC", "LTD",
                            "MM", "MOD", "PDG", "POS", "PPO", "PRA", "STD", "UR", "VIS",
                            "LIF", "ADD", "HSA"] = Field(
        description="HD03 (x12.codes.InsuranceLine); LIF, ADD and HSA are outside the 005010X220A1 list and "
                    "need conformance.hd03_beyond_tr3")
    description: str = Field(min_length=1, max_length=50, description="HD04 plan coverage description")
    policy_number: str | None = Field(
        None, min_length=1, max_length=50, pattern=r"^[A-Z0-9][A-Z0-9 &'()+,\-./;?=]*$",
        description="the carrier's group or policy number for this plan, sent as REF*1L in each of its "
                    "Loop 2300s (basic characters, upper case)")


class ClientReporting(_Model):
    """REF*17 client reporting category: a fixed ``value``, or a census ``field`` on the allowlist."""

    value: str | None = Field(
        None, min_length=1, max_length=50, pattern=r"^[A-Z0-9][A-Z0-9 &'()+,\-./;?=]*$",
        description="a fixed REF*17 value for every member (upper-case letters, digits and X12 basic punctuation)")
    field: str | None = Field(
        None, description="or: the canonical census field whose value is sent as REF*17 (must be allowlisted)")

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


def _default_coverage_levels() -> dict[str, CoverageLevelCode]:
    return {"EMP": "EMP", "ESP": "ESP", "ECH": "ECH", "FAM": "FAM"}


# ---- relationships and member status (INS02, INS04-INS12, Loop 2000 status dates)
#: INS02 Individual Relationship Code (element 1069): the TR3's list.
Ins02Code = Literal["01", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13", "14", "15", "16",
                    "17", "18", "19", "23", "24", "25", "26", "31", "38", "53", "60", "D2", "G8", "G9"]


def _default_relationship_codes() -> dict[str, Ins02Code]:
    return {"EE": "18", "SP": "01", "CH": "19"}


#: Each member_status setting and the census fields it needs on the allowlist (minimum necessary).
MEMBER_STATUS_SOURCES: dict[str, tuple[str, ...]] = {
    "benefit_status": ("benefit_status",),            # INS05
    "employment_codes": ("employment_status",),       # INS08 beyond FT/PT/TE/RT ("all")
    "student": ("student_status",),                   # INS09
    "handicap": ("handicap",),                        # INS10
    "death": ("death_date",),                         # INS11/INS12
    "employment_end": ("employment_end_date",),       # DTP*337, subscribers
    "event_reasons": ("event_reason",),               # INS04 when the census gives the event
    "maintenance_effective": (),                      # DTP*303: event_date when allowlisted, else the run's day
    "medicare": ("medicare_plan", "medicare_reason"),  # INS06
    "cobra": ("cobra_event", "cobra_begin", "cobra_end"),  # INS07, DTP*340/341
    "identity_corrections": (),                       # Loop 2100B: the identity fields already sent
}


class MemberStatus(_Model):
    """The member status a carrier's guide asks for (INS04-INS12, DTP*303/337/340/341); each is off unless
    the guide asks, and each needs its census fields on the allowlist (see MEMBER_STATUS_SOURCES)."""

    benefit_status: bool = Field(False, description="INS05 from the census benefit_status (A, C, S, T); "
                                 "off: A on every member")
    employment_codes: Literal["basic", "all"] = Field(
        "basic", description="INS08: basic sends FT, PT, TE, RT (others left out); all sends every TR3 code "
                             "(AC, AO, AU, FT, L1, PT, RT, TE)")
    student: bool = Field(False, description="INS09 student status (F, P, N) from student_status")
    handicap: bool = Field(False, description="INS10 handicap indicator (Y, N) from handicap; a handicapped "
                                              "dependent (relationship HD) is Y")
    death: bool = Field(False, description="INS11 D8 and INS12 date of death from death_date")
    employment_end: bool = Field(False, description="DTP*337 employment end from employment_end_date "
                                                    "(subscribers)")
    event_reasons: bool = Field(False, description="INS04 from the census event_reason (birth, marriage, "
                                                   "divorce, death, ...) on the changes it accompanies")
    maintenance_effective: bool = Field(
        False, description="DTP*303 maintenance effective date on every change (001, 021, 024, 025): the "
                           "census event_date when it is on the allowlist and given, else the run's day")
    medicare: bool = Field(False, description="INS06 Medicare plan and eligibility reason from medicare_plan "
                                              "and medicare_reason")
    cobra: bool = Field(False, description="INS07 COBRA qualifying event from cobra_event; DTP*340/341 COBRA "
                                           "begin and end from cobra_begin and cobra_end")
    identity_corrections: bool = Field(
        False, description="an SSN, name, birth date or gender correction (same member, identity changed) also "
                           "sends Loop 2100B: NM1*70 with the name and SSN the carrier holds, DMG with its "
                           "birth date and gender when those changed, so a carrier keyed on them finds the member")

    def needs(self) -> dict[str, tuple[str, ...]]:
        """The census fields each setting that is on needs."""
        on = {k for k, v in self.model_dump().items() if v not in (False, "basic")}
        return {k: MEMBER_STATUS_SOURCES[k] for k in sorted(on)}


class SftpAckSource(_Model):
    """The carrier's SFTP response folder, reached with the same pinned-host-key endpoint files."""

    kind: Literal["sftp"] = "sftp"
    connection_id: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Airflow connection (or <keys_dir>/<id>.json under the CLI) of the carrier's server")
    remote_dir: str = Field("/outbox", description="folder acknowledgments are read from")
    pattern: str = Field("*", description="file name pattern (glob) of acknowledgment files")


class LocalAckSource(_Model):
    """A folder on this machine the carrier's acknowledgments land in (relative to the data directory)."""

    kind: Literal["local"] = "local"
    path: str = Field(description="folder under the data directory acknowledgments are read from")
    pattern: str = Field("*", description="file name pattern (glob) of acknowledgment files")


class AckSpec(_Model):
    """Where a carrier puts its TA1/999 acknowledgments and how they are protected.

    ``signer_fingerprint``: the carrier's signing key; when set, every encrypted acknowledgment must
    carry its valid signature.
    """

    source: Annotated[SftpAckSource | LocalAckSource, Field(
        discriminator="kind", description="where the carrier's acknowledgments (999, TA1) arrive: kind sftp or local")]
    encrypted: bool = Field(False, description="true: acknowledgments arrive PGP-encrypted to our key")
    signer_fingerprint: str | None = Field(
        None, pattern=_FPR,
        description="the carrier's signing key (full fingerprint) an encrypted acknowledgment must be signed with")
    max_file_bytes: int = Field(64 << 20, ge=1, description="a file larger than this (as received) is set "
                                "aside unread, recorded and alerted")
    max_decompressed_bytes: int = Field(64 << 20, ge=1, description="an encrypted file whose plaintext "
                                        "would be larger than this is set aside, recorded and alerted")
    max_files_per_poll: int = Field(500, ge=1, description="new files read in one poll; the rest wait "
                                    "for the next (a warning says how many)")


# ---- Companion-guide depth: file header (DTP*007, QTY, Loop 1000C) ------------------------------------


class BrokerParty(_Model):
    """A Loop 1000C party (N1*TV third-party administrator or N1*BO broker): config, never member data."""

    role: Literal["TV", "BO"] = Field(description="N101: TV third-party administrator, BO broker or sales office")
    name: str = Field(min_length=1, max_length=60, description="N102")
    id_qualifier: Literal["94", "FI", "XV"] = Field("FI", description="N103: 94 code assigned by the "
                                                    "receiver, FI federal tax id, XV CMS plan id")
    id: str = Field(min_length=1, max_length=80, description="N104")


class FileHeader(_Model):
    """Header segments a companion guide may ask for beyond BGN, REF*38 and the two N1 parties; every one
    off by default, so a mapping without ``file_header`` writes the header it always has."""

    file_effective_date: bool = Field(False, description="DTP*007: the run's day as the file's effective date")
    control_totals: tuple[Literal["TO", "DT", "ET"], ...] = Field(
        (), max_length=3, description="QTY per transaction set, in this order: TO every member (INS), DT "
                                      "dependents, ET employees (subscribers)")
    parties: tuple[BrokerParty, ...] = Field((), max_length=2, description="Loop 1000C: at most a TPA and a broker")

    @model_validator(mode="after")
    def _distinct(self) -> FileHeader:
        if len(set(self.control_totals)) != len(self.control_totals):
            raise ValueError("control_totals names a total twice")
        roles = [p.role for p in self.parties]
        if len(set(roles)) != len(roles):
            raise ValueError("parties names a role (TV or BO) twice")
        return self


# ---- Companion-guide depth: volumes (life, AD&D, STD, LTD) ---------------------------------------------


class Volumes(_Model):
    """Volume content a life/disability carrier's guide asks for; each needs its census fields on the
    allowlist (minimum necessary), and every one is off by default."""

    salary: bool = Field(False, description="2100A ICM: salary with its frequency (salary, salary_frequency)")
    coverage_amount: bool = Field(False, description="2300 AMT*FK: each line's benefit amount (coverage_amount)")
    premium: bool = Field(False, description="2300 AMT*P3: each line's premium (premium_amount)")
    eoi_hold: bool = Field(False, description="a line whose eoi_pending is Y is held back (not sent, counted as "
                                              "excluded eoi_pending) until evidence of insurability is approved; "
                                              "the hold keeps an increase back, never an end: an end goes out "
                                              "(HD*024) at the amount the carrier holds")

    def census_fields(self) -> dict[str, tuple[str, ...]]:
        """Each setting that is on, and the census fields it reads."""
        wanted = {"salary": ("salary", "salary_frequency"), "coverage_amount": ("coverage_amount",),
                  "premium": ("premium_amount",), "eoi_hold": ("eoi_pending",)}
        return {k: v for k, v in wanted.items() if getattr(self, k)}


# ---- Companion-guide depth: contact and address ------------------------------------------------------


class Contact(_Model):
    """2100A PER/HLH/LUI and the 2100C mailing address; each needs its census fields on the allowlist."""

    phone: bool = Field(False, description="2100A PER*IP**TE: the member's phone (phone)")
    email: bool = Field(False, description="2100A PER*IP**EM: the member's e-mail (email; charset extended)")
    mailing_address: bool = Field(False, description="2100C NM1*31 N3 N4: the mailing address (mailing_*)")
    language: bool = Field(False, description="2100A LUI*LE: the member's language, an ISO 639 code (language)")
    tobacco_use: bool = Field(False, description="2100A HLH: tobacco use T, none N, unknown U (tobacco_use)")

    def census_fields(self) -> dict[str, tuple[str, ...]]:
        """Each setting that is on, and the census fields it reads."""
        wanted = {"phone": ("phone",), "email": ("email",), "language": ("language",),
                  "tobacco_use": ("tobacco_use",),
                  "mailing_address": ("mailing_address1", "mailing_address2", "mailing_city", "mailing_state",
                                      "mailing_zip")}
        return {k: v for k, v in wanted.items() if getattr(self, k)}


# ---- Companion-guide depth: primary care provider ----------------------------------------------------


class PrimaryCareProvider(_Model):
    """Loop 2310 (LX, NM1*P3 with the NPI and whether the member is an existing patient) in the Loop 2300
    of each plan named here (HMO, DHMO): the census's pcp_npi and pcp_existing_patient."""

    plans: tuple[str, ...] = Field(min_length=1, description="canonical plan codes whose coverage carries the PCP")


# ---- Companion-guide depth: member reporting categories (Loop 2700/2750) ----------------------------

#: At most this many Loop 2700 categories per member (view columns reporting_2750_1 ...).
MAX_REPORTING_CATEGORIES = 10


class ReportingCategory(_Model):
    """One Loop 2700/2750 category: N1*75 ``name``, REF ``qualifier`` with the census ``field``'s value,
    and optionally DTP*007 from the census date ``date_field``; a member without a value gets none."""

    name: str = Field(min_length=1, max_length=60, pattern=r"^[A-Z0-9][A-Z0-9 &'()+,\-./;?=]*$",
                      description="N102: the category's name as the carrier's guide spells it")
    field: str = Field(description="the census field whose value is REF02")
    qualifier: Literal["00", "17", "18", "19", "26", "3L", "6M", "9V", "9X", "GE", "LU", "PID", "XX1", "XX2",
                       "YY", "ZZ"] = Field("ZZ", description="REF01")
    date_field: str | None = Field(None, description="a census date field for DTP*007 (effective date)")

    @field_validator("field", "date_field")
    @classmethod
    def _canonical(cls, v: str | None) -> str | None:
        if v is not None and v not in CANONICAL_COLUMNS:
            close = difflib.get_close_matches(v, CANONICAL_COLUMNS, n=1)
            raise ValueError(f"unknown census field {v!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
        return v


# ---- Companion-guide depth: HD03 codes beyond the TR3 list, the per-file notice ------------------------


class Conformance(_Model):
    """What this carrier's guide asks beyond the 005010X220A1 code lists; the gate never waives anything
    a mapping does not name here, and records every waiver it applies."""

    hd03_beyond_tr3: tuple[Literal["LIF", "ADD", "HSA"], ...] = Field(
        (), description="HD03 codes outside the TR3 list this carrier takes (its guide says so): pyx12's HD03 "
                        "code-list error on exactly these is waived and counted; anything else still fails")


_CONN = r"^[A-Za-z0-9_.-]+$"
_EMAIL = r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$"


class NoticeWebhook(_Model):
    """The carrier's HTTP endpoint for notices: URL and auth from a connection, never from YAML."""

    connection_id: str = Field(pattern=_CONN, description="HTTP connection (Airflow; AIRFLOW_CONN_<ID> under "
                               "the CLI) holding the carrier's URL and auth")


class NoticeEmail(_Model):
    """Notices by e-mail: the text notice as the body, the JSON notice attached."""

    connection_id: str = Field(pattern=_CONN, description="SMTP connection (Airflow; <keys_dir>/<id>.json under "
                               "the CLI) holding the mail server and its login")
    to: tuple[str, ...] = Field(min_length=1, max_length=10, description="the carrier's addresses the guide names")
    from_address: str = Field(pattern=_EMAIL, description="our sender address")

    @field_validator("to")
    @classmethod
    def _addresses(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in v if not re.fullmatch(_EMAIL, a)]
        if bad:
            raise ValueError(f"not an e-mail address: {bad}")
        return v


class NoticeSend(_Model):
    """Sending the notice to the carrier once its file is delivered (see carrierfeeds.run.notices): once
    per delivery and channel, recorded in the ledger; off unless a channel is given."""

    webhook: NoticeWebhook | None = Field(None, description="POST the notice (JSON, else text) to the carrier")
    email: NoticeEmail | None = Field(None, description="e-mail the notice to the carrier")
    retries: int = Field(2, ge=0, le=10, description="further attempts after a failed send (network, 5xx, 4xx "
                         "SMTP replies) before the notice is recorded failed and alerted")
    backoff_seconds: float = Field(5.0, ge=0, le=300, description="wait before the first retry; doubled each time")
    test_files: bool = Field(False, description="also send notices of test files (delivery.test)")

    @model_validator(mode="after")
    def _a_channel(self) -> NoticeSend:
        if self.webhook is None and self.email is None:
            raise ValueError("give webhook, email or both (leave send out to send nothing)")
        return self


class FileNotice(_Model):
    """A human-readable companion summary of each file (counts by maintenance type, control numbers, the
    file's sha256; never member data), written beside the 834 and recorded with the run."""

    formats: tuple[Literal["json", "text"], ...] = Field(
        ("json",), min_length=1, max_length=2, description="json, text or both")
    file_name: str = Field("{file}.notice", description="the notice's name beside the file ({file}: the "
                           "file's name); .json or .txt is appended per format")
    send: NoticeSend | None = Field(None, description="send the notice to the carrier after its file is "
                                    "delivered (webhook and/or e-mail); off when absent")

    @field_validator("file_name")
    @classmethod
    def _plain(cls, v: str) -> str:
        if "/" in v or "\\" in v or v.startswith(".") or "{file}" not in v:
            raise ValueError("must be a plain file name containing {file}")
        if set(re.findall(r"{(\w*)}", v)) != {"file"} or v.replace("{file}", "").count("{") + v.replace(
                "{file}", "").count("}"):
            raise ValueError("{file} is the only placeholder")
        return v


class Aggregation(_Model):
    """A carrier aggregator's guide: one file for every employer whose feed names this mapping. One
    interchange (ISA/GS) per file and one transaction set per employer, because the TR3 allows one sponsor
    (Loop 1000A N1*P5) per ST; each employer's authorisation, allowlisted view and validation policy
    still apply to its own set (carrierfeeds.run.aggregate)."""

    on_employer_failure: Literal["isolate", "reject_all"] = Field(
        "isolate", description="isolate: an employer whose census is rejected, or who has not authorised "
                               "the carrier for the day, is left out (counted by reason) and the others go; "
                               "reject_all: the whole file is refused")


class CarrierMapping(_Model):
    """A carrier's companion guide, as data."""

    mapping_id: str = Field(pattern=_ID, description="the mapping's id: the file name without .yaml")
    carrier_name: str = Field(description="the carrier's name, for people")
    envelope: EnvelopeIds
    payer: Party
    group_number: str | None = Field(None, max_length=50, description="master policy number, sent as REF*38")
    plans: dict[str, PlanCode] = Field(
        min_length=1, description="canonical plan code -> the carrier's insurance line (HD03), description (HD04) "
                                  "and policy number")
    coverage_levels: dict[str, CoverageLevelCode] = Field(
        default_factory=_default_coverage_levels,
        description="canonical coverage level (census coverage_level, any case) -> HD05 code")
    allowlist: tuple[str, ...] = Field(description="canonical census fields this carrier may receive")
    full_file: FullFileSpec = Field(
        FullFileSpec(), description="the full file's maintenance type (INS03/HD01, 030) and BGN08 action code")
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
    name_max_length: int = Field(
        35, ge=10, le=60,
        description="names longer than this are cut (NM103/NM104, unless the per-name limits are set)")
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
    test_marker: str = Field("TEST_", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,15}$",
                             description="put before the file name of every test file (a feed in testing or "
                                         "certified), whatever the output format")
    flatfile: CsvFlatLayout | FixedWidthFlatLayout | None = Field(
        None, discriminator="kind",
        description="the carrier's flat-file layout (CSV or fixed width), for feeds with output.format flatfile; "
                    "it may name only fields whose census source is on the allowlist")
    file_header: FileHeader = Field(FileHeader(), description="DTP*007, QTY totals, Loop 1000C TPA/broker")
    volumes: Volumes = Field(Volumes(), description="life/disability volumes: ICM, AMT*FK/P3, the EOI hold")
    contact: Contact = Field(Contact(), description="PER phone/e-mail, 2100C mailing address, LUI, HLH")
    reporting_categories: tuple[ReportingCategory, ...] = Field(
        (), max_length=MAX_REPORTING_CATEGORIES, description="Loop 2700/2750 member reporting categories")
    primary_care_provider: PrimaryCareProvider | None = Field(
        None, description="Loop 2310 PCP on the plans named (needs pcp_npi and pcp_existing_patient allowlisted)")
    relationship_codes: dict[str, Ins02Code] = Field(
        default_factory=_default_relationship_codes,
        description="canonical census relationship -> the INS02 this carrier takes for it (EE must be 18); a "
                    "relationship not listed is refused by row")
    member_status: MemberStatus = Field(MemberStatus(), description="INS04-INS12 and status dates (all off)")
    conformance: Conformance = Field(Conformance(), description="HD03 codes beyond the TR3 list (LIF, ADD, HSA)")
    aggregation: Aggregation | None = Field(
        None, description="one file for several employers (one ST per employer); off when absent")
    notice: FileNotice | None = Field(None, description="a per-file notice (counts, control numbers, sha256; "
                                                        "no member data) beside each file; off when absent")

    @field_validator("relationship_codes", mode="before")
    @classmethod
    def _relationship_keys_upper(cls, v: object) -> object:
        return {str(k).strip().upper(): c for k, c in v.items()} if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _relationships_and_status(self) -> CarrierMapping:
        codes = self.relationship_codes
        unknown = sorted(set(codes) - set(RELATIONSHIP_CODES))
        if unknown:
            raise ValueError(f"relationship_codes: unknown census relationship(s) {unknown}; known: "
                             f"{list(RELATIONSHIP_CODES)}")
        if codes.get("EE") != "18":
            raise ValueError("relationship_codes must map EE (the subscriber) to INS02 18")
        selves = sorted(k for k, c in codes.items() if c == "18" and k != "EE")
        if selves:
            raise ValueError(f"relationship_codes: only EE is the subscriber (18), not {selves}")
        allow = set(self.allowlist)
        for setting, fields in self.member_status.needs().items():
            off = [f for f in fields if f not in allow]
            if off:
                raise ValueError(f"member_status.{setting} needs {off} on the allowlist (minimum necessary)")
        return self

    @model_validator(mode="after")
    def _hd03_declared(self) -> CarrierMapping:
        declared = set(self.conformance.hd03_beyond_tr3)
        beyond = {code: line for code, p in self.plans.items()
                  if (line := p.insurance_line) in ("LIF", "ADD", "HSA") and line not in declared}
        if beyond:
            raise ValueError(f"plans {sorted(beyond)} use HD03 {sorted(set(beyond.values()))}, outside the "
                             "005010X220A1 list (pyx12 refuses them): name them in conformance.hd03_beyond_tr3 "
                             "when the carrier's guide asks for them")
        return self

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

    @model_validator(mode="after")
    def _volumes_allowlisted(self) -> CarrierMapping:
        allow = set(self.allowlist)
        off = {f"volumes.{k}": [f for f in fields if f not in allow]
               for k, fields in self.volumes.census_fields().items()}
        off.update({f"contact.{k}": [f for f in fields if f not in allow]
                    for k, fields in self.contact.census_fields().items()})
        off = {k: v for k, v in off.items() if v}
        if off:
            where = "; ".join(f"{k} needs {v}" for k, v in off.items())
            raise ValueError(f"{where} on the allowlist (minimum necessary)")
        pcp = self.primary_care_provider
        if pcp is not None:
            missing = [f for f in ("pcp_npi", "pcp_existing_patient") if f not in allow]
            if missing:
                raise ValueError(f"primary_care_provider needs {missing} on the allowlist (minimum necessary)")
            unknown = [p for p in pcp.plans if p not in self.plans]
            if unknown:
                raise ValueError(f"primary_care_provider.plans {unknown} are not among the mapping's plans")
        for k, category in enumerate(self.reporting_categories):
            off_fields = [f for f in (category.field, category.date_field) if f is not None and f not in allow]
            if off_fields:
                raise ValueError(f"reporting_categories.{k} needs {off_fields} on the allowlist (minimum necessary)")
        if self.contact.email and self.charset != "extended":
            raise ValueError("contact.email needs charset extended (the basic set has no @ or lower case)")
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
