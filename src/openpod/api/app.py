"""The control plane's FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from openpod import __version__
from openpod.adapters.chain import Rpc
from openpod.adapters.edge import EdgeError, EdgeProxy, EdgeSettings, Route
from openpod.adapters.store import Database, StoreError, migrate
from openpod.api import errors
from openpod.api.deps import AppState
from openpod.api.hot_wallet import alerts_from, hot_wallet
from openpod.api.routes import accounts, billing, gpus, leases, nodes, pods, transfer
from openpod.api.routes.chain import router as chain_router
from openpod.api.routes.wallets import router as wallet_router
from openpod.services import billing_round, funds, providers
from openpod.services.chain_funds import ChainFunds
from openpod.services.connect import ConnectSettings
from openpod.services.edge_routes import EdgeRouter
from openpod.services.funds import DatabaseFunds, Funds
from openpod.services.hub import NodeHub
from openpod.services.meter_hub import MeterHub
from openpod.services.metering import MeterConfig
from openpod.settings import ServerSettings

log = logging.getLogger("openpod.api")
EDGE_RECONCILE_SECONDS = 30.0


def connect_settings(settings: ServerSettings) -> ConnectSettings:
    host_key = None
    if settings.gateway_host_key_file is not None and settings.gateway_host_key_file.exists():
        host_key = settings.gateway_host_key_file.read_text().strip() or None
    return ConnectSettings(
        proxy_domain=settings.proxy_domain,
        proxy_scheme=settings.proxy_scheme,
        proxy_port=settings.proxy_port,
        gateway_host=settings.gateway_host,
        gateway_port=settings.gateway_port,
        gateway_host_key=host_key,
        gateway_fast_port=settings.gateway_fast_port,
    )


def edge_router(settings: ServerSettings, links: ConnectSettings) -> EdgeRouter | None:
    """The edge's routes are programmed from here when `openpod edge` runs beside us."""
    if settings.edge_state_dir is None:
        return None
    table = EdgeProxy(EdgeSettings(state_dir=settings.edge_state_dir, domain=links.proxy_domain))
    return EdgeRouter(table, links, settings.edge_secret())


async def _keep_edge_in_step(router: EdgeRouter, db: Database) -> None:
    """Full reconcile at start-up and every EDGE_RECONCILE_SECONDS after (drift, restarts)."""

    def load() -> dict[str, list[Route]]:
        with db.transaction(readonly=True) as session:
            return router.all_routes(session)

    while True:
        try:
            await router.reconcile(await asyncio.to_thread(load))
        except (EdgeError, StoreError) as error:  # the next round retries
            log.warning("edge reconcile failed: %s", error)
        await asyncio.sleep(EDGE_RECONCILE_SECONDS)


async def _settle_every_period(state: AppState) -> None:
    """Cut settlements, close runs nobody meters any more, stop pods out of funds."""
    period = state.settings.settlement_period
    paid_on_chain = state.settings.chain() is not None
    lease_deadline = state.settings.lease_deadline if paid_on_chain else None
    while True:
        await asyncio.sleep(period)
        try:
            if state.funds is not None:
                wallets = await state.hub.run_db(funds.running_wallets, readonly=True)
                await state.funds.refresh(wallets)
            changes = await state.hub.run_db(
                lambda s: billing_round.run(
                    s, state.funds, period, state.meters.config.grace_ms, lease_deadline
                )
            )
        except StoreError as error:  # the next round retries
            log.warning("settlement round failed: %s", error)
            continue
        state.meters.metrics.settlement_rounds += 1
        for change in changes:
            await state.hub.push(change)


def funds_guard(settings: ServerSettings) -> Funds | None:
    """What the funds guard asks: the users' wallets on chain when payments are on, else the
    database balance; None when the guard is off."""
    if not settings.funds_guard:
        return None
    chain = settings.chain()
    if chain is None:
        return DatabaseFunds()
    return ChainFunds(Rpc(chain.rpc_url, timeout_s=5.0), chain.token, chain.payments)


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.db_url()
        migrate(url)
        db = Database(url)
        with db.transaction() as session:  # nobody is connected yet: every node is offline
            providers.mark_all_offline(session)
        links = connect_settings(settings)
        router = edge_router(settings, links)
        secret = settings.edge_secret()
        meter_config = MeterConfig(
            secret=secret,
            heartbeat_s=settings.meter_heartbeat,
            clock_check=settings.meter_clock_check,
        )
        meters = MeterHub(db, meter_config)
        state = AppState(
            settings=settings,
            db=db,
            hub=NodeHub(db, links, router, meters),
            links=links,
            edge_secret=secret,
            meters=meters,
            funds=funds_guard(settings),
        )
        app.state.openpod = state
        meters.start()
        tasks = [asyncio.create_task(_settle_every_period(state))]
        tasks.append(asyncio.create_task(transfer.site_of(app).rooms.run_expiry()))
        alerts = alerts_from(settings)
        wallet = hot_wallet(settings, db, alerts)
        if wallet is not None:
            await alerts.start()
            stop = asyncio.Event()  # the loops end by cancellation; they never set it
            tasks.append(asyncio.create_task(wallet.gateway.run(settings.payments_poll, stop)))
            tasks.append(
                asyncio.create_task(wallet.watch.run(settings.hot_wallet_watch_poll, stop))
            )
            state.extra_metrics += [wallet.watch.metrics.prometheus, alerts.prometheus]
        if router is not None:
            tasks.append(asyncio.create_task(_keep_edge_in_step(router, db)))
        log.info("openpod control plane %s on %s", __version__, db.dialect)
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await meters.stop()
        if wallet is not None:
            await alerts.stop()
            await wallet.aclose()
        if isinstance(state.funds, ChainFunds):
            await state.funds.rpc.aclose()
        db.dispose()

    app = FastAPI(
        title="openpod",
        version=__version__,
        description="An open GPU pod cloud. Authenticate with `Authorization: Bearer <API key>`.",
        lifespan=lifespan,
    )
    errors.install(app)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.state.transfer = transfer.TransferSite.from_settings(settings)  # rooms, relays
    for module in (accounts, billing, gpus, leases, nodes, pods, transfer):
        app.include_router(module.router)
    app.include_router(wallet_router)
    app.include_router(chain_router)
    return app


def create_asgi(settings: ServerSettings | None = None) -> billing.MeterSocket:
    """What `openpod server` serves: the app, with the meters' WebSocket in front of it."""
    return billing.MeterSocket(create_app(settings))
