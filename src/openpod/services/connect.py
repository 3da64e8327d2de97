"""How users reach a pod: its SSH commands and HTTP URLs, recorded as they become true.

The URL of an HTTP port is `{scheme}://{pod_id}-{port}.{proxy_domain}[:{proxy_port}]`, served by
the edge proxy straight to the pod's address (no Service or Ingress in between). The SSH
gateway command works from anywhere through one port; the direct command where the pod's
mapped port is reachable.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

from openpod.adapters.store import Pod
from openpod.domain.lifecycle import PodStatus

HTTP_PORT_SUFFIX = "/http"


@dataclass(frozen=True)
class ConnectSettings:
    proxy_domain: str = "proxy.localhost"
    proxy_scheme: str = "http"
    proxy_port: int | None = None  # the edge's public port; None: the scheme's default
    gateway_host: str | None = None  # the SSH gateway's public address; None: no gateway
    gateway_port: int = 2222
    gateway_user: str = "openpod"
    gateway_host_key: str | None = None  # `ssh-ed25519 AAAA...`, for clients to pin
    gateway_fast_port: int | None = None  # the gateway's fast path (`openpod ssh` uses it)


def http_ports(pod: Pod) -> list[int]:
    return [int(p.split("/")[0]) for p in pod.ports if p.endswith(HTTP_PORT_SUFFIX)]


def route_host(settings: ConnectSettings, pod_id: str, port: int) -> str:
    return f"{pod_id}-{port}.{settings.proxy_domain}".lower()


def http_url(settings: ConnectSettings, pod_id: str, port: int) -> str:
    default = {"http": 80, "https": 443}.get(settings.proxy_scheme)
    suffix = "" if settings.proxy_port in (None, default) else f":{settings.proxy_port}"
    return f"{settings.proxy_scheme}://{route_host(settings, pod_id, port)}{suffix}/"


def target_host(pod: Pod) -> str | None:
    """Where the edge and the gateway reach the pod's ports: its own address (a Pod IP)
    when its node reported one, else its node's public host."""
    return pod.address or pod.public_host


def direct_command(pod: Pod) -> str | None:
    """`ssh user@host -p port` where users can reach the pod's port themselves; none for a
    pod with an address of its own (a Pod IP is reached only inside its cluster)."""
    port = pod.port_mappings.get("22")
    if not (pod.ssh_ready and port and pod.public_host) or pod.address:
        return None
    return f"ssh {pod.ssh_user or 'root'}@{pod.public_host} -p {port}"


def gateway_command(settings: ConnectSettings, pod: Pod) -> str | None:
    if settings.gateway_host is None or not pod.ssh_ready:
        return None
    jump = f"{settings.gateway_user}@{settings.gateway_host}:{settings.gateway_port}"
    return f"ssh -J {jump} {pod.ssh_user or 'root'}@{pod.id}"


def record(settings: ConnectSettings, pod: Pod, now: datetime | None = None) -> None:
    """After a report: note the SSH command and URLs, and when each port first answered."""
    now = now or datetime.now(UTC)
    stamp = now.isoformat().replace("+00:00", "Z")
    ready_at = dict(pod.ready_at)
    for port in pod.ready_ports:
        ready_at.setdefault(str(port), stamp)
    if pod.ssh_ready:
        ready_at.setdefault("22", stamp)
    pod.ready_at = ready_at
    if pod.status == PodStatus.RUNNING.value:
        pod.ssh_command = gateway_command(settings, pod) or direct_command(pod)
        pod.http_urls = {str(p): http_url(settings, pod.id, p) for p in http_ports(pod)}


def clear(pod: Pod) -> None:
    """A run ended or a new one starts: nothing of the old run's connect info stays."""
    pod.ssh_command = None
    pod.http_urls = {}
    pod.ready_at = {}


def access_token(secret: bytes, pod_id: str) -> str:
    """The token a private pod's URLs require: derived, so it is stored nowhere."""
    return hmac.new(secret, f"openpod-pod-access:{pod_id}".encode(), hashlib.sha256).hexdigest()


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
