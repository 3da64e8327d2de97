"""A whole platform whose node runs pods with Docker: the API, the node agent and a real
dockerd, as a provider with a Docker host would run it (`openpod node --runtime docker`)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openpod.adapters.runtimes._dockerapi import DockerApi
from openpod.adapters.runtimes.docker import LABEL_POD
from tests.e2e.conftest import Platform, running_platform
from tests.support.dockerd import Dockerd


@pytest.fixture
def docker_platform(dockerd: tuple[Dockerd, str]) -> Iterator[tuple[Platform, DockerApi, str]]:
    daemon, image = dockerd
    node_env = {
        "OPENPOD_NODE_RUNTIME": "docker",
        "OPENPOD_NODE_DOCKER_HOST": daemon.host,
        "OPENPOD_NODE_DOCKER_NETWORK": "host",
        "OPENPOD_NODE_DOCKER_GPU_DRIVER": "",  # no NVIDIA toolkit here
        "OPENPOD_NODE_DOCKER_PULL": "false",
        "OPENPOD_NODE_POD_LIMITS": json.dumps({"": {"pids": 500, "memory_gib": 1}}),
    }
    api = DockerApi(daemon.host)
    try:
        with running_platform(node_env=node_env) as platform:
            yield platform, api, image
    finally:
        api.close()


def ssh(pod: dict[str, Any], key: Path, command: str) -> str:
    argv = [
        "ssh", "-i", str(key), "-p", str(pod["portMappings"]["22"]),
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
        "root@127.0.0.1", command,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_docker_pod_through_the_api(docker_platform: tuple[Platform, DockerApi, str]) -> None:
    platform, api, image = docker_platform
    user = platform.user
    body = {
        "name": "in-docker",
        "imageName": image,
        "gpuTypeIds": ["NVIDIA GeForce RTX 4090"],
        "gpuCount": 2,
        "env": {"GREETING": "hello"},
    }
    pod = user.wait(user.ok("POST", "/pods", json=body)["id"])
    assert pod["status"] == "RUNNING"
    out = ssh(pod, platform.key_file, "echo $GREETING $CUDA_VISIBLE_DEVICES; echo k > /workspace/k")
    greeting, gpus = out.split()
    assert greeting == "hello"
    assert sorted(int(i) for i in gpus.split(",")) == sorted(pod["gpuIndices"])
    assert len(api.volumes({LABEL_POD: pod["id"]})) == 1
    containers = api.containers({LABEL_POD: pod["id"]})
    assert len(containers) == 1
    host = api.inspect(containers[0]["Id"])["HostConfig"]
    assert (host["PidsLimit"], host["Memory"]) == (500, 2 * 1024**3)  # per GPU, 2 GPUs

    user.ok("POST", f"/pods/{pod['id']}/stop")
    user.wait(pod["id"], "STOPPED")
    assert api.containers({LABEL_POD: pod["id"]}) == []
    user.ok("POST", f"/pods/{pod['id']}/start")
    resumed = user.wait(pod["id"])
    assert ssh(resumed, platform.key_file, "cat /workspace/k").strip() == "k"
    assert resumed["ssh"]["hostKey"] == pod["ssh"]["hostKey"]

    user.ok("DELETE", f"/pods/{pod['id']}")
    user.wait(pod["id"], "TERMINATED")
    assert api.containers({LABEL_POD: pod["id"]}) == []
    assert api.volumes({LABEL_POD: pod["id"]}) == []
