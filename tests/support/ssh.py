"""The real OpenSSH client against a pod, pinned to the host key the API reported."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.net import wait_until


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


@contextlib.contextmanager
def ssh_agent(sock: Path, *keys: Path) -> Iterator[dict[str, str]]:
    """A real ssh-agent on `sock` holding `keys`: the environment to reach it. It is stopped
    by its PID. Ready means it accepts a connection (the socket file appears before that)."""
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)

    def accepting() -> bool:
        assert agent.poll() is None, "ssh-agent exited"
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(sock))
            except OSError:
                return False
            return True

    try:
        wait_until(accepting, 10, "ssh-agent to accept connections")
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        for key in keys:
            subprocess.run(["ssh-add", "-q", str(key)], env=env, check=True)
        yield env
    finally:
        agent.terminate()
        agent.wait(10)
