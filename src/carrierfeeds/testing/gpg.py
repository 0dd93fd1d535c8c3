"""Generated keys for demo, tests, benchmarks: our keyring (carrier public key, our signer), the carrier's."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from carrierfeeds.crypto import Keyring

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoKeys:
    """``ours`` holds the carrier's public key and our signing key pair; ``carrier`` holds the carrier's
    secret key and our public key, as it would at the carrier (so tests can decrypt what was delivered)."""

    ours: Keyring
    carrier: Keyring
    carrier_fingerprint: str
    signer_fingerprint: str

    def stop_agents(self) -> None:
        """Stop the gpg-agents of both homes."""
        self.ours.stop_agent()
        self.carrier.stop_agent()


def carrier_home_for(home: Path) -> Path:
    """Where make_keyring puts the carrier's own gpg home: a sibling of ``home``."""
    return home.with_name(home.name + "-carrier")


def make_keyring(home: Path, *, expire: str = "1y") -> DemoKeys:
    """Two fresh gpg homes (``home`` and ``<home>-carrier``, mode 0700), keys generated and cross-imported."""
    ours = Keyring.create(home)
    carrier = Keyring.create(carrier_home_for(home))
    carrier_fpr = carrier.generate_key("Demo Carrier Eligibility", "eligibility@carrier.example",
                                       expire=expire, usage="encrypt,sign")
    signer_fpr = ours.generate_key("carrierfeeds demo sender", "feeds@sender.example", expire=expire,
                                   usage="sign")
    ours.import_keys(carrier.export_public(carrier_fpr))
    carrier.import_keys(ours.export_public(signer_fpr))
    log.info("demo keys: carrier %s, signer %s", carrier_fpr, signer_fpr)
    return DemoKeys(ours=ours, carrier=carrier, carrier_fingerprint=carrier_fpr,
                    signer_fingerprint=signer_fpr)
