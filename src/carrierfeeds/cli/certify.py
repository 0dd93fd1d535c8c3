"""`carrierfeeds certify`: a carrier's certification packet (synthetic scenario 834s, expected outcomes, a
signed manifest, a cover sheet), and its verification."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from carrierfeeds.cli.common import _emit, _fail, _parse_day, _utcnow, app
from carrierfeeds.errors import CarrierFeedsError, ConfigError
from carrierfeeds.outcomes import ExitCode
from carrierfeeds.settings import Settings

#: The ledger's audit action for a packet build (object: the feed).
PACKET_BUILT = "certification_packet_built"


def _verify(folder: Path, signer: str | None, as_json: bool) -> None:
    from carrierfeeds.certify.packet import verify_packet
    from carrierfeeds.crypto import Keyring

    try:
        result = verify_packet(folder, Keyring(Settings().resolved_gnupg_home), signer=signer)
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    lines = [f"{p['file']}: {p['problem']}" for p in result.problems]
    lines.append(f"packet {folder}: {'verified' if result.ok else 'NOT verified'} "
                 f"({result.files_checked} files hashed, signer {result.signer_fingerprint or 'none'})")
    _emit({"ok": result.ok, "signer_fingerprint": result.signer_fingerprint, "files_checked": result.files_checked,
           "problems": result.problems}, as_json, lines)
    raise typer.Exit(ExitCode.OK if result.ok else ExitCode.REFUSED)


@app.command()
def certify(
    feed_id: Annotated[str | None, typer.Argument(help="a feed in the feeds folder (file name without .yaml)")] = None,
    out: Annotated[Path | None, typer.Option(help="a new or empty folder for the packet")] = None,
    seed: Annotated[int, typer.Option(help="picks the synthetic people; same mapping and seed, same files")] = 1,
    as_of: Annotated[str | None, typer.Option("--as-of", help="anchor day YYYY-MM-DD every date follows from; "
                                                             "default: the 15th of the month the feed's "
                                                             "authorisation starts")] = None,
    by: Annotated[str, typer.Option(help="who builds the packet, for the ledger")] = "cli",
    deliver: Annotated[bool, typer.Option("--deliver", help="also send the packet's 834s to the carrier's test "
                                                            "endpoint (the feed's delivery.test), one run each, "
                                                            "under the ledger's control numbers; refused without "
                                                            "one. With --out holding a packet already: deliver "
                                                            "it (a rerun sends nothing twice)")] = False,
    verify: Annotated[Path | None, typer.Option("--verify", help="verify the packet in this folder instead: "
                                                                 "signature, every SHA-256, pyx12 again",
                                                file_okay=False)] = None,
    signer: Annotated[str | None, typer.Option(help="with --verify: the fingerprint the signature must be by "
                                                    "(default: the one the manifest names)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the manifest's summary (or the verification) "
                                                         "as JSON")] = False,
) -> None:
    """Build a certification packet for FEED_ID's carrier from synthetic people, never the census.

    One 834 per case the carrier must handle (new subscriber with dependents, termination, reinstatement,
    rehire after a gap, plan and coverage level changes, address and name change, identity correction,
    dependent age-out, COBRA, the full audit file, and each optional setting the mapping turns on), made
    by the run's own pure stages, each with its expected outcome (words and JSON), the structural check's
    and pyx12's verdicts, a cover sheet (HTML, PDF) and a manifest of SHA-256s signed with our key; the
    build is recorded in the ledger. Same mapping, seed and anchor day: the same files, byte for byte.
    --deliver sends them to the carrier's test endpoint, one run per file (days from the anchor day on),
    through the gate, encryption and delivery, under the ledger's own control numbers. Exit 0 when every
    file passes both checks (and, with --deliver, was delivered), 3 when one does not (or --verify
    fails, or the packet may not go out), 2 on a usage or configuration error; a failed delivery exits as
    its run would.
    """
    if verify is not None:
        if feed_id is not None or out is not None or deliver:
            raise typer.BadParameter("--verify DIR takes no FEED_ID, --out or --deliver")
        _verify(verify, signer, as_json)
        return
    if feed_id is None or out is None:
        raise typer.BadParameter("give FEED_ID and --out DIR (or --verify DIR)")
    from carrierfeeds.certify.packet import MANIFEST, build_packet
    from carrierfeeds.crypto import Keyring
    from carrierfeeds.settings import load_bundle, open_ledger

    settings = Settings()
    try:
        bundle = load_bundle(settings, feed_id)
        feed = bundle.feed
        if deliver:
            from carrierfeeds.lifecycle import has_test_endpoint

            if not has_test_endpoint(feed):
                raise ConfigError(f"feed {feed_id} has no test endpoint (delivery.test): certification files go "
                                  "to the carrier's test system only, never to production", field="delivery.test")
            if (out / MANIFEST).is_file():
                _deliver(settings, feed_id, out, by, as_json)  # a packet built earlier: deliver (or retry)
                return
        start = feed.authorization.effective_from
        anchor = _parse_day(as_of) if as_of else start.replace(day=15)
        now = _utcnow()
        packet = build_packet(feed, bundle.mapping, seed=seed, as_of=anchor, out=out,
                              keyring=Keyring(settings.resolved_gnupg_home), now=now)
        open_ledger(settings).audit(
            actor=by, action=PACKET_BUILT, object_type="feed", object_id=feed.feed_id, now=now,
            detail={"manifest_sha256": packet.manifest_sha256, "signer": packet.signer_fingerprint, "seed": seed,
                    "as_of": anchor.isoformat(), "mapping_id": bundle.mapping.mapping_id,
                    "scenarios": len(packet.manifest["scenarios"]), "all_pass": packet.ok})
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    m = packet.manifest
    summary: dict[str, Any] = {
        "ok": packet.ok, "out": str(out), "manifest_sha256": packet.manifest_sha256,
        "signer_fingerprint": packet.signer_fingerprint, "seed": seed, "as_of": m["as_of"],
        "scenarios": [{"file": s["file"], "structural_check": s["structural_check"]["ok"], "pyx12": s["pyx12"]["ok"]}
                      for s in m["scenarios"]],
        "not_applicable": m["not_applicable"]}
    lines = [f"{s['file']:<44} structural {'pass' if s['structural_check']['ok'] else 'FAIL'}  "
             f"pyx12 {'pass' if s['pyx12']['ok'] else 'FAIL'}" for s in m["scenarios"]]
    lines += [f"not applicable: {n['title']} ({n['reason']})" for n in m["not_applicable"]]
    lines.append(f"packet {out}: {len(m['scenarios'])} files, manifest sha256 {packet.manifest_sha256}, signed by "
                 f"{packet.signer_fingerprint} (recorded in the ledger)")
    if deliver and packet.ok:
        if not as_json:
            _emit(summary, False, lines)
        _deliver(settings, feed_id, out, by, as_json)
        return
    _emit(summary, as_json, lines)
    raise typer.Exit(ExitCode.OK if packet.ok else ExitCode.REFUSED)


def _deliver(settings: Settings, feed_id: str, out: Path, by: str, as_json: bool) -> None:
    from carrierfeeds.certify.deliver import deliver_packet
    from carrierfeeds.outcomes import exit_code_for_run

    try:
        sent = deliver_packet(settings, feed_id, out, clock=_utcnow, actor=by)
    except CarrierFeedsError as exc:
        _fail(exc, as_json)
        return
    runs = [{"run_id": r.run_id, "interval_start": r.interval_start, "status": r.status, "isa13": r.isa13,
             "file_name": r.file_name, "payload_sha256": r.payload_sha256,
             "error": (r.error or {}).get("code")} for r in sent.runs]
    lines = [f"{r['interval_start']}  {r['status']:<18} ISA13 {r['isa13'] or '-':<9}  {r['file_name'] or ''}"
             + (f"  ({r['error']})" if r["error"] else "") for r in runs]
    done = sum(r["status"] in ("delivered", "already_delivered") for r in runs)
    lines.append(f"certification delivery to the test endpoint: {done} of {len(runs)} files delivered "
                 f"(manifest sha256 {sent.manifest_sha256})")
    _emit({"ok": sent.ok, "manifest_sha256": sent.manifest_sha256, "runs": runs}, as_json, lines)
    failed = next((r for r in sent.runs if r.status not in ("delivered", "already_delivered")), None)
    raise typer.Exit(ExitCode.OK if failed is None else exit_code_for_run(failed.status, failed.error))
