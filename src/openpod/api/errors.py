"""Service errors → HTTP answers, in one place."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from openpod.adapters.store import StoreError
from openpod.services.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PaymentRequired,
    ServiceError,
    Unauthenticated,
    Unavailable,
)

STATUS: list[tuple[type[ServiceError], int]] = [
    (InvalidInput, 400),
    (Unauthenticated, 401),
    (PaymentRequired, 402),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (Unavailable, 503),
]


class WaitTimedOut(Exception):
    """GET /pods/{id}/wait ran out of time."""


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, error: ServiceError) -> JSONResponse:
        code = next((c for kind, c in STATUS if isinstance(error, kind)), 400)
        headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
        return JSONResponse({"detail": str(error)}, status_code=code, headers=headers)

    @app.exception_handler(WaitTimedOut)
    async def wait_timeout(_: Request, error: WaitTimedOut) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=408)

    @app.exception_handler(StoreError)
    async def store_error(_: Request, error: StoreError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def bad_body(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors():
            where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
            problems.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
        return JSONResponse({"detail": "; ".join(problems), "errors": problems}, status_code=422)
