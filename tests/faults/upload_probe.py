"""Child process for the large-transfer test: one SftpTransport.deliver, with its RSS high-water mark.

Run as ``python upload_probe.py SPEC.json``; SPEC names the endpoint (host, port, username, client key,
known_hosts text), the remote folder, the local file and the remote name. Prints one JSON line:
``hwm_before_kb`` (VmHWM once everything is imported and the file is about to go), ``hwm_after_kb``
and the receipt. Its own process, so the test's memory never counts. VmHWM, not getrusage's
``ru_maxrss``: that one survives ``execve`` and so starts at the forking parent's (pytest's) size.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def vm_hwm_kb() -> int:
    """This process's peak resident set size so far (``VmHWM`` in /proc/self/status), in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(spec_path: str) -> None:
    from carrierfeeds.credentials import SftpEndpoint
    from carrierfeeds.transport.sftp import SftpTransport

    spec = json.loads(Path(spec_path).read_text())
    endpoint = SftpEndpoint(host=spec["host"], port=spec["port"], username=spec["username"],
                            private_key_path=Path(spec["private_key_path"]), known_hosts=spec["known_hosts"])
    transport = SftpTransport(endpoint, spec["remote_dir"], retries=spec.get("retries", 1), backoff=0.1)
    before = vm_hwm_kb()
    receipt = transport.deliver(Path(spec["local"]), spec["remote_name"])
    after = vm_hwm_kb()
    sys.stdout.write(json.dumps({"hwm_before_kb": before, "hwm_after_kb": after, "size": receipt.size,
                                 "attempts": receipt.attempts, "remote_path": receipt.remote_path}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
