"""The runtime conformance suite's fixtures: one `pods` harness per runtime.

Every runtime is driven the same way (the `Runtime` protocol) and looked at from outside the
same way: real OpenSSH into the pod on the port it reports, TCP to its other ports, the
meter's events at a fake control plane. The Docker runtime runs against a real dockerd the
fixtures start (tests/support/dockerd.py) with host networking: tests create no network.
The Kubernetes runtime runs against the in-process Kube API server (tests/support/kubeapi.py)
and a kubelet that runs its Pods on that same dockerd (tests/support/kubelet.py): each Pod in
a network namespace of its own, reached on a Pod IP of the node's loopback.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import openpod
from openpod.adapters.runtimes.base import (
    MeterLaunch,
    PodLaunch,
    PodObservation,
    PodPhase,
    PortRequest,
    ResourceLimits,
    Runtime,
)
from openpod.adapters.runtimes.docker import DockerRuntime
from openpod.adapters.runtimes.kubernetes import KubernetesConfig, KubernetesRuntime
from openpod.adapters.runtimes.local import LocalRuntime
from tests.support.dockerd import Dockerd
from tests.support.kubeapi import KubeApiServer
from tests.support.kubelet import Image, Kubelet
from tests.support.net import wait_until

RUNTIMES = ["local", "docker", "kubernetes"]
KUBE_TOKEN = "conformance-kube-api-token"  # the in-process API server's
METER_IMAGE = "openpod/meter:test"


def meter_image(pod_image: str) -> Image:
    """The meter image a cluster would pull: here the pod image (it has python3) with this
    checkout's openpod and the test environment's packages mounted."""
    source = Path(openpod.__file__).resolve().parent.parent
    site = Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    site /= "site-packages"
    mounts = ((str(source), "/opt/openpod/src"), (str(site), "/opt/openpod/site"))
    return Image(pod_image, {"PYTHONPATH": "/opt/openpod/src:/opt/openpod/site"}, mounts)


@pytest.fixture(scope="session")
def dockerd() -> Iterator[tuple[Dockerd, str]]:
    """A dockerd for the whole session, the pod image imported into it."""
    daemon = Dockerd()
    try:
        daemon.start()
        yield daemon, daemon.load_pod_image()
    finally:
        daemon.stop()


@dataclass
class Pods:
    """One runtime under test, and how a test reaches into its pods."""

    kind: str
    root: Path
    runtime: Runtime
    image: str
    key: Path
    make: Callable[[Path], Runtime]  # another instance on the same root (an agent restart)
    kube_api: KubeApiServer | None = None  # the cluster's API server (kubernetes)

    def launch(
        self,
        pod_id: str = "pod1",
        generation: int = 1,
        command: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        ports: tuple[int, ...] = (22,),
        gpus: tuple[int, ...] = (),
        meter: MeterLaunch | None = None,
        limits: ResourceLimits = ResourceLimits(),
    ) -> PodLaunch:
        public = self.key.with_suffix(".pub").read_text().strip()
        return PodLaunch(
            pod_id=pod_id,
            generation=generation,
            image=self.image,
            command=command,
            env=env or {},
            ports=tuple(PortRequest(p, "tcp") for p in ports),
            gpu_indices=gpus,
            public_keys=(public,),
            meter=meter,
            limits=limits,
        )

    def until(self, pod_id: str, *phases: PodPhase, timeout: float = 30) -> PodObservation:
        seen: list[PodObservation] = []

        def reached() -> bool:
            seen.append(self.runtime.observe(pod_id))
            return seen[-1].phase in phases

        wait_until(reached, timeout, f"pod {pod_id} {'/'.join(phases)} ({self.kind})", 0.05)
        return seen[-1]

    def running(self, pod_id: str = "pod1") -> PodObservation:
        """Observe until SSH answers (RUNNING and ssh_ready)."""
        seen: list[PodObservation] = []

        def ready() -> bool:
            seen.append(self.runtime.observe(pod_id))
            assert seen[-1].phase not in (PodPhase.EXITED, PodPhase.ABSENT), seen[-1]
            return seen[-1].phase is PodPhase.RUNNING and seen[-1].ssh_ready

        wait_until(ready, 30, f"pod {pod_id} running with SSH ({self.kind})", 0.05)
        return seen[-1]

    def address(self, obs: PodObservation) -> str:
        """Where the pod's ports are reached: its own address (a Pod IP) or this host."""
        return obs.address or "127.0.0.1"

    def ssh(self, obs: PodObservation, command: str, check: bool = True) -> str:
        """Run `command` in the pod through its own sshd, as its user, with the user's key."""
        argv = [
            "ssh", "-i", str(self.key), "-p", str(obs.port_mappings[22]),
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=10", f"{obs.ssh_user}@{self.address(obs)}", command,
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if check:
            assert done.returncode == 0, (done.returncode, done.stderr)
        return done.stdout


@pytest.fixture
def client_key(tmp_path: Path) -> Path:
    key = tmp_path / "client" / "id_ed25519"
    key.parent.mkdir()
    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "t", "-f", str(key)]
    subprocess.run(argv, check=True)
    return key


@pytest.fixture(params=RUNTIMES)
def pods(request: pytest.FixtureRequest, tmp_path: Path, client_key: Path) -> Iterator[Pods]:
    root = tmp_path / "root"
    made: list[Any] = []
    image = "local"
    context = contextlib.ExitStack()
    api: KubeApiServer | None = None
    if request.param in ("docker", "kubernetes"):
        daemon, image = request.getfixturevalue("dockerd")
    if request.param == "kubernetes":
        api = context.enter_context(KubeApiServer(KUBE_TOKEN))
        images = {METER_IMAGE: meter_image(image)}
        context.enter_context(Kubelet(api, daemon.host, image, images=images))
        config = KubernetesConfig(
            server=api.url, token=KUBE_TOKEN, namespace=api.namespace, meter_image=METER_IMAGE,
            grace_seconds=5, request_seconds=30.0, sync_seconds=10.0,
        )  # fmt: skip

    def make(path: Path) -> Any:
        if request.param == "local":
            made.append(LocalRuntime(path))
        elif request.param == "kubernetes":
            made.append(KubernetesRuntime(config))
        else:
            made.append(
                DockerRuntime(
                    path, daemon.host, network="host", gpu_driver=None, pull_missing=False
                )
            )
        return made[-1]

    with context:
        harness = Pods(request.param, root, make(root), image, client_key, make, api)
        try:
            yield harness
        finally:
            for obs in make(root).adopt():
                harness.runtime.remove(obs.pod_id, 0)
            for runtime in made:
                if isinstance(runtime, (DockerRuntime, KubernetesRuntime)):
                    runtime.close()
