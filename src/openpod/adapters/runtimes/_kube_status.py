"""A Pod's status as openpod sees it: phase, address and a reason a user can act on (no I/O).

Kubernetes keeps retrying what may heal (image pulls, scheduling), so those leave the pod
STARTING with a reason; what ends a run (the workload's exit, an OOM kill, an eviction)
makes it EXITED. A Pod being deleted is already STOPPED for openpod: its run is over.
"""

from __future__ import annotations

import datetime

from lightkube.models.core_v1 import ContainerStatus, PodCondition
from lightkube.resources.core_v1 import PersistentVolumeClaim, Pod

from openpod.adapters.runtimes import _kube_manifests as manifests
from openpod.adapters.runtimes.base import PodObservation, PodPhase

_PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
_CREATE_FAILURES = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")


def generation_of(pod: Pod) -> int:
    labels = pod.metadata.labels if pod.metadata and pod.metadata.labels else {}
    try:
        return int(labels.get(manifests.GENERATION, "0"))
    except ValueError:
        return 0


def pod_id_of(obj: Pod | PersistentVolumeClaim) -> str | None:
    labels = obj.metadata.labels if obj.metadata and obj.metadata.labels else {}
    return labels.get(manifests.POD_ID)


def _workload_status(pod: Pod) -> ContainerStatus | None:
    statuses = pod.status.containerStatuses if pod.status else None
    for status in statuses or ():
        if status.name == "workload":
            return status
    return None


def _condition(pod: Pod, kind: str) -> PodCondition | None:
    for condition in (pod.status.conditions if pod.status else None) or ():
        if condition.type == kind:
            return condition
    return None


def _memory_limit(pod: Pod) -> str | None:
    for container in pod.spec.containers if pod.spec else ():
        if container.name == "workload" and container.resources and container.resources.limits:
            value = container.resources.limits.get("memory")
            return None if value is None else str(value)
    return None


def _readable(quantity: str) -> str:
    """`1073741824` -> `1 GiB`; quantities with a suffix ("2Gi") stay as they are."""
    if not quantity.isdigit():
        return quantity
    value = int(quantity)
    for unit, size in (("GiB", 2**30), ("MiB", 2**20)):
        if value >= size and value % size == 0:
            return f"{value // size} {unit}"
    return f"{value} bytes"


def _timestamp(value: datetime.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _exited(pod: Pod, obs: PodObservation, status: ContainerStatus | None) -> None:
    obs.phase = PodPhase.EXITED
    terminated = status.state.terminated if status and status.state else None
    if terminated is None:  # the Pod failed as a whole: eviction, node lost, deadline
        reason = pod.status.reason if pod.status else None
        message = pod.status.message if pod.status else None
        if reason == "Evicted":
            obs.reason = f"the node evicted the pod: {message or 'no message'}"
        else:
            obs.reason = f"the pod failed: {message or reason or 'no reason given'}"
        return
    obs.exit_code = terminated.exitCode
    obs.exited_at = _timestamp(terminated.finishedAt)
    if terminated.reason == "OOMKilled":
        limit = _memory_limit(pod)
        obs.reason = (
            f"the pod ran out of memory (limit {_readable(limit) if limit else 'of the node'})"
        )
    else:
        obs.reason = f"workload exited with code {terminated.exitCode}"


def _waiting_reason(pod: Pod, status: ContainerStatus | None) -> str | None:
    waiting = status.state.waiting if status and status.state else None
    if waiting is None or waiting.reason in (None, "ContainerCreating", "PodInitializing"):
        return None
    message = waiting.message or waiting.reason
    if waiting.reason in _PULL_FAILURES:
        return f"the image {status.image if status else '?'} could not be pulled: {message}"
    if waiting.reason in _CREATE_FAILURES:
        return f"the container could not be started: {message}"
    return f"{waiting.reason}: {message}"


def observation_of(pod: Pod) -> PodObservation:
    """The observation of one Pod from its status alone (the runtime adds TCP probes)."""
    pod_id = pod_id_of(pod) or ""
    obs = PodObservation(pod_id, generation_of(pod), PodPhase.STARTING)
    if pod.metadata and pod.metadata.deletionTimestamp is not None:
        obs.phase = PodPhase.STOPPED
        obs.reason = "stopped"
        return obs
    status = _workload_status(pod)
    phase = pod.status.phase if pod.status else None
    terminated = status.state.terminated if status and status.state else None
    if phase in ("Succeeded", "Failed") or terminated is not None:
        _exited(pod, obs, status)
        return obs
    scheduled = _condition(pod, "PodScheduled")
    if scheduled is not None and scheduled.status == "False":
        obs.reason = f"no node can run it: {scheduled.message or scheduled.reason or 'unknown'}"
        return obs
    obs.reason = _waiting_reason(pod, status)
    running = status is not None and status.state is not None and status.state.running
    if phase == "Running" and running and pod.status and pod.status.podIP:
        obs.address = pod.status.podIP
        obs.port_mappings = _ports(pod)
        if status is not None and status.ready:
            obs.phase = PodPhase.RUNNING
    return obs


def _ports(pod: Pod) -> dict[int, int]:
    """Container port -> the port reached on the Pod IP: the same number."""
    for container in pod.spec.containers if pod.spec else ():
        if container.name == "workload":
            return {p.containerPort: p.containerPort for p in container.ports or ()}
    return {}
