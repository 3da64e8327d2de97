"""What a forwarding request may name, and the words users see: pure functions, no I/O.

`ssh -J openpod@GATEWAY root@POD_ID` makes the OpenSSH client open a `direct-tcpip` channel to
`POD_ID:22` (the host as typed, lowercased by OpenSSH). The gateway accepts exactly that shape,
or `POD_ID.openpod:22`: the ssh config block that `openpod ssh config` writes matches
`Host *.openpod` with a ProxyJump and no HostName (a wildcard block cannot strip the suffix), so
its clients ask for the alias. Anything else is refused here, before the platform is asked.
"""

from __future__ import annotations

import re

from openpod.adapters.gateway.errors import BadDestination
from openpod.domain.ids import POD_HOST_SUFFIX

POD_SSH_PORT = 22
_POD_ID = re.compile(r"[a-z0-9]{1,63}")  # a DNS label; new_pod_id() makes 12 of these chars
_SHOWN_CHARS = 64  # how much of a bad host name is echoed back


def pod_id_for(dest_host: str, dest_port: int) -> str:
    """The pod a `direct-tcpip` request asks for, or BadDestination saying why not.

    Only the pod's own SSH port is reachable: every other port of the pod is one `ssh -L`
    away through the pod's sshd, which keeps the gateway's surface to one kind of relay.
    """
    pod_id = dest_host.removesuffix(POD_HOST_SUFFIX)
    if not _POD_ID.fullmatch(pod_id):
        shown = dest_host[:_SHOWN_CHARS].encode("ascii", "backslashreplace").decode()
        raise BadDestination(
            f"{shown!r} is not a pod id (lowercase letters and digits): "
            "use ssh -J openpod@GATEWAY root@POD_ID"
        )
    if dest_port != POD_SSH_PORT:
        raise BadDestination(
            f"pod {pod_id}: the gateway connects to port {POD_SSH_PORT} (the pod's SSH) "
            f"only, not {dest_port}; reach other ports with ssh -L through the pod's SSH"
        )
    return pod_id


def usage(address: str, login_user: str) -> str:
    """What a direct login to the gateway prints: it is a jump host, not a shell."""
    return (
        "this is the openpod SSH gateway: it has no shell.\n"
        f"use ssh -J {login_user}@{address} root@POD_ID\n"
        f"or in ~/.ssh/config: Host POD_ID / ProxyJump {login_user}@{address}\n"
    )


def wrong_user(username: str, login_user: str) -> str:
    """The banner shown before the refusal when the gateway is asked for another user."""
    shown = username[:_SHOWN_CHARS].encode("ascii", "backslashreplace").decode()
    return (
        f"this is the openpod SSH gateway: log in as {login_user}, not {shown!r} "
        f"(ssh -J {login_user}@GATEWAY root@POD_ID)\n"
    )


def format_address(host: str, port: int) -> str:
    """`host:port` as ssh -J takes it (IPv6 hosts in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
