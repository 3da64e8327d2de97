"""The relay's pairing and limits, over fake ends (no sockets), on a fake clock."""

from __future__ import annotations

import json

import pytest

from openpod.services.signaling import TransferLimits, TransferRefused, TransferRooms
from openpod.services.transfer_relay import PeerGone, Relay, RelayEnd, TransferRelays


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class FakeEnd:
    """What a route gives the relay: where frames go, whether it was closed."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed = False

    async def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    async def close(self) -> None:
        self.closed = True


def open_room(rooms: TransferRooms, *, claimed: bool = True) -> str:
    """A room with its sender (and its receiver when `claimed`) in signaling; its id in hex."""
    sender = rooms.connect("10.0.0.1")
    rooms.handle_frame(sender, '{"op": "allocate"}')
    answer = sender.outbox.get_nowait()
    assert answer is not None
    if claimed:
        receiver = rooms.connect("10.0.0.2")
        rooms.handle_frame(receiver, json.dumps({"op": "claim", "nameplate": answer["nameplate"]}))
    return str(answer["room"])


def setup(**limits: int) -> tuple[TransferRooms, TransferRelays, Clock]:
    clock = Clock()
    rooms = TransferRooms(TransferLimits(**limits), clock)
    return rooms, TransferRelays(rooms), clock


def join(relays: TransferRelays, room: str, side: str) -> tuple[Relay, RelayEnd, FakeEnd]:
    fake = FakeEnd()
    relay, end = relays.join(room, side, fake.send, fake.close)
    return relay, end, fake


def refusal(relays: TransferRelays, room: str, side: str) -> str:
    with pytest.raises(TransferRefused) as refused:
        join(relays, room, side)
    return refused.value.code


async def test_both_sides_pair_and_frames_go_across_as_they_are() -> None:
    rooms, relays, _ = setup()
    room = open_room(rooms)
    relay, sender, sender_out = join(relays, room, "sender")
    assert not relay.paired.is_set()
    same, receiver, receiver_out = join(relays, room, "receiver")
    assert same is relay and relay.paired.is_set()
    sender.ready.set()
    receiver.ready.set()
    await relay.forward("sender", b"\x00record one")
    await relay.forward("receiver", b"record two")
    assert receiver_out.frames == [b"\x00record one"]
    assert sender_out.frames == [b"record two"]
    assert relay.carried == len(b"\x00record one") + len(b"record two")


def test_refused_without_an_open_room_with_both_sides() -> None:
    rooms, relays, _ = setup()
    assert refusal(relays, "00" * 16, "sender") == "no-such-code"
    assert refusal(relays, "zz" * 16, "sender") == "bad-request"
    assert refusal(relays, open_room(rooms), "sideways") == "bad-request"
    assert refusal(relays, open_room(rooms, claimed=False), "sender") == "not-in-room"


def test_a_second_connection_for_a_side_is_refused() -> None:
    rooms, relays, _ = setup()
    room = open_room(rooms)
    join(relays, room, "sender")
    assert refusal(relays, room, "sender") == "code-in-use"


def test_at_most_max_relays_at_once() -> None:
    rooms, relays, _ = setup(max_relays=1)
    join(relays, open_room(rooms), "sender")
    assert refusal(relays, open_room(rooms), "sender") == "too-many-rooms"


async def test_frames_and_bytes_are_limited() -> None:
    rooms, relays, _ = setup(relay_max_frame=8, relay_max_bytes=12)
    room = open_room(rooms)
    relay, _, _ = join(relays, room, "sender")
    _, receiver, out = join(relays, room, "receiver")
    receiver.ready.set()
    with pytest.raises(TransferRefused, match="at most 8 bytes") as big:
        await relay.forward("sender", b"123456789")
    assert big.value.code == "too-large"
    await relay.forward("sender", b"12345678")
    with pytest.raises(TransferRefused) as over:
        await relay.forward("sender", b"12345")
    assert over.value.code == "too-large" and out.frames == [b"12345678"]


def test_the_relay_lives_its_lifetime() -> None:
    rooms, relays, clock = setup(relay_lifetime=100)
    relay, _, _ = join(relays, open_room(rooms), "sender")
    clock.now += 60
    assert relays.remaining(relay) == 40
    clock.now += 60
    assert relays.remaining(relay) == 0


async def test_when_one_side_leaves_the_other_is_closed_and_the_room_may_relay_again() -> None:
    rooms, relays, _ = setup()
    room = open_room(rooms)
    relay, sender, _ = join(relays, room, "sender")
    _, receiver, receiver_out = join(relays, room, "receiver")
    await relays.leave(relay, sender)
    assert receiver_out.closed and relay.ended
    with pytest.raises(TransferRefused):
        await relay.forward("receiver", b"into the void")
    again, _, _ = join(relays, room, "sender")  # a fresh relay while the old one winds down
    assert again is not relay
    await relays.leave(relay, receiver)
    assert relays.relays[bytes.fromhex(room)] is again


async def test_a_departing_side_still_delivers_what_it_sent_before_closing() -> None:
    """The receiver sends its last frame (an error) and closes. The sender's frames for it
    fail first (its socket saw the close before its reader got to the error): that must not
    close the sender, whose copy of the error is still to come."""
    rooms, relays, _ = setup()
    room = open_room(rooms)
    relay, sender, sender_out = join(relays, room, "sender")
    gone = FakeEnd()

    async def refuse(frame: bytes) -> None:
        raise PeerGone

    _, receiver = relays.join(room, "receiver", refuse, gone.close)
    sender.ready.set()
    receiver.ready.set()
    await relay.forward("sender", b"data the receiver will never read")  # dropped, no error
    assert not sender_out.closed and not relay.ended
    await relay.forward("receiver", b"the receiver's error")
    assert sender_out.frames == [b"the receiver's error"]
    await relays.leave(relay, receiver)
    assert sender_out.closed


async def test_an_unpaired_side_that_leaves_frees_the_relay() -> None:
    rooms, relays, _ = setup()
    room = open_room(rooms)
    relay, sender, _ = join(relays, room, "sender")
    await relays.leave(relay, sender)
    assert relays.relays == {} and not relay.ended
