"""``openpod ssh config``: an ``~/.ssh/config`` block so plain OpenSSH tools reach every pod.

With it, ``ssh POD.openpod``, ``scp f POD.openpod:/workspace/``, ``rsync`` and ``sftp`` go
through the gateway. The gateway's host key is pinned; pods' keys are pinned for the pods
running now and accepted on first use for later ones (their keys are also shown by the API).
"""

from __future__ import annotations

from pathlib import Path

from openpod.cli import config as cfg
from openpod.cli.client import Json
from openpod.cli.ssh import KNOWN_HOSTS_FILE, fast_path_command, pin_host_key
from openpod.domain.ids import POD_HOST_SUFFIX

BEGIN = "# >>> openpod (written by `openpod ssh config`; edits inside are replaced)"
END = "# <<< openpod"
POD_SUFFIX = POD_HOST_SUFFIX


def host_block(gateway: Json, known_hosts: Path) -> str:
    known = str(known_hosts).replace(" ", "\\\\ ")
    if gateway.get("fastPort"):  # the fast path: no second encryption on the way
        proxy = fast_path_command(str(gateway["host"]), int(gateway["fastPort"]))
        route = [f"    ProxyCommand {proxy}", "    ProxyUseFdpass yes"]
    else:
        route = ["    ProxyJump openpod-gateway"]
    return "\n".join(
        [
            BEGIN,
            "Host openpod-gateway",
            f"    HostName {gateway['host']}",
            f"    Port {gateway['port']}",
            f"    User {gateway.get('user') or 'openpod'}",
            f"    UserKnownHostsFile {known}",
            "    StrictHostKeyChecking yes",
            f"Host *{POD_SUFFIX}",
            *route,
            "    User root",
            f"    UserKnownHostsFile {known}",
            "    StrictHostKeyChecking accept-new",
            END,
            "",
        ]
    )


def pin_keys(gateway: Json, pods: list[Json]) -> Path:
    """Pin the gateway's key and the keys of the given pods (as POD.openpod)."""
    known_hosts = cfg.ensure_config_dir() / KNOWN_HOSTS_FILE
    if gateway.get("hostKey"):
        pin_host_key(known_hosts, str(gateway["host"]), int(gateway["port"]), gateway["hostKey"])
    for pod in pods:
        ssh = pod.get("ssh")
        if isinstance(ssh, dict) and ssh.get("hostKey"):
            pin_host_key(known_hosts, f"{pod['id']}{POD_SUFFIX}", 22, str(ssh["hostKey"]))
    return known_hosts


def merged(existing: str, block: str) -> str:
    """`existing` with the openpod block replaced (or appended when there is none)."""
    if BEGIN in existing and END in existing:
        head, _, rest = existing.partition(BEGIN)
        _, _, tail = rest.partition(END)
        return head + block.rstrip("\n") + tail
    separator = "" if not existing or existing.endswith("\n\n") else "\n"
    return existing + separator + block
