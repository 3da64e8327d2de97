"""The runtime interface the node agent drives, and the values it exchanges."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Protocol

MIN_CPUS = 0.01  # the kernel's least CFS quota is 1 ms a period
MIN_MEMORY_BYTES = 1 << 20  # below a MiB not even the pod's first shell can run
MAX_MEMORY_BYTES = 1 << 60  # the kernel takes 2**70 silently as 0 (it wraps): refuse it here


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
class ResourceLimits:
    """What one pod may use of its host; None: no limit of that kind.

    The node agent computes them from the pod's GPU type and count (settings
    `node_limits`); each runtime enforces them its own way (cgroups, Docker's HostConfig,
    Kubernetes resources.limits).
    """

    cpus: float | None = None  # CPU cores, fractions allowed
    memory_bytes: int | None = None
    pids: int | None = None  # processes and threads together


def check_limits(limits: ResourceLimits) -> None:
    """PodStartError naming every limit that no kernel would take (checked before anything)."""
    problems = []
    cpus = limits.cpus
    if cpus is not None and (
        isinstance(cpus, bool)
        or not isinstance(cpus, int | float)
        or not math.isfinite(cpus)
        or cpus < MIN_CPUS
    ):
        problems.append(f"cpus must be a number of CPU cores of at least {MIN_CPUS}, not {cpus!r}")
    for name, value, least in (
        ("memory_bytes", limits.memory_bytes, MIN_MEMORY_BYTES),
        ("pids", limits.pids, 1),
    ):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{name} must be a whole number, not {value!r}")
        elif value is not None and value < least:
            problems.append(f"{name} must be at least {least}, not {value}")
    if limits.memory_bytes is not None and limits.memory_bytes > MAX_MEMORY_BYTES:
        problems.append(f"memory_bytes must be at most {MAX_MEMORY_BYTES}")
    if problems:
        raise PodStartError("invalid resource limits: " + "; ".join(problems))


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
    gpu_type: str = ""  # the catalog id of the pod's GPUs ("" for CPU pods or unknown)
    limits: ResourceLimits = ResourceLimits()


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
    address: str | None = None  # where the ports are reached when not on the node (a Pod IP)


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
