"""The gateway's rules and limits, driven by an asyncssh client in the test's own loop.

The "pods" here are plain TCP servers on 127.0.0.1 standing in for a pod's sshd: the relay
only moves bytes, so an echo server shows what it does to them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncssh
import pytest

from openpod.adapters.gateway.directory import Caller, PodTarget
from openpod.adapters.gateway.errors import HostKeyError
from openpod.adapters.gateway.server import GatewayLimits, SSHGateway, load_or_create_host_key
from tests.gateway.fakes import FakeDirectory

Gate = Callable[..., Awaitable[SSHGateway]]


async def eventually(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.fixture
async def pod_server() -> AsyncIterator[int]:
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@pytest.fixture
def client_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


@pytest.fixture
def directory(client_key: asyncssh.SSHKey, pod_server: int) -> FakeDirectory:
    found = FakeDirectory()
    found.add_account("acc_alice", client_key.export_public_key("openssh").decode())
    found.owners.update(echopod="acc_alice", deadpod="acc_alice")
    found.targets["echopod"] = PodTarget("echopod", "127.0.0.1", pod_server)
    return found


@pytest.fixture
async def make_gateway(tmp_path: Path, directory: FakeDirectory) -> AsyncIterator[Gate]:
    started: list[SSHGateway] = []

    async def make(**limits: float) -> SSHGateway:
        limit = GatewayLimits(**limits)  # type: ignore[arg-type]
        gateway = SSHGateway(directory, tmp_path / "host_key", port=0, limits=limit)
        await gateway.start()
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        await gateway.stop()


def connect(gateway: SSHGateway, key: asyncssh.SSHKey) -> Awaitable[asyncssh.SSHClientConnection]:
    trusted = asyncssh.import_public_key(gateway.host_public_key)
    return asyncssh.connect(
        "127.0.0.1",
        gateway.port,
        username="openpod",
        client_keys=[key],
        known_hosts=([trusted], [], []),
        agent_path=None,
        config=None,
    )


async def test_relay_carries_bytes_both_ways_and_eof(
    make_gateway: Gate, client_key: asyncssh.SSHKey
) -> None:
    payload = os.urandom(8 * 1024 * 1024 + 3)
    async with await connect(await make_gateway(), client_key) as conn:
        reader, writer = await conn.open_connection("echopod", 22)
        writer.write(payload)
        writer.write_eof()
        assert await reader.read() == payload  # read() returns at the pod's EOF


async def test_a_pod_that_does_not_read_holds_the_sender_back(
    make_gateway: Gate, client_key: asyncssh.SSHKey, directory: FakeDirectory
) -> None:
    """Backpressure: the gateway stops opening the channel's window instead of buffering."""
    go, received = asyncio.Event(), bytearray()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await go.wait()
        while data := await reader.read(1 << 16):
            received.extend(data)
        writer.close()

    server = await asyncio.start_server(slow, "127.0.0.1", 0)
    directory.targets["echopod"] = PodTarget(
        "echopod", "127.0.0.1", server.sockets[0].getsockname()[1]
    )
    payload = os.urandom(64 * 1024 * 1024)
    async with server, await connect(await make_gateway(), client_key) as conn:
        _, writer = await conn.open_connection("echopod", 22)
        writer.write(payload)
        with pytest.raises(TimeoutError):  # 64 MiB do not fit in the windows and socket buffers
            await asyncio.wait_for(writer.drain(), 0.5)
        go.set()
        await writer.drain()
        writer.write_eof()
        await eventually(lambda: len(received) == len(payload), "the pod to read everything")
    assert bytes(received) == payload


async def test_channels_per_connection_are_limited(
    make_gateway: Gate, client_key: asyncssh.SSHKey
) -> None:
    async with await connect(await make_gateway(max_channels_per_connection=2), client_key) as conn:
        first = await conn.open_connection("echopod", 22)
        await conn.open_connection("echopod", 22)
        with pytest.raises(asyncssh.ChannelOpenError) as refused:
            await conn.open_connection("echopod", 22)
        assert refused.value.code == asyncssh.OPEN_RESOURCE_SHORTAGE
        assert refused.value.reason == "too many open channels on this connection (limit 2)"
        first[1].close()
        await first[1].channel.wait_closed()
        reader, writer = await conn.open_connection("echopod", 22)  # the slot came back
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"


async def test_connections_are_limited(make_gateway: Gate, client_key: asyncssh.SSHKey) -> None:
    gateway = await make_gateway(max_connections=1)
    async with await connect(gateway, client_key):
        with pytest.raises(asyncssh.DisconnectError) as refused:
            await connect(gateway, client_key)
        assert refused.value.code == asyncssh.DISC_TOO_MANY_CONNECTIONS
        assert "the openpod gateway is at its connection limit" in refused.value.reason
    await eventually(lambda: gateway.connection_count == 0, "the first connection to go")
    async with await connect(gateway, client_key):
        assert gateway.connection_count == 1


async def test_a_client_that_never_logs_in_is_dropped(make_gateway: Gate) -> None:
    gateway = await make_gateway(login_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    assert (await reader.readline()).startswith(b"SSH-2.0-openpod-gateway")
    await asyncio.wait_for(reader.read(), 10)  # returns at EOF: the gateway hung up
    assert reader.at_eof()
    writer.close()
    await eventually(lambda: gateway.connection_count == 0, "the connection to be forgotten")


async def test_refusals_are_logged_by_fingerprint_not_key(
    make_gateway: Gate, client_key: asyncssh.SSHKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="openpod.gateway")
    async with await connect(await make_gateway(), client_key) as conn:
        with pytest.raises(asyncssh.ChannelOpenError) as refused:
            await conn.open_connection("nopod7", 22)
    assert refused.value.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
    assert refused.value.reason == "no such pod nopod7"
    fingerprint = client_key.get_fingerprint("sha256")
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert lines == [
        f"refused account acc_alice (key {fingerprint}) -> pod nopod7: no such pod nopod7"
    ]
    blob = client_key.export_public_key("openssh").split()[1].decode()
    assert all(blob not in r.getMessage() for r in caplog.records)


async def test_directory_failure_fails_the_channel_not_the_connection(
    make_gateway: Gate, client_key: asyncssh.SSHKey, directory: FakeDirectory
) -> None:
    async def broken(caller: Caller, pod_id: str) -> PodTarget:
        if pod_id == "brokenpod":
            raise RuntimeError("database is down")
        return await FakeDirectory.target_for(directory, caller, pod_id)

    directory.target_for = broken  # type: ignore[method-assign]
    async with await connect(await make_gateway(), client_key) as conn:
        with pytest.raises(asyncssh.ChannelOpenError) as failed:
            await conn.open_connection("brokenpod", 22)
        assert failed.value.reason == "the gateway could not look up pod brokenpod; try again"
        reader, writer = await conn.open_connection("echopod", 22)
        writer.write(b"still here")
        assert await reader.readexactly(10) == b"still here"


async def test_a_pod_whose_sshd_is_gone_is_reported(
    make_gateway: Gate, client_key: asyncssh.SSHKey, directory: FakeDirectory
) -> None:
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    directory.targets["deadpod"] = PodTarget("deadpod", "127.0.0.1", port)
    async with await connect(await make_gateway(), client_key) as conn:
        with pytest.raises(asyncssh.ChannelOpenError) as failed:
            await conn.open_connection("deadpod", 22)
    assert failed.value.code == asyncssh.OPEN_CONNECT_FAILED
    assert failed.value.reason == "pod deadpod refused the SSH connection (Connection refused)"


async def test_stop_drops_open_connections(make_gateway: Gate, client_key: asyncssh.SSHKey) -> None:
    gateway = await make_gateway()
    conn = await connect(gateway, client_key)
    reader, _ = await conn.open_connection("echopod", 22)
    await gateway.stop()
    await asyncio.wait_for(conn.wait_closed(), 10)
    assert await asyncio.wait_for(reader.read(), 10) == b""
    assert gateway.connection_count == 0


def test_host_key_is_created_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "host_key"
    first = load_or_create_host_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.algorithm == b"ssh-ed25519"
    again = load_or_create_host_key(path)
    assert again.export_public_key() == first.export_public_key()
    assert [p.name for p in path.parent.iterdir()] == ["host_key"]  # no temp file left


def test_an_unreadable_host_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "host_key"
    path.write_text("not a key\n")
    with pytest.raises(HostKeyError, match="cannot read the gateway host key"):
        load_or_create_host_key(path)
