"""Helpers shared by the acknowledgment tests: delivered 834s as the pipeline records them, the carrier's
TA1s and pyx12's 999s for them, a config root with an acknowledgment source, and one collect call."""

from __future__ import annotations

import hashlib
import shutil
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "x12"))  # the shared synthetic 834 builders
import x12_helpers as h

from carrierfeeds.acknowledgments import AckInbox, LocalAckInbox, collect_acks
from carrierfeeds.ledger import DeliveryRecord, Ledger
from carrierfeeds.x12.check import check_834, validate_with_pyx12
from carrierfeeds.x12.envelope import ControlNumbers
from carrierfeeds.x12.render import render_834_bytes

ROOT = Path(__file__).resolve().parents[2]
FEED = "acme-sunrise-medical"
SENDER, RECEIVER = "CARRIERFEEDS", "SUNRISEHP"  # the shipped mapping's ISA06 / ISA08
T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
PLANTED = "ZQX"  # a bad INS03 value pyx12 copies into IK404; must never leave the reader
#: The sunrise-health carrier with a local acknowledgment folder (under the data directory).
WITH_ACK_SOURCE = "acks:\n  source:\n    kind: local\n    path: carrier-outbox\nack_window_hours: 6\n"


@dataclass
class Sent:
    delivery: DeliveryRecord
    x12: bytes


def deliver(ledger: Ledger, day: int, *, broken: bool = False, at: datetime = T0, cap: int | None = None,
            transport: str = "local", feed_id: str = FEED) -> Sent:
    """A delivered 834 recorded the way the pipeline records it (intent, then outcome).

    ``cap``: the mapping's max_members_per_transaction (the family of four and the single split into
    two sets); ``broken`` then breaks the second set (the single's INS03), else the first dependent's.
    ``transport`` manual: placed for a hand-off (pending_handoff), not delivered.
    """
    start = date(2026, 11, day)
    run = ledger.start_run(feed_id=feed_id, interval_start=start, interval_end=start + timedelta(days=1),
                           actor="test", now=at)
    ic = ledger.allocate_control_numbers(run_id=run.run_id, sender_id=SENDER, receiver_id=RECEIVER, now=at)
    m = h.validated(max_members_per_transaction=cap) if cap is not None else h.mapping()
    data = render_834_bytes(h.enrollment(m=m), h.header(m), ControlNumbers(ic.isa13, ic.gs06, ic.st02))
    if broken and cap is not None:
        i = data.rindex(b"INS*Y*18*030")
        data = data[:i] + data[i:].replace(b"INS*Y*18*030", b"INS*Y*18*" + PLANTED.encode(), 1)
    elif broken:
        data = data.replace(b"INS*N*01*030", b"INS*N*01*" + PLANTED.encode(), 1)
    # As the deliver stage records it: the ST count the conformance gate read from the file.
    counts = {"members": 5, "transaction_sets": check_834(data).transaction_sets}
    intent = ledger.record_delivery_intent(
        run_id=run.run_id, feed_id=feed_id, interval_start=start, payload_sha256=hashlib.sha256(data).hexdigest(),
        file_name=f"CF_{ic.isa13:09d}.834.pgp", isa13=ic.isa13, gs06=ic.gs06, st02=ic.st02,
        recipient_fingerprint="A" * 40, member_counts=counts, transport=transport, now=at)
    ledger.record_delivery_outcome(intent.delivery_id, status="pending_handoff" if transport == "manual"
                                   else "delivered", now=at + timedelta(minutes=1), size=len(data))
    found = ledger.find_delivery(feed_id=feed_id, interval_start=start)
    assert found is not None
    return Sent(found, data)


def pyx12_999(tmp_path: Path, data: bytes) -> bytes:
    """The 999 pyx12's own validator generates for ``data``."""
    path = tmp_path / f"{uuid.uuid4().hex}.834"
    path.write_bytes(data)
    try:
        ack = validate_with_pyx12(path).ack_999
    finally:
        path.unlink()
    assert ack is not None
    return ack


def ta1(control: int, code: str, note: str, *, sender: str = RECEIVER, receiver: str = SENDER) -> bytes:
    return (f"ISA*00*          *00*          *ZZ*{sender:<15}*ZZ*{receiver:<15}*261121*0900*^*00501*"
            f"000000900*0*T*:~\nTA1*{control:09d}*261121*0800*{code}*{note}~\nIEA*0*000000900~\n").encode()


def config_root(tmp_path: Path, sunrise_extra: str) -> Path:
    """The shipped feeds, mappings and schemas, with ``sunrise_extra`` (YAML) added to sunrise-health."""
    root = tmp_path / "config"
    for part in ("feeds", "mappings", "schemas"):
        shutil.copytree(ROOT / part, root / part)
    mapping = root / "mappings" / "sunrise-health.yaml"
    mapping.write_text(mapping.read_text() + sunrise_extra)
    return root


def collect(ledger: Ledger, inbox: Path | AckInbox, archive: Path, **kwargs: Any) -> Any:
    """One poll of ``inbox`` (a folder, or any inbox) as the sunrise-health source, two hours after T0."""
    source = LocalAckInbox(inbox) if isinstance(inbox, Path) else inbox
    return collect_acks(ledger, source, source_id="sunrise-health", now=T0 + timedelta(hours=2),
                        archive_dir=archive, **kwargs)
