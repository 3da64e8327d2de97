"""Request and response bodies (camelCase on the wire, like RunPod's REST API)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from openpod.adapters.store import Pod
from openpod.domain import money
from openpod.services import connect


class Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


def _listify(value: object) -> object:
    return [value] if isinstance(value, str) else value


class AccountCreate(Wire):
    name: str


class AccountCreated(Wire):
    id: str
    name: str
    api_key: str


class AccountOut(Wire):
    id: str
    name: str
    is_admin: bool
    is_provider: bool
    wallet_address: str | None


class AccountUpdate(Wire):
    wallet_address: str | None


class ApiKeyOut(Wire):
    id: str
    hint: str
    created_at: datetime


class ApiKeyCreated(ApiKeyOut):
    api_key: str


class SSHKeyCreate(Wire):
    public_key: str
    name: str | None = None


class SSHKeyOut(Wire):
    id: str
    name: str
    type: str
    bits: int
    fingerprint: str
    public_key: str
    created_at: datetime


class GpuTypeCreate(Wire):
    id: str
    display_name: str
    memory_in_gb: int
    rate_per_second: int


class GpuTypeUpdate(Wire):
    display_name: str | None = None
    memory_in_gb: int | None = None
    rate_per_second: int | None = None


class GpuTypeOut(Wire):
    id: str
    display_name: str
    memory_in_gb: int
    rate_per_second: str  # an integer of base units, as text: it may not fit a JSON double
    price_per_hour: str
    free: int
    total: int


class ProviderCreate(Wire):
    payout_wallet: str


class ProviderOut(Wire):
    id: str
    account_id: str
    payout_wallet: str


class NodeCreate(Wire):
    name: str
    public_host: str | None = None


class NodeCreated(Wire):
    id: str
    name: str
    token: str


class NodeGpu(Wire):
    index: int
    type: str
    free: bool


class NodeOut(Wire):
    id: str
    name: str
    online: bool
    public_host: str | None
    runtime: str | None
    gpus: list[NodeGpu]
    last_seen_at: datetime | None


class PodCreate(Wire):
    name: str
    image_name: str
    gpu_type_ids: Annotated[list[str], BeforeValidator(_listify)] = Field(default_factory=list)
    gpu_type_id: str | None = None
    gpu_count: int = 1
    ports: list[str] | str = Field(default_factory=lambda: ["22/tcp"])
    env: dict[str, str] = Field(default_factory=dict)
    docker_start_cmd: list[str] = Field(default_factory=list)
    public_key: str | None = None
    private: bool = False  # its URLs then require the pod's access token


class GatewayInfo(Wire):
    """The SSH gateway: `ssh -J {user}@{host}:{port} root@POD` reaches any pod you own."""

    host: str
    port: int
    user: str
    host_key: str | None
    fast_port: int | None = Field(
        default=None, description="the fast path (`openpod ssh proxy`): no second encryption"
    )


class SSHInfo(Wire):
    command: str  # straight to the pod's sshd
    gateway_command: str | None  # through the SSH gateway (one port for all pods)
    gateway: GatewayInfo | None
    host: str
    port: int
    user: str
    host_key: str | None


class AccessToken(Wire):
    token: str
    header: str
    cookie: str


class PodOut(Wire):
    id: str
    name: str
    image_name: str
    gpu_type_id: str
    gpu_count: int
    gpu_indices: list[int]
    ports: list[str]
    env: dict[str, str]
    docker_start_cmd: list[str]
    desired_status: str
    status: str
    status_reason: str | None
    node_id: str | None
    public_ip: str | None
    port_mappings: dict[str, int]
    ready_ports: list[int]
    ssh_available: bool
    ssh: SSHInfo | None
    ssh_command: str | None  # the one to use: through the gateway where there is one
    urls: dict[str, str]  # HTTP port -> its URL at the edge
    ready_at: dict[str, str]  # port -> when it first answered in this run
    private: bool
    cost_per_second: str
    price_per_hour: str
    created_at: datetime
    last_started_at: datetime | None
    generation: int = Field(description="the pod's run: 1 at create, +1 at each resume")


def ssh_info(pod: Pod, links: connect.ConnectSettings) -> SSHInfo | None:
    command = connect.direct_command(pod)
    if pod.status != "RUNNING" or command is None or pod.public_host is None:
        return None
    gateway = None
    if links.gateway_host is not None:
        gateway = GatewayInfo(
            host=links.gateway_host,
            port=links.gateway_port,
            user=links.gateway_user,
            host_key=links.gateway_host_key,
            fast_port=links.gateway_fast_port,
        )
    return SSHInfo(
        command=command,
        gateway_command=connect.gateway_command(links, pod),
        gateway=gateway,
        host=pod.public_host,
        port=int(pod.port_mappings["22"]),
        user=pod.ssh_user or "root",
        host_key=pod.ssh_host_key,
    )


def pod_out(pod: Pod, decimals: int, links: connect.ConnectSettings) -> PodOut:
    rate = pod.rate_per_second * pod.gpu_count
    running = pod.status in ("STARTING", "RUNNING")
    return PodOut(
        id=pod.id,
        name=pod.name,
        image_name=pod.image,
        gpu_type_id=pod.gpu_type_id,
        gpu_count=pod.gpu_count,
        gpu_indices=[int(i) for i in pod.gpu_indices],
        ports=list(pod.ports),
        env=dict(pod.env),
        docker_start_cmd=list(pod.command),
        desired_status=pod.desired_status,
        status=pod.status,
        status_reason=pod.status_reason,
        node_id=pod.node_id,
        public_ip=pod.public_host,
        port_mappings={k: int(v) for k, v in pod.port_mappings.items()} if running else {},
        ready_ports=[int(p) for p in pod.ready_ports] if running else [],
        ssh_available=pod.ssh_available,
        ssh=ssh_info(pod, links),
        ssh_command=pod.ssh_command if running else None,
        urls=dict(pod.http_urls) if running else {},
        ready_at=dict(pod.ready_at) if running else {},
        private=pod.private,
        cost_per_second=str(rate),
        price_per_hour=money.per_hour(rate, decimals),
        created_at=pod.created_at,
        last_started_at=pod.last_started_at,
        generation=pod.generation,
    )


class Credit(Wire):
    amount: str = Field(description="base units to add, a decimal integer string")


class Balance(Wire):
    account_id: str
    balance: str
    available: str | None


class PodUsageOut(Wire):
    pod_id: str
    gpu_type: str
    gpu_count: int
    rate_per_second: str
    seconds: int
    amount: str
    settled_seconds: int
    settled_amount: str
    pending_seconds: int
    pending_amount: str
    running: bool
    runs: int
