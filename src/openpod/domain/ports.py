"""Port lists as users write them: `8888/http,22/tcp`."""

from collections.abc import Iterable
from dataclasses import dataclass

from openpod.domain.errors import InvalidPortSpec

PROTOCOLS = ("http", "tcp")
SSH_PORT = 22


@dataclass(frozen=True, order=True)
class PortSpec:
    port: int
    protocol: str

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol}"


def parse_port(item: str) -> PortSpec:
    """One `PORT/PROTO` item; PROTO is http or tcp, PORT in 1..65535."""
    text = item.strip()
    number, sep, proto = text.partition("/")
    if not sep or not number or not proto:
        raise InvalidPortSpec(f"port {text!r} must look like 8888/http or 22/tcp")
    if not number.isdigit():
        raise InvalidPortSpec(f"port {text!r}: {number!r} is not a port number")
    port = int(number)
    if not 1 <= port <= 65535:
        raise InvalidPortSpec(f"port {text!r}: {port} is outside 1-65535")
    proto = proto.lower()
    if proto not in PROTOCOLS:
        raise InvalidPortSpec(f"port {text!r}: protocol {proto!r} is not one of http, tcp")
    return PortSpec(port, proto)


def parse_ports(spec: str | Iterable[str]) -> tuple[PortSpec, ...]:
    """A port list (a comma-separated string or a list of items), SSH's 22/tcp always included.

    Duplicated ports are refused, whatever their protocols: one container port, one mapping.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    parsed: list[PortSpec] = []
    seen: set[int] = set()
    for item in items:
        if not item.strip():
            if isinstance(spec, str) and not spec.strip():
                continue
            raise InvalidPortSpec(f"empty item in port list {spec!r}")
        port = parse_port(item)
        if port.port in seen:
            raise InvalidPortSpec(f"port {port.port} is listed more than once")
        seen.add(port.port)
        parsed.append(port)
    if SSH_PORT not in seen:
        parsed.append(PortSpec(SSH_PORT, "tcp"))
    return tuple(sorted(parsed))
