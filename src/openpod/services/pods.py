"""Pods: create, stop, resume, terminate, and what the node reports about them.

Every status change goes through the domain's transition table; a change the user asks for also
sets the desired status that the node agent is told to reach.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from openpod.adapters.store import Account, GpuType, Pod
from openpod.adapters.store.models import utcnow
from openpod.domain import ids
from openpod.domain.env import validate_env
from openpod.domain.errors import DomainError, InvalidTransition
from openpod.domain.lifecycle import (
    HOLDS_GPUS,
    DesiredStatus,
    PodEvent,
    PodStatus,
    can,
    next_status,
)
from openpod.domain.ports import parse_ports
from openpod.domain.sshkeys import parse_public_key
from openpod.services import capacity, connect, funds, scheduler
from openpod.services.errors import Conflict, InvalidInput, NoCapacity, NotFound

MAX_GPUS_PER_POD = 16


@dataclass(frozen=True)
class PodRequest:
    name: str
    image: str
    gpu_type_ids: list[str]
    gpu_count: int
    ports: str | list[str]
    env: Mapping[str, str]
    command: list[str]
    public_key: str | None = None
    private: bool = False


def _validated(
    session: Session, req: PodRequest
) -> tuple[list[GpuType], list[str], dict[str, str]]:
    if not req.name.strip() or len(req.name) > 100:
        raise InvalidInput("pod name must be 1-100 characters")
    if not req.image.strip():
        raise InvalidInput("imageName must not be empty")
    if not req.gpu_type_ids:
        raise InvalidInput("gpuTypeIds must name at least one GPU type")
    if not 1 <= req.gpu_count <= MAX_GPUS_PER_POD:
        raise InvalidInput(
            f"gpuCount must be between 1 and {MAX_GPUS_PER_POD}, not {req.gpu_count}"
        )
    types = []
    for type_id in req.gpu_type_ids:
        gpu_type = session.get(GpuType, type_id)
        if gpu_type is None:
            raise InvalidInput(f"unknown GPU type {type_id!r} (see GET /gpu-types)")
        types.append(gpu_type)
    try:
        ports = [str(p) for p in parse_ports(req.ports)]
        env = validate_env(req.env)
        if req.public_key:
            parse_public_key(req.public_key)
    except DomainError as error:
        raise InvalidInput(str(error)) from None
    if any(not isinstance(arg, str) for arg in req.command):
        raise InvalidInput("dockerStartCmd must be a list of strings")
    return types, ports, env


def create_pod(
    session: Session, account: Account, req: PodRequest, wallet: funds.Funds | None = None
) -> Pod:
    """Validate, place on a node (first GPU type in the list with room) and ask it to start.
    With `wallet`, the account must have funds for an hour of the pod."""
    types, ports, env = _validated(session, req)
    placement: scheduler.Placement | None = None
    refusals: list[str] = []
    for gpu_type in types:
        try:
            placement = scheduler.place(session, gpu_type.id, req.gpu_count)
        except Conflict as error:
            refusals.append(str(error))
            continue
        break
    if placement is None:
        raise NoCapacity("; ".join(refusals))
    if wallet is not None:
        funds.require_an_hour(session, wallet, account.id, gpu_type.rate_per_second, req.gpu_count)
    pod = Pod(
        id=ids.new_pod_id(),
        account_id=account.id,
        name=req.name.strip(),
        image=req.image.strip(),
        gpu_type_id=gpu_type.id,
        gpu_count=req.gpu_count,
        ports=ports,
        env=env,
        command=list(req.command),
        pod_public_key=req.public_key.strip() if req.public_key else None,
        private=req.private,
        rate_per_second=gpu_type.rate_per_second,
        desired_status=DesiredStatus.RUNNING.value,
        status=PodStatus.PENDING.value,
        generation=0,
        revision=0,
        port_mappings={},
        ready_ports=[],
        gpu_indices=[],
    )
    session.add(pod)
    _assign(session, pod, placement)
    session.flush()
    return pod


def _assign(session: Session, pod: Pod, placement: scheduler.Placement) -> None:
    pod.node_id = placement.node.id
    pod.gpu_indices = placement.gpu_indices
    capacity.allocate(session, pod, placement.node.id, placement.gpu_indices)
    pod.public_host = placement.node.public_host
    pod.generation += 1
    pod.last_started_at = utcnow()
    _clear_run(pod)
    transition(pod, PodEvent.SCHEDULED)


def _clear_run(pod: Pod) -> None:
    connect.clear(pod)
    pod.port_mappings = {}
    pod.ready_ports = []
    pod.ssh_ready = False
    pod.status_reason = None  # the host key is kept: nodes keep a pod's host keys across runs


def transition(pod: Pod, event: PodEvent, reason: str | None = None) -> None:
    """Move the pod along one edge of the lifecycle table; leaving the statuses that hold
    GPUs releases them."""
    before = PodStatus(pod.status)
    after = next_status(before, event)
    pod.status = after.value
    if reason is not None:
        pod.status_reason = reason
    if before in HOLDS_GPUS and after not in HOLDS_GPUS:
        session = object_session(pod)
        assert session is not None, "a pod changes status inside a transaction"
        capacity.release(session, pod)


def get_pod(session: Session, account: Account, pod_id: str, *, lock: bool = False) -> Pod:
    query = select(Pod).where(Pod.id == pod_id, Pod.account_id == account.id)
    pod = session.scalar(query.with_for_update() if lock else query)
    if pod is None:
        raise NotFound(f"no such pod {pod_id!r}")
    return pod


def list_pods(session: Session, account: Account, *, include_terminated: bool = False) -> list[Pod]:
    query = select(Pod).where(Pod.account_id == account.id)
    if not include_terminated:
        query = query.where(Pod.status != PodStatus.TERMINATED.value)
    return list(session.scalars(query.order_by(Pod.created_at)))


def _user_event(pod: Pod, event: PodEvent) -> None:
    try:
        transition(pod, event)
    except InvalidTransition as error:
        raise Conflict(f"pod {pod.id}: {error}") from None


def stop_pod(session: Session, account: Account, pod_id: str) -> Pod:
    pod = get_pod(session, account, pod_id, lock=True)
    _user_event(pod, PodEvent.STOP)
    pod.desired_status = DesiredStatus.STOPPED.value
    return pod


def resume_pod(
    session: Session, account: Account, pod_id: str, wallet: funds.Funds | None = None
) -> Pod:
    """Start a stopped pod again on the node that holds its /workspace, at today's rate.
    With `wallet`, the account must have funds for an hour of it."""
    pod = get_pod(session, account, pod_id, lock=True)
    if pod.status in (PodStatus.STARTING.value, PodStatus.RUNNING.value):
        return pod
    if not can(PodStatus(pod.status), PodEvent.RESUME):
        raise Conflict(f"pod {pod.id}: cannot resume a pod that is {pod.status}")
    assert pod.node_id is not None
    try:
        placement = scheduler.place_on(
            session, pod.node_id, pod.gpu_type_id, pod.gpu_count, list(pod.gpu_indices)
        )
    except Conflict as error:
        raise type(error)(f"cannot resume pod {pod.id}: {error}") from None
    gpu_type = session.get(GpuType, pod.gpu_type_id)
    assert gpu_type is not None
    if wallet is not None:
        funds.require_an_hour(session, wallet, account.id, gpu_type.rate_per_second, pod.gpu_count)
    transition(pod, PodEvent.RESUME)
    pod.rate_per_second = gpu_type.rate_per_second
    pod.desired_status = DesiredStatus.RUNNING.value
    _assign(session, pod, placement)
    return pod


def terminate_pod(session: Session, account: Account, pod_id: str) -> Pod:
    pod = get_pod(session, account, pod_id, lock=True)
    _user_event(pod, PodEvent.TERMINATE)
    pod.desired_status = DesiredStatus.TERMINATED.value
    return pod


def pods_of_node(session: Session, node_id: str) -> list[Pod]:
    """Every pod a node must know about: all but those confirmed terminated."""
    query = select(Pod).where(Pod.node_id == node_id, Pod.status != PodStatus.TERMINATED.value)
    return list(session.scalars(query.order_by(Pod.id)))
