"""Metering and money: meters' WebSocket, usage, balances, and the meter metrics."""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import PlainTextResponse
from sqlalchemy.orm import Session
from starlette.types import Message, Receive, Scope, Send

from openpod.adapters.store import Account
from openpod.api import schemas
from openpod.api.deps import AppState, Key, State, as_account, refresh_funds
from openpod.domain.metering import MeterEventError, parse_batch
from openpod.services import funds, metering, usage
from openpod.services.errors import Forbidden, InvalidInput
from openpod.services.meter_hub import MeterHub

log = logging.getLogger("openpod.meter")
router = APIRouter(tags=["billing"])


@router.get("/usage")
async def get_usage(
    state: State, key: Key, pod: str | None = Query(None, description="one pod only")
) -> list[schemas.PodUsageOut]:
    """Per pod: its rate, metered seconds and amount, what is settled and what is pending."""
    rows = await as_account(state, key, lambda s, a: usage.usage(s, a, pod), readonly=True)
    return [
        schemas.PodUsageOut(
            pod_id=u.pod_id,
            gpu_type=u.gpu_type_id,
            gpu_count=u.gpu_count,
            rate_per_second=str(u.rate_per_second),
            seconds=u.seconds,
            amount=str(u.amount),
            settled_seconds=u.settled_seconds,
            settled_amount=str(u.settled_amount),
            pending_seconds=u.pending_seconds,
            pending_amount=str(u.pending_amount),
            running=u.running,
            runs=u.runs,
        )
        for u in rows
    ]


def _balance(state: AppState, session: Session, account: Account) -> schemas.Balance:
    available = None if state.funds is None else state.funds.available(session, account.id)
    return schemas.Balance(
        account_id=account.id,
        balance=str(account.balance),
        available=None if available is None else str(available),
    )


@router.get("/balance")
async def get_balance(state: State, key: Key) -> schemas.Balance:
    """The caller's balance and what is still available after settlements and usage."""
    await refresh_funds(state, key)
    return await as_account(state, key, lambda s, a: _balance(state, s, a), readonly=True)


@router.post("/accounts/{account_id}/credit")
async def credit(account_id: str, body: schemas.Credit, state: State, key: Key) -> schemas.Balance:
    """Admin: add funds to an account (the database-backed funds guard)."""
    if not body.amount.isdigit():
        raise InvalidInput("amount must be a positive decimal integer of base units")

    def work(session: Session, admin: Account) -> schemas.Balance:
        if not admin.is_admin:
            raise Forbidden("only an admin credits accounts")
        return _balance(state, session, funds.credit(session, account_id, int(body.amount)))

    return await as_account(state, key, work)


@router.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
async def metrics(state: State) -> str:
    return state.meters.metrics.prometheus() + "".join(more() for more in state.extra_metrics)


class MeterSocket:
    """The meters' WebSocket (docs/metering.md) as a bare ASGI app in front of FastAPI.

    Every pod's meter sends a message every few seconds and each gets an answer, so this is
    the control plane's hottest path; spoken in raw ASGI messages it skips the framework's
    per-message wrappers (routing, exception middleware, WebSocket state checks). Everything
    else goes to `app` unchanged."""

    path = "/meter/connect"

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == self.path:
            await self._session(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _session(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        state: AppState = self.app.state.openpod
        meters = state.meters
        await send({"type": "websocket.accept"})
        authorization = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None
        )
        try:
            run = meters.authenticate(authorization)
        except metering.InvalidMeterToken:
            log.warning("meter refused from %s: invalid meter token", scope.get("client"))
            await send({"type": "websocket.close", "code": 4401, "reason": "invalid meter token"})
            return
        meters.metrics.connected += 1
        try:
            welcome = await meters.welcome(run)
            text = json.dumps({"type": "welcome", "acked": welcome.acked, "closed": welcome.closed})
            await send({"type": "websocket.send", "text": text})
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    return  # websocket.disconnect
                answer = await self._answer(meters, run, message)
                await send({"type": "websocket.send", "text": answer})
        finally:
            meters.metrics.connected -= 1

    @staticmethod
    async def _answer(meters: MeterHub, run: metering.RunKey, message: Message) -> str:
        raw = message.get("text")
        if raw is None:
            raw = (message.get("bytes") or b"").decode("utf-8", "replace")
        try:
            body = json.loads(raw)
            if not isinstance(body, dict) or body.get("type") != "events":
                raise MeterEventError('expected {"type": "events", "events": [...]}')
            events = parse_batch(body.get("events"))
        except (ValueError, MeterEventError) as error:
            meters.metrics.refused["malformed"] += 1
            log.warning("meter of %s/%s sent a malformed message: %s", *run, error)
            return json.dumps({"type": "error", "error": str(error)})
        ack = await meters.submit(metering.Batch(run, events))
        closed = "true" if ack.closed else "false"  # the one answer sent per event: no dumps()
        return f'{{"type": "ack", "acked": {int(ack.acked)}, "closed": {closed}}}'
