"""One door to gpg: pinned-fingerprint encryption and signing, key checks; typed results or our errors.

A ciphertext is complete or it does not exist: ``encrypt_file`` requires gpg's zero exit status and its
END_ENCRYPTION status line, fsyncs the output and walks its OpenPGP packets
(``openpgp.check_openpgp_message``) before the output appears under its name; a short write (full disk,
I/O error) is an :class:`EncryptionIncomplete`, which a retry may fix, and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
import subprocess
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import gnupg

from carrierfeeds.errors import ConfigError, DataError, KeyRefused, PermanentError, Refused, TransientError
from carrierfeeds.files import sha256_and_size
from carrierfeeds.openpgp import CiphertextMalformed, HashingFile, check_openpgp_message

log = logging.getLogger(__name__)

KeyStatus = Literal["ok", "expiring", "expired", "revoked", "missing"]

FULL_FINGERPRINT = re.compile(r"^[0-9A-F]{40}$")
PASSPHRASE_ENV = "CARRIERFEEDS_GPG_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)
PASSPHRASE_FILE_ENV = "CARRIERFEEDS_GPG_PASSPHRASE_FILE"  # noqa: S105
_CHUNK = 1024 * 1024
# Expiry spellings gpg's quick-gen-key understands, kept narrow so a typo is an error here, not in gpg.
_EXPIRE = re.compile(r"^(never|none|0|\d+[dwmy]?|\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class KeyInfo:
    """What we know about one primary key at a given moment; user ids are a carrier's, never PHI."""

    fingerprint: str
    user_ids: tuple[str, ...]
    created: datetime | None
    expires: datetime | None
    revoked: bool
    can_encrypt: bool
    status: KeyStatus
    days_left: int | None = None  # whole days to expiry at inspection time; None: never expires or missing
    #: The (sub)key gpg will encrypt to at inspection time: the newest usable encryption subkey, else an
    #: encryption-capable primary key (gpg's own choice); None when there is none.
    encryption_subkey: str | None = None
    #: User ids gpg does not consider revoked (``user_ids`` lists them all).
    valid_user_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class EncryptedFile:
    """Ciphertext on disk: where, its SHA-256 (hex) and its size in bytes."""

    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class DecryptedFile:
    """Plaintext on disk and who signed it; ``valid_signature`` is gpg's GOODSIG+VALIDSIG verdict."""

    path: Path
    sha256: str
    size: int
    signer_fingerprint: str | None
    valid_signature: bool


def normalize_fingerprint(fingerprint: str) -> str:
    """Upper-case, spaces removed; raises KeyRefused unless it is a full 40-hex fingerprint."""
    fpr = fingerprint.replace(" ", "").upper()
    if not FULL_FINGERPRINT.match(fpr):
        # Short and long key ids collide by construction; only a full fingerprint pins a key.
        raise KeyRefused("a key must be pinned by its full 40-hex fingerprint, not a key id",
                         details={"given_length": len(fpr)})
    return fpr


def _ts(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromtimestamp(int(value), tz=UTC)


class PlaintextChanged(Refused):
    """The plaintext handed to gpg is not the one whose hash the caller expected."""

    code = "plaintext_changed"


class EncryptionStopped(PermanentError):
    """``encrypt_file`` was told to stop: nothing was written."""

    code = "encryption_stopped"


class EncryptionIncomplete(TransientError):
    """gpg did not write a whole ciphertext (non-zero exit, no END_ENCRYPTION, a short or broken file:
    a full disk, an I/O error, gpg killed); nothing was kept, and a retry may succeed."""

    code = "encryption_incomplete"


# libgpg-error marks a code mapped from errno (ENOSPC, EIO...) with this bit: the system failed, not a key.
_GPG_SYSTEM_ERROR = 1 << 15
# gpg status lines that say a key or passphrase was refused: KeyRefused, not a retry.
_KEY_PROBLEMS = frozenset({"INV_RECP", "INV_SGNR", "NO_RECP", "NO_SGNR", "KEYEXPIRED", "SIGEXPIRED",
                           "KEYREVOKED", "BAD_PASSPHRASE", "MISSING_PASSPHRASE", "EXPKEYSIG", "REVKEYSIG"})
# The result of the gpg call this thread made last; python-gnupg drops it when its feeding thread raises
# (gpg exited before reading all of its input), and its exit status is what says why.
_last_result = threading.local()


class _Crypt(gnupg.Crypt):  # type: ignore[misc]  # python-gnupg ships no type hints
    """python-gnupg's encryption and decryption result, remembering every status keyword gpg sent."""

    def __init__(self, gpg: Any) -> None:
        super().__init__(gpg)
        self.status_keys: set[str] = set()
        #: gpg's own error codes from FAILURE lines (libgpg-error: the code in the low 16 bits).
        self.failures: list[int] = []
        #: Signatures gpg checked (one NEWSIG each, good or not): python-gnupg keeps only the last verdict.
        self.signatures = 0
        _last_result.value = self

    def handle_status(self, key: str, value: str) -> None:
        self.status_keys.add(key)
        if key == "NEWSIG":
            self.signatures += 1
        if key == "FAILURE":
            code = value.rsplit(" ", 1)[-1]
            self.failures.append(int(code) & 0xFFFF if code.isdigit() else 0)
        super().handle_status(key, value)


class _HashingReader:
    """A binary file read through, every block hashed (SHA-256) on its way to gpg's stdin; it reads as
    ended once ``stop`` is set (gpg then finishes at once, and the caller discards what it made)."""

    def __init__(self, raw: Any, stop: threading.Event | None = None) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()
        self._stop = stop
        self.stopped = False

    def read(self, size: int = -1) -> bytes:
        if self._stop is not None and self._stop.is_set():
            self.stopped = True
            return b""
        data: bytes = self._raw.read(size)
        self._digest.update(data)
        return data

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _require_complete_run(result: Any, recipient_fpr: str, signer_fpr: str) -> None:
    """gpg said it encrypted, and exited 0; else a key or passphrase problem (a status line naming one,
    a FAILURE with gpg's own error code, or no encryption begun) is KeyRefused, and anything else
    EncryptionIncomplete: gpg reports END_ENCRYPTION even when it could not write its output."""
    keys: set[str] = getattr(result, "status_keys", set())
    failures: list[int] = getattr(result, "failures", [])
    returncode = getattr(result, "returncode", None)
    if returncode == 0 and "END_ENCRYPTION" in keys and result.ok and result.status == "encryption ok":
        return
    if keys & _KEY_PROBLEMS or "BEGIN_ENCRYPTION" not in keys or \
            any(not code & _GPG_SYSTEM_ERROR for code in failures):
        raise KeyRefused(f"gpg refused to encrypt to {recipient_fpr} signed by {signer_fpr}: "
                         f"{result.status or 'no status'}",
                         details={"recipient": recipient_fpr, "signer": signer_fpr, "gpg_status": result.status,
                                  "gpg_exit": returncode})
    raise EncryptionIncomplete(
        f"gpg did not finish writing the ciphertext (exit status {returncode}; a full disk or an I/O "
        "error?); nothing kept", details={"recipient": recipient_fpr, "gpg_exit": returncode,
                                          "end_encryption": "END_ENCRYPTION" in keys})


def _key_id(fingerprint: str) -> str:
    """The key id a v4 key is named by in a session-key packet: the fingerprint's last 16 hex digits."""
    return fingerprint[-16:].upper()


def _settle_ciphertext(tmp: Path, *, armor: bool, recipient_fpr: str, key_id: str) -> tuple[str, int]:
    """fsync gpg's output, then read it once: check its packets and hash it. Its sha256 and size."""
    try:
        with tmp.open("rb") as raw:
            os.fsync(raw.fileno())
            hashed = HashingFile(raw)
            try:
                key_ids = check_openpgp_message(hashed, armor=armor)
            except CiphertextMalformed as exc:
                raise EncryptionIncomplete(f"the ciphertext gpg wrote is not whole: {exc.args[0]}; "
                                           "nothing kept", details={"recipient": recipient_fpr}) from None
            hashed.drain()
    except OSError as exc:
        raise EncryptionIncomplete(f"the ciphertext could not be made durable ({exc.strerror})",
                                   details={"recipient": recipient_fpr, "errno": exc.errno}) from exc
    if key_ids != (key_id,):
        raise KeyRefused(f"the ciphertext is not encrypted to exactly the pinned key {recipient_fpr}",
                         details={"recipient": recipient_fpr, "key_ids": len(key_ids)})
    return hashed.digest.hexdigest(), hashed.size


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reserve(tmp: Path) -> None:
    """Create ``tmp`` (0600) for gpg to write into (gpg keeps the mode: plaintext stays private)."""
    tmp.unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _check_home(home: Path) -> None:
    try:
        st = home.stat()
    except FileNotFoundError:
        raise ConfigError("GNUPGHOME does not exist (create it with mode 0700)", file=str(home)) from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError("GNUPGHOME is not a directory", file=str(home))
    mode = stat.S_IMODE(st.st_mode)
    if mode != 0o700:
        raise ConfigError(f"GNUPGHOME must have mode 0700, has {mode:04o}", file=str(home))
    # 0700 protects only against others if the owner is us: a home someone else owns is theirs to read
    # (our secret keys) and to change (a planted key, a gpg.conf).
    if st.st_uid != os.geteuid():
        raise ConfigError(f"GNUPGHOME must be owned by this process's user (uid {os.geteuid()}), is owned by "
                          f"uid {st.st_uid}", file=str(home))


class Keyring:
    """A private GNUPGHOME: inspect, pin, encrypt, sign, decrypt.

    The signing passphrase, when our key has one, comes from ``passphrase_file`` (or the file named by
    ``CARRIERFEEDS_GPG_PASSPHRASE_FILE``), else from ``CARRIERFEEDS_GPG_PASSPHRASE``; never from config.
    """

    def __init__(self, home: Path, *, passphrase_file: Path | None = None) -> None:
        home = Path(home)
        _check_home(home)
        self.home = home
        self._passphrase_file = passphrase_file
        # utf-8 so user ids decode as written; gpg's own default is latin-1.
        self._gpg = gnupg.GPG(gnupghome=str(home), encoding="utf-8")
        # python-gnupg feeds gpg's stdin from a thread in 16 KiB writes by default; 1 MiB ones cost gpg
        # less reading (figures in benchmarks/README.md).
        self._gpg.buffer_size = _CHUNK
        # Our result type for encryption: it keeps gpg's status keywords and is findable after a failure.
        self._gpg.result_map = {**self._gpg.result_map, "crypt": _Crypt}

    @classmethod
    def create(cls, home: Path, **kwargs: Any) -> Keyring:
        """Make ``home`` (mode 0700) if it is missing, then open it."""
        home = Path(home)
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(home, **kwargs)

    # ---- inspection -------------------------------------------------------------------------------

    def _raw_key(self, fpr: str, *, secret: bool = False) -> dict[str, Any] | None:
        keys = self._gpg.list_keys(secret=secret, keys=[fpr])
        for key in keys:
            if key.get("fingerprint") == fpr:
                raw = dict(key)
                # Per-uid validity ("r": revoked) lives in the listing's uid_map, not on the key.
                uid_map = getattr(keys, "uid_map", {}) or {}
                raw["uid_validity"] = {uid: (uid_map.get(uid) or {}).get("trust", "")
                                       for uid in raw.get("uids") or ()}
                return raw
        return None

    def inspect(self, fingerprint: str, *, now: datetime, warning_days: int = 30) -> KeyInfo:
        """The key's state at ``now``; status "missing" when the primary fingerprint is not in the keyring."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        fpr = normalize_fingerprint(fingerprint)
        raw = self._raw_key(fpr)
        if raw is None:
            return KeyInfo(fpr, (), None, None, revoked=False, can_encrypt=False, status="missing")
        created = _ts(raw.get("date"))
        expires = _ts(raw.get("expires"))
        validity = raw.get("trust", "")
        revoked = validity == "r"
        # gpg judges expiry by the system clock; we judge by ``now`` as well and take the stricter.
        expired = validity == "e" or (expires is not None and expires <= now)
        can_encrypt = False
        chosen: str | None = None
        chosen_date = -1
        for sub in (raw.get("subkey_info") or {}).values():
            sub_expires = _ts(sub.get("expires"))
            alive = sub_expires is None or sub_expires > now
            usable = alive and sub.get("trust") not in ("r", "e", "i", "d")
            if usable and "e" in (sub.get("cap") or "").lower():
                can_encrypt = True
                # gpg encrypts to the most recently created usable encryption subkey (first on a tie).
                created_at = int(sub.get("date") or 0)
                if created_at > chosen_date and sub.get("fingerprint"):
                    chosen, chosen_date = str(sub["fingerprint"]), created_at
        if not can_encrypt and "e" in (raw.get("cap") or "") and not expired:
            can_encrypt = True  # an encryption-capable primary key (RSA "sce") needs no subkey
            chosen = fpr
        days_left = None if expires is None else (expires - now).days
        status: KeyStatus
        if revoked:
            status = "revoked"
        elif expired:
            status = "expired"
        elif days_left is not None and days_left < warning_days:
            status = "expiring"
        else:
            status = "ok"
        uid_validity: dict[str, str] = raw.get("uid_validity") or {}
        user_ids = tuple(raw.get("uids") or ())
        return KeyInfo(fpr, user_ids, created, expires, revoked, can_encrypt, status,
                       days_left=days_left, encryption_subkey=chosen if can_encrypt else None,
                       valid_user_ids=tuple(u for u in user_ids if uid_validity.get(u) != "r"))

    def require_recipient(self, fingerprint: str, *, now: datetime, warning_days: int = 30,
                          user_id: str | None = None, encryption_subkey: str | None = None) -> KeyInfo:
        """The pinned carrier key, fit to encrypt to at ``now``; KeyRefused otherwise (fail closed).

        Optional further pins: ``user_id`` must be one of the key's user ids, exactly (not revoked);
        ``encryption_subkey`` (full fingerprint) must be the subkey gpg would encrypt to, so a carrier
        key that gained a new encryption subkey is refused until the pin is updated on purpose.
        """
        info = self.inspect(fingerprint, now=now, warning_days=warning_days)
        details: dict[str, Any] = {"fingerprint": info.fingerprint, "status": info.status}
        if info.status == "missing":
            raise KeyRefused(f"pinned key {info.fingerprint} is not in the keyring", details=details)
        if info.status in ("expired", "revoked"):
            raise KeyRefused(f"pinned key {info.fingerprint} is {info.status}", details=details)
        if not info.can_encrypt:
            raise KeyRefused(f"pinned key {info.fingerprint} has no usable encryption subkey",
                             details=details)
        if user_id is not None and user_id not in info.valid_user_ids:
            # The user id is the carrier's (a mailbox), not PHI; naming the pin helps whoever fixes it.
            raise KeyRefused(f"pinned key {info.fingerprint} has no valid user id {user_id!r}",
                             details={**details, "pin": "user_id"})
        if encryption_subkey is not None:
            wanted = normalize_fingerprint(encryption_subkey)
            if info.encryption_subkey != wanted:
                raise KeyRefused(f"pinned key {info.fingerprint} would be encrypted to subkey "
                                 f"{info.encryption_subkey}, not the pinned subkey {wanted}",
                                 details={**details, "pin": "encryption_subkey",
                                          "pinned_subkey": wanted, "chosen_subkey": info.encryption_subkey})
        if info.status == "expiring":
            log.warning("pinned key %s expires in %s days (%s)", info.fingerprint, info.days_left,
                        info.expires.isoformat() if info.expires else "?")
        return info

    def _require_signer(self, fingerprint: str, *, now: datetime) -> str:
        fpr = normalize_fingerprint(fingerprint)
        info = self.inspect(fpr, now=now)
        if info.status in ("missing", "expired", "revoked") or self._raw_key(fpr, secret=True) is None:
            raise KeyRefused(f"signing key {fpr} is not usable ({info.status}, or no secret key here)",
                             details={"fingerprint": fpr, "status": info.status})
        return fpr

    def _passphrase(self) -> str | None:
        path = self._passphrase_file or (Path(os.environ[PASSPHRASE_FILE_ENV])
                                         if os.environ.get(PASSPHRASE_FILE_ENV) else None)
        if path is not None:
            try:
                return path.read_text().rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"cannot read the signing passphrase file ({exc.strerror})",
                                  file=str(path)) from None
        return os.environ.get(PASSPHRASE_ENV) or None

    # ---- encryption ------------------------------------------------------------------------------

    def encrypt_file(self, src: Path, dst: Path, *, recipient: str, signer: str, armor: bool = False,
                     compress_level: int = 1, now: datetime, warning_days: int = 30,
                     recipient_user_id: str | None = None,
                     recipient_encryption_subkey: str | None = None,
                     expect_sha256: str | None = None,
                     stop: threading.Event | None = None) -> EncryptedFile:
        """Encrypt ``src`` to exactly the pinned ``recipient``, signed by ``signer``; all or nothing.

        ``warning_days`` is the feed's expiry warning window; the optional pins are require_recipient's.
        Streams through gpg; the output appears at ``dst`` only complete (temp name + rename).
        ``expect_sha256``: the sha256 (hex) the plaintext must have. The bytes are hashed as they are fed
        to gpg, so what was encrypted is exactly what was checked (no window between a separate hash and
        gpg's read, and no second read of the file); on a mismatch nothing appears at ``dst`` and
        :class:`PlaintextChanged` is raised. ``stop``: once set, gpg is fed no more and whatever it made
        is discarded (:class:`EncryptionStopped`); for work done ahead that turned out not to be wanted.
        """
        info = self.require_recipient(recipient, now=now, warning_days=warning_days, user_id=recipient_user_id,
                                      encryption_subkey=recipient_encryption_subkey)
        recipient_fpr = info.fingerprint
        signer_fpr = self._require_signer(signer, now=now)
        if not 0 <= compress_level <= 9:
            raise ConfigError("compress_level must be 0..9", field="encryption.compress_level")
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        extra = [
            # Trust exactly the pinned key for this one call instead of --trust-model always, which
            # would encrypt to any key matching the name.
            "--trusted-key", recipient_fpr[-16:],
            "--no-encrypt-to", "--no-default-recipient",
            "--compress-level", str(compress_level),
        ]
        try:
            _reserve(tmp)
            with src.open("rb") as raw:
                fh = _HashingReader(raw, stop)
                # With a pinned subkey, "FPR!" makes gpg use exactly that subkey (checked above to be
                # the one it would pick anyway), so the ciphertext matches the pin by construction.
                target = f"{info.encryption_subkey}!" if recipient_encryption_subkey else recipient_fpr
                _last_result.value = None
                try:
                    result = self._gpg.encrypt_file(fh, [target], sign=signer_fpr, armor=armor,
                                                    output=str(tmp), passphrase=self._passphrase(),
                                                    extra_args=extra)
                except OSError as exc:
                    # python-gnupg's feeding thread raised: gpg exited before reading all of its input
                    # (a broken pipe), or the plaintext could not be read. Either way gpg was not fed the
                    # whole file, and may even have ended well on part of it: never a ciphertext to keep.
                    result = _last_result.value
                    if result is None or getattr(result, "returncode", None) is None:
                        raise  # gpg never ran to an end: not something this adapter can name
                    _require_complete_run(result, recipient_fpr, signer_fpr)
                    raise EncryptionIncomplete(f"gpg was not fed the whole file ({type(exc).__name__}); "
                                               "nothing kept", details={"recipient": recipient_fpr,
                                                                       "gpg_exit": result.returncode}) from exc
            if fh.stopped:
                raise EncryptionStopped("encryption stopped before the end of the file; output discarded")
            _require_complete_run(result, recipient_fpr, signer_fpr)
            if expect_sha256 is not None and fh.hexdigest() != expect_sha256:
                raise PlaintextChanged(f"{src.name} is not the file that was checked (its sha256 changed)",
                                       details={"file_name": src.name})
            sha, size = _settle_ciphertext(tmp, armor=armor, recipient_fpr=recipient_fpr,
                                           key_id=_key_id(info.encryption_subkey or recipient_fpr))
            os.replace(tmp, dst)
            _fsync_dir(dst.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        log.info("encrypted %s -> %s (%d bytes, sha256 %s) to %s signed by %s", src.name, dst.name, size,
                 sha, recipient_fpr, signer_fpr)
        return EncryptedFile(path=dst, sha256=sha, size=size)

    def sign_detached(self, src: Path, dst: Path, *, signer: str, now: datetime) -> str:
        """An armored detached signature of ``src`` by ``signer`` at ``dst``; the signer's fingerprint."""
        signer_fpr = self._require_signer(signer, now=now)
        with src.open("rb") as fh:
            result = self._gpg.sign_file(fh, keyid=signer_fpr, detach=True, binary=False, output=str(dst),
                                         passphrase=self._passphrase(), extra_args=["--digest-algo", "SHA256"])
        if not getattr(result, "fingerprint", None) or not dst.is_file():
            dst.unlink(missing_ok=True)
            raise KeyRefused(f"gpg did not sign {src.name} ({getattr(result, 'status', None) or 'no status'})",
                             details={"fingerprint": signer_fpr})
        return signer_fpr

    def verify_detached(self, data: Path, signature: Path) -> str | None:
        """The primary fingerprint of the key whose valid signature ``signature`` is over ``data``; None when
        the signature is not valid (bad, unknown key, or not one signature)."""
        with signature.open("rb") as fh:
            result = self._gpg.verify_file(fh, str(data))
        if not result.valid or len(getattr(result, "sig_info", None) or {"": None}) != 1:
            return None
        return str(result.pubkey_fingerprint or result.fingerprint or "") or None

    def decrypt_file(self, src: Path, dst: Path, *, require_signer: str | None = None,
                     max_output: int | None = None) -> DecryptedFile:
        """Decrypt ``src`` with a secret key in this keyring; all or nothing at ``dst``.

        With ``require_signer`` the file must carry a valid signature by that primary key and no other
        signature (KeyRefused): a second signer's verdict would be lost behind the good one.
        ``max_output``: gpg stops writing past this many bytes (``--max-output``: OpenPGP compresses, so
        a small message can expand without bound), and a plaintext cut short there is a DataError (rule
        ``decompressed_too_large``), never a success: gpg still reports DECRYPTION_OKAY then.
        """
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        try:
            _reserve(tmp)
            extra = ["--max-output", str(max_output)] if max_output is not None else None
            with src.open("rb") as fh:
                result = self._gpg.decrypt_file(fh, output=str(tmp), passphrase=self._passphrase(),
                                                extra_args=extra)
            if max_output is not None and "--max-output" in (result.stderr or ""):  # names the option in any locale
                raise DataError(f"decrypts to more than {max_output} bytes; refused", file=src.name,
                                rule="decompressed_too_large", details={"max_bytes": max_output})
            if not result.ok:
                raise KeyRefused(f"gpg could not decrypt {src.name}: {result.status or 'no status'}",
                                 details={"gpg_status": result.status})
            signer = result.pubkey_fingerprint or result.fingerprint
            valid = bool(result.valid) and signer is not None
            if require_signer is not None:
                wanted = normalize_fingerprint(require_signer)
                signatures = int(getattr(result, "signatures", 0))
                if not valid or signer != wanted or signatures != 1:
                    raise KeyRefused(f"{src.name} is not validly signed by {wanted} alone",
                                     details={"expected_signer": wanted, "signer": signer,
                                              "signatures": signatures})
            os.replace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        sha, size = sha256_and_size(dst)
        return DecryptedFile(path=dst, sha256=sha, size=size, signer_fingerprint=signer,
                             valid_signature=valid)

    # ---- key management (demo, tests, onboarding) --------------------------------------------------

    def generate_key(self, name: str, email: str, *, expire: str = "1y", usage: str = "encrypt,sign",
                     created: datetime | None = None) -> str:
        """A new ed25519 (+ cv25519 encryption subkey) key without passphrase; returns its fingerprint.

        ``usage``: "encrypt,sign", "sign" or "encrypt". ``created`` back-dates the key with gpg's
        ``--faked-system-time`` (tests make expired keys this way); ``expire`` counts from it.
        """
        wanted = {u.strip() for u in usage.split(",") if u.strip()}
        if not wanted or wanted - {"encrypt", "sign"}:
            raise ValueError(f"usage must be 'encrypt', 'sign' or 'encrypt,sign', not {usage!r}")
        if not _EXPIRE.match(expire):
            raise ValueError(f"expire {expire!r} is not a gpg expiry (e.g. 1y, 90d, 2030-01-01, never)")
        base = ["--batch", "--passphrase", "", "--pinentry-mode", "loopback"]
        if created is not None:
            base += ["--faked-system-time", created.astimezone(UTC).strftime("%Y%m%dT%H%M%S!")]
        primary_usage = "sign,cert" if "sign" in wanted else "cert"
        out = self._run_gpg([*base, "--quick-gen-key", f"{name} <{email}>", "ed25519", primary_usage, expire])
        match = re.search(r"KEY_CREATED [BP] ([0-9A-F]{40})", out)
        if not match:
            raise PermanentError("gpg did not report the new key's fingerprint")
        fpr = match.group(1)
        if "encrypt" in wanted:
            self._run_gpg([*base, "--quick-add-key", fpr, "cv25519", "encr", expire])
        log.info("generated key %s (%s)", fpr, ",".join(sorted(wanted)))
        return fpr

    def export_public(self, fingerprint: str) -> str:
        """The armored public key; KeyRefused if it is not here."""
        fpr = normalize_fingerprint(fingerprint)
        text = self._gpg.export_keys([fpr], armor=True)
        if not isinstance(text, str) or "BEGIN PGP PUBLIC KEY BLOCK" not in text:
            raise KeyRefused(f"key {fpr} is not in the keyring", details={"fingerprint": fpr})
        return text

    def import_keys(self, text: str) -> tuple[str, ...]:
        """Import armored keys; returns the fingerprints gpg imported or updated (KeyRefused if none)."""
        result = self._gpg.import_keys(text)
        fprs = tuple(dict.fromkeys(f for f in result.fingerprints if f))
        if not fprs:
            raise KeyRefused("no key could be imported", details={"results": len(result.results)})
        return fprs

    def revoke(self, fingerprint: str) -> None:
        """Revoke a key generated in this home (gpg's own revocation certificate). For tests and drills."""
        fpr = normalize_fingerprint(fingerprint)
        cert = self.home / "openpgp-revocs.d" / f"{fpr}.rev"
        try:
            text = cert.read_text()
        except FileNotFoundError:
            raise KeyRefused(f"no revocation certificate for {fpr} in this keyring",
                             details={"fingerprint": fpr}) from None
        # gpg writes the certificate with a leading ':' so it cannot be imported by accident.
        armored = text.replace(":-----BEGIN PGP PUBLIC", "-----BEGIN PGP PUBLIC")
        self._gpg.import_keys(armored)
        raw = self._raw_key(fpr)
        if raw is None or raw.get("trust") != "r":
            raise PermanentError(f"gpg did not accept the revocation of {fpr}", details={"fingerprint": fpr})
        log.warning("revoked key %s", fpr)

    def stop_agent(self) -> None:
        """Stop this home's gpg-agent (tests and the demo call it when they are done with the home)."""
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"],
                           capture_output=True, timeout=10, check=False)

    def _run_gpg(self, args: list[str]) -> str:
        proc = subprocess.run([self._gpg.gpgbinary, "--homedir", str(self.home), "--status-fd", "1",
                               "--no-tty", *args], capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("gpg:")][-3:]
            command = next((a for a in args if a.startswith("--quick-")), "gpg")
            raise PermanentError(f"gpg {command} failed: {'; '.join(errors)}",
                                 details={"returncode": proc.returncode})
        return proc.stdout
