"""Routing by Host through a real HAProxy: which pod answers, what it is told, what the
browser sees when no pod can answer, and how routes change and survive restarts."""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path

import httpx
import pytest

from openpod.adapters.edge import EdgeError, EdgeProxy, EdgeSettings, InvalidRoute, Route
from openpod.adapters.edge.routemap import RouteMap
from tests.edge.conftest import MakeEdge, get, pod_host
from tests.edge.upstreams import Upstream
from tests.support.net import free_port, wait_until


def test_host_picks_the_pod(edge: EdgeProxy, pod_a: Upstream, pod_b: Upstream) -> None:
    edge.set_routes([Route(pod_host("a"), pod_a.address), Route(pod_host("b"), pod_b.address)])

    assert get(edge, pod_host("a")).json()["name"] == "A"
    assert get(edge, pod_host("b"), "/x?y=1").json() | {"headers": None} == {
        "name": "B",
        "path": "/x?y=1",
        "headers": None,
    }
    # Matched lower-cased and without the port, as browsers send it.
    assert get(edge, pod_host("A").upper() + ":443").json()["name"] == "A"


def test_kept_alive_connections_never_cross_pods(
    edge: EdgeProxy, pod_a: Upstream, pod_b: Upstream
) -> None:
    """`http-reuse always` keys idle server connections by destination."""
    edge.set_routes([Route(pod_host("a"), pod_a.address), Route(pod_host("b"), pod_b.address)])
    url = f"http://127.0.0.1:{edge.settings.http_port}/"
    with httpx.Client(trust_env=False, timeout=10) as client:
        names = [
            client.get(url, headers={"Host": pod_host("ab"[i % 2])}).json()["name"]
            for i in range(20)
        ]
    assert names == ["A", "B"] * 10


def test_pod_is_told_who_asked(edge: EdgeProxy, pod_a: Upstream) -> None:
    edge.add_route(Route(pod_host("a"), pod_a.address))
    host = f"{pod_host('a')}:{edge.settings.http_port}"
    spoofed = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}

    headers = get(edge, host, headers=spoofed).json()["headers"]

    assert headers["host"] == [host]  # passed through unchanged
    assert headers["x-forwarded-for"] == ["127.0.0.1"]  # the edge is the first hop
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == [host]


def test_unknown_host_gets_the_no_such_pod_page(edge: EdgeProxy) -> None:
    for host in ("nope-8080.proxy.localhost", "127.0.0.1", ""):
        response = get(edge, host)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert "does not exist or is not running" in response.text


def test_pod_not_answering_yet_gets_the_starting_page(edge: EdgeProxy) -> None:
    edge.add_route(Route(pod_host("a"), f"127.0.0.1:{free_port()}"))  # nothing listens

    response = get(edge, pod_host("a"))

    # HAProxy's own status for a refused connection is 503: the edge sends it as a 502.
    assert response.status_code == 502
    assert response.headers["cache-control"] == "no-store"
    assert "Pod is starting" in response.text


def test_a_removed_route_is_gone_within_a_second(edge: EdgeProxy, pod_a: Upstream) -> None:
    edge.set_routes([Route(pod_host("a"), pod_a.address), Route(pod_host("b"), pod_a.address)])
    assert get(edge, pod_host("a")).status_code == 200

    edge.remove_route(pod_host("a"))
    edge.remove_route(pod_host("never-there"))  # unknown hosts are fine

    wait_until(lambda: get(edge, pod_host("a")).status_code == 404, 1.0, "the route to go")
    assert set(edge.routes()) == {pod_host("b")}
    assert pod_host("a") not in edge.paths.routes_map.read_text()


def test_add_route_moves_a_host_to_another_pod(
    edge: EdgeProxy, pod_a: Upstream, pod_b: Upstream
) -> None:
    edge.add_route(Route(pod_host("x"), pod_a.address))
    assert get(edge, pod_host("x")).json()["name"] == "A"

    edge.add_route(Route(pod_host("x"), pod_b.address))

    assert get(edge, pod_host("x")).json()["name"] == "B"
    assert edge.routes() == {pod_host("x"): Route(pod_host("x"), pod_b.address)}


def test_routes_come_back_after_kill_9(
    make_edge: MakeEdge, pod_a: Upstream, pod_b: Upstream
) -> None:
    edge = make_edge()
    routes = [Route(pod_host("a"), pod_a.address), Route(pod_host("b"), pod_b.address)]
    edge.set_routes(routes)
    old_pid = edge.pid
    assert old_pid is not None

    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: not edge.alive(), 5, "HAProxy to die")
    edge.start()  # no set_routes: the map file holds them

    assert edge.pid not in (None, old_pid)
    assert get(edge, pod_host("a")).json()["name"] == "A"
    assert get(edge, pod_host("b")).json()["name"] == "B"
    assert edge.routes() == {route.host: route for route in routes}


def test_a_new_controller_adopts_the_running_edge(make_edge: MakeEdge, pod_a: Upstream) -> None:
    """A restarted control plane keeps the proxy (and its open connections) it finds."""
    edge = make_edge()
    edge.add_route(Route(pod_host("a"), pod_a.address))

    again = EdgeProxy(edge.settings)
    again.start()

    assert again.pid == edge.pid
    assert again.routes() == edge.routes()
    again.add_route(Route(pod_host("b"), pod_a.address))
    assert get(edge, pod_host("b")).json()["name"] == "A"


def test_an_edgeproxy_that_never_started_drives_the_running_one(
    edge: EdgeProxy, pod_a: Upstream, pod_b: Upstream
) -> None:
    """The control plane changes routes while `openpod edge` runs HAProxy."""
    edge.add_route(Route(pod_host("a"), pod_a.address))
    plane = EdgeProxy(EdgeSettings(edge.settings.state_dir))  # its own ports: never started

    plane.add_route(Route(pod_host("b"), pod_b.address))
    assert get(edge, pod_host("b")).json()["name"] == "B"
    assert plane.pid == edge.pid

    edge.add_route(Route(pod_host("c"), pod_a.address))  # on top of what `plane` wrote
    plane.remove_route(pod_host("a"))
    expected = {pod_host("b"), pod_host("c")}
    assert set(plane.routes()) == set(edge.routes()) == expected
    assert set(RouteMap.parse(edge.paths.routes_map.read_text()).routes) == expected


def test_a_thousand_routes_at_once(edge: EdgeProxy, pod_a: Upstream, pod_b: Upstream) -> None:
    pods = (pod_a, pod_b)
    routes = [Route(pod_host(f"p{i}"), pods[i % 2].address) for i in range(1000)]
    edge.add_route(Route(pod_host("old"), pod_a.address))

    edge.set_routes(routes)

    assert edge.routes() == {route.host: route for route in routes}
    for i in range(0, 1000, 97):
        assert get(edge, pod_host(f"p{i}")).json()["name"] == "AB"[i % 2]
    assert get(edge, pod_host("old")).status_code == 404
    edge.set_routes(routes[:10])  # and back down
    assert len(edge.routes()) == 10


def test_changes_from_many_threads_agree_in_file_and_proxy(
    edge: EdgeProxy, pod_a: Upstream
) -> None:
    def churn(worker: int) -> None:
        for i in range(40):
            edge.add_route(Route(pod_host(f"t{worker}x{i}"), pod_a.address))
            if i % 2:
                edge.remove_route(pod_host(f"t{worker}x{i}"))

    threads = [threading.Thread(target=churn, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    expected = {pod_host(f"t{w}x{i}") for w in range(4) for i in range(0, 40, 2)}
    assert set(edge.routes()) == expected
    assert set(RouteMap.parse(edge.paths.routes_map.read_text()).routes) == expected


def test_routes_set_before_start_are_served(tmp_path: Path, pod_a: Upstream) -> None:
    edge = EdgeProxy(EdgeSettings(tmp_path / "edge", http_port=free_port()))
    edge.set_routes([Route(pod_host("a"), pod_a.address)])
    with pytest.raises(EdgeError, match="not running"):
        edge.routes()
    edge.start()
    try:
        assert get(edge, pod_host("a")).json()["name"] == "A"
    finally:
        edge.stop()


def test_config_haproxy_rejects_is_an_edge_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        edge = EdgeProxy(EdgeSettings(tmp_path / "edge", http_port=port))
        with pytest.raises(EdgeError, match=r"(?i)cannot bind"):
            edge.start()
    assert not edge.alive()


def test_missing_haproxy_is_an_edge_error(tmp_path: Path) -> None:
    edge = EdgeProxy(EdgeSettings(tmp_path / "edge", haproxy="no-such-haproxy-binary"))
    with pytest.raises(EdgeError, match="not installed"):
        edge.start()


def test_routes_outside_the_domain_are_refused(edge: EdgeProxy) -> None:
    with pytest.raises(InvalidRoute, match="domain"):
        edge.add_route(Route("pod-80.example.com", "127.0.0.1:80"))
