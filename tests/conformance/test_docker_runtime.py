"""What only the Docker runtime has: its create request, and its refusals by a real dockerd.

The request is checked as data (bridge networking and NVIDIA device requests cannot run
here: tests create no network and there is no GPU); the refusals come from the dockerd the
conformance fixtures start, and each must leave nothing behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from openpod.adapters.runtimes._dockerapi import NotFound
from openpod.adapters.runtimes._podfiles import PodPaths
from openpod.adapters.runtimes.base import (
    PodLaunch,
    PodPhase,
    PodStartError,
    PortRequest,
    ResourceLimits,
)
from openpod.adapters.runtimes.docker import (
    LABEL_OWNER,
    DockerRuntime,
    container_body,
)
from tests.support.dockerd import Dockerd

IMAGE_CONFIG = {"Config": {"Entrypoint": ["/init"], "Cmd": ["serve", "--port", "8888"]}}


def launch(**changes: Any) -> PodLaunch:
    values: dict[str, Any] = {
        "pod_id": "p1",
        "generation": 3,
        "image": "example/app:1",
        "command": (),
        "env": {"USER_VAR": "x"},
        "ports": (PortRequest(22, "tcp"), PortRequest(8888, "http")),
        "gpu_indices": (1, 3),
        "public_keys": ("ssh-ed25519 AAAA k",),
        "limits": ResourceLimits(cpus=1.5, memory_bytes=2 << 30, pids=512),
    }
    values.update(changes)
    return PodLaunch(**values)


def body_of(tmp_path: Path, network: str, **changes: Any) -> dict[str, Any]:
    runtime = DockerRuntime(tmp_path, "unix:///nonexistent.sock", "127.0.0.1", network=network)
    try:
        ports = {22: 20022, 8888: 20888}
        labels = {LABEL_OWNER: runtime.owner}
        paths = PodPaths.of(tmp_path, "p1")
        return container_body(runtime, launch(**changes), IMAGE_CONFIG, ports, paths, labels)
    finally:
        runtime.close()


def test_the_create_request_in_production(tmp_path: Path) -> None:
    body = body_of(tmp_path, "bridge")
    host = body["HostConfig"]
    # The image's own entrypoint + cmd, wrapped by the boot script (bound read-only).
    assert body["Entrypoint"] == ["/bin/sh", "/run/openpod/boot.sh"]
    assert body["Cmd"] == ["/init", "serve", "--port", "8888"]
    boot = [m for m in host["Mounts"] if m["Target"] == "/run/openpod/boot.sh"]
    assert boot and boot[0]["ReadOnly"] is True
    assert {"Type": "volume", "Source": f"openpod-{body['Labels'][LABEL_OWNER]}-p1-workspace",
            "Target": "/workspace"} in host["Mounts"]  # fmt: skip
    # Bridge: container ports as they are, published on the bind address's host ports.
    assert host["NetworkMode"] == "bridge"
    assert host["PortBindings"] == {
        "22/tcp": [{"HostIp": "127.0.0.1", "HostPort": "20022"}],
        "8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": "20888"}],
    }
    env = dict(item.split("=", 1) for item in body["Env"])
    assert env["OPENPOD_SSH_PORT"] == "22"
    assert env["OPENPOD_TCP_PORT_8888"] == "8888"
    assert "OPENPOD_SSH_LISTEN" not in env
    assert env["USER_VAR"] == "x"
    assert not {"PATH", "HOME", "LANG"} & set(env)  # the image's own stand
    # The pod's own GPUs, no others; limits as asked.
    assert host["DeviceRequests"] == [
        {"Driver": "nvidia", "DeviceIDs": ["1", "3"], "Capabilities": [["gpu"]]}
    ]
    assert env["CUDA_VISIBLE_DEVICES"] == "1,3"
    assert (host["NanoCpus"], host["Memory"], host["MemorySwap"], host["PidsLimit"]) == (
        1_500_000_000,
        2 << 30,
        2 << 30,
        512,
    )
    assert host["Init"] is True
    assert "PUBLIC_KEY" in env and "OPENPOD_METER_TOKEN" not in env


def test_the_create_request_with_host_networking_and_a_command(tmp_path: Path) -> None:
    body = body_of(
        tmp_path,
        "host",
        command=("python3", "app.py"),
        env={"PATH": "/opt/bin:/usr/bin"},
        gpu_indices=(),
        limits=ResourceLimits(),
    )
    host = body["HostConfig"]
    env = dict(item.split("=", 1) for item in body["Env"])
    assert body["Cmd"] == ["python3", "app.py"]
    assert "PortBindings" not in host and "Hostname" not in body
    assert (env["OPENPOD_SSH_PORT"], env["OPENPOD_TCP_PORT_8888"]) == ("20022", "20888")
    assert env["OPENPOD_SSH_LISTEN"] == "127.0.0.1"
    assert env["PATH"] == "/opt/bin:/usr/bin"  # the user's value wins
    assert not {"DeviceRequests", "NanoCpus", "Memory", "PidsLimit"} & set(host)


@pytest.fixture
def docker_runtime(dockerd: tuple[Dockerd, str], tmp_path: Path) -> Any:
    daemon, _image = dockerd
    runtime = DockerRuntime(
        tmp_path / "root", daemon.host, network="host", gpu_driver="nvidia", pull_missing=False
    )
    yield runtime
    for obs in runtime.adopt():
        runtime.remove(obs.pod_id, 0)
    runtime.close()


def nothing_left(runtime: DockerRuntime, pod_id: str) -> None:
    assert runtime.api.containers({LABEL_OWNER: runtime.owner}) == []
    assert runtime.observe(pod_id).phase is PodPhase.ABSENT
    with pytest.raises(NotFound):
        runtime.api.volume(runtime.volume_name(pod_id))
    assert not (runtime.root_dir / "pods" / pod_id).exists()


def test_an_image_the_node_lacks_is_named(docker_runtime: DockerRuntime) -> None:
    with pytest.raises(PodStartError, match=r"the image nope/missing:1 is not on this node"):
        docker_runtime.start(launch(image="nope/missing:1", gpu_indices=()))
    nothing_left(docker_runtime, "p1")


def test_gpus_without_the_nvidia_toolkit_fail_cleanly(
    docker_runtime: DockerRuntime, dockerd: tuple[Dockerd, str]
) -> None:
    """This host has no NVIDIA container toolkit: dockerd refuses the device request, and the
    start fails naming it, leaving no container."""
    with pytest.raises(PodStartError, match=r"pod p1 could not start: .*nvidia"):
        docker_runtime.start(launch(image=dockerd[1], limits=ResourceLimits()))
    nothing_left(docker_runtime, "p1")


def test_an_unreachable_dockerd_is_named(tmp_path: Path) -> None:
    runtime = DockerRuntime(tmp_path, "unix:///nonexistent/docker.sock", network="host")
    try:
        with pytest.raises(PodStartError, match=r"cannot reach dockerd at unix:///nonexistent"):
            runtime.start(launch(gpu_indices=()))
    finally:
        runtime.close()


def test_a_container_removed_behind_its_back_is_reported(
    docker_runtime: DockerRuntime, dockerd: tuple[Dockerd, str]
) -> None:
    docker_runtime.gpu_driver = None
    docker_runtime.start(launch(image=dockerd[1], gpu_indices=(), limits=ResourceLimits()))
    docker_runtime.api.remove_container(docker_runtime.container_name("p1"))
    obs = docker_runtime.observe("p1")
    assert obs.phase is PodPhase.EXITED
    assert obs.reason == "the pod's container is gone (removed outside openpod)"


def test_adoption_removes_containers_no_run_accounts_for(
    docker_runtime: DockerRuntime, dockerd: tuple[Dockerd, str]
) -> None:
    """A start cut short after the container was made but before the run was recorded leaves
    a container with no state: the next agent removes that container."""
    docker_runtime.gpu_driver = None
    docker_runtime.start(launch(image=dockerd[1], gpu_indices=(), limits=ResourceLimits()))
    (docker_runtime.root_dir / "pods" / "p1" / "run" / "state.json").unlink()
    assert docker_runtime.adopt() == []
    assert docker_runtime.api.containers({LABEL_OWNER: docker_runtime.owner}) == []
    # The workspace volume stays: it holds the user's files, and a start finds it again.
    assert docker_runtime.api.volume(docker_runtime.volume_name("p1"))["Name"]
