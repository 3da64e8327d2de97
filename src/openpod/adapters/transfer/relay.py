"""The relay transport: records through the control plane when nothing else connects.

`relay_connect(base_url, room, side)` opens `GET /transfer/relay?room=..&side=..` and
returns once the server says both sides are there (`{"op":"paired"}`); from then on each
record is one binary WebSocket frame, forwarded by the server as it is (it cannot read the
sealed records). A refusal (`no-such-code`, `not-in-room`, `code-in-use`...) raises
`RelayRefused`, a `ChannelClosed` that carries the server's code.
"""

from __future__ import annotations

import contextlib
import json

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from openpod.adapters.transfer.channel import ChannelClosed
from openpod.adapters.transfer.signal import websocket_url

RELAY_PATH = "/transfer/relay"
MAX_RECORD = 1024 * 1024 + 1024  # the relay's frame limit (transfer_relay_max_frame)


class RelayRefused(ChannelClosed):
    """The relay refused or ended the connection; `code` is the protocol's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"relay: {message} ({code})")
        self.code, self.message = code, message


class RelayChannel:
    """A `Channel` over the relay's WebSocket: one binary frame per record."""

    max_record = MAX_RECORD

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def send(self, record: bytes) -> None:
        if len(record) > self.max_record:
            raise ValueError(f"a relay record is at most {self.max_record} bytes")
        try:
            await self._ws.send(record)
        except ConnectionClosed:
            raise ChannelClosed("the relay connection closed") from None

    async def recv(self) -> bytes:
        try:
            frame = await self._ws.recv()
        except ConnectionClosed:
            raise ChannelClosed("the relay connection closed") from None
        if isinstance(frame, str):  # the server speaks text only to end the relay
            await self.close()
            raise _refusal(frame)
        return frame

    async def close(self) -> None:
        await self._ws.close()


async def relay_connect(base_url: str, room: bytes, side: str) -> RelayChannel:
    """Join the room's relay as `side` ("sender" or "receiver"); wait until paired."""
    url = websocket_url(base_url, f"{RELAY_PATH}?room={room.hex()}&side={side}")
    try:
        ws = await connect(url, max_size=MAX_RECORD, compression=None, open_timeout=10)
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as error:
        raise RelayRefused("unreachable", f"cannot reach {base_url}: {error}") from None
    try:
        first = await ws.recv()
    except ConnectionClosed:
        raise RelayRefused("closed", "the relay closed before pairing") from None
    if not _is_paired(first):
        with contextlib.suppress(ConnectionClosed):
            await ws.close()
        raise _refusal(first)
    return RelayChannel(ws)


def _is_paired(frame: str | bytes) -> bool:
    try:
        message = json.loads(frame)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("op") == "paired"


def _refusal(frame: str | bytes) -> RelayRefused:
    try:
        message = json.loads(frame)
        return RelayRefused(str(message["code"]), str(message["message"]))
    except (ValueError, KeyError, TypeError):
        return RelayRefused("bad-response", "the relay sent something unexpected")
