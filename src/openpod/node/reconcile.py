"""What the agent does to bring one pod from what the runtime shows to what the plane wants."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from openpod.adapters.runtimes.base import (
    MeterLaunch,
    PodLaunch,
    PodObservation,
    PodPhase,
    PortRequest,
    ResourceLimits,
    Runtime,
    RuntimeError_,
)
from openpod.protocol import PodAssignment, PodReport

_LIVE = (PodPhase.STARTING, PodPhase.RUNNING)


@dataclass(frozen=True)
class PerGpuLimits:
    """What a pod may use of its host for each GPU it rents (a provider's setting, by GPU
    type): a 2-GPU pod gets twice the CPU and memory. `pids` is per pod."""

    cpus: float | None = None
    memory_bytes: int | None = None
    pids: int | None = None


LimitTable = Mapping[str, PerGpuLimits]  # GPU type id -> limits; "" applies to the rest


def limits_for(table: LimitTable, gpu_type: str, gpu_count: int) -> ResourceLimits:
    """The limits of one pod: its GPU type's row (else the "" row) times its GPU count
    (a pod without GPUs counts as one)."""
    row = table.get(gpu_type) or table.get("")
    if row is None:
        return ResourceLimits()
    times = max(gpu_count, 1)
    return ResourceLimits(
        cpus=row.cpus * times if row.cpus is not None else None,
        memory_bytes=row.memory_bytes * times if row.memory_bytes is not None else None,
        pids=row.pids,
    )


def launch_of(
    assignment: PodAssignment, meter_url: str | None = None, limits: LimitTable | None = None
) -> PodLaunch:
    """The runtime's launch of an assignment; with a meter when the plane gave a meter token
    and the agent knows where meters connect (`meter_url`); limited by `limits`."""
    meter = None
    if assignment.meter_token and meter_url:
        meter = MeterLaunch(meter_url, assignment.meter_token, assignment.meter_heartbeat)
    ports = []
    for item in assignment.spec.ports:
        number, _, proto = item.partition("/")
        ports.append(PortRequest(int(number), proto or "tcp"))
    return PodLaunch(
        pod_id=assignment.pod_id,
        generation=assignment.generation,
        image=assignment.spec.image,
        command=tuple(assignment.spec.command),
        env=dict(assignment.spec.env),
        ports=tuple(ports),
        gpu_indices=tuple(assignment.spec.gpu_indices),
        gpu_type=assignment.spec.gpu_type,
        public_keys=tuple(assignment.spec.public_keys),
        meter=meter,
        limits=limits_for(limits or {}, assignment.spec.gpu_type, len(assignment.spec.gpu_indices)),
    )


def reconcile(
    runtime: Runtime,
    assignment: PodAssignment,
    grace: float,
    meter_url: str | None = None,
    limits: LimitTable | None = None,
) -> PodReport:
    """One step towards the desired state (blocking: run it off the event loop)."""
    pod_id = assignment.pod_id
    try:
        obs = runtime.observe(pod_id)
        if assignment.desired == "running":
            current = obs.generation == assignment.generation
            if obs.phase in _LIVE and not current:
                runtime.stop(pod_id, grace)  # an older run still up: never two at once
                obs = runtime.start(launch_of(assignment, meter_url, limits))
            elif obs.phase in (PodPhase.ABSENT, PodPhase.STOPPED) or (
                obs.phase is PodPhase.EXITED and not current
            ):
                obs = runtime.start(launch_of(assignment, meter_url, limits))
        elif assignment.desired == "stopped":
            if obs.phase in _LIVE or obs.phase is PodPhase.EXITED:
                obs = runtime.stop(pod_id, grace)
        else:
            runtime.remove(pod_id, grace)
            obs = PodObservation(pod_id, assignment.generation, PodPhase.ABSENT)
    except RuntimeError_ as error:
        return PodReport(
            pod_id=pod_id, generation=assignment.generation, phase="failed", reason=str(error)
        )
    return report_of(obs)


def report_of(obs: PodObservation) -> PodReport:
    return PodReport(
        pod_id=obs.pod_id,
        generation=obs.generation,
        phase=obs.phase.value,
        port_mappings={str(k): v for k, v in obs.port_mappings.items()},
        ready_ports=list(obs.ready_ports),
        ssh_ready=obs.ssh_ready,
        ssh_available=obs.ssh_available,
        ssh_user=obs.ssh_user,
        ssh_host_key=obs.ssh_host_key,
        exit_code=obs.exit_code,
        reason=obs.reason,
        exited_at=obs.exited_at,
        address=obs.address,
    )
