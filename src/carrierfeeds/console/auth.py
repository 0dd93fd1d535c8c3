"""Who is asking and what they may do: the :class:`Authorizer` protocol and the standalone console's own
users file (salted scrypt), signed session cookie and CSRF tokens.

Two permissions exist: ``read`` (every page) and ``confirm`` (the one write action, confirming a manual
hand-off). The standalone console grants both to role ``ops`` and only ``read`` to role ``auditor``; under
Airflow the auth manager decides (:mod:`carrierfeeds.console.airflow_plugin`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from carrierfeeds.errors import ConfigError, Refused
from carrierfeeds.files import create_key_file, open_private, read_key_file

if TYPE_CHECKING:
    from starlette.requests import Request

ROLES = ("ops", "auditor")
USERS_FILE = "console-users.json"
SECRET_FILE = "console-session.key"  # noqa: S105 - a file name, not a secret
SESSION_COOKIE = "carrierfeeds_console"
#: A session lasts a working day; the cookie is re-issued at each login.
SESSION_SECONDS = 12 * 3600
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
# scrypt at n=2**14, r=8 (16 MiB, tens of ms): slow for a guesser, bearable for one login.
_SCRYPT = {"n": 1 << 14, "r": 8, "p": 1}


class ConsoleKeyRefused(Refused):
    """The console's session key or users file is unsafe (readable by group or others) or malformed."""

    code = "console_key_refused"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a name for the ledger, what they may do, and a session id CSRF tokens
    are bound to."""

    name: str
    can_read: bool
    can_confirm: bool
    session: str
    #: The authorizer's own user object (Airflow's), for per-feed questions; never shown.
    handle: Any = field(default=None, compare=False, repr=False)


@runtime_checkable
class Authorizer(Protocol):
    """How the console learns who is asking. ``identify`` returns None for an unauthenticated caller;
    ``login_url`` is where a browser is sent then, coming back to the page asked for (None: answer 401)."""

    async def identify(self, request: Request) -> Principal | None: ...

    def login_url(self, request: Request) -> str | None: ...

    def can_confirm_feed(self, principal: Principal, feed_id: str) -> bool: ...


# --------------------------------------------------------------------------------------- secrets
def load_secret(keys_dir: Path) -> bytes:
    """The console's signing key under ``keys_dir`` (created 0600 on first use)."""
    path = keys_dir / SECRET_FILE
    key = read_key_file(path, what="console session key", error=ConsoleKeyRefused)
    if key is None:
        create_key_file(path, secrets.token_bytes(32), what="console session key")
        key = read_key_file(path, what="console session key", error=ConsoleKeyRefused)
    if key is None or len(key) < 32:
        raise ConsoleKeyRefused(f"console session key file {path} is too short")
    return key


def csrf_token(secret: bytes, session: str) -> str:
    """The form token for one session: an HMAC of its id, so a page from another site cannot know it."""
    return hmac.new(secret, b"csrf:" + session.encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: bytes, session: str, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(csrf_token(secret, session), token)


# -------------------------------------------------------------------------------------- users file
def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64), salted per user."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=32)
    except ValueError:
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


class UsersFile:
    """``console-users.json`` under the keys directory: name -> {role, password (scrypt)}; mode 0600."""

    def __init__(self, keys_dir: Path) -> None:
        self.path = keys_dir / USERS_FILE

    def read(self) -> dict[str, dict[str, str]]:
        raw = read_key_file(self.path, what="console users", error=ConsoleKeyRefused, max_bytes=1 << 20)
        if raw is None:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            raise ConsoleKeyRefused(f"console users file {self.path} is not JSON") from None
        if not isinstance(data, dict):
            raise ConsoleKeyRefused(f"console users file {self.path} is not a JSON object")
        return data

    def set_user(self, name: str, role: str, password: str) -> None:
        """Add or replace one user (the password is stored only as a salted scrypt hash)."""
        if not _NAME.match(name):
            raise ConfigError("a console user name is 1-64 letters, digits or . _ @ -", field="name")
        if role not in ROLES:
            raise ConfigError(f"role must be one of {', '.join(ROLES)}", field="role")
        if len(password) < 12:
            raise ConfigError("a console password has at least 12 characters", field="password")
        users = self.read()
        users[name] = {"role": role, "password": hash_password(password)}
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open_private(self.path) as fh:
            fh.write(json.dumps(users, indent=2, sort_keys=True).encode())

    def authenticate(self, name: str, password: str) -> str | None:
        """The user's role when the password matches, else None (an unknown name costs the same time)."""
        user = self.read().get(name)
        stored = user["password"] if user else hash_password("x" * 12, salt=b"\0" * 16)
        ok = check_password(password, stored)
        return user["role"] if user and ok and user.get("role") in ROLES else None


# --------------------------------------------------------------------------------------- sessions
class SessionSigner:
    """A signed, expiring cookie value: itsdangerous when installed, else an HMAC of the same payload."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def dumps(self, data: dict[str, str]) -> str:
        try:
            from itsdangerous import URLSafeTimedSerializer
        except ImportError:
            body = base64.urlsafe_b64encode(json.dumps({**data, "t": int(time.time())}).encode()).decode()
            return f"{body}.{self._mac(body)}"
        return URLSafeTimedSerializer(self._secret, salt="carrierfeeds-console").dumps(data)

    def loads(self, value: str, *, max_age: int = SESSION_SECONDS) -> dict[str, str] | None:
        try:
            from itsdangerous import BadSignature, URLSafeTimedSerializer
        except ImportError:
            body, _, mac = value.rpartition(".")
            if not body or not hmac.compare_digest(self._mac(body), mac):
                return None
            data = json.loads(base64.urlsafe_b64decode(body))
            return data if int(time.time()) - int(data.pop("t")) <= max_age else None
        try:
            loaded = URLSafeTimedSerializer(self._secret, salt="carrierfeeds-console").loads(value, max_age=max_age)
        except BadSignature:
            return None
        return loaded if isinstance(loaded, dict) else None

    def _mac(self, body: str) -> str:
        return hmac.new(self._secret, body.encode(), hashlib.sha256).hexdigest()


class StandaloneAuth:
    """The CLI deployment's authentication: users from the users file, a signed session cookie."""

    def __init__(self, keys_dir: Path, *, secret: bytes | None = None, secure_cookie: bool = False) -> None:
        self.users = UsersFile(keys_dir)
        self.secret = secret if secret is not None else load_secret(keys_dir)
        self.signer = SessionSigner(self.secret)
        self.secure_cookie = secure_cookie

    async def identify(self, request: Request) -> Principal | None:
        value = request.cookies.get(SESSION_COOKIE)
        data = self.signer.loads(value) if value else None
        if not data or data.get("role") not in ROLES:
            return None
        role = data["role"]
        return Principal(name=data["user"], can_read=True, can_confirm=role == "ops", session=data["sid"])

    def login_url(self, request: Request) -> str | None:
        from urllib.parse import quote

        return f"{request.url_for('login_form')}?next={quote(request.url.path)}"

    def can_confirm_feed(self, principal: Principal, feed_id: str) -> bool:
        return principal.can_confirm

    def session_cookie(self, name: str, role: str) -> str:
        return self.signer.dumps({"user": name, "role": role, "sid": secrets.token_hex(16)})
