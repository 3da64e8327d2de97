"""Fixtures for the CLI tests: a fake openpod API on ``httpx.MockTransport``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from openpod.cli import client as client_mod
from openpod.cli.app import app

Responder = Callable[[httpx.Request], httpx.Response]


class FakeApi:
    """Routes ``(method, path)`` to canned answers and records every request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Responder]] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, *answers: Any, status: int = 200) -> None:
        """Answer ``method path`` with each of ``answers`` in turn (the last one repeats).

        An answer is a JSON value (sent with ``status``), an ``httpx.Response``, an exception
        to raise, or a function of the request.
        """
        responders: list[Responder] = []
        for answer in answers:
            responders.append(self._responder(answer, status))
        self.routes[(method, path)] = responders

    @staticmethod
    def _responder(answer: Any, status: int) -> Responder:
        if isinstance(answer, httpx.Response):
            return lambda _request: answer
        if isinstance(answer, Exception):

            def raise_it(_request: httpx.Request) -> httpx.Response:
                raise answer

            return raise_it
        if callable(answer):
            return answer  # type: ignore[no-any-return]
        return lambda _request: httpx.Response(status, json=answer)

    def error(self, method: str, path: str, status: int, detail: str) -> None:
        """Answer ``method path`` with an API error."""
        self.on(method, path, httpx.Response(status, json={"detail": detail}))

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        responders = self.routes.get((request.method, request.url.path))
        if not responders:
            return httpx.Response(
                404, json={"detail": f"no route {request.method} {request.url.path}"}
            )
        responder = responders.pop(0) if len(responders) > 1 else responders[0]
        return responder(request)

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        """The requests received for ``method path``."""
        return [r for r in self.requests if r.method == method and r.url.path == path]

    def body(self, method: str, path: str) -> Any:
        """The JSON body of the last request for ``method path``."""
        return json.loads(self.sent(method, path)[-1].content)


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated config dir and home; no API settings from the environment."""
    directory = tmp_path / "config"
    monkeypatch.setenv("OPENPOD_CONFIG_DIR", str(directory))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("OPENPOD_API_URL", raising=False)
    monkeypatch.delenv("OPENPOD_API_KEY", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return directory


@pytest.fixture
def fake_api(config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    """A fake API every command's client talks to, with API key ``op_testkey123``."""
    monkeypatch.setenv("OPENPOD_API_KEY", "op_testkey123")
    monkeypatch.setenv("OPENPOD_API_URL", "http://fake.openpod")
    api = FakeApi()

    def factory(config: Any) -> client_mod.ApiClient:
        return client_mod.ApiClient(
            config.api_url, config.api_key, transport=httpx.MockTransport(api.handle)
        )

    previous = client_mod.set_client_factory(factory)
    yield api
    client_mod.set_client_factory(previous)


@pytest.fixture
def cli() -> Callable[..., Any]:
    """Run ``openpod ARGS...`` and return the click Result (stdout and stderr kept apart)."""
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(app, list(args))

    return invoke


def _pod(**overrides: Any) -> dict[str, Any]:
    """A pod as the API returns it (RUNNING with SSH unless overridden)."""
    pod: dict[str, Any] = {
        "id": "k3x9q2m7v1c4",
        "name": "train",
        "imageName": "openpod/base:1",
        "gpuTypeId": "NVIDIA GeForce RTX 4090",
        "gpuCount": 1,
        "ports": ["22/tcp", "8888/http"],
        "env": {},
        "dockerStartCmd": [],
        "desiredStatus": "RUNNING",
        "status": "RUNNING",
        "statusReason": None,
        "nodeId": "node_1",
        "publicIp": "127.0.0.1",
        "portMappings": {"22": 40123, "8888": 40124},
        "readyPorts": [22, 8888],
        "sshAvailable": True,
        "ssh": {
            "command": "ssh root@127.0.0.1 -p 40123",
            "host": "127.0.0.1",
            "port": 40123,
            "user": "root",
            "hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKey",
        },
        "costPerSecond": "191666666666666",
        "createdAt": "2025-01-01T00:00:00Z",
        "lastStartedAt": "2025-01-01T00:00:05Z",
    }
    pod.update(overrides)
    return pod


@pytest.fixture
def make_pod() -> Callable[..., dict[str, Any]]:
    """Build a pod as the API returns it: ``make_pod(status="STARTING", ssh=None)``."""
    return _pod
