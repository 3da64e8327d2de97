"""Request plumbing: the app's state, the bearer credential, one transaction per request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from openpod.adapters.store import Account, Database, Pod
from openpod.api.schemas import PodOut, pod_out
from openpod.services import accounts
from openpod.services.connect import ConnectSettings
from openpod.services.funds import Funds
from openpod.services.hub import NodeHub
from openpod.services.meter_hub import MeterHub
from openpod.settings import ServerSettings

T = TypeVar("T")
_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer op_...`")


@dataclass
class AppState:
    settings: ServerSettings
    db: Database
    hub: NodeHub
    links: ConnectSettings
    edge_secret: bytes
    meters: MeterHub
    funds: Funds | None  # None: the funds guard is off
    extra_metrics: list[Callable[[], str]] = field(default_factory=list)  # hot wallet, alerts

    def pod_out(self, pod: Pod) -> PodOut:
        return pod_out(pod, self.settings.token_decimals, self.links)


async def app_state(request: Request) -> AppState:
    """Async on purpose: FastAPI runs a plain `def` dependency on a worker thread."""
    return state_of(request)


def state_of(request: Request) -> AppState:
    state: AppState = request.app.state.openpod
    return state


async def bearer(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    return credentials.credentials if credentials else None


State = Annotated[AppState, Depends(app_state)]
Key = Annotated[str | None, Depends(bearer)]


async def as_account(
    state: AppState,
    key: str | None,
    fn: Callable[[Session, Account], T],
    *,
    readonly: bool = False,
) -> T:
    """Authenticate and run `fn` in the same transaction (one round trip to the store)."""
    return await state.hub.run_db(
        lambda session: fn(session, accounts.authenticate(session, key)), readonly=readonly
    )


async def refresh_funds(state: AppState, key: str | None) -> None:
    """Before a question to the funds guard: bring what it knows of the caller's wallet up to
    date (on-chain funds are read asynchronously, outside the database transaction)."""
    if state.funds is None:
        return
    wallet = await as_account(state, key, lambda _, a: a.wallet_address, readonly=True)
    if wallet:
        await state.funds.refresh([wallet])
