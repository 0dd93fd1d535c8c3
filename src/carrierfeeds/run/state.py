"""What each stage of a run hands the next: typed frozen sections of one RunState (state.json).

state.json stays one flat JSON object with the keys it always had, so a run interrupted before an
upgrade resumes after it: each section reads its own keys from it and writes them back; keys no section
knows are kept as they are. A section is present once its stage has written it (its first key is there).
Everything here is PHI-free: ids, counts, hashes, names the run chose.
"""

from __future__ import annotations

import json
from typing import ClassVar, Self

from pydantic import BaseModel, ConfigDict, JsonValue


class _Section(BaseModel):
    """One stage's part of state.json: its fields are the flat keys it reads and writes."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    #: The key whose presence says the stage has written this section.
    anchor: ClassVar[str]
    #: Keys written only when they have a value (as they always were).
    omit_none: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def read(cls, flat: dict[str, JsonValue]) -> Self | None:
        return cls.model_validate(flat) if cls.anchor in flat else None

    def flat(self) -> dict[str, JsonValue]:
        data: dict[str, JsonValue] = self.model_dump(mode="json")
        return {k: v for k, v in data.items() if v is not None or k not in self.omit_none}


class CensusState(_Section):
    """stage_census: the census staged for the run (``census_pick``: where it came from, to accept it)."""

    anchor: ClassVar[str] = "census_sha256"
    census_name: str
    census_sha256: str
    #: ``CensusPick.as_state()``: its path, names, hash, size, kind, flags, mtime and origin stat.
    census_pick: dict[str, str | int | bool | list[int] | None] | None = None


class ValidationState(_Section):
    """validate: the PHI-free counts (by reason for exclusions) and where the report was written."""

    anchor: ClassVar[str] = "validation"
    validation: dict[str, JsonValue]
    report_dir: str


class BuildState(_Section):
    """build: the rendered file, its control numbers, counts, and a forced resend's link."""

    anchor: ClassVar[str] = "file_name"
    omit_none: ClassVar[frozenset[str]] = frozenset({"flatfile_records", "endpoint", "usage"})
    file_name: str
    payload_sha256: str
    payload_bytes: int
    isa13: int
    gs06: int
    st02: int
    counts: dict[str, int]
    resend: int | None = None
    replaces_delivery_id: str | None = None
    resend_reason: str | None = None
    #: A flat file's record count, checked by the gate (absent for an 834 or a PDF).
    flatfile_records: int | None = None
    #: Where the file goes under the feed's lifecycle (``test`` or ``production``; absent in states written
    #: before the lifecycle: production) and the ISA15 it was rendered with (absent: the mapping's).
    endpoint: str | None = None
    usage: str | None = None

    @property
    def members(self) -> int:
        return self.counts["members"]


class GateState(_Section):
    """conformance: the gate passed (``transaction_sets``: the ST count an 834 holds, for matching 999s)."""

    anchor: ClassVar[str] = "conformance"
    omit_none: ClassVar[frozenset[str]] = frozenset({"transaction_sets"})
    conformance: str
    transaction_sets: int | None = None


class EncryptState(_Section):
    """encrypt (or the gate's encryption ahead): the kept ciphertext, the payload and pins it was made from."""

    anchor: ClassVar[str] = "cipher_name"
    cipher_name: str
    ciphertext_sha256: str
    cipher_bytes: int
    encrypted_payload: str
    #: The pins and options it was made under (absent in states written before they were recorded).
    encrypted_under: str | None = None
    encrypted_ahead: bool = False


class DeliveryState(_Section):
    """deliver: the file is with the recipient (or in the hand-off outbox), and where."""

    anchor: ClassVar[str] = "delivered"
    delivered: bool
    already_delivered: bool = False
    remote_path: str | None = None


class RunState(BaseModel):
    """Everything a run's stages have recorded so far; sections are None until their stage writes them.

    The flags are set by later stages than the section they describe: ``census_validated`` by validate,
    ``census_accepted`` once the run has an outcome, ``snapshot_staged`` by a changes-mode build before
    its file is rendered.
    """

    model_config = ConfigDict(frozen=True)

    census: CensusState | None = None
    validated: ValidationState | None = None
    built: BuildState | None = None
    gate: GateState | None = None
    encrypted: EncryptState | None = None
    delivery: DeliveryState | None = None
    census_validated: bool = False
    census_accepted: bool = False
    snapshot_staged: bool = False

    _FLAGS: ClassVar[tuple[str, ...]] = ("census_validated", "census_accepted", "snapshot_staged")

    @classmethod
    def from_json(cls, data: bytes | None) -> RunState:
        """The state of state.json's bytes (None: nothing recorded yet)."""
        return cls.from_flat(json.loads(data) if data else {})

    @classmethod
    def from_flat(cls, flat: dict[str, JsonValue]) -> RunState:
        return cls(census=CensusState.read(flat), validated=ValidationState.read(flat),
                   built=BuildState.read(flat), gate=GateState.read(flat), encrypted=EncryptState.read(flat),
                   delivery=DeliveryState.read(flat),
                   **{k: bool(flat.get(k)) for k in cls._FLAGS})

    def as_flat(self) -> dict[str, JsonValue]:
        """The state as state.json holds it (without keys no section knows)."""
        return merge_flat({}, self.census, self.validated, self.built, self.gate, self.encrypted, self.delivery,
                          **{k: getattr(self, k) for k in self._FLAGS})

    @property
    def build(self) -> BuildState:
        """The build's section; KeyError (an internal error: stages run in order) when there is none."""
        if self.built is None:
            raise KeyError("file_name")
        return self.built

    @property
    def encryption(self) -> EncryptState:
        """The encrypt stage's section; KeyError when there is none."""
        if self.encrypted is None:
            raise KeyError("cipher_name")
        return self.encrypted

    @property
    def counts(self) -> dict[str, int]:
        return self.built.counts if self.built is not None else {}


def merge_flat(flat: dict[str, JsonValue], *sections: _Section | None,
               **flags: bool | None) -> dict[str, JsonValue]:
    """``flat`` with each given section's keys and each given flag written over it (None: left alone)."""
    merged = dict(flat)
    for section in sections:
        if section is not None:
            merged.update(section.flat())
    merged.update({k: v for k, v in flags.items() if v is not None})
    return merged

