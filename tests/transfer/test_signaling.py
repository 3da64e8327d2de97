"""The signaling rooms of `openpod send`/`receive`, one rule at a time, on a fake clock."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from openpod.services.signaling import (
    OUTBOX_MAX,
    QUEUE_MAX,
    SignalConnection,
    TransferLimits,
    TransferRooms,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rooms(clock: Clock) -> TransferRooms:
    return TransferRooms(TransferLimits(), clock)


def drain(conn: SignalConnection) -> list[dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = []
    while not conn.outbox.empty():
        out.append(conn.outbox.get_nowait())
    return out


def op(rooms: TransferRooms, conn: SignalConnection, **message: Any) -> list[dict[str, Any] | None]:
    rooms.handle_frame(conn, json.dumps(message))
    return drain(conn)


def errors(answers: list[dict[str, Any] | None]) -> list[str]:
    return [a["code"] for a in answers if a is not None and a["op"] == "error"]


def allocated(rooms: TransferRooms, address: str = "10.0.0.1") -> tuple[SignalConnection, str]:
    conn = rooms.connect(address)
    [answer] = op(rooms, conn, op="allocate")
    assert answer is not None and answer["op"] == "allocated"
    return conn, answer["nameplate"]


def test_allocate_gives_the_smallest_free_nameplate_and_a_random_room(
    rooms: TransferRooms,
) -> None:
    first = rooms.connect("10.0.0.1")
    [answer] = op(rooms, first, op="allocate")
    room_id = rooms.rooms["1"].id
    assert len(room_id) == 16
    assert answer == {
        "op": "allocated",
        "nameplate": "1",
        "room": room_id.hex(),
        "expires_in": 1800,
    }
    _, nameplate = allocated(rooms)
    assert nameplate == "2"
    assert rooms.rooms["1"].id != rooms.rooms["2"].id
    rooms.disconnect(first)
    assert allocated(rooms)[1] == "1"


def test_claim_joins_the_room_and_messages_go_both_ways(rooms: TransferRooms) -> None:
    sender, nameplate = allocated(rooms)
    receiver = rooms.connect("10.0.0.2")
    [claimed] = op(rooms, receiver, op="claim", nameplate=nameplate)
    assert claimed == {
        "op": "claimed",
        "room": rooms.rooms[nameplate].id.hex(),
        "expires_in": 1800,
    }
    assert drain(sender) == [{"op": "peer-joined"}]
    assert op(rooms, sender, op="send", body={"share": "AAAA"}) == []
    assert drain(receiver) == [{"op": "message", "body": {"share": "AAAA"}}]
    op(rooms, receiver, op="send", body={"share": "BBBB"})
    assert drain(sender) == [{"op": "message", "body": {"share": "BBBB"}}]


def test_messages_before_the_receiver_wait_for_it_at_most_16(rooms: TransferRooms) -> None:
    sender, nameplate = allocated(rooms)
    for i in range(QUEUE_MAX):
        assert op(rooms, sender, op="send", body={"i": i}) == []
    assert errors(op(rooms, sender, op="send", body={"i": "one too many"})) == ["bad-request"]
    receiver = rooms.connect("10.0.0.2")
    answers = op(rooms, receiver, op="claim", nameplate=nameplate)
    assert answers[0] is not None and answers[0]["op"] == "claimed"
    assert answers[1:] == [{"op": "message", "body": {"i": i}} for i in range(QUEUE_MAX)]


def test_a_second_claim_is_refused_while_a_receiver_is_there(rooms: TransferRooms) -> None:
    _, nameplate = allocated(rooms)
    op(rooms, rooms.connect("10.0.0.2"), op="claim", nameplate=nameplate)
    intruder = rooms.connect("10.0.0.3")
    assert errors(op(rooms, intruder, op="claim", nameplate=nameplate)) == ["code-in-use"]
    assert intruder.room is None and not intruder.closed


def test_after_the_receiver_leaves_the_room_can_be_claimed_again(rooms: TransferRooms) -> None:
    sender, nameplate = allocated(rooms)
    first = rooms.connect("10.0.0.2")
    [claimed] = op(rooms, first, op="claim", nameplate=nameplate)
    rooms.disconnect(first)
    assert drain(sender) == [{"op": "peer-joined"}, {"op": "peer-left"}]
    op(rooms, sender, op="send", body={"again": True})  # waits for the next receiver
    again = rooms.connect("10.0.0.2")
    answers = op(rooms, again, op="claim", nameplate=nameplate)
    assert answers[0] == claimed  # the same room
    assert answers[1:] == [{"op": "message", "body": {"again": True}}]
    assert drain(sender) == [{"op": "peer-joined"}]


def test_the_room_closes_when_the_allocator_leaves(rooms: TransferRooms) -> None:
    sender, nameplate = allocated(rooms)
    receiver = rooms.connect("10.0.0.2")
    op(rooms, receiver, op="claim", nameplate=nameplate)
    rooms.disconnect(sender)
    assert drain(receiver) == [{"op": "peer-left"}]
    assert errors(op(rooms, receiver, op="send", body={})) == ["not-in-room"]
    late = rooms.connect("10.0.0.3")
    assert errors(op(rooms, late, op="claim", nameplate=nameplate)) == ["no-such-code"]
    assert rooms.rooms == {} and rooms.by_id == {}


def test_burn_closes_the_room_for_good(rooms: TransferRooms, clock: Clock) -> None:
    sender, nameplate = allocated(rooms)
    receiver = rooms.connect("10.0.0.2")
    op(rooms, receiver, op="claim", nameplate=nameplate)
    assert errors(op(rooms, receiver, op="burn")) == ["bad-request"]  # only the sender burns
    assert op(rooms, sender, op="burn") == [{"op": "peer-joined"}]
    assert errors(drain(receiver)) == ["burned"]
    assert receiver.room is None and sender.room is None
    again = rooms.connect("10.0.0.2")
    assert errors(op(rooms, again, op="claim", nameplate=nameplate)) == ["burned"]
    assert allocated(rooms)[1] != nameplate  # the tombstone keeps its nameplate
    clock.now += 1800
    rooms.expire_due()
    assert nameplate not in rooms.rooms


def test_rooms_expire_after_their_lifetime(rooms: TransferRooms, clock: Clock) -> None:
    sender, nameplate = allocated(rooms)
    receiver = rooms.connect("10.0.0.2")
    op(rooms, receiver, op="claim", nameplate=nameplate)
    drain(sender)
    clock.now += 1799.5
    assert rooms.expire_due() == []
    clock.now += 0.5
    assert rooms.expire_due() == [nameplate]
    for conn in (sender, receiver):
        answers = drain(conn)
        assert errors(answers) == ["expired"] and answers[-1] is None  # then closed
        assert conn.closed
    assert allocated(rooms)[1] == nameplate  # free again


def test_claim_reports_the_lifetime_left(rooms: TransferRooms, clock: Clock) -> None:
    _, nameplate = allocated(rooms)
    clock.now += 600.2
    [claimed] = op(rooms, rooms.connect("10.0.0.2"), op="claim", nameplate=nameplate)
    assert claimed is not None and claimed["expires_in"] == 1200


def test_one_address_holds_at_most_16_rooms(rooms: TransferRooms) -> None:
    for _ in range(16):
        allocated(rooms, "10.0.0.1")
    extra = rooms.connect("10.0.0.1")
    assert errors(op(rooms, extra, op="allocate")) == ["too-many-rooms"]
    assert allocated(rooms, "10.0.0.2")[1] == "17"


def test_the_server_holds_at_most_max_rooms(clock: Clock) -> None:
    rooms = TransferRooms(TransferLimits(max_rooms=3), clock)
    for address in ("a", "b", "c"):
        allocated(rooms, address)
    assert errors(op(rooms, rooms.connect("d"), op="allocate")) == ["too-many-rooms"]


def test_a_connection_sends_20_a_second_with_bursts_of_40(
    rooms: TransferRooms, clock: Clock
) -> None:
    conn, nameplate = allocated(rooms)  # one message spent
    op(rooms, rooms.connect("10.0.0.2"), op="claim", nameplate=nameplate)
    drain(conn)
    for _ in range(39):
        assert op(rooms, conn, op="send", body={}) == []
    clock.now += 0.5  # ten more
    for _ in range(10):
        assert op(rooms, conn, op="send", body={}) == []
    answers = op(rooms, conn, op="send", body={})
    assert errors(answers) == ["rate-limited"] and answers[-1] is None and conn.closed
    assert op(rooms, conn, op="send", body={}) == []  # nothing more after the close


def test_a_frame_over_the_limit_closes_the_connection(clock: Clock) -> None:
    rooms = TransferRooms(TransferLimits(signal_max_message=100), clock)
    conn, _ = allocated(rooms)
    pad = 100 - len(json.dumps({"op": "send", "body": {"x": ""}}))
    rooms.handle_frame(conn, json.dumps({"op": "send", "body": {"x": "x" * pad}}))  # 100 bytes
    assert drain(conn) == []
    rooms.handle_frame(conn, json.dumps({"op": "send", "body": {"x": "é" * 50}}))  # 100+ bytes
    answers = drain(conn)
    assert errors(answers) == ["too-large"] and answers[-1] is None and conn.closed


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad-request"),
        ("[1, 2]", "bad-request"),
        ('{"op": "dance"}', "bad-request"),
        (b'{"op": "allocate"}', "bad-request"),
        ('{"op": "claim", "nameplate": 7}', "bad-request"),
        ('{"op": "claim", "nameplate": "404"}', "no-such-code"),
        ('{"op": "send", "body": {}}', "not-in-room"),
        ('{"op": "burn"}', "not-in-room"),
    ],
)
def test_bad_requests_are_answered_and_the_connection_stays(
    rooms: TransferRooms, frame: str | bytes, code: str
) -> None:
    conn = rooms.connect("10.0.0.1")
    rooms.handle_frame(conn, frame)
    assert errors(drain(conn)) == [code]
    assert not conn.closed


def test_one_room_per_connection(rooms: TransferRooms) -> None:
    sender, nameplate = allocated(rooms)
    assert errors(op(rooms, sender, op="allocate")) == ["bad-request"]
    assert errors(op(rooms, sender, op="claim", nameplate=nameplate)) == ["bad-request"]
    assert errors(op(rooms, sender, op="send", body="not an object")) == ["bad-request"]


def test_bodies_and_secret_words_never_reach_the_logs(
    rooms: TransferRooms, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="openpod.transfer")
    sender, nameplate = allocated(rooms)
    receiver = rooms.connect("10.0.0.2")
    wrong = op(rooms, receiver, op="claim", nameplate="7-amber-falcon-orbit")
    assert "amber" not in json.dumps(wrong)
    op(rooms, receiver, op="claim", nameplate=nameplate)
    op(rooms, sender, op="send", body={"sealed": "TOPSECRETBODY"})
    op(rooms, sender, op="burn")
    assert f"room {nameplate}/" in caplog.text
    assert "TOPSECRETBODY" not in caplog.text and "amber" not in caplog.text
    assert rooms.rooms[nameplate].id.hex() not in caplog.text  # only its first digits


def test_a_client_that_does_not_read_is_dropped(rooms: TransferRooms) -> None:
    sender, nameplate = allocated(rooms)
    receiver = rooms.connect("10.0.0.2")
    op(rooms, receiver, op="claim", nameplate=nameplate)
    for _ in range(OUTBOX_MAX + 1):
        sender.bucket.tokens = 1.0
        rooms.handle_frame(sender, json.dumps({"op": "send", "body": {}}))
    assert receiver.closed
    assert receiver.outbox.qsize() == OUTBOX_MAX + 1  # its backlog, then the close


async def test_the_expiry_task_expires_rooms(clock: Clock) -> None:
    rooms = TransferRooms(TransferLimits(room_lifetime=5), clock)
    conn, _ = allocated(rooms)
    clock.now += 5
    task = asyncio.create_task(rooms.run_expiry(every=0.001))
    try:
        answers = [await asyncio.wait_for(conn.outbox.get(), 5) for _ in range(2)]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert errors(answers) == ["expired"] and answers[-1] is None
