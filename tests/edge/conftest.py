"""Fixtures for the edge tests: real HAProxy edges in tmp_path, stopped by PID, and pods.

Every edge listens on free ports of 127.0.0.1; requests name the pod in their Host header
(the edge routes by Host, so no name ever has to resolve).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from openpod.adapters.edge import EdgeProxy, EdgeSettings
from tests.edge.upstreams import EchoWebSocket, Upstream
from tests.support.net import free_port

DOMAIN = "proxy.localhost"

MakeEdge = Callable[..., EdgeProxy]


def pod_host(name: str) -> str:
    return f"{name}-8080.{DOMAIN}"


def get(edge: EdgeProxy, host: str, path: str = "/", **kwargs: Any) -> httpx.Response:
    """One request through the edge's HTTP port, naming `host` as the pod."""
    url = f"http://127.0.0.1:{edge.settings.http_port}{path}"
    headers = {"Host": host, **kwargs.pop("headers", {})}
    with httpx.Client(trust_env=False, timeout=10) as client:
        return client.get(url, headers=headers, **kwargs)


@pytest.fixture
def make_edge(tmp_path: Path) -> Iterator[MakeEdge]:
    """Start edges with EdgeSettings overrides; each is stopped (by PID) at teardown."""
    edges: list[EdgeProxy] = []

    def make(**overrides: Any) -> EdgeProxy:
        overrides.setdefault("state_dir", tmp_path / f"edge{len(edges)}")
        overrides.setdefault("http_port", free_port())
        edge = EdgeProxy(EdgeSettings(**overrides))
        edges.append(edge)
        edge.start()
        return edge

    yield make
    for edge in edges:
        edge.stop()
        assert not edge.alive()


@pytest.fixture
def edge(make_edge: MakeEdge) -> EdgeProxy:
    return make_edge()


@pytest.fixture
def pod_a() -> Iterator[Upstream]:
    upstream = Upstream("A")
    yield upstream
    upstream.close()


@pytest.fixture
def pod_b() -> Iterator[Upstream]:
    upstream = Upstream("B")
    yield upstream
    upstream.close()


@pytest.fixture
def ws_pod() -> Iterator[EchoWebSocket]:
    upstream = EchoWebSocket()
    yield upstream
    upstream.close()
