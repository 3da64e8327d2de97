"""Long-lived traffic through the edge: WebSockets, event streams, idle limits, big uploads.

The timeouts are idle timeouts: a stream lives as long as bytes flow, and only a silent
connection is cut. The edges here use 1 s timeouts so that "longer than the timeout" is short.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from openpod.adapters.edge import EdgeProxy, Route
from tests.edge.conftest import MakeEdge, get, pod_host
from tests.edge.upstreams import EchoWebSocket, Upstream

GIB = 1 << 30
BLOCK = 1 << 20


def open_websocket(edge: EdgeProxy, host: str) -> ClientConnection:
    sock = socket.create_connection(("127.0.0.1", edge.settings.http_port))
    return connect(f"ws://{host}/chat", sock=sock, proxy=None, compression=None)


def test_websocket_echo(edge: EdgeProxy, ws_pod: EchoWebSocket) -> None:
    edge.add_route(Route(pod_host("ws"), ws_pod.address))
    with open_websocket(edge, pod_host("ws")) as ws:
        for message in ("hello", b"\x00\xff" * 200_000, "é" * 1000):
            ws.send(message)
            assert ws.recv(timeout=5) == message


def test_event_stream_outlives_the_idle_timeout_while_it_flows(
    make_edge: MakeEdge, pod_a: Upstream
) -> None:
    edge = make_edge(client_timeout=1.0, server_timeout=1.0)
    edge.add_route(Route(pod_host("a"), pod_a.address))
    url = f"http://127.0.0.1:{edge.settings.http_port}/stream?n=10&interval=0.3"
    arrivals: list[float] = []
    body = b""
    start = time.monotonic()
    with (
        httpx.Client(trust_env=False, timeout=5) as client,
        client.stream("GET", url, headers={"Host": pod_host("a")}) as response,
    ):
        assert response.status_code == 200
        for chunk in response.iter_raw():
            arrivals.append(time.monotonic() - start)
            body += chunk

    assert body == b"".join(b"data: %d\n\n" % i for i in range(10))
    assert arrivals[-1] > 2.5  # three times the timeouts
    assert arrivals[0] < 1.0  # streamed as made, not buffered to the end


def test_websocket_lives_while_it_talks_and_is_cut_when_silent(
    make_edge: MakeEdge, ws_pod: EchoWebSocket
) -> None:
    edge = make_edge(client_timeout=1.0, server_timeout=1.0)
    edge.add_route(Route(pod_host("ws"), ws_pod.address))
    with open_websocket(edge, pod_host("ws")) as ws:
        start = time.monotonic()
        silent_since = start
        while silent_since - start < 2.5:
            time.sleep(0.3)  # the pace of the conversation under test
            ws.send("tick")
            assert ws.recv(timeout=5) == "tick"
            silent_since = time.monotonic()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert 0.8 < time.monotonic() - silent_since < 5


def test_silent_connections_are_closed_after_the_timeout(
    make_edge: MakeEdge, pod_a: Upstream
) -> None:
    edge = make_edge(client_timeout=1.0, server_timeout=1.0)
    edge.add_route(Route(pod_host("a"), pod_a.address))

    with socket.create_connection(("127.0.0.1", edge.settings.http_port)) as idle:
        idle.settimeout(10)
        opened = time.monotonic()
        while idle.recv(4096):  # HAProxy may say 408 before it closes
            pass
        assert 0.8 < time.monotonic() - opened < 5

    # A pod that never answers: 504 once the server side has been silent for the timeout.
    start = time.monotonic()
    response = get(edge, pod_host("a"), "/hang")
    assert response.status_code == 504
    assert "not answering" in response.text
    assert 0.8 < time.monotonic() - start < 5


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_gibibyte_upload_streams_through(edge: EdgeProxy, pod_a: Upstream) -> None:
    """The body is made as it is sent and hashed as it arrives: nobody holds 1 GiB, and the
    edge must not either (HAProxy streams bodies unless told to buffer them)."""
    edge.add_route(Route(pod_host("a"), pod_a.address))
    pid = edge.pid
    assert pid is not None
    base = os.urandom(BLOCK)
    sent = hashlib.sha256()
    peak_rss = [_rss_kib(pid)]

    def body() -> Iterator[bytes]:
        for i in range(GIB // BLOCK):
            block = i.to_bytes(8, "big") + base[8:]
            sent.update(block)
            if i % 64 == 0:
                peak_rss.append(_rss_kib(pid))
            yield block

    url = f"http://127.0.0.1:{edge.settings.http_port}/upload"
    headers = {"Host": pod_host("a"), "Content-Length": str(GIB)}
    start = time.monotonic()
    with httpx.Client(trust_env=False, timeout=60) as client:
        response = client.post(url, content=body(), headers=headers)
    elapsed = time.monotonic() - start

    assert response.json() == {"bytes": GIB, "sha256": sent.hexdigest()}
    assert max(peak_rss) < 128 * 1024, f"HAProxy RSS peaked at {max(peak_rss)} KiB"
    rate = GIB / elapsed / 1e6
    print(f"1 GiB via the edge: {elapsed:.2f} s, {rate:.0f} MB/s, RSS peak {max(peak_rss)} KiB")
