"""Carriers' TA1/999 acknowledgments: collect each file once, match it to its delivery, record, alert.

    collect_acks(ledger, inbox, ...)   one source: list, fetch, decrypt, read, match, record, alert
    match_acks(ledger, ack_file)       AckFile -> ledger rows (delivery matched by control numbers)
    ack_status(ledger, now=...)        every delivered file: accepted / rejected / awaiting / overdue
    poll_acks(settings, now=...)       every configured carrier, then the overdue check (CLI, Airflow)
    revert_rejected_snapshots(...)     a rejected change file's snapshot goes back to the one before it

Modules: ``inbox`` (where files are picked up, intake caps, per-carrier settings), ``match`` (TA1/999
units to deliveries), ``status`` (each delivery's acknowledgment state, overdue), ``snapshots`` (revert
a rejected run's snapshot), ``collect`` (one source, every carrier, the housekeeping task) and
``alerts``. Nothing here imports :mod:`carrierfeeds.audit`; audit reads :class:`AckInfo` from here.
Alerts and log lines hold ids, control numbers, positions and codes only.
"""

from carrierfeeds.acknowledgments.alerts import Alert, emit_alert
from carrierfeeds.acknowledgments.collect import (
    SET_ASIDE,
    AcksNeedAttention,
    CollectReport,
    FileOutcome,
    PollResult,
    collect_acks,
    poll_acks,
    poll_all,
)
from carrierfeeds.acknowledgments.inbox import (
    MAX_ACK_BYTES,
    MAX_ACK_FILES,
    AckInbox,
    AckLimits,
    CarrierAcks,
    LocalAckInbox,
    SftpAckInbox,
    carrier_ack_settings,
    feeds_without_source,
    open_inbox,
)
from carrierfeeds.acknowledgments.match import delivery_set_numbers, describe_codes, match_acks
from carrierfeeds.acknowledgments.snapshots import (
    ACK_ACTOR,
    REVERT_LOOKBACK,
    SNAPSHOT_REVERT_REFUSED,
    SNAPSHOT_REVERTED,
    revert_rejected_snapshots,
)
from carrierfeeds.acknowledgments.status import (
    BLOCKING_STATUSES,
    DEFAULT_WINDOW,
    HANDOFF_STATUSES,
    AckInfo,
    DeliveryAckStatus,
    ack_expected,
    ack_infos,
    ack_status,
    fold_ack_status,
    overdue_alerts,
    snapshot_blocked,
)
from carrierfeeds.ledger.records import AckStatus

__all__ = [
    "ACK_ACTOR",
    "BLOCKING_STATUSES",
    "DEFAULT_WINDOW",
    "HANDOFF_STATUSES",
    "MAX_ACK_BYTES",
    "MAX_ACK_FILES",
    "REVERT_LOOKBACK",
    "SET_ASIDE",
    "SNAPSHOT_REVERTED",
    "SNAPSHOT_REVERT_REFUSED",
    "AckInbox",
    "AckInfo",
    "AckLimits",
    "AckStatus",
    "AcksNeedAttention",
    "Alert",
    "CarrierAcks",
    "CollectReport",
    "DeliveryAckStatus",
    "FileOutcome",
    "LocalAckInbox",
    "PollResult",
    "SftpAckInbox",
    "ack_expected",
    "ack_infos",
    "ack_status",
    "carrier_ack_settings",
    "collect_acks",
    "delivery_set_numbers",
    "describe_codes",
    "emit_alert",
    "feeds_without_source",
    "fold_ack_status",
    "match_acks",
    "open_inbox",
    "overdue_alerts",
    "poll_acks",
    "poll_all",
    "revert_rejected_snapshots",
    "snapshot_blocked",
]
