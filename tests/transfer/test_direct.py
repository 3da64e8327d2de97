"""Direct TCP transport of `openpod send`/`receive`: records, limits, dialing, back-pressure.

Everything listens on 127.0.0.1 (free ports); every channel and listener is closed, and a
fixture checks that no asyncio task outlives its test.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from openpod.adapters.transfer import Channel, ChannelClosed
from openpod.adapters.transfer.channel import RecordTooLarge
from openpod.adapters.transfer.direct import (
    _READ_HIGH,
    _WRITE_HIGH,
    MAX_RECORD,
    ConnectFailed,
    DirectChannel,
    DirectListener,
    connect_any,
    host_addresses,
    listen,
)
from tests.support.net import free_port

MiB = 1024 * 1024


async def poll(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Let the loop run until `check` holds; fail naming `what` after `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                if check():
                    return
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    yield
    current = asyncio.current_task()
    await poll(lambda: not (asyncio.all_tasks() - {current}), "tasks to finish")


@pytest.fixture
async def listener() -> AsyncIterator[DirectListener]:
    listening = await listen("127.0.0.1", 0)
    yield listening
    listening.close()


async def pair(listener: DirectListener) -> tuple[DirectChannel, DirectChannel]:
    """A connected (receiver, sender) pair through the listener."""
    receiver = await connect_any(listener.addrs)
    sender = await listener.accept()
    return receiver, sender


async def closing(*channels: Channel) -> None:
    for channel in channels:
        await channel.close()


async def test_listener_on_loopback_offers_only_loopback(listener: DirectListener) -> None:
    assert len(listener.addrs) == 1
    host, port = listener.addrs[0]
    assert host == "127.0.0.1" and port > 0


def test_host_addresses_are_usable_ipv4_without_loopback() -> None:
    for text in host_addresses():
        address = ipaddress.IPv4Address(text)
        assert not address.is_loopback and not address.is_unspecified, text


async def test_records_both_ways_in_order(listener: DirectListener) -> None:
    receiver, sender = await pair(listener)
    records = [b"", b"hello", os.urandom(70_000), os.urandom(MAX_RECORD), b"x" * 3]
    for record in records:
        await sender.send(record)
        await receiver.send(record[::-1])
    assert [await receiver.recv() for _ in records] == records
    assert [await sender.recv() for _ in records] == [r[::-1] for r in records]
    assert sender.max_record == receiver.max_record == MAX_RECORD == MiB + 1024
    await closing(receiver, sender)


async def test_32_mib_arrive_intact(listener: DirectListener) -> None:
    receiver, sender = await pair(listener)
    sent, got = hashlib.sha256(), hashlib.sha256()

    async def send_all() -> None:
        for _ in range(32):
            chunk = os.urandom(MiB)
            sent.update(chunk)
            await sender.send(chunk)
        await sender.send(b"")

    async def receive_all() -> int:
        total = 0
        while record := await receiver.recv():
            got.update(record)
            total += len(record)
        return total

    _, total = await asyncio.gather(send_all(), receive_all())
    assert total == 32 * MiB
    assert got.hexdigest() == sent.hexdigest()
    await closing(receiver, sender)


async def test_send_refuses_a_record_over_the_limit(listener: DirectListener) -> None:
    receiver, sender = await pair(listener)
    with pytest.raises(RecordTooLarge, match=str(MAX_RECORD + 1)):
        await sender.send(bytes(MAX_RECORD + 1))
    await sender.send(b"still fine")
    assert await receiver.recv() == b"still fine"
    await closing(receiver, sender)


async def raw_peer(listener: DirectListener) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = listener.addrs[0]
    return await asyncio.open_connection(host, port)


async def test_oversize_frame_closes_the_connection(listener: DirectListener) -> None:
    reader, writer = await raw_peer(listener)
    channel = await listener.accept()
    writer.write((MAX_RECORD + 1).to_bytes(4, "big") + b"junk")
    with pytest.raises(ChannelClosed, match="over the limit"):
        await channel.recv()
    assert await reader.read() == b""  # we hung up on it
    writer.close()
    await writer.wait_closed()
    await channel.close()


async def test_connection_ending_mid_record_is_an_error(listener: DirectListener) -> None:
    _, writer = await raw_peer(listener)
    channel = await listener.accept()
    writer.write((10).to_bytes(4, "big") + b"abc")
    writer.close()
    await writer.wait_closed()
    with pytest.raises(ChannelClosed, match="mid-record"):
        await channel.recv()
    await channel.close()


async def test_peer_close_ends_recv_after_the_last_record(listener: DirectListener) -> None:
    receiver, sender = await pair(listener)
    await sender.send(b"last words")
    await sender.close()
    assert await receiver.recv() == b"last words"
    with pytest.raises(ChannelClosed):
        await receiver.recv()
    with pytest.raises(ChannelClosed):
        await sender.send(b"after close")
    await receiver.close()


async def test_connect_any_keeps_the_live_address(listener: DirectListener) -> None:
    dead = ("127.0.0.1", free_port())
    channel = await connect_any([dead, *listener.addrs])
    accepted = await listener.accept()
    await channel.send(b"ping")
    assert await accepted.recv() == b"ping"
    await closing(channel, accepted)


async def test_connect_any_closes_the_extra_connections(listener: DirectListener) -> None:
    channel = await connect_any(listener.addrs * 2)
    first, second = await listener.accept(), await listener.accept()
    await channel.send(b"kept")
    outcomes: list[bytes | str] = []
    for accepted in (first, second):
        try:
            outcomes.append(await accepted.recv())
        except ChannelClosed:
            outcomes.append("closed")
    assert sorted(outcomes, key=str) == [b"kept", "closed"]
    await closing(channel, first, second)


async def test_connect_any_says_what_it_tried() -> None:
    ports = [free_port(), free_port()]
    with pytest.raises(ConnectFailed) as failure:
        await connect_any([("127.0.0.1", port) for port in ports], timeout=2.0)
    message = str(failure.value)
    assert "could not connect directly" in message
    for port in ports:
        assert f"127.0.0.1:{port} (" in message
    with pytest.raises(ConnectFailed, match="no direct address"):
        await connect_any([])


async def test_accept_hands_out_connections_in_order(listener: DirectListener) -> None:
    first = await connect_any(listener.addrs)
    await first.send(b"1")
    second = await connect_any(listener.addrs)
    await second.send(b"2")
    accepted = [await listener.accept(), await listener.accept()]
    assert [await a.recv() for a in accepted] == [b"1", b"2"]
    await closing(first, second, *accepted)


async def test_closing_the_listener_drops_unaccepted_connections() -> None:
    listening = await listen("127.0.0.1", 0)
    channel = await connect_any(listening.addrs)
    await poll(lambda: listening._pending.qsize() == 1, "the connection to arrive")
    listening.close()
    with pytest.raises(ChannelClosed):
        await channel.recv()
    with pytest.raises(ConnectFailed):
        await connect_any(listening.addrs)
    await channel.close()


async def test_a_reader_that_stops_stalls_the_sender(listener: DirectListener) -> None:
    receiver, sender = await pair(listener)
    sent = 0

    async def send_many() -> None:
        nonlocal sent
        for index in range(128):
            await sender.send(index.to_bytes(4, "big") * (MiB // 4))
            sent += 1

    task = asyncio.create_task(send_many())

    def stalled() -> bool:
        waiting = sender._writable is not None and not sender._writable.done()
        return waiting and receiver._reading_paused

    await poll(stalled, "the sender to wait on a full pipe")
    assert not task.done() and sent < 64  # kernel buffers + our bounded queues, not 128 MiB
    assert sender._transport is not None
    assert sender._transport.get_write_buffer_size() <= _WRITE_HIGH + MAX_RECORD + 4
    assert receiver._queued <= _READ_HIGH + MAX_RECORD
    for index in range(128):
        assert (await receiver.recv())[:4] == index.to_bytes(4, "big")
    await task
    await closing(receiver, sender)


async def test_separate_senders_do_not_mix(listener: DirectListener) -> None:
    pairs = [await pair(listener) for _ in range(3)]

    async def exchange(index: int, link: tuple[DirectChannel, DirectChannel]) -> bytes:
        await link[1].send(bytes([index]) * 10)
        return await link[0].recv()

    jobs: list[Awaitable[bytes]] = [exchange(i, link) for i, link in enumerate(pairs)]
    assert await asyncio.gather(*jobs) == [bytes([i]) * 10 for i in range(3)]
    for receiver, sender in pairs:
        await closing(receiver, sender)


async def test_listen_binds_the_requested_address_only(listener: DirectListener) -> None:
    sock = listener._server.sockets[0]
    assert sock.family == socket.AF_INET
    assert sock.getsockname()[0] == "127.0.0.1"
