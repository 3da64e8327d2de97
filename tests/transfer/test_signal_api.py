"""Signaling, the relay and the /transfer page against the real control plane.

The app is served by uvicorn on a free 127.0.0.1 port in a thread of this process (its own
event loop), and spoken to with the CLI's own clients: `SignalClient` and `relay_connect`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from openpod.adapters.transfer.channel import ChannelClosed
from openpod.adapters.transfer.relay import RelayChannel, RelayRefused, relay_connect
from openpod.adapters.transfer.signal import PeerLeft, SignalClient, SignalError
from openpod.api.app import create_app
from openpod.api.routes.transfer import STATIC_DIR, site_of
from openpod.domain.transfer_words import WORDS
from openpod.settings import IceServer, ServerSettings
from tests.support.net import free_port, wait_until

MiB = 1024 * 1024


@dataclass
class Server:
    url: str
    app: FastAPI
    static_dir: Path
    secret_file: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("transfer-plane")
    settings = ServerSettings(
        data_dir=root,
        transfer_ice_servers=[IceServer(urls="turn:127.0.0.1:3478", username="u", credential="c")],
    )
    app = create_app(settings)
    static = root / "static"
    static.mkdir()
    for name, text in {
        "index.html": "<!doctype html><title>send</title>",
        "app.js": "export const x = 1;",
        "sw.js": "self.addEventListener('fetch', () => {});",
        "style.css": "body { margin: 0 }",
    }.items():
        (static / name).write_text(text)
    (root / "secret.txt").write_text("not for the web")
    site_of(app).static_dir = static
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", ws_per_message_deflate=False
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: uv.started, 30, "the control plane to start", step=0.02)
        yield Server(f"http://127.0.0.1:{port}", app, static, root / "secret.txt")
    finally:
        uv.should_exit = True
        thread.join(30)
    assert not thread.is_alive()


async def sender_and_receiver(url: str) -> tuple[SignalClient, SignalClient, str, bytes]:
    sender = await SignalClient.connect(url)
    nameplate, room, expires_in = await sender.allocate()
    assert nameplate.isdigit() and len(room) == 16 and expires_in == 1800
    receiver = await SignalClient.connect(url)
    claimed, _ = await receiver.claim(nameplate)
    assert claimed == room
    await asyncio.wait_for(sender.wait_peer(), 5)
    return sender, receiver, nameplate, room


async def test_allocate_claim_and_messages_both_ways(server: Server) -> None:
    sender, receiver, _, _ = await sender_and_receiver(server.url)
    try:
        await sender.send({"share": "Ya"})
        assert await asyncio.wait_for(receiver.recv(), 5) == {"share": "Ya"}
        await receiver.send({"share": "Yb", "n": [1, 2]})
        assert await asyncio.wait_for(sender.recv(), 5) == {"share": "Yb", "n": [1, 2]}
    finally:
        await sender.close()
        await receiver.close()


async def test_messages_wait_for_the_receiver(server: Server) -> None:
    sender = await SignalClient.connect(server.url)
    nameplate, _, _ = await sender.allocate()
    for i in range(3):
        await sender.send({"i": i})
    receiver = await SignalClient.connect(server.url)
    try:
        await receiver.claim(nameplate)
        assert [await asyncio.wait_for(receiver.recv(), 5) for _ in range(3)] == [
            {"i": 0},
            {"i": 1},
            {"i": 2},
        ]
    finally:
        await sender.close()
        await receiver.close()


async def test_code_in_use_then_claimed_again_after_the_receiver_leaves(server: Server) -> None:
    sender, receiver, nameplate, room = await sender_and_receiver(server.url)
    other = await SignalClient.connect(server.url)
    try:
        with pytest.raises(SignalError) as in_use:
            await other.claim(nameplate)
        assert in_use.value.code == "code-in-use"
        await receiver.close()
        with pytest.raises(PeerLeft):
            await asyncio.wait_for(sender.recv(), 5)
        again, _ = await other.claim(nameplate)
        assert again == room
        await asyncio.wait_for(sender.wait_peer(), 5)
        await sender.send({"resumed": True})
        assert await asyncio.wait_for(other.recv(), 5) == {"resumed": True}
    finally:
        await sender.close()
        await other.close()


async def test_burn_ends_the_code_for_good(server: Server) -> None:
    sender, receiver, nameplate, _ = await sender_and_receiver(server.url)
    late = await SignalClient.connect(server.url)
    try:
        await sender.burn()
        with pytest.raises(SignalError) as burned:
            await asyncio.wait_for(receiver.recv(), 5)
        assert burned.value.code == "burned"
        with pytest.raises(SignalError) as again:
            await late.claim(nameplate)
        assert again.value.code == "burned"
    finally:
        for client in (sender, receiver, late):
            await client.close()


async def test_an_unknown_code_is_no_such_code(server: Server) -> None:
    client = await SignalClient.connect(server.url)
    try:
        with pytest.raises(SignalError) as unknown:
            await client.claim("99998")
        assert unknown.value.code == "no-such-code" and "99998" in str(unknown.value)
    finally:
        await client.close()


async def raw_answers(url: str, frames: list[str]) -> list[dict[str, object]]:
    """Send `frames` on a bare signaling socket; every answer until the server closes it."""
    answers = []
    async with connect(url.replace("http", "ws") + "/transfer/signal", max_size=None) as ws:
        for frame in frames:
            await ws.send(frame)
        with pytest.raises(ConnectionClosed):
            while True:
                answers.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    return answers


async def test_a_frame_too_large_closes_the_socket(server: Server) -> None:
    frame = json.dumps({"op": "send", "body": {"x": "x" * 65536}})
    answers = await raw_answers(server.url, [frame])
    assert [a["code"] for a in answers] == ["too-large"]


async def test_too_many_messages_are_rate_limited(server: Server) -> None:
    frames = ['{"op": "burn"}'] * 200  # each answered not-in-room, until the bucket is empty
    answers = await raw_answers(server.url, frames)
    codes = [a["code"] for a in answers]
    assert codes[-1] == "rate-limited" and 40 <= len(codes) < 200
    assert set(codes[:-1]) == {"not-in-room"}


@dataclass
class RelayPair:
    sender: RelayChannel
    receiver: RelayChannel
    room: bytes
    signaling: list[SignalClient]

    async def close(self) -> None:
        await self.sender.close()
        await self.receiver.close()
        for client in self.signaling:
            await client.close()


async def relay_pair(url: str) -> RelayPair:
    sender, receiver, _, room = await sender_and_receiver(url)
    a, b = await asyncio.wait_for(
        asyncio.gather(relay_connect(url, room, "sender"), relay_connect(url, room, "receiver")),
        10,
    )
    return RelayPair(a, b, room, [sender, receiver])


async def test_the_relay_carries_20_mib_each_way(server: Server) -> None:
    pair = await relay_pair(server.url)
    a, b = pair.sender, pair.receiver
    data = {a: os.urandom(20 * MiB), b: os.urandom(20 * MiB)}
    record = 256 * 1024

    async def send(channel: RelayChannel) -> None:
        blob = data[channel]
        for at in range(0, len(blob), record):
            await channel.send(blob[at : at + record])

    async def receive(channel: RelayChannel, size: int) -> str:
        digest, got = hashlib.sha256(), 0
        while got < size:
            chunk = await channel.recv()
            digest.update(chunk)
            got += len(chunk)
        return digest.hexdigest()

    started = time.perf_counter()
    _, _, at_b, at_a = await asyncio.wait_for(
        asyncio.gather(send(a), send(b), receive(b, 20 * MiB), receive(a, 20 * MiB)), 60
    )
    seconds = time.perf_counter() - started
    print(f"relay: 2 x 20 MiB in {seconds:.2f} s, {40 / seconds:.0f} MiB/s in all")
    assert at_b == hashlib.sha256(data[a]).hexdigest()
    assert at_a == hashlib.sha256(data[b]).hexdigest()
    await a.close()
    with pytest.raises(ChannelClosed):
        await asyncio.wait_for(b.recv(), 5)  # the other side is closed with it
    await pair.close()


async def test_the_relay_refuses_unknown_rooms_half_rooms_and_a_third_side(
    server: Server,
) -> None:
    with pytest.raises(RelayRefused) as unknown:
        await relay_connect(server.url, bytes(16), "sender")
    assert unknown.value.code == "no-such-code"
    lone = await SignalClient.connect(server.url)
    _, lone_room, _ = await lone.allocate()
    with pytest.raises(RelayRefused) as alone:
        await relay_connect(server.url, lone_room, "sender")
    assert alone.value.code == "not-in-room"
    await lone.close()
    pair = await relay_pair(server.url)
    with pytest.raises(RelayRefused) as third:
        await relay_connect(server.url, pair.room, "receiver")
    assert third.value.code == "code-in-use"
    await pair.sender.send(b"still paired")
    assert await asyncio.wait_for(pair.receiver.recv(), 5) == b"still paired"
    await pair.close()


def test_the_page_and_its_files_are_served(server: Server) -> None:
    with httpx.Client(base_url=server.url) as http:
        page = http.get("/transfer")
        assert page.status_code == 200 and page.text.startswith("<!doctype html>")
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-cache"
        script = http.get("/transfer/static/app.js")
        assert script.text == "export const x = 1;"
        assert script.headers["content-type"].startswith("text/javascript")
        assert "service-worker-allowed" not in script.headers
        worker = http.get("/transfer/static/sw.js")
        assert worker.headers["service-worker-allowed"] == "/transfer/"
        assert worker.headers["cache-control"] == "no-cache"
        style = http.get("/transfer/static/style.css")
        assert style.headers["content-type"].startswith("text/css")


@pytest.mark.parametrize(
    "path",
    [
        "/transfer/static/..%2Fsecret.txt",
        "/transfer/static/%2E%2E%2Fsecret.txt",
        "/transfer/static/../secret.txt",
        "/transfer/static/%2E%2E",
        "/transfer/static/.hidden",
        "/transfer/static/nothing.js",
        "/transfer/static/..%5Csecret.txt",
    ],
)
def test_nothing_outside_the_page_directory_is_served(server: Server, path: str) -> None:
    with httpx.Client(base_url=server.url) as http:
        response = http.get(path)
    assert response.status_code == 404
    assert "not for the web" not in response.text


def test_without_a_page_transfer_says_not_found(server: Server, tmp_path: Path) -> None:
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/transfer").status_code == 200
        site = site_of(server.app)
        site.static_dir, kept = tmp_path, site.static_dir
        try:
            missing = http.get("/transfer")
        finally:
            site.static_dir = kept
    assert missing.status_code == 404 and "not found" in missing.text


def test_the_real_page_directory_is_the_packaged_one() -> None:
    assert STATIC_DIR.is_dir()
    assert STATIC_DIR.parts[-3:] == ("api", "static", "transfer")


def test_words_and_config(server: Server) -> None:
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/transfer/words.json").json() == {"words": list(WORDS)}
        assert http.get("/transfer/config").json() == {
            "iceServers": [{"urls": "turn:127.0.0.1:3478", "username": "u", "credential": "c"}]
        }
