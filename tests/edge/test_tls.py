"""HTTPS at the edge: a wildcard certificate for `*.{domain}`, HTTP/2 by ALPN, and the pod
told the request came over https."""

from __future__ import annotations

import hashlib
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from openpod.adapters.edge import EdgeProxy, Route
from tests.edge.conftest import DOMAIN, MakeEdge, pod_host
from tests.edge.upstreams import Upstream
from tests.support.net import free_port


@pytest.fixture
def wildcard_pem(tmp_path: Path) -> Path:
    """A self-signed `*.proxy.localhost` certificate and its key in one PEM, as HAProxy wants."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-nodes", "-days", "1", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-keyout", str(key), "-out", str(cert),
            "-subj", f"/CN=*.{DOMAIN}", "-addext", f"subjectAltName=DNS:*.{DOMAIN}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    pem = tmp_path / "wildcard.pem"
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    return pem


def https_get(edge: EdgeProxy, host: str, ca: Path, **headers: str) -> httpx.Response:
    """GET https://{host}/ with the connection made to 127.0.0.1 and the name checked (SNI and
    certificate) as a browser would."""
    context = ssl.create_default_context(cafile=str(ca))
    url = f"https://127.0.0.1:{edge.settings.https_port}/"
    with httpx.Client(verify=context, http2=True, trust_env=False, timeout=10) as client:
        return client.get(url, headers={"Host": host, **headers}, extensions={"sni_hostname": host})


def test_https_with_http2_routes_by_host(
    make_edge: MakeEdge, wildcard_pem: Path, pod_a: Upstream, pod_b: Upstream
) -> None:
    edge = make_edge(https_port=free_port(), certificate=wildcard_pem)
    edge.set_routes([Route(pod_host("a"), pod_a.address), Route(pod_host("b"), pod_b.address)])

    response = https_get(edge, pod_host("a"), wildcard_pem)

    assert response.http_version == "HTTP/2"
    seen = response.json()
    assert seen["name"] == "A"
    assert seen["headers"]["host"] == [pod_host("a")]
    assert seen["headers"]["x-forwarded-proto"] == ["https"]
    assert https_get(edge, pod_host("b"), wildcard_pem).json()["name"] == "B"
    missing = https_get(edge, pod_host("nope"), wildcard_pem)
    assert (missing.http_version, missing.status_code) == ("HTTP/2", 404)


def test_private_pod_over_http2(make_edge: MakeEdge, wildcard_pem: Path, pod_a: Upstream) -> None:
    edge = make_edge(https_port=free_port(), certificate=wildcard_pem)
    token = "t0ken"
    edge.add_route(Route(pod_host("p"), pod_a.address, hashlib.sha256(token.encode()).hexdigest()))

    assert https_get(edge, pod_host("p"), wildcard_pem).status_code == 401
    # HTTP/2 may send cookies as separate fields; HAProxy joins them before matching.
    opened = https_get(edge, pod_host("p"), wildcard_pem, Cookie=f"openpod_token={token}; a=1")
    assert opened.status_code == 200
    assert opened.json()["headers"]["cookie"] == ["a=1"]
