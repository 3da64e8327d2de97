"""The node channel: JSON messages between a node agent and the control plane (over WebSocket).

The control plane owns each pod's desired state and sends it (`sync` with all of a node's pods on
every connect, `pod` for each change); the node owns actual state and reports it (`hello` with
everything it holds on connect, `pod_status` on every change). Both sides are level-triggered:
after any disconnect, the next `hello` + `sync` pair closes every gap.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

PROTOCOL_VERSION = 1


class GpuInfo(BaseModel):
    index: int
    type: str
    uuid: str | None = None


class PodSpec(BaseModel):
    image: str
    command: list[str] = []
    env: dict[str, str] = {}
    ports: list[str] = []  # ["22/tcp", "8888/http"]
    gpu_indices: list[int] = []
    gpu_type: str = ""  # the catalog id ("rtx4090"): node labels, per-type limits
    public_keys: list[str] = []


class PodAssignment(BaseModel):
    """What the control plane wants of one pod on this node."""

    pod_id: str
    generation: int  # the run: a new one at every start or resume
    desired: Literal["running", "stopped", "terminated"]
    spec: PodSpec
    revision: int = 0  # grows at every change of what is wanted: orders overtaking messages
    # The run's meter (docs/metering.md): its token, and how often it sends a heartbeat.
    meter_token: str | None = None
    meter_heartbeat: float = 5.0


class PodReport(BaseModel):
    """What the node sees of one pod (see runtimes.base.PodObservation)."""

    pod_id: str
    generation: int
    phase: Literal["starting", "running", "exited", "stopped", "absent", "failed"]
    port_mappings: dict[str, int] = {}
    ready_ports: list[int] = []
    ssh_ready: bool = False
    ssh_available: bool = True
    ssh_user: str | None = None
    ssh_host_key: str | None = None
    address: str | None = None  # where its ports are reached when not on the node (Pod IP)
    exit_code: int | None = None
    reason: str | None = None
    exited_at: float | None = None  # node clock, when the workload was seen to exit or stop


class Hello(BaseModel):
    type: Literal["hello"] = "hello"
    protocol: int = PROTOCOL_VERSION
    runtime: str
    public_host: str
    gpus: list[GpuInfo]
    pods: list[PodReport]


class PodStatusMessage(BaseModel):
    type: Literal["pod_status"] = "pod_status"
    pod: PodReport


class Sync(BaseModel):
    type: Literal["sync"] = "sync"
    pods: list[PodAssignment]


class PodMessage(BaseModel):
    type: Literal["pod"] = "pod"
    pod: PodAssignment


NodeMessage = Annotated[Hello | PodStatusMessage, Field(discriminator="type")]
ControlMessage = Annotated[Sync | PodMessage, Field(discriminator="type")]

node_message: TypeAdapter[Hello | PodStatusMessage] = TypeAdapter(NodeMessage)
control_message: TypeAdapter[Sync | PodMessage] = TypeAdapter(ControlMessage)
