"""Providers, their nodes, and the node channel (a WebSocket the node agent dials out on)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect, status
from pydantic import ValidationError
from sqlalchemy.orm import Session

from openpod.adapters.store import Account, Node
from openpod.api import schemas
from openpod.api.deps import Key, State, as_account, state_of
from openpod.protocol import Hello, node_message
from openpod.services import capacity, providers
from openpod.services.errors import ServiceError

router = APIRouter(tags=["providers"])
log = logging.getLogger("openpod.api.nodes")


@router.post("/providers", status_code=status.HTTP_201_CREATED)
async def become_provider(
    body: schemas.ProviderCreate, state: State, key: Key
) -> schemas.ProviderOut:
    """Make the caller's account a provider, paid to `payoutWallet`."""
    row = await as_account(
        state, key, lambda s, a: providers.become_provider(s, a, body.payout_wallet)
    )
    return schemas.ProviderOut(
        id=row.id, account_id=row.account_id, payout_wallet=row.payout_wallet
    )


@router.post("/nodes", status_code=status.HTTP_201_CREATED)
async def register_node(body: schemas.NodeCreate, state: State, key: Key) -> schemas.NodeCreated:
    """Register a node; its token (shown once) is what `openpod node --token` connects with."""
    node, token = await as_account(
        state, key, lambda s, a: providers.register_node(s, a, body.name, body.public_host)
    )
    return schemas.NodeCreated(id=node.id, name=node.name, token=token)


def _node_out(node: Node, used: set[int]) -> schemas.NodeOut:
    return schemas.NodeOut(
        id=node.id,
        name=node.name,
        online=node.online,
        public_host=node.public_host,
        runtime=node.runtime,
        gpus=[
            schemas.NodeGpu(index=g["index"], type=g["type"], free=g["index"] not in used)
            for g in node.gpus
        ],
        last_seen_at=node.last_seen_at,
    )


@router.get("/nodes")
async def list_nodes(state: State, key: Key) -> list[schemas.NodeOut]:
    def load(session: Session, account: Account) -> list[schemas.NodeOut]:
        nodes = providers.list_nodes(session, account)
        used = capacity.used_by_node(session, (n.id for n in nodes))
        return [_node_out(n, used.get(n.id, set())) for n in nodes]

    return await as_account(state, key, load, readonly=True)


@router.websocket("/nodes/connect")
async def node_channel(websocket: WebSocket) -> None:
    """The node agent's channel: `hello`, then `pod_status` reports; we send `sync` and `pod`."""
    state = state_of(websocket)  # type: ignore[arg-type]
    header = websocket.headers.get("authorization", "")
    token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else None
    try:
        node = await state.hub.run_db(lambda s: providers.authenticate_node(s, token))
    except ServiceError as error:
        log.warning("node connection refused from %s: %s", websocket.client, error)
        await websocket.close(code=4401, reason=str(error))
        return
    await websocket.accept()
    try:
        hello = node_message.validate_json(await websocket.receive_text())
        if not isinstance(hello, Hello):
            await websocket.close(code=4400, reason="the first message must be hello")
            return
        await state.hub.attach(node.id, websocket, hello)
    except (ValidationError, ServiceError) as error:
        await websocket.close(code=4400, reason=str(error)[:120])
        return
    except WebSocketDisconnect:
        return
    try:
        while True:
            text = await websocket.receive_text()
            try:
                await state.hub.receive(node.id, text)
            except (ValidationError, ServiceError) as error:
                log.warning("bad message from node %s: %s", node.id, error)
    except WebSocketDisconnect:
        pass
    finally:
        await state.hub.detach(node.id, websocket)
