"""The runtime interface the node agent drives, and the values it exchanges."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol


class RuntimeError_(Exception):
    """Base of every runtime failure; the message is safe to show to the pod's owner."""


class PodStartError(RuntimeError_):
    """The pod could not be started (bad command, no free port, missing tool...)."""


class PodNotFoundError(RuntimeError_):
    """The runtime holds nothing for this pod id."""


@dataclass(frozen=True)
class PortRequest:
    """A container port the pod exposes: `8888/http` or `22/tcp`."""

    port: int
    protocol: str  # "http" | "tcp"


@dataclass(frozen=True)
class MeterLaunch:
    """The meter to run beside a pod (docs/metering.md)."""

    url: str  # ws://HOST:PORT/meter/connect
    token: str  # secret: given to the meter by environment, never on a command line
    heartbeat_s: float = 5.0


@dataclass(frozen=True)
class PodLaunch:
    """Everything a runtime needs to start (or resume) one pod run."""

    pod_id: str
    generation: int
    image: str
    command: tuple[str, ...]  # argv of the workload; empty: no workload (the boot script sleeps)
    env: dict[str, str]  # the user's env, plus OPENPOD_* values the agent adds
    ports: tuple[PortRequest, ...]  # always holds 22/tcp
    gpu_indices: tuple[int, ...]
    public_keys: tuple[str, ...]  # authorized_keys lines (account keys + optional per-pod key)
    meter: MeterLaunch | None = None  # None: no meter (tests of the runtime alone)


class PodPhase(enum.StrEnum):
    STARTING = "starting"  # process up, not yet ready
    RUNNING = "running"  # process up and SSH ready (or known to be unavailable)
    EXITED = "exited"  # the workload ended by itself (see exit_code)
    STOPPED = "stopped"  # stopped by request; workspace kept
    ABSENT = "absent"  # nothing here (terminated or never started)


@dataclass
class PodObservation:
    """What the runtime sees of one pod right now."""

    pod_id: str
    generation: int
    phase: PodPhase
    port_mappings: dict[int, int] = field(default_factory=dict)  # container port -> host port
    ssh_ready: bool = False
    ssh_available: bool = True  # False when the image has no sshd
    ssh_user: str = "root"
    ssh_host_key: str | None = None  # the pod's ed25519 host public key line, when known
    ready_ports: tuple[int, ...] = ()  # container ports that accept TCP connections
    exit_code: int | None = None
    reason: str | None = None
    exited_at: float | None = None  # wall clock, when the exit or stop was recorded


class Runtime(Protocol):
    """A way to run pods on this host. Every method is safe to call again (idempotent)."""

    name: str

    def start(self, launch: PodLaunch) -> PodObservation:
        """Start the pod's run (or return what is there if this generation already runs)."""
        ...

    def observe(self, pod_id: str) -> PodObservation:
        """Look at one pod now: liveness, readiness of SSH and ports, exit code."""
        ...

    def stop(self, pod_id: str, grace_seconds: float) -> PodObservation:
        """Stop every process of the pod and free its ports; keep its workspace."""
        ...

    def remove(self, pod_id: str, grace_seconds: float) -> None:
        """Stop the pod if needed and delete everything it had, workspace included."""
        ...

    def adopt(self) -> list[PodObservation]:
        """After an agent restart: every pod this runtime still holds on disk, observed."""
        ...
