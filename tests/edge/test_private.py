"""Private pods: the edge lets a request through only with the pod's token, and the token
stops at the edge (the pod never sees the `openpod_token` cookie, nor a Bearer header the
edge accepted)."""

from __future__ import annotations

import hashlib

import pytest

from openpod.adapters.edge import EdgeProxy, Route
from tests.edge.conftest import get, pod_host
from tests.edge.upstreams import Upstream

TOKEN = "tok_" + "s3cret" * 8


@pytest.fixture
def private(edge: EdgeProxy, pod_a: Upstream) -> str:
    host = pod_host("priv")
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    edge.set_routes([Route(host, pod_a.address, digest), Route(pod_host("pub"), pod_a.address)])
    return host


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Cookie": "openpod_token=wrong; other=1"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Cookie": f"x{TOKEN}=1"},
    ],
)
def test_without_the_token_it_is_401(
    edge: EdgeProxy, private: str, headers: dict[str, str]
) -> None:
    response = get(edge, private, headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "private" in response.text


def test_bearer_token_opens_it_and_stays_at_the_edge(edge: EdgeProxy, private: str) -> None:
    response = get(edge, private, headers={"Authorization": f"bearer {TOKEN}"})

    assert response.status_code == 200
    assert "authorization" not in response.json()["headers"]


@pytest.mark.parametrize(
    ("cookie", "pod_sees"),
    [
        (f"openpod_token={TOKEN}", None),
        (f"a=1; openpod_token={TOKEN}", "a=1"),
        (f"openpod_token={TOKEN}; b=2", "b=2"),
        (f"a=1;openpod_token=old; openpod_token={TOKEN}; b=2", "a=1; b=2"),
    ],
)
def test_cookie_opens_it_and_is_not_passed_on(
    edge: EdgeProxy, private: str, cookie: str, pod_sees: str | None
) -> None:
    response = get(edge, private, headers={"Cookie": cookie})

    assert response.status_code == 200
    assert response.json()["headers"].get("cookie") == ([pod_sees] if pod_sees else None)


def test_the_pods_own_authorization_passes_when_the_cookie_opened_it(
    edge: EdgeProxy, private: str
) -> None:
    headers = {"Cookie": f"openpod_token={TOKEN}", "Authorization": "Bearer pods-own-auth"}

    seen = get(edge, private, headers=headers).json()["headers"]

    assert seen["authorization"] == ["Bearer pods-own-auth"]
    assert "cookie" not in seen


def test_public_pods_never_see_the_cookie_either(edge: EdgeProxy, private: str) -> None:
    """The cookie may be scoped to the whole proxy domain: strip it for every pod."""
    headers = {"Cookie": f"openpod_token={TOKEN}; theme=dark", "Authorization": "Bearer x"}

    seen = get(edge, pod_host("pub"), headers=headers).json()["headers"]

    assert seen["cookie"] == ["theme=dark"]
    assert seen["authorization"] == ["Bearer x"]  # a public pod's own auth is its business


def test_turning_private_and_back_takes_effect_at_once(edge: EdgeProxy, pod_a: Upstream) -> None:
    host = pod_host("flip")
    edge.add_route(Route(host, pod_a.address))
    assert get(edge, host).status_code == 200

    edge.add_route(Route(host, pod_a.address, hashlib.sha256(TOKEN.encode()).hexdigest()))
    assert get(edge, host).status_code == 401
    assert get(edge, host, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200

    edge.add_route(Route(host, pod_a.address))
    assert get(edge, host).status_code == 200


def test_only_the_hash_is_written(edge: EdgeProxy, private: str) -> None:
    assert edge.routes()[private].token_sha256 == hashlib.sha256(TOKEN.encode()).hexdigest()
    for path in edge.paths.state_dir.iterdir():
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
