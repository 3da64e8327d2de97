"""The real OpenSSH client against a pod, pinned to the host key the API reported."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any


def ssh(
    pod: dict[str, Any], key_file: Path, command: str, tmp: Path
) -> subprocess.CompletedProcess[str]:
    info = pod["ssh"]
    assert info is not None, f"pod {pod['id']} has no SSH info: {pod}"
    known = tmp / f"known_hosts_{pod['id']}"
    known.write_text(f"[{info['host']}]:{info['port']} {info['hostKey']}\n")
    # The exact command the API returned, plus the test's key and pinned host key.
    argv = [
        *info["command"].split(),
        "-i",
        str(key_file),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={known}",
        "-o",
        "ConnectTimeout=5",
        command,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)
