"""Typed, frozen configuration (feeds, carrier mappings, census schemas) checked when loaded.

A wrong field is a :class:`~carrierfeeds.errors.ConfigError` naming the file, the line, the field path
and what was expected, with a "did you mean" for misspelt keys, before anything runs.

Import from here; the modules are where each part is kept: :mod:`~carrierfeeds.config.feed` (a feed),
:mod:`~carrierfeeds.config.mapping` (a carrier mapping; its flat-file layout is
:mod:`carrierfeeds.outputs.layouts`), :mod:`~carrierfeeds.config.schema` (a census schema, the plan
catalogue) and :mod:`~carrierfeeds.config.load` (YAML to model, with the error's file, line and path).
"""

from __future__ import annotations

from carrierfeeds.config.feed import (
    SCHEDULE_PRESETS,
    Authorization,
    Carrier,
    CensusSource,
    CensusSpec,
    Delivery,
    Employer,
    EncryptionSpec,
    Feed,
    LocalDelivery,
    LocalSource,
    ManualDelivery,
    NotifySpec,
    OutputSpec,
    SftpDelivery,
    SftpSource,
    SqlSource,
    ValidationPolicy,
)
from carrierfeeds.config.load import load_feed, load_mapping, load_model, load_schema
from carrierfeeds.config.mapping import (
    MEMBER_DATE_SOURCES,
    MEMBER_STATUS_SOURCES,
    AckSpec,
    CarrierMapping,
    ClientReporting,
    CoverageLevelCode,
    EnvelopeIds,
    FullFileSpec,
    LocalAckSource,
    MemberDate,
    MemberReferences,
    MemberStatus,
    Party,
    PlanCode,
    SftpAckSource,
)
from carrierfeeds.config.schema import (
    CensusSchema,
    FixedWidthField,
    FixedWidthLayout,
    Gender,
    PlanCatalogue,
    Relationship,
)

__all__ = [
    "MEMBER_DATE_SOURCES",
    "MEMBER_STATUS_SOURCES",
    "SCHEDULE_PRESETS",
    "AckSpec",
    "Authorization",
    "Carrier",
    "CarrierMapping",
    "CensusSchema",
    "CensusSource",
    "CensusSpec",
    "ClientReporting",
    "CoverageLevelCode",
    "Delivery",
    "Employer",
    "EncryptionSpec",
    "EnvelopeIds",
    "Feed",
    "FixedWidthField",
    "FixedWidthLayout",
    "FullFileSpec",
    "Gender",
    "LocalAckSource",
    "LocalDelivery",
    "LocalSource",
    "ManualDelivery",
    "MemberDate",
    "MemberReferences",
    "MemberStatus",
    "NotifySpec",
    "OutputSpec",
    "Party",
    "PlanCatalogue",
    "PlanCode",
    "Relationship",
    "SftpAckSource",
    "SftpDelivery",
    "SftpSource",
    "SqlSource",
    "ValidationPolicy",
    "load_feed",
    "load_mapping",
    "load_model",
    "load_schema",
]
