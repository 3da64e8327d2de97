"""Routes, settings and the files the edge writes, checked without a running proxy."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from openpod.adapters.edge import EdgeError, EdgeSettings, InvalidRoute, Route
from openpod.adapters.edge.config import render_config
from openpod.adapters.edge.files import EdgePaths
from openpod.adapters.edge.routemap import RouteMap
from openpod.adapters.edge.runtime_api import MAX_LINE, AdminSocket, _batches

DIGEST = hashlib.sha256(b"token").hexdigest()


def test_route_is_normalised() -> None:
    route = Route("Pod-8080.Proxy.Localhost", "127.0.0.1:08080")
    assert (route.host, route.upstream) == ("pod-8080.proxy.localhost", "127.0.0.1:8080")
    assert Route("a.b", "10.1.2.3:80", DIGEST.upper()).token_sha256 == DIGEST


@pytest.mark.parametrize(
    ("host", "upstream", "digest"),
    [
        ("a b.proxy.localhost", "127.0.0.1:80", None),
        ("a;del.proxy.localhost", "127.0.0.1:80", None),
        ("-a.proxy.localhost", "127.0.0.1:80", None),
        ("a.proxy.localhost:80", "127.0.0.1:80", None),
        ("a.proxy.localhost", "pod.internal:80", None),
        ("a.proxy.localhost", "[::1]:80", None),
        ("a.proxy.localhost", "127.0.0.1:0", None),
        ("a.proxy.localhost", "127.0.0.1:65536", None),
        ("a.proxy.localhost", "127.0.0.1", None),
        ("a.proxy.localhost", "127.0.0.1:80", "abc"),
        ("a.proxy.localhost", "127.0.0.1:80", DIGEST + " x"),
    ],
)
def test_routes_haproxy_could_not_hold_are_refused(
    host: str, upstream: str, digest: str | None
) -> None:
    with pytest.raises(InvalidRoute):
        Route(host, upstream, digest)


def test_invalid_route_is_both_an_edge_error_and_a_value_error() -> None:
    assert issubclass(InvalidRoute, EdgeError)
    assert issubclass(InvalidRoute, ValueError)


def test_map_file_round_trip() -> None:
    routes = [
        Route("b.proxy.localhost", "10.0.0.2:8888", DIGEST),
        Route("a.proxy.localhost", "127.0.0.1:1"),
    ]
    text = RouteMap(routes).text()
    assert text.splitlines()[1:] == [
        "a.proxy.localhost 127.0.0.1:1",
        f"b.proxy.localhost 10.0.0.2:8888:{DIGEST}",
    ]
    assert RouteMap.parse(text).routes == {r.host: r for r in routes}
    parsed = RouteMap.parse("# c\n\na.x 1.2.3.4:5\na.x 1.2.3.4:6\n")
    assert parsed.routes == {"a.x": Route("a.x", "1.2.3.4:5")}
    with pytest.raises(InvalidRoute, match="line 1"):
        RouteMap.parse("a.x nowhere\n")


def test_one_change_is_one_line() -> None:
    table = RouteMap([Route("a.x", "1.1.1.1:1"), Route("b.x", "1.1.1.1:2")])
    table.put(Route("a.x", "2.2.2.2:3", DIGEST))
    table.drop("b.x")
    table.drop("never.x")
    assert table.text().splitlines()[1:] == [f"a.x 2.2.2.2:3:{DIGEST}"]


def test_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(EdgeError, match="together"):
        EdgeSettings(tmp_path, https_port=8443)
    with pytest.raises(EdgeError, match="plain path"):
        EdgeSettings(tmp_path / "with space")
    with pytest.raises(EdgeError, match="client_timeout"):
        EdgeSettings(tmp_path, client_timeout=0)
    with pytest.raises(EdgeError, match="IP address"):
        EdgeSettings(tmp_path, bind_host="localhost")


def test_config_streams_bodies_and_keeps_long_idle_timeouts(tmp_path: Path) -> None:
    settings = EdgeSettings(tmp_path, client_timeout=7200, server_timeout=600)
    config = render_config(settings, EdgePaths(settings.state_dir))

    assert "http-buffer-request" not in config
    assert "timeout client 7200000ms" in config
    assert "timeout server 600000ms" in config
    assert "timeout tunnel 7200000ms" in config
    assert " ssl crt " not in config  # no HTTPS listener asked for


def test_long_batches_are_cut_into_lines_haproxy_can_read() -> None:
    commands = [f"add map /m host{i}.proxy.localhost 127.0.0.1:{i + 1}" for i in range(1000)]
    lines = list(_batches(commands))
    assert len(lines) > 1
    assert all(len(line) <= MAX_LINE for line in lines)
    assert ";".join(lines).split(";") == commands
    with pytest.raises(EdgeError):
        list(_batches(["show info;shutdown sessions"]))


def test_socket_errors_are_edge_errors(tmp_path: Path) -> None:
    with pytest.raises(EdgeError, match="admin socket"):
        AdminSocket(tmp_path / "nothing.sock").execute("show info")
    with pytest.raises(EdgeError, match="too long"):
        AdminSocket(tmp_path / ("x" * 120))


def test_response_splicing_is_on_by_default_and_can_be_turned_off(tmp_path: Path) -> None:
    paths = EdgePaths(tmp_path)
    assert "option splice-response" in render_config(EdgeSettings(state_dir=tmp_path), paths)
    plain = EdgeSettings(state_dir=tmp_path, splice_responses=False)
    assert "splice" not in render_config(plain, paths)


def test_a_refused_port_is_answered_as_a_502_starting_page(tmp_path: Path) -> None:
    from openpod.adapters.edge.config import refused_response

    raw = refused_response()
    head, _, body = raw.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 502 Bad Gateway\r\n")
    assert f"content-length: {len(body.encode())}" in head
    assert "Pod is starting" in body
    config = render_config(EdgeSettings(state_dir=tmp_path), EdgePaths(tmp_path))
    assert f"errorfile 503 {EdgePaths(tmp_path).refused_response}" in config
