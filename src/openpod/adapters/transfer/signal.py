"""The signaling client of `openpod send`/`receive`: a room on the control plane.

    client = await SignalClient.connect("http://127.0.0.1:8420")   # ws://.../transfer/signal
    nameplate, room, expires_in = await client.allocate()           # the sender
    room, expires_in = await client.claim("7")                     # or the receiver
    await client.send({"share": "..."})
    body = await client.recv()

Peers coming and going:

- `wait_peer()` (the sender) returns when a receiver claims the room. A message that arrives
  while it waits is kept for the next `recv()`.
- `recv()` returns the next message body from the peer. It raises `PeerLeft` when the peer
  left the room (the sender may then `wait_peer()` again: a receiver may resume), and
  `SignalError` when the server reports an error (`burned`, `expired`, ...) or the
  connection closes (code `closed`). A `peer-joined` seen while in `recv()` is noted in
  `peer_present` and otherwise skipped.

Every error is a `SignalError(code, message)` with the protocol's code; what the user typed
after the nameplate never travels here, so no error can show it.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

SIGNAL_PATH = "/transfer/signal"
MAX_FRAME = 1 << 20  # what we accept from the server (its own frames are at most 64 KiB)
Body = dict[str, Any]


class SignalError(Exception):
    """The server refused or ended something; `code` is the protocol's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code, self.message = code, message


class PeerLeft(SignalError):
    """The peer left the room (its connection closed)."""

    def __init__(self) -> None:
        super().__init__("peer-left", "the other side left")


def websocket_url(base_url: str, path: str) -> str:
    """http(s)://host[:port][/prefix] -> ws(s)://host[:port][/prefix]{path}."""
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + path
    if base.startswith("http://"):
        return "ws://" + base.removeprefix("http://") + path
    return base + path  # already ws:// or wss://


class SignalClient:
    """One signaling connection: a sender's or a receiver's place in one room."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._pending: deque[Body] = deque()
        self.peer_present = False

    @classmethod
    async def connect(cls, url: str) -> SignalClient:
        target = websocket_url(url, SIGNAL_PATH)
        try:
            ws = await connect(target, max_size=MAX_FRAME, compression=None, open_timeout=10)
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as error:
            raise SignalError("unreachable", f"cannot reach {url}: {error}") from None
        return cls(ws)

    async def allocate(self) -> tuple[str, bytes, int]:
        """A new room: (nameplate, room id, seconds it lives)."""
        await self._put({"op": "allocate"})
        answer = await self._answer("allocated")
        return str(answer.get("nameplate")), _room_id(answer), _expires_in(answer)

    async def claim(self, nameplate: str) -> tuple[bytes, int]:
        """Join the room of `nameplate`: (room id, seconds it still lives)."""
        await self._put({"op": "claim", "nameplate": nameplate})
        answer = await self._answer("claimed")
        self.peer_present = True
        return _room_id(answer), _expires_in(answer)

    async def send(self, body: Body) -> None:
        await self._put({"op": "send", "body": body})

    async def recv(self) -> Body:
        if self._pending:
            return self._pending.popleft()
        while True:
            event = await self._next()
            op = event.get("op")
            if op == "message" and isinstance(event.get("body"), dict):
                return dict(event["body"])
            if op == "peer-joined":
                self.peer_present = True
            elif op == "peer-left":
                self.peer_present = False
                raise PeerLeft()

    async def wait_peer(self) -> None:
        """Until a receiver is in the room (at once if one is there already)."""
        while not self.peer_present:
            event = await self._next()
            op = event.get("op")
            if op == "peer-joined":
                self.peer_present = True
            elif op == "peer-left":  # what the departed peer sent is not for the next
                self.peer_present = False
                self._pending.clear()
            elif op == "message" and isinstance(event.get("body"), dict):
                self._pending.append(dict(event["body"]))

    async def burn(self) -> None:
        """Close the room for good (the sender, after a wrong code)."""
        await self._put({"op": "burn"})

    async def close(self) -> None:
        await self._ws.close()

    async def _put(self, message: Body) -> None:
        try:
            await self._ws.send(json.dumps(message))
        except ConnectionClosed:
            raise SignalError("closed", "the signaling connection closed") from None

    async def _next(self) -> Body:
        """The next event from the server; errors are raised."""
        try:
            frame = await self._ws.recv()
        except ConnectionClosed:
            raise SignalError("closed", "the signaling connection closed") from None
        try:
            event = json.loads(frame)
        except ValueError:
            raise SignalError("bad-response", "the server sent something not JSON") from None
        if not isinstance(event, dict):
            raise SignalError("bad-response", "the server sent something not a JSON object")
        if event.get("op") == "error":
            raise SignalError(str(event.get("code")), str(event.get("message", "")))
        return event

    async def _answer(self, op: str) -> Body:
        event = await self._next()
        if event.get("op") != op:
            raise SignalError("bad-response", f"expected {op!r} from the server")
        return event


def _room_id(answer: Body) -> bytes:
    try:
        room = bytes.fromhex(str(answer["room"]))
    except (KeyError, ValueError):
        raise SignalError("bad-response", "the server sent no room id") from None
    if len(room) != 16:
        raise SignalError("bad-response", "the server's room id is not 16 bytes")
    return room


def _expires_in(answer: Body) -> int:
    value = answer.get("expires_in")
    if not isinstance(value, int):
        raise SignalError("bad-response", "the server sent no lifetime for the room")
    return value
