"""TCP probes and host-port allocation shared by the runtimes.

Readiness is judged from outside, the way a user would see it: SSH is ready when the
port answers with an SSH banner (a listening socket alone may be a dying sshd or
something else), an app port when it accepts a TCP connection.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable, Mapping


def probe_host(bind_host: str) -> str:
    """The address to probe a service bound on `bind_host` (wildcards mean loopback)."""
    if bind_host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bind_host == "::":
        return "::1"
    return bind_host


def _connect(host: str, port: int, timeout: float) -> socket.socket | None:
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when something accepts a TCP connection on host:port."""
    sock = _connect(host, port, timeout)
    if sock is None:
        return False
    sock.close()
    return True


def ssh_banner(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when host:port greets with an `SSH-2.0-` identification line."""
    sock = _connect(host, port, timeout)
    if sock is None:
        return False
    with sock:
        try:
            data = sock.recv(256)
        except OSError:
            return False
    return data.startswith(b"SSH-2.0-")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# Pods' host ports come from below Linux's default ephemeral range (32768-60999): a port the
# kernel could hand to an outgoing connection between our check and the pod's own bind
# would make the pod's server fail to start.
POD_PORT_RANGE = (20000, 32767)


def allocate_ports(
    bind_host: str,
    container_ports: Iterable[int],
    avoid: set[int],
    previous: Mapping[int, int],
    port_range: tuple[int, int] = POD_PORT_RANGE,
) -> dict[int, int]:
    """Pick a free host port for each container port: container port -> host port.

    A port a pod had before is reused when it is free again, so that addresses (and
    `[host]:port` known_hosts entries) stay stable across stop/resume. Otherwise a free
    port is drawn at random from `port_range`. Every chosen port stays bound until all
    are chosen, so one call never hands out the same port twice; `avoid` holds ports
    other live pods own but may not be listening on yet.
    """
    low, high = port_range
    draws = min(256, high - low + 1)
    held: list[socket.socket] = []
    mapping: dict[int, int] = {}
    try:
        for cport in dict.fromkeys(container_ports):
            wanted = previous.get(cport)
            candidates = [wanted] if wanted and wanted not in avoid else []
            candidates += random.sample(range(low, high + 1), draws)
            for candidate in candidates:
                sock = _try_bind(bind_host, candidate, reuse=candidate == wanted)
                if sock is None:
                    continue
                port = int(sock.getsockname()[1])
                if port in avoid or port in mapping.values():
                    sock.close()
                    continue
                held.append(sock)
                mapping[cport] = port
                break
            else:
                raise OSError(f"no free host port on {bind_host} for container port {cport}")
    finally:
        for sock in held:
            sock.close()
    return mapping


def _try_bind(bind_host: str, port: int, reuse: bool) -> socket.socket | None:
    """Bind host:port. With `reuse` (SO_REUSEADDR, as sshd and most servers bind), a port
    whose only users are TIME_WAIT connections of a stopped pod counts as free; a port
    with a listener never does, on Linux."""
    sock = socket.socket(_family(bind_host), socket.SOCK_STREAM)
    if reuse:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind_host, port))
    except OSError:
        sock.close()
        return None
    return sock
