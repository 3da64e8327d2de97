"""Pods: the REST shape of RunPod's API (`POST /pods`, `GET /pods/{id}`, `/stop`, `/start`...)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from fastapi import APIRouter, Query, status
from sqlalchemy.orm import Session

from openpod.adapters.store import Account, Pod
from openpod.api import schemas
from openpod.api.deps import Key, State, as_account, refresh_funds
from openpod.api.errors import WaitTimedOut
from openpod.domain.lifecycle import PodStatus
from openpod.services import connect, pods
from openpod.services.errors import Conflict, InvalidInput, NotFound
from openpod.services.hub import PodChange

router = APIRouter(tags=["pods"])
EDGE_COOKIE = "openpod_token"  # the cookie the edge accepts the access token in


@router.post("/pods", status_code=status.HTTP_201_CREATED)
async def create_pod(body: schemas.PodCreate, state: State, key: Key) -> schemas.PodOut:
    """Create a pod: placed on a node with free GPUs of the first listed type that has room."""
    type_ids = body.gpu_type_ids or ([body.gpu_type_id] if body.gpu_type_id else [])
    request = pods.PodRequest(
        name=body.name,
        image=body.image_name,
        gpu_type_ids=type_ids,
        gpu_count=body.gpu_count,
        ports=body.ports,
        env=body.env,
        command=body.docker_start_cmd,
        public_key=body.public_key,
        private=body.private,
    )
    await refresh_funds(state, key)
    change = await as_account(
        state, key, lambda s, a: PodChange.of(s, pods.create_pod(s, a, request, state.funds))
    )
    await state.hub.push(change)
    return state.pod_out(change.pod)


@router.get("/pods")
async def list_pods(
    state: State, key: Key, include_terminated: bool = Query(False, alias="includeTerminated")
) -> list[schemas.PodOut]:
    rows = await as_account(
        state,
        key,
        lambda s, a: pods.list_pods(s, a, include_terminated=include_terminated),
        readonly=True,
    )
    return [state.pod_out(p) for p in rows]


@router.get("/pods/{pod_id}")
async def get_pod(pod_id: str, state: State, key: Key) -> schemas.PodOut:
    pod = await as_account(state, key, lambda s, a: pods.get_pod(s, a, pod_id), readonly=True)
    return state.pod_out(pod)


async def _act(
    state: State, key: str | None, action: Callable[[Session, Account], Pod]
) -> schemas.PodOut:
    change = await as_account(state, key, lambda s, a: PodChange.of(s, action(s, a)))
    await state.hub.push(change)
    return state.pod_out(change.pod)


@router.post("/pods/{pod_id}/stop")
async def stop_pod(pod_id: str, state: State, key: Key) -> schemas.PodOut:
    """Stop: the processes end, the GPUs are released, /workspace is kept on the node."""
    return await _act(state, key, lambda s, a: pods.stop_pod(s, a, pod_id))


@router.post("/pods/{pod_id}/start")
@router.post("/pods/{pod_id}/resume", include_in_schema=False)
async def resume_pod(pod_id: str, state: State, key: Key) -> schemas.PodOut:
    """Resume a stopped pod on the same node (where its /workspace is), if its GPUs are free."""
    await refresh_funds(state, key)
    return await _act(state, key, lambda s, a: pods.resume_pod(s, a, pod_id, state.funds))


@router.delete("/pods/{pod_id}")
@router.post("/pods/{pod_id}/terminate", include_in_schema=False)
async def terminate_pod(pod_id: str, state: State, key: Key) -> schemas.PodOut:
    """Terminate: everything of the pod is deleted on its node, /workspace included."""
    return await _act(state, key, lambda s, a: pods.terminate_pod(s, a, pod_id))


@router.get("/pods/{pod_id}/access-token")
async def access_token(pod_id: str, state: State, key: Key) -> schemas.AccessToken:
    """The token a private pod's URLs require (`Authorization: Bearer` or the cookie)."""
    pod = await as_account(state, key, lambda s, a: pods.get_pod(s, a, pod_id), readonly=True)
    if not pod.private:
        raise Conflict(f"pod {pod_id} is public: its URLs need no token")
    token = connect.access_token(state.edge_secret, pod.id)
    return schemas.AccessToken(
        token=token, header=f"Authorization: Bearer {token}", cookie=EDGE_COOKIE
    )


@router.get("/ssh-gateway", tags=["ssh"])
async def ssh_gateway(state: State, key: Key) -> schemas.GatewayInfo:
    """Where the SSH gateway listens and its host key (to pin), for `openpod ssh config`."""
    await as_account(state, key, lambda _s, a: a, readonly=True)
    links = state.links
    if links.gateway_host is None:
        raise NotFound("this control plane has no SSH gateway")
    return schemas.GatewayInfo(
        host=links.gateway_host,
        port=links.gateway_port,
        user=links.gateway_user,
        host_key=links.gateway_host_key,
        fast_port=links.gateway_fast_port,
    )


_GIVE_UP = {PodStatus.FAILED.value, PodStatus.TERMINATED.value}


@router.get("/pods/{pod_id}/wait")
async def wait_pod(
    pod_id: str,
    state: State,
    key: Key,
    wanted: str = Query("RUNNING", alias="status"),
    timeout: float = Query(30.0, ge=0),
) -> schemas.PodOut:
    """Answer once the pod has `status` (408 after `timeout` s; 409 if it failed first)."""
    if wanted not in PodStatus.__members__:
        raise InvalidInput(f"status {wanted!r} is not one of {', '.join(PodStatus.__members__)}")
    deadline = time.monotonic() + min(timeout, state.settings.wait_max_seconds)
    while True:
        signal = state.hub.change_signal(pod_id)
        pod = await as_account(state, key, lambda s, a: pods.get_pod(s, a, pod_id), readonly=True)
        if pod.status == wanted:
            return state.pod_out(pod)
        if pod.status in _GIVE_UP:
            reason = f": {pod.status_reason}" if pod.status_reason else ""
            raise Conflict(f"pod {pod_id} is {pod.status}{reason}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimedOut(f"pod {pod_id} is still {pod.status} (waiting for {wanted})")
        try:
            await asyncio.wait_for(signal.wait(), timeout=left)
        except TimeoutError:
            continue
