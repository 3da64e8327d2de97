"""The control plane's half of the node channel: what to tell a node, and what its reports mean.

A report only moves a pod along an edge of the transition table; a report about an older run
(generation) or one that makes no sense in the pod's status is ignored, so late or repeated
messages change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from openpod.adapters.store import Pod
from openpod.domain.lifecycle import DesiredStatus, PodEvent, PodStatus, can
from openpod.protocol import PodAssignment, PodReport, PodSpec
from openpod.services import accounts, connect, metering
from openpod.services.pods import pods_of_node, transition

_NO_LINKS = connect.ConnectSettings()

_DESIRED = {
    DesiredStatus.RUNNING.value: "running",
    DesiredStatus.STOPPED.value: "stopped",
    DesiredStatus.TERMINATED.value: "terminated",
}


def assignment(session: Session, pod: Pod) -> PodAssignment:
    keys = accounts.public_keys(session, pod.account_id)
    if pod.pod_public_key:
        keys.append(pod.pod_public_key)
    desired = _DESIRED[pod.desired_status]
    if pod.status == PodStatus.FAILED.value and desired == "running":
        desired = "stopped"  # a failed run is not retried behind the user's back
    return PodAssignment(
        pod_id=pod.id,
        generation=pod.generation,
        revision=pod.revision,
        desired=desired,
        spec=PodSpec(
            image=pod.image,
            command=list(pod.command),
            env=dict(pod.env),
            ports=list(pod.ports),
            gpu_indices=[int(i) for i in pod.gpu_indices],
            gpu_type=pod.gpu_type_id,
            public_keys=keys,
        ),
    )


def assignments(session: Session, node_id: str) -> list[PodAssignment]:
    return [assignment(session, pod) for pod in pods_of_node(session, node_id)]


@dataclass(frozen=True)
class ReportOutcome:
    changed: bool  # the pod's record changed (watchers should look again)
    reply: PodAssignment | None  # what to tell the node back, if anything
    pod: Pod | None = None  # the pod as it now is (when it is this node's)


def _event_for(report: PodReport) -> PodEvent | None:
    match report.phase:
        case "running":
            return PodEvent.READY
        case "exited":
            return PodEvent.EXITED if report.exit_code in (0, None) else PodEvent.CRASHED
        case "stopped":
            return PodEvent.HALTED
        case "absent":
            return PodEvent.REMOVED
        case "failed":
            return PodEvent.START_FAILED
    return None


def _exit_reason(report: PodReport) -> str:
    if report.reason:
        return report.reason
    if report.exit_code is None:
        return "workload exited"
    return f"workload exited with code {report.exit_code}"


def apply_report(
    session: Session,
    node_id: str,
    report: PodReport,
    links: connect.ConnectSettings = _NO_LINKS,
) -> ReportOutcome:
    pod = session.get(Pod, report.pod_id, with_for_update=True)
    if pod is None or pod.node_id != node_id:
        # Not ours (or long gone): the node should remove it.
        if report.phase == "absent":
            return ReportOutcome(False, None)
        orphan = PodAssignment(
            pod_id=report.pod_id,
            generation=report.generation,
            desired="terminated",
            spec=PodSpec(image=""),
        )
        return ReportOutcome(False, orphan)
    if report.generation != pod.generation and report.phase != "absent":
        return ReportOutcome(False, None)  # a report about an earlier run
    status = PodStatus(pod.status)
    before = (pod.status, pod.port_mappings, pod.ready_ports, pod.ssh_ready, pod.ssh_host_key)
    if report.phase in ("starting", "running") and status in (
        PodStatus.STARTING,
        PodStatus.RUNNING,
    ):
        pod.port_mappings = dict(report.port_mappings)
        pod.ready_ports = sorted(report.ready_ports)
        pod.ssh_ready = report.ssh_ready
        pod.ssh_available = report.ssh_available
        pod.ssh_user = report.ssh_user
        pod.ssh_host_key = report.ssh_host_key or pod.ssh_host_key
        pod.address = report.address
    event = _event_for(report)
    if event is not None and can(status, event):
        if event is PodEvent.REMOVED and status is not PodStatus.TERMINATING:
            return ReportOutcome(False, None)
        reason = None
        if event in (PodEvent.EXITED, PodEvent.CRASHED) and status is not PodStatus.STOPPING:
            reason = _exit_reason(report)
            pod.desired_status = DesiredStatus.STOPPED.value
            pod.revision += 1
        elif event is PodEvent.START_FAILED:
            reason = report.reason or "the pod failed to start"
        transition(pod, event, reason)
        if event in (PodEvent.HALTED, PodEvent.EXITED, PodEvent.CRASHED):
            # The run is over at the time the node saw it end (its clock, as the meter's).
            at_ms = None if report.exited_at is None else round(report.exited_at * 1000)
            metering.close_run(session, (pod.id, pod.generation), at_ms)
        if event in (PodEvent.HALTED, PodEvent.EXITED, PodEvent.CRASHED, PodEvent.REMOVED):
            pod.ssh_ready = False
            pod.ready_ports = []
            pod.port_mappings = {}
            pod.address = None
            connect.clear(pod)
    if pod.status in (PodStatus.STARTING.value, PodStatus.RUNNING.value):
        connect.record(links, pod)
    after = (pod.status, pod.port_mappings, pod.ready_ports, pod.ssh_ready, pod.ssh_host_key)
    return ReportOutcome(before != after, None, pod)
