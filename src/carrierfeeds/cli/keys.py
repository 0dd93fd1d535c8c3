"""`carrierfeeds keys`: the PGP keys every feed pins, checked before a run needs them."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from carrierfeeds.cli.common import _emit, _fail, _utcnow, app, quiet_gpg_exit_codes
from carrierfeeds.errors import CarrierFeedsError, ConfigError
from carrierfeeds.outcomes import ExitCode
from carrierfeeds.settings import Settings, feed_paths

keys_app = typer.Typer(help="PGP keys the feeds pin.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _recipient_problem(info: Any, spec: Any) -> str | None:
    """Why a usable-looking recipient key would still be refused at encrypt time, or None.

    The same tests as ``Keyring.require_recipient``: an encryption subkey, and the feed's optional
    user id and subkey pins.
    """
    from carrierfeeds.crypto import normalize_fingerprint

    if info.status not in ("ok", "expiring"):
        return None
    if not info.can_encrypt:
        return "no_encryption_subkey"
    if spec.recipient_user_id is not None and spec.recipient_user_id not in info.valid_user_ids:
        return "user_id_pin_mismatch"
    if spec.recipient_encryption_subkey is not None and \
            info.encryption_subkey != normalize_fingerprint(spec.recipient_encryption_subkey):
        return "subkey_pin_mismatch"
    return None


def _inspect_every_feed(settings: Settings, keyring: Any, now: Any, keys: list[dict[str, Any]],
                        broken: list[dict[str, Any]]) -> None:
    from carrierfeeds.config import load_feed

    for path in feed_paths(settings):
        try:
            feed = load_feed(path)
        except ConfigError as exc:
            broken.append({"file": str(path), "error": exc.message})
            continue
        spec = feed.encryption
        for role, fpr in (("recipient", spec.recipient_fingerprint), ("signer", spec.signer_fingerprint)):
            info = keyring.inspect(fpr, now=now, warning_days=spec.expiry_warning_days)
            problem = _recipient_problem(info, spec) if role == "recipient" else None
            keys.append({"feed_id": feed.feed_id, "role": role, "fingerprint": info.fingerprint,
                         "user_ids": list(info.user_ids), "status": info.status, "problem": problem,
                         "expires": info.expires.isoformat() if info.expires else None,
                         "days_left": info.days_left, "warning_days": spec.expiry_warning_days,
                         "ok": info.status == "ok" and problem is None})


@keys_app.command("check")
def keys_check(as_json: Annotated[bool, typer.Option("--json", help="every key as JSON")] = False) -> None:
    """Every feed's pinned recipient and signer key: fingerprint, expiry, days left, status.

    Exit 0 when every key is ok; 3 when any is missing, expired, revoked, a recipient key has no usable
    encryption subkey, or any expires within its feed's ``encryption.expiry_warning_days`` (status
    "expiring": runs still work, but renew now); 2 when a feed file is broken, there are no feeds, or
    the gpg home is unusable.
    """
    from carrierfeeds.crypto import Keyring

    settings = Settings()
    now = _utcnow()
    try:
        keyring = Keyring(settings.resolved_gnupg_home)
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    keys: list[dict[str, Any]] = []
    broken: list[dict[str, Any]] = []
    with quiet_gpg_exit_codes() as gpg_said:  # python-gnupg warns once per key gpg did not find: said once below
        _inspect_every_feed(settings, keyring, now, keys, broken)
    failing = [k for k in keys if not k["ok"]]
    code = ExitCode.REFUSED if failing else ExitCode.USAGE if broken or not keys else ExitCode.OK
    lines = [f"{'FEED':<28} {'ROLE':<9} {'FINGERPRINT':<40}  {'EXPIRES':<10} {'DAYS':>5}  STATUS"]
    lines += [f"{k['feed_id']:<28} {k['role']:<9} {k['fingerprint']:<40}  "
              f"{(k['expires'] or 'never')[:10]:<10} {'' if k['days_left'] is None else k['days_left']:>5}  "
              f"{k['status']}" + (f" ({k['problem']})" if k["problem"] else "") for k in keys]
    lines += [f"FAIL {b['file']}: {b['error']}" for b in broken]
    missing = sum(k["status"] == "missing" for k in keys)
    if missing:
        lines.append(f"{missing} pinned key(s) not in the gpg home {settings.resolved_gnupg_home}: import the "
                     "carrier's public key (or our signing key), or correct the fingerprint in the feed file")
    elif gpg_said.count:
        lines.append(f"gpg could not list {gpg_said.count} key(s) in {settings.resolved_gnupg_home}; "
                     "(run with -v for gpg's own words)")
    if not keys and not broken:
        lines = [f"no feeds in {settings.feeds_dir}"]
    lines.append(f"{len(keys) - len(failing)} of {len(keys)} keys ok" + (
        f"; {len(failing)} need attention" if failing else ""))
    _emit({"ok": code == ExitCode.OK, "keys": keys, "broken_feeds": broken, "checked_at": now.isoformat()},
          as_json, lines)
    raise typer.Exit(code)


