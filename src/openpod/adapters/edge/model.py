"""What the edge is told: routes (host → pod address) and how the proxy itself is set up.

Values are checked here, once, because they end up inside HAProxy's configuration and its
runtime API, where a space, a `;` or a newline would change the meaning of a command.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# Paths go into haproxy.cfg and runtime API commands unquoted: keep them to a plain alphabet.
_SAFE_PATH = re.compile(r"[A-Za-z0-9._/+@=,-]+")
# HAProxy keeps timeouts as signed 32-bit milliseconds.
MAX_TIMEOUT_S = 2_147_483.0


class EdgeError(Exception):
    """The edge proxy could not do what was asked (not installed, config rejected, socket
    errors, a route it cannot serve). Messages carry HAProxy's own words where it gave any."""


class InvalidRoute(EdgeError, ValueError):
    """A route the edge cannot hold: a host or address HAProxy could not match or dial."""


def normalise_host(host: str) -> str:
    """Hosts are matched lower-cased and without a port, exactly as the frontend looks them up."""
    low = host.strip().lower()
    if len(low) > 253 or not _HOST.fullmatch(low):
        raise InvalidRoute(f"not a DNS name the edge can route: {host!r}")
    return low


@dataclass(frozen=True)
class Route:
    """`host` (e.g. `abc123def456-8888.proxy.localhost`) is served by the pod at `upstream`.

    `upstream` is `IPv4:port`: HAProxy dials it with `set-dst`, which takes an address, not a
    name, so no DNS is ever resolved on the request path. `token_sha256` makes the route private:
    the lower-case hex SHA-256 of the token a request must carry (the token itself is never
    given to the edge).
    """

    host: str
    upstream: str  # "127.0.0.1:40123"
    token_sha256: str | None = None  # private pod: hex sha256 of the token the edge requires

    def __post_init__(self) -> None:
        object.__setattr__(self, "host", normalise_host(self.host))
        address, sep, port = self.upstream.rpartition(":")
        try:
            ip = ipaddress.IPv4Address(address)
            port_number = int(port)
        except ValueError:
            ip, port_number = None, 0
        if not sep or ip is None or not 0 < port_number < 65536:
            raise InvalidRoute(f"upstream must be IPv4:port, got {self.upstream!r}")
        object.__setattr__(self, "upstream", f"{ip}:{port_number}")
        if self.token_sha256 is not None:
            digest = self.token_sha256.lower()
            if not _SHA256_HEX.fullmatch(digest):
                raise InvalidRoute("token_sha256 must be 64 hex digits")
            object.__setattr__(self, "token_sha256", digest)

    @property
    def private(self) -> bool:
        return self.token_sha256 is not None


@dataclass(frozen=True)
class EdgeSettings:
    """One edge proxy. Everything it writes (config, map, pages, pid, admin socket, log) lives
    in `state_dir`, so a restart finds its routes there and two edges never share a file.

    Timeouts are idle timeouts: a WebSocket, an SSE stream or a long download stays open as
    long as bytes keep flowing in either direction within `client_timeout`/`server_timeout`
    (the WebSocket tunnel uses the larger). `header_timeout` bounds how long a client may
    take to send a request's headers (slow-loris), never the body: uploads are unlimited.
    """

    state_dir: Path
    http_port: int = 8480
    bind_host: str = "127.0.0.1"
    https_port: int | None = None
    certificate: Path | None = None  # one PEM with the cert and key for *.{domain}
    domain: str = "proxy.localhost"
    connect_timeout: float = 5.0
    client_timeout: float = 3600.0
    server_timeout: float = 3600.0
    header_timeout: float = 30.0
    connect_retries: int = 1  # each retry waits ~1 s: a pod still starting gets that grace
    # Response bodies move from the pod's socket to the client's with splice(2), never copied
    # through HAProxy's buffers: 1 MiB downloads 1.4-1.9x faster (bench/edge.py). Plain HTTP
    # only (TLS cannot be spliced); False is for comparing and for kernels that misbehave.
    splice_responses: bool = True
    haproxy: str = "haproxy"  # the binary, looked up on PATH (and /usr/sbin) when not a path
    stop_timeout: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir).absolute())
        object.__setattr__(self, "domain", normalise_host(self.domain))
        if not _SAFE_PATH.fullmatch(str(self.state_dir)):
            raise EdgeError(f"state_dir must be a plain path (no spaces): {self.state_dir}")
        if (self.https_port is None) != (self.certificate is None):
            raise EdgeError("https_port and certificate go together")
        if self.certificate is not None:
            cert = Path(self.certificate).absolute()
            if not _SAFE_PATH.fullmatch(str(cert)):
                raise EdgeError(f"certificate must be a plain path (no spaces): {cert}")
            object.__setattr__(self, "certificate", cert)
        try:
            ipaddress.ip_address(self.bind_host)
        except ValueError:
            raise EdgeError(f"bind_host must be an IP address, got {self.bind_host!r}") from None
        for name in ("connect_timeout", "client_timeout", "server_timeout", "header_timeout"):
            value = getattr(self, name)
            if not 0 < value <= MAX_TIMEOUT_S:
                raise EdgeError(f"{name} must be in (0, {MAX_TIMEOUT_S}] seconds, got {value}")
