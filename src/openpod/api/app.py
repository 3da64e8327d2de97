"""The control plane's FastAPI application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from openpod import __version__
from openpod.adapters.store import Database, migrate
from openpod.api import errors
from openpod.api.deps import AppState
from openpod.api.routes import accounts, gpus, nodes, pods
from openpod.services import providers
from openpod.services.hub import NodeHub
from openpod.settings import ServerSettings

log = logging.getLogger("openpod.api")


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.db_url()
        migrate(url)
        db = Database(url)
        with db.transaction() as session:  # nobody is connected yet: every node is offline
            providers.mark_all_offline(session)
        app.state.openpod = AppState(settings=settings, db=db, hub=NodeHub(db))
        log.info("openpod control plane %s on %s", __version__, db.dialect)
        yield
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

    for module in (accounts, gpus, nodes, pods):
        app.include_router(module.router)
    return app
