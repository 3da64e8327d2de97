"""Metering and money: meters' WebSocket, usage, balances, and the meter metrics."""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse
from sqlalchemy.orm import Session

from openpod.adapters.store import Account
from openpod.api import schemas
from openpod.api.deps import AppState, Key, State, as_account
from openpod.domain.metering import MeterEventError, parse_batch
from openpod.services import funds, metering, usage
from openpod.services.errors import Forbidden, InvalidInput

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
    return state.meters.metrics.prometheus()


@router.websocket("/meter/connect")
async def meter_connect(ws: WebSocket) -> None:
    """A pod's meter (docs/metering.md): welcome, then events in and acks out."""
    state: AppState = ws.app.state.openpod
    meters = state.meters
    await ws.accept()
    try:
        run = meters.authenticate(ws.headers.get("authorization"))
    except metering.InvalidMeterToken:
        log.warning("meter refused from %s: invalid meter token", ws.client)
        await ws.close(code=4401, reason="invalid meter token")
        return
    meters.metrics.connected += 1
    try:
        welcome = await meters.welcome(run)
        await ws.send_text(
            json.dumps({"type": "welcome", "acked": welcome.acked, "closed": welcome.closed})
        )
        while True:
            text = await ws.receive_text()
            try:
                message = json.loads(text)
                if not isinstance(message, dict) or message.get("type") != "events":
                    raise MeterEventError('expected {"type": "events", "events": [...]}')
                events = parse_batch(message.get("events"))
            except (ValueError, MeterEventError) as error:
                meters.metrics.refused["malformed"] += 1
                log.warning("meter of %s/%s sent a malformed message: %s", *run, error)
                await ws.send_text(json.dumps({"type": "error", "error": str(error)}))
                continue
            ack = await meters.submit(metering.Batch(run, events))
            await ws.send_text(
                json.dumps({"type": "ack", "acked": ack.acked, "closed": ack.closed})
            )
    except WebSocketDisconnect:
        pass
    finally:
        meters.metrics.connected -= 1
