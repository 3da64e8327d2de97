"""Fixtures: the in-process Kube API server, runtimes against it, and 'pods' on 127.x IPs."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from openpod.adapters.runtimes.base import (
    MeterLaunch,
    PodLaunch,
    PodObservation,
    PortRequest,
    ResourceLimits,
)
from openpod.adapters.runtimes.kubernetes import KubernetesConfig, KubernetesRuntime
from tests.support.kubeapi import KubeApiServer

API_TOKEN = "kube-api-token-for-tests"
METER_TOKEN = "meter-token-for-tests"


@pytest.fixture
def api() -> Iterator[KubeApiServer]:
    with KubeApiServer(API_TOKEN) as server:
        yield server


def config_for(api: KubeApiServer, **changes: object) -> KubernetesConfig:
    values: dict[str, object] = {
        "server": api.url,
        "token": API_TOKEN,
        "namespace": api.namespace,
        "request_seconds": 5.0,
        "sync_seconds": 5.0,
        "probe_timeout": 0.5,
    }
    values.update(changes)
    return KubernetesConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
def make_runtime(api: KubeApiServer) -> Iterator[Callable[..., KubernetesRuntime]]:
    made: list[KubernetesRuntime] = []

    def make(**changes: object) -> KubernetesRuntime:
        runtime = KubernetesRuntime(config_for(api, **changes))
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.close()


@pytest.fixture
def runtime(make_runtime: Callable[..., KubernetesRuntime]) -> KubernetesRuntime:
    return make_runtime()


def launch_of(pod_id: str, generation: int = 1, **changes: object) -> PodLaunch:
    values: dict[str, object] = {
        "pod_id": pod_id,
        "generation": generation,
        "image": "debian:12",
        "command": ("python3", "-m", "http.server", "8888"),
        "env": {"GREETING": "hello"},
        "ports": (PortRequest(22, "tcp"), PortRequest(8888, "http")),
        "gpu_indices": (0,),
        "public_keys": ("ssh-ed25519 AAAAC3Nza test@host",),
        "meter": MeterLaunch("ws://127.0.0.1:9/meter/connect", METER_TOKEN, 5.0),
        "gpu_type": "rtx4090",
        "limits": ResourceLimits(cpus=2.0, memory_bytes=2**30, pids=512),
    }
    values.update(changes)
    return PodLaunch(**values)  # type: ignore[arg-type]


def pod_ip() -> str:
    """A loopback address of its own for one test 'pod' (all of 127/8 is local)."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 254)}.{random.randint(1, 254)}"


class Listeners:
    """TCP servers on a pod IP: port 22 greets like sshd, others just accept."""

    def __init__(self) -> None:
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def serve(self, ip: str, port: int) -> None:
        sock = socket.create_server((ip, port))
        sock.settimeout(0.1)
        self._socks.append(sock)
        thread = threading.Thread(target=self._accept, args=(sock, port == 22), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self, sock: socket.socket, banner: bool) -> None:
        while sock.fileno() != -1:
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                if banner:
                    conn.sendall(b"SSH-2.0-OpenSSH_9.2 test\r\n")

    def close(self) -> None:
        for sock in self._socks:
            sock.close()
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def listeners() -> Iterator[Listeners]:
    found = Listeners()
    yield found
    found.close()


def observe_until(
    runtime: KubernetesRuntime, pod_id: str, check: Callable[[PodObservation], bool], what: str
) -> PodObservation:
    """Poll observe() until `check` holds; fail with the last observation after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        obs = runtime.observe(pod_id)
        if check(obs):
            return obs
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last seen: {obs}")
        time.sleep(0.02)
