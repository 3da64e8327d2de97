"""The gateway's byte relay (adapters/gateway/relay.py) between a channel and a pod's sshd.

The pod is a real TCP server on 127.0.0.1; the SSH channel is a fake transport that records
what the relay does to it (a unit test of this layer; tests/gateway/test_gateway_openssh.py
runs the whole gateway under real OpenSSH clients). Every wait is on an event the other side
sets, bounded by a timeout only so a failure cannot hang the suite.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

from openpod.adapters.gateway.relay import PodRelay, PodSide

BANNER = b"SSH-2.0-pod\r\n"


class FakeChannel:
    """What a relay sees of an SSH channel: writes, EOF and close, recorded."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = asyncio.Event()
        self.got_data = asyncio.Event()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data
        self.got_data.set()

    def write_eof(self) -> None:
        self.eof.set()

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, _name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Pod:
    """A TCP server standing in for a pod's sshd: one connection, driven by the test."""

    def __init__(self) -> None:
        self.accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.get_running_loop().create_future()
        )

    async def on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.set_result((reader, writer))


class EventfulPodSide(PodSide):
    """PodSide that says when bytes or EOF have arrived from the pod."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()

    def data_received(self, data: bytes, datatype: int | None = None) -> None:
        super().data_received(data, datatype)
        self.arrived.set()

    def eof_received(self) -> bool:
        keep_open = super().eof_received()
        self.arrived.set()
        return keep_open


@asynccontextmanager
async def pod_connection() -> AsyncIterator[tuple[Pod, EventfulPodSide]]:
    pod = Pod()
    server = await asyncio.start_server(pod.on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        _, side = await asyncio.get_running_loop().create_connection(
            EventfulPodSide, "127.0.0.1", port
        )
        try:
            yield pod, side
        finally:
            side.close()  # and the relay with it, where there is one
            if pod.accepted.done():
                _reader, writer = pod.accepted.result()
                writer.close()
                with suppress(OSError):
                    await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


def relay_of(side: PodSide) -> tuple[PodRelay, list[PodRelay], asyncio.Event]:
    ended: list[PodRelay] = []
    done = asyncio.Event()

    def on_close(relay: PodRelay) -> None:
        ended.append(relay)
        done.set()

    return PodRelay(side, on_close), ended, done


def open_channel(relay: PodRelay) -> FakeChannel:
    """What asyncssh does once the client's channel is open: hands it to the relay."""
    channel = FakeChannel()
    relay.connection_made(channel)  # type: ignore[arg-type]
    return channel


async def within(waiting: Callable[[], Any]) -> None:
    await asyncio.wait_for(waiting(), 10)


async def test_the_pods_banner_before_the_relay_reaches_the_client() -> None:
    """The pod speaks first; bytes that come before the relay exists were lost (kept unread by
    SSHForwarder), and the client waited for a banner for ever."""
    async with pod_connection() as (pod, side):
        _reader, writer = await pod.accepted
        writer.write(BANNER)
        await within(side.arrived.wait)
        relay, _ended, _done = relay_of(side)
        channel = open_channel(relay)
        assert bytes(channel.data) == BANNER
        relay.close()


async def test_what_the_pod_sends_before_the_channel_opens_reaches_it() -> None:
    """The relay exists, the channel is not open yet: SSHForwarder dropped such bytes."""
    async with pod_connection() as (pod, side):
        relay, _ended, _done = relay_of(side)
        _reader, writer = await pod.accepted
        writer.write(BANNER)
        writer.write_eof()
        await within(side.arrived.wait)
        channel = open_channel(relay)
        await within(channel.eof.wait)
        assert bytes(channel.data) == BANNER


async def test_the_relay_ends_when_the_pod_ends_first_and_the_client_after() -> None:
    """The order that left a channel open: the pod's sshd closes after the command, then the
    client's EOF comes. Both ways have ended, so the relay closes the channel itself."""
    async with pod_connection() as (pod, side):
        relay, ended, _done = relay_of(side)
        channel = open_channel(relay)
        _reader, writer = await pod.accepted
        writer.write(b"output")
        writer.close()
        await within(channel.eof.wait)
        assert bytes(channel.data) == b"output"
        assert not channel.closed and ended == []
        assert relay.eof_received() is False  # the client's EOF
        assert channel.closed and ended == [relay]


async def test_the_relay_ends_when_the_client_ends_first_and_the_pod_after() -> None:
    async with pod_connection() as (pod, side):
        relay, ended, done = relay_of(side)
        channel = open_channel(relay)
        reader, writer = await pod.accepted
        relay.data_received(b"last words")
        assert relay.eof_received() is True  # the client's EOF: the pod may still answer
        assert await reader.read() == b"last words"  # then the pod sees EOF
        writer.write(b"bye")
        writer.close()
        await within(done.wait)
        assert bytes(channel.data) == b"bye" and channel.eof.is_set()
        assert channel.closed and ended == [relay]


async def test_a_pod_reset_before_the_channel_opens_closes_the_channel_as_it_opens() -> None:
    """The pod's connection is reset while the channel is still being opened: the relay ends
    (its slot is freed) and the channel is closed as soon as it opens, not left open with
    nothing behind it."""
    async with pod_connection() as (pod, side):
        relay, ended, done = relay_of(side)
        _reader, writer = await pod.accepted
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # a reset, not an orderly close
        await within(done.wait)
        assert ended == [relay]
        channel = open_channel(relay)
        assert channel.closed and ended == [relay]
