"""Rooms where `openpod send` and `openpod receive` (or the /transfer page) meet.

The sender allocates a room and gets its nameplate (the `7` of `7-amber-falcon-orbit`) and a
random 16-byte room id; the receiver claims the nameplate and the two then pass each other
opaque message bodies (PAKE shares, sealed negotiation). The server never reads a body and
never logs one: logs name only the nameplate and the start of the room id.

Rules (docs/transfer.md, "Signaling"): at most two peers in a room; a receiver that leaves
may be followed by another claim (a resumed transfer) until the sender burns the room or
leaves; what the sender sends before a receiver is there waits, up to QUEUE_MAX messages;
rooms expire `room_lifetime` seconds after allocation; limits per client address and in all;
each connection is rate-limited by a token bucket. A burned room stays as a tombstone until
its lifetime ends, so a late claim of its nameplate is told `burned` rather than landing in
someone else's new room.

No framework here: a connection is a `SignalConnection` whose outbox the WebSocket route
drains; time comes from an injected clock so tests can move it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from openpod.services.errors import ServiceError

log = logging.getLogger("openpod.transfer")

QUEUE_MAX = 16  # messages that wait for a receiver not yet there
OUTBOX_MAX = 256  # answers waiting for a client that does not read: it is dropped
MAX_NAMEPLATE = 99999
Clock = Callable[[], float]
Message = dict[str, Any]
Outgoing = Message | None  # None: close the connection after what came before


class TransferRefused(ServiceError):
    """A request the rooms refuse; `code` is the protocol's error code (`no-such-code`...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message

    def as_message(self) -> Message:
        return {"op": "error", "code": self.code, "message": self.message}


# After these the server closes the socket.
CLOSING = frozenset({"expired", "too-large", "rate-limited"})


@dataclass(frozen=True)
class TransferLimits:
    """The server's limits (ServerSettings.transfer_*; defaults as documented)."""

    signal_max_message: int = 65536
    signal_rate: float = 20.0
    room_lifetime: float = 1800.0
    rooms_per_client: int = 16
    max_rooms: int = 10000
    relay_max_frame: int = 1048576 + 1024
    relay_max_bytes: int = 107374182400
    relay_lifetime: float = 21600.0
    max_relays: int = 64


class TokenBucket:
    """`rate` messages a second on average, bursts of `burst`."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.last = burst, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class SignalConnection:
    """One signaling WebSocket: its client's address, its room, what waits to be sent to it."""

    def __init__(self, address: str, bucket: TokenBucket) -> None:
        self.address, self.bucket = address, bucket
        self.outbox: asyncio.Queue[Outgoing] = asyncio.Queue()
        self.room: Room | None = None
        self.closed = False

    def deliver(self, message: Message) -> None:
        if self.closed:
            return
        if self.outbox.qsize() >= OUTBOX_MAX:  # it does not read what it is sent
            log.warning("transfer signaling: dropping a client that does not read")
            self.close()
            return
        self.outbox.put_nowait(message)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.outbox.put_nowait(None)


@dataclass(eq=False)
class Room:
    nameplate: str
    id: bytes
    address: str  # the allocator's client address (for the per-client limit)
    expires_at: float
    allocator: SignalConnection | None
    receiver: SignalConnection | None = None
    queue: list[Message] = field(default_factory=list)

    @property
    def burned(self) -> bool:
        return self.allocator is None  # a tombstone: kept until expiry, claims get `burned`

    def name(self) -> str:
        return f"room {self.nameplate}/{self.id.hex()[:8]}"

    def peer_of(self, conn: SignalConnection) -> SignalConnection | None:
        return self.receiver if conn is self.allocator else self.allocator


class TransferRooms:
    """Every open room, by nameplate and by room id, for the control plane's lifetime."""

    def __init__(
        self,
        limits: TransferLimits | None = None,
        clock: Clock = time.monotonic,
        new_id: Callable[[], bytes] = lambda: secrets.token_bytes(16),
    ) -> None:
        self.limits = limits or TransferLimits()
        self.clock, self.new_id = clock, new_id
        self.rooms: dict[str, Room] = {}  # by nameplate, tombstones included
        self.by_id: dict[bytes, Room] = {}  # open rooms only

    def connect(self, address: str) -> SignalConnection:
        rate = self.limits.signal_rate
        return SignalConnection(address, TokenBucket(rate, 2 * rate, self.clock()))

    def handle_frame(self, conn: SignalConnection, frame: str | bytes) -> None:
        """One frame from a client: check size and rate, parse, act; answers go to outboxes."""
        if conn.closed:
            return
        try:
            self._handle(conn, frame)
        except TransferRefused as refused:
            conn.deliver(refused.as_message())
            if refused.code in CLOSING:
                conn.close()

    def disconnect(self, conn: SignalConnection) -> None:
        """The client is gone: a receiver leaving frees the room for another claim; the
        allocator leaving closes the room."""
        conn.close()
        room = conn.room
        if room is None:
            return
        conn.room = None
        if conn is room.receiver:
            room.receiver = None
            if room.allocator is not None:
                room.allocator.deliver({"op": "peer-left"})
            log.info("transfer %s: the receiver left", room.name())
        elif conn is room.allocator:
            self._drop(room)
            if room.receiver is not None:
                room.receiver.room = None
                room.receiver.deliver({"op": "peer-left"})
            log.info("transfer %s: the sender left, room closed", room.name())

    def expire_due(self) -> list[str]:
        """Close every room past its lifetime; both sides are told `expired`."""
        now = self.clock()
        due = [room for room in self.rooms.values() if room.expires_at <= now]
        for room in due:
            self._drop(room)
            for conn in (room.allocator, room.receiver):
                if conn is not None:
                    conn.room = None
                    conn.deliver(TransferRefused("expired", "the code expired").as_message())
                    conn.close()
            log.info("transfer %s: expired", room.name())
        return [room.nameplate for room in due]

    async def run_expiry(self, every: float = 1.0) -> None:
        """Expire rooms every `every` seconds until cancelled (the app's lifespan task)."""
        while True:
            await asyncio.sleep(every)
            self.expire_due()

    def open_room(self, room_id: bytes) -> Room | None:
        return self.by_id.get(room_id)

    # What each op does.

    def _handle(self, conn: SignalConnection, frame: str | bytes) -> None:
        size = len(frame) if isinstance(frame, bytes) else len(frame.encode())
        if size > self.limits.signal_max_message:
            limit = self.limits.signal_max_message
            raise TransferRefused("too-large", f"a signaling message is at most {limit} bytes")
        if not conn.bucket.take(self.clock()):
            raise TransferRefused("rate-limited", "too many signaling messages: slow down")
        if isinstance(frame, bytes):
            raise TransferRefused("bad-request", "signaling messages are JSON text")
        try:
            message = json.loads(frame)
        except ValueError:
            raise TransferRefused("bad-request", "a signaling message is a JSON object") from None
        if not isinstance(message, dict):
            raise TransferRefused("bad-request", "a signaling message is a JSON object")
        op = message.get("op")
        if op == "allocate":
            self._allocate(conn)
        elif op == "claim":
            self._claim(conn, message.get("nameplate"))
        elif op == "send":
            self._send(conn, message.get("body"))
        elif op == "burn":
            self._burn(conn)
        else:
            raise TransferRefused("bad-request", "op is one of allocate, claim, send, burn")

    def _allocate(self, conn: SignalConnection) -> None:
        if conn.room is not None:
            raise TransferRefused("bad-request", "this connection is already in a room")
        held = sum(1 for room in self.rooms.values() if room.address == conn.address)
        if held >= self.limits.rooms_per_client:
            raise TransferRefused("too-many-rooms", "too many codes open from this address")
        nameplate = self._free_nameplate()
        room_id = self.new_id()
        if nameplate is None or room_id in self.by_id:
            raise TransferRefused("too-many-rooms", "the server has too many codes open")
        lifetime = self.limits.room_lifetime
        room = Room(nameplate, room_id, conn.address, self.clock() + lifetime, conn)
        self.rooms[nameplate] = self.by_id[room_id] = room
        conn.room = room
        conn.deliver(
            {
                "op": "allocated",
                "nameplate": nameplate,
                "room": room_id.hex(),
                "expires_in": math.ceil(lifetime),
            }
        )
        log.info("transfer %s: allocated", room.name())

    def _free_nameplate(self) -> str | None:
        if len(self.rooms) >= self.limits.max_rooms:
            return None
        for number in range(1, MAX_NAMEPLATE + 1):
            if str(number) not in self.rooms:
                return str(number)
        return None

    def _claim(self, conn: SignalConnection, nameplate: object) -> None:
        if conn.room is not None:
            raise TransferRefused("bad-request", "this connection is already in a room")
        if not isinstance(nameplate, str):
            raise TransferRefused("bad-request", "claim names a nameplate (a string)")
        room = self.rooms.get(nameplate)
        if room is None:
            shown = nameplate if nameplate.isdigit() and len(nameplate) <= 5 else "given"
            raise TransferRefused("no-such-code", f"no code with the nameplate {shown} is open")
        if room.burned:
            raise TransferRefused("burned", "the sender closed this code")
        if room.receiver is not None:
            raise TransferRefused("code-in-use", "someone else is using this code")
        assert room.allocator is not None  # an open room has its allocator
        room.receiver, conn.room = conn, room
        expires_in = max(0, math.ceil(room.expires_at - self.clock()))
        conn.deliver({"op": "claimed", "room": room.id.hex(), "expires_in": expires_in})
        for body in room.queue:
            conn.deliver({"op": "message", "body": body})
        room.queue.clear()
        room.allocator.deliver({"op": "peer-joined"})
        log.info("transfer %s: claimed", room.name())

    def _send(self, conn: SignalConnection, body: object) -> None:
        if not isinstance(body, dict):
            raise TransferRefused("bad-request", "send carries a body (a JSON object)")
        room = conn.room
        if room is None:
            raise TransferRefused("not-in-room", "allocate or claim a code first")
        peer = room.peer_of(conn)
        if peer is not None:
            peer.deliver({"op": "message", "body": body})
        elif len(room.queue) >= QUEUE_MAX:
            raise TransferRefused("bad-request", f"at most {QUEUE_MAX} messages wait for a peer")
        else:
            room.queue.append(body)

    def _burn(self, conn: SignalConnection) -> None:
        room = conn.room
        if room is None:
            raise TransferRefused("not-in-room", "allocate a code first")
        if conn is not room.allocator:
            raise TransferRefused("bad-request", "only the sender burns its code")
        del self.by_id[room.id]
        room.allocator, conn.room = None, None
        room.queue.clear()
        if room.receiver is not None:
            room.receiver.room = None
            room.receiver.deliver(
                TransferRefused("burned", "the sender closed this code").as_message()
            )
            room.receiver = None
        log.info("transfer %s: burned", room.name())

    def _drop(self, room: Room) -> None:
        self.rooms.pop(room.nameplate, None)
        self.by_id.pop(room.id, None)
