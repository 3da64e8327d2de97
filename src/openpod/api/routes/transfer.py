"""`/transfer`: signaling and the relay of `openpod send`/`receive`, and the browser page.

No account is needed for any of it. Signaling (JSON text frames) and the relay (binary
frames) are WebSockets over the framework-free rooms in openpod.services; the page, its
scripts, the word list and the ICE servers are plain GETs (docs/transfer.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, PlainTextResponse, Response
from starlette.websockets import WebSocketDisconnect

from openpod.domain.transfer_words import WORDS
from openpod.services.signaling import (
    SignalConnection,
    TransferLimits,
    TransferRefused,
    TransferRooms,
)
from openpod.services.transfer_relay import (
    PAIR_WAIT,
    PeerGone,
    Relay,
    RelayEnd,
    TransferRelays,
)
from openpod.settings import ServerSettings

router = APIRouter(tags=["transfer"], include_in_schema=False)
STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "transfer"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".webmanifest": "application/manifest+json",
}
_SENT_AWAY = (WebSocketDisconnect, RuntimeError)  # the socket closed under a send


@dataclass
class TransferSite:
    """What the routes need, kept on `app.state.transfer` for the app's lifetime."""

    rooms: TransferRooms
    relays: TransferRelays
    ice_servers: list[dict[str, Any]]
    static_dir: Path = field(default=STATIC_DIR)

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> TransferSite:
        rooms = TransferRooms(
            TransferLimits(
                signal_max_message=settings.transfer_signal_max_message,
                signal_rate=settings.transfer_signal_rate,
                room_lifetime=settings.transfer_room_lifetime,
                rooms_per_client=settings.transfer_rooms_per_client,
                max_rooms=settings.transfer_max_rooms,
                relay_max_frame=settings.transfer_relay_max_frame,
                relay_max_bytes=settings.transfer_relay_max_bytes,
                relay_lifetime=settings.transfer_relay_lifetime,
                max_relays=settings.transfer_max_relays,
            )
        )
        servers = [s.model_dump(exclude_none=True) for s in settings.transfer_ice_servers]
        return cls(rooms, TransferRelays(rooms), servers)


def site_of(app: FastAPI) -> TransferSite:
    site: TransferSite = app.state.transfer
    return site


@router.websocket("/transfer/signal")
async def signal(ws: WebSocket) -> None:
    """Signaling: allocate, claim, send, burn (JSON text frames)."""
    rooms = site_of(ws.app).rooms
    await ws.accept()
    conn = rooms.connect(ws.client.host if ws.client else "unknown")
    writer = asyncio.create_task(_write(ws, conn))
    try:
        while not conn.closed:
            message = await ws.receive()
            if message["type"] != "websocket.receive":
                break
            text = message.get("text")
            rooms.handle_frame(conn, text if text is not None else message.get("bytes") or b"")
    except _SENT_AWAY:
        pass
    finally:
        rooms.disconnect(conn)
        await writer


async def _write(ws: WebSocket, conn: SignalConnection) -> None:
    """Send the connection's outbox in order; close the socket at its end."""
    with contextlib.suppress(*_SENT_AWAY):
        while (message := await conn.outbox.get()) is not None:
            await ws.send_text(json.dumps(message))
        await ws.close(1000)


@router.websocket("/transfer/relay")
async def relay(ws: WebSocket) -> None:
    """The relay: pairs the room's two sides, then forwards binary frames as they are."""
    relays = site_of(ws.app).relays
    await ws.accept()

    async def close() -> None:
        with contextlib.suppress(*_SENT_AWAY):
            await ws.close(1000)

    async def send(frame: bytes) -> None:
        """Called by the other side's task: this connection being gone is not its failure."""
        try:
            await ws.send_bytes(frame)
        except _SENT_AWAY as gone:
            raise PeerGone from gone

    try:
        joined = relays.join(
            ws.query_params.get("room", ""), ws.query_params.get("side", ""), send, close
        )
    except TransferRefused as refused:
        await _refuse(ws, refused)
        return
    try:
        await _run_relay(ws, relays, *joined)
    finally:
        await relays.leave(*joined)


async def _run_relay(ws: WebSocket, relays: TransferRelays, relay: Relay, end: RelayEnd) -> None:
    try:
        async with asyncio.timeout(relays.remaining(relay)):
            async with asyncio.timeout(PAIR_WAIT):
                await relay.paired.wait()
            await ws.send_text('{"op":"paired"}')
            end.ready.set()
            while True:
                message = await ws.receive()
                if message["type"] != "websocket.receive":
                    return
                frame = message.get("bytes")
                if frame is None:
                    raise TransferRefused("bad-request", "the relay forwards binary frames only")
                await relay.forward(end.side, frame)
    except TransferRefused as refused:
        await _refuse(ws, refused)
    except TimeoutError:
        await _refuse(ws, TransferRefused("expired", "the relay's time is up"))
    except _SENT_AWAY:
        await close_quietly(ws)


async def _refuse(ws: WebSocket, refused: TransferRefused) -> None:
    with contextlib.suppress(*_SENT_AWAY):
        await ws.send_text(json.dumps(refused.as_message()))
        await ws.close(1008)


async def close_quietly(ws: WebSocket) -> None:
    with contextlib.suppress(*_SENT_AWAY):
        await ws.close(1000)


@router.get("/transfer")
@router.get("/transfer/")
async def page(request: Request) -> Response:
    """The page that sends and receives in a browser."""
    return _static(site_of(request.app).static_dir, "index.html")


@router.get("/transfer/static/{name}")
async def static(name: str, request: Request) -> Response:
    """The page's scripts, styles and service worker: files of its one directory, no other."""
    return _static(site_of(request.app).static_dir, name)


def _static(directory: Path, name: str) -> Response:
    path = directory / name
    if (
        not name
        or name.startswith(".")
        or "/" in name
        or "\\" in name
        or path.resolve().parent != directory.resolve()
        or not path.is_file()
    ):
        return PlainTextResponse(f"not found: {name[:100]}", status_code=404)
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if name == "sw.js":
        headers["Service-Worker-Allowed"] = "/transfer/"
    media_type = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
    return FileResponse(path, media_type=media_type, headers=headers)


@router.get("/transfer/words.json")
async def words() -> dict[str, list[str]]:
    """The words of codes' secrets, the same tuple the CLI uses."""
    return {"words": list(WORDS)}


@router.get("/transfer/config")
async def config(request: Request) -> dict[str, list[dict[str, Any]]]:
    """The STUN/TURN servers the page gives WebRTC (none unless configured)."""
    return {"iceServers": site_of(request.app).ice_servers}
