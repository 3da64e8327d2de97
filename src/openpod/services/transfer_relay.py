"""The relay of `openpod send`/`receive`: when nothing else connects, bytes go through us.

The sender and the receiver each open one relay connection naming their room and side. The
relay pairs them only for a room open in signaling with both sides there, one connection per
side, then forwards every frame as it is: the frames are records sealed with keys only the
peers hold, so the relay carries what it cannot read. Forwarding awaits each send, so a slow
reader slows its writer instead of filling our memory. Limits: frame size, bytes per relay,
lifetime, relays at once (docs/transfer.md, "Relay").

No framework here: each end gives the relay how to send to it and how to close it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from openpod.services.signaling import Clock, TransferLimits, TransferRefused, TransferRooms

log = logging.getLogger("openpod.transfer")

PAIR_WAIT = 60.0  # seconds one side waits for the other before the relay gives up
SIDES = ("sender", "receiver")
_ROOM_HEX = re.compile(r"[0-9a-f]{32}")


class PeerGone(Exception):
    """Raised by an end's `send` when that end's connection is gone (its own reader will see
    it and leave): the frame is dropped, and the side that sent it stays connected."""


@dataclass(eq=False)
class RelayEnd:
    """One side's connection: how to send it a frame, how to close it."""

    side: str
    send: Callable[[bytes], Awaitable[None]]
    close: Callable[[], Awaitable[None]]
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # it was told it is paired


@dataclass(eq=False)
class Relay:
    """The relay of one room: up to one end per side, the bytes carried, the deadline."""

    room_id: bytes
    limits: TransferLimits
    deadline: float
    ends: dict[str, RelayEnd] = field(default_factory=dict)
    paired: asyncio.Event = field(default_factory=asyncio.Event)
    carried: int = 0
    ended: bool = False  # a side left after pairing: the relay forwards nothing more

    def name(self) -> str:
        return f"relay {self.room_id.hex()[:8]}"

    async def forward(self, side: str, frame: bytes) -> None:
        """Send a frame from `side` to the other side, as it is, once that side was told."""
        if len(frame) > self.limits.relay_max_frame:
            limit = self.limits.relay_max_frame
            raise TransferRefused("too-large", f"a relay frame is at most {limit} bytes")
        self.carried += len(frame)
        if self.carried > self.limits.relay_max_bytes:
            raise TransferRefused("too-large", "the relay carried all it carries for one room")
        peer = self.ends.get("receiver" if side == "sender" else "sender")
        if peer is None or self.ended:
            raise TransferRefused("not-in-room", "the other side left the relay")
        await peer.ready.wait()
        try:
            await peer.send(frame)
        except PeerGone:
            # The peer is closing. What it sent before closing (a receiver's last `error`)
            # may still be on its way through its own connection's reader: this side is
            # closed only when the peer's reader leaves, after forwarding it.
            log.debug("transfer %s: a frame for a departing %s dropped", self.name(), peer.side)


class TransferRelays:
    """Every relay at once, by room id."""

    def __init__(self, rooms: TransferRooms, clock: Clock | None = None) -> None:
        self.rooms, self.limits = rooms, rooms.limits
        self.clock = clock or rooms.clock
        self.relays: dict[bytes, Relay] = {}

    def join(
        self,
        room: str,
        side: str,
        send: Callable[[bytes], Awaitable[None]],
        close: Callable[[], Awaitable[None]],
    ) -> tuple[Relay, RelayEnd]:
        """Admit one side's connection, or refuse it with the reason as a protocol error."""
        if side not in SIDES or not _ROOM_HEX.fullmatch(room):
            raise TransferRefused(
                "bad-request", "the relay needs ?room=<32 hex>&side=sender|receiver"
            )
        room_id = bytes.fromhex(room)
        signaling = self.rooms.open_room(room_id)
        if signaling is None:
            raise TransferRefused("no-such-code", "no such room is open")
        if signaling.allocator is None or signaling.receiver is None:
            raise TransferRefused("not-in-room", "both sides must be in the room to relay")
        relay = self.relays.get(room_id)
        if relay is None or relay.ended:
            if len(self.relays) >= self.limits.max_relays:
                raise TransferRefused("too-many-rooms", "the relay is full: try again later")
            relay = Relay(room_id, self.limits, self.clock() + self.limits.relay_lifetime)
            self.relays[room_id] = relay
        if side in relay.ends:
            raise TransferRefused("code-in-use", f"the {side} is already on this relay")
        end = RelayEnd(side, send, close)
        relay.ends[side] = end
        if len(relay.ends) == 2:
            relay.paired.set()
            log.info("transfer %s: paired", relay.name())
        return relay, end

    def remaining(self, relay: Relay) -> float:
        return max(0.0, relay.deadline - self.clock())

    async def leave(self, relay: Relay, end: RelayEnd) -> None:
        """One side is gone: the relay ends and the other side is closed too."""
        if relay.ends.get(end.side) is end:
            del relay.ends[end.side]
        if relay.paired.is_set():
            relay.ended = True
        if not relay.ends and self.relays.get(relay.room_id) is relay:
            del self.relays[relay.room_id]
            log.info("transfer %s: closed after %d bytes", relay.name(), relay.carried)
        for other in list(relay.ends.values()):
            if relay.ended:
                await other.close()
