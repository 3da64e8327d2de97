"""The pod's SSH host key, fetched by the runtime from the Pod IP with an SSH key exchange.

A real SSH server (asyncssh, an ed25519 host key of its own) listens on the 'pod's' 127.x
IP, port 22, where the runtime probes a Pod; the banner-only listeners of conftest stand in
for an sshd that greets but never completes a key exchange.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import asyncssh
import pytest

from openpod.adapters.runtimes import kubernetes
from openpod.adapters.runtimes.base import PodPhase
from openpod.adapters.runtimes.kubernetes import KubernetesRuntime
from tests.kubernetes.conftest import Listeners, launch_of, observe_until, pod_ip
from tests.support.kubeapi import KubeApiServer


class SshServer:
    """asyncssh's SSH server on ip:22 with a new ed25519 host key, on a loop of its own."""

    def __init__(self, ip: str) -> None:
        self.key = asyncssh.generate_private_key("ssh-ed25519")
        self.public_key = " ".join(self.key.export_public_key("openssh").decode().split()[:2])
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(ip), self._loop).result(5)

    async def _listen(self, ip: str) -> asyncssh.SSHAcceptor:
        return await asyncssh.create_server(self._connected, ip, 22, server_host_keys=[self.key])

    def _connected(self) -> asyncssh.SSHServer:
        self.connections += 1
        return asyncssh.SSHServer()

    async def _stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@pytest.fixture
def ssh_server() -> Iterator[Callable[[str], SshServer]]:
    made: list[SshServer] = []

    def make(ip: str) -> SshServer:
        server = SshServer(ip)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


@pytest.fixture
def fetches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hosts the runtime asked for a host key, one entry per key exchange tried."""
    asked: list[str] = []
    real = kubernetes._fetch_host_key

    async def counting(host: str, port: int, timeout: float) -> str | None:
        asked.append(host)
        return await real(host, port, timeout)

    monkeypatch.setattr(kubernetes, "_fetch_host_key", counting)
    return asked


def test_the_observation_carries_the_sshd_host_key_fetched_once_per_pod(
    api: KubeApiServer,
    runtime: KubernetesRuntime,
    ssh_server: Callable[[str], SshServer],
    fetches: list[str],
) -> None:
    runtime.start(launch_of("podkey111"))
    ip = pod_ip()
    server = ssh_server(ip)
    api.run_pod("openpod-podkey111-1", ip)
    obs = observe_until(runtime, "podkey111", lambda o: o.ssh_ready, "the SSH banner")
    assert obs.ssh_host_key == server.public_key
    assert obs.ssh_host_key.startswith("ssh-ed25519 AAAA") and len(obs.ssh_host_key.split()) == 2
    before = server.connections
    for _ in range(3):
        assert runtime.observe("podkey111").ssh_host_key == server.public_key
    assert fetches == [ip]  # one key exchange, not one per observe
    assert server.connections == before + 3  # each observe: the banner probe alone

    # A new Pod (the next generation, here on another IP with another key) is asked again.
    assert runtime.stop("podkey111", 1).phase is PodPhase.STOPPED
    runtime.start(launch_of("podkey111", generation=2))
    ip2 = pod_ip()
    server2 = ssh_server(ip2)
    api.run_pod("openpod-podkey111-2", ip2)
    obs = observe_until(runtime, "podkey111", lambda o: o.ssh_ready, "the new Pod's banner")
    assert obs.generation == 2 and obs.ssh_host_key == server2.public_key
    assert runtime.observe("podkey111").ssh_host_key == server2.public_key
    assert fetches == [ip, ip2]


def test_a_banner_without_a_key_exchange_leaves_the_key_unknown_and_is_retried(
    api: KubeApiServer,
    runtime: KubernetesRuntime,
    listeners: Listeners,
    ssh_server: Callable[[str], SshServer],
    fetches: list[str],
) -> None:
    runtime.start(launch_of("podkey222"))
    ip = pod_ip()
    listeners.serve(ip, 22)  # greets like sshd, then hangs up
    api.run_pod("openpod-podkey222-1", ip)
    obs = observe_until(runtime, "podkey222", lambda o: o.ssh_ready, "the SSH banner")
    assert obs.phase is PodPhase.RUNNING and obs.ssh_host_key is None
    assert obs.ready_ports == (22,)
    again = runtime.observe("podkey222")
    assert again.ssh_ready and again.ssh_host_key is None
    assert fetches == [ip, ip]  # tried on each observe while no key is known

    listeners.close()  # the real sshd takes over the Pod IP: a later observe gets its key
    server = ssh_server(ip)
    obs = observe_until(runtime, "podkey222", lambda o: o.ssh_host_key is not None, "the host key")
    assert obs.ssh_host_key == server.public_key and obs.ssh_ready


def test_no_host_key_without_pod_probes(
    api: KubeApiServer,
    make_runtime: Callable[..., KubernetesRuntime],
    ssh_server: Callable[[str], SshServer],
    fetches: list[str],
) -> None:
    runtime = make_runtime(probe_pods=False)
    runtime.start(launch_of("podkey333"))
    ip = pod_ip()
    server = ssh_server(ip)
    api.run_pod("openpod-podkey333-1", ip)
    obs = observe_until(runtime, "podkey333", lambda o: o.phase is PodPhase.RUNNING, "Ready")
    assert obs.ssh_ready and obs.ssh_host_key is None
    assert fetches == [] and server.connections == 0
