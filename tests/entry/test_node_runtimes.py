"""`openpod node` picks its runtime and per-GPU limits from its settings, and names bad ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from openpod.adapters.runtimes.docker import DockerRuntime
from openpod.adapters.runtimes.kubernetes import KubernetesRuntime
from openpod.adapters.runtimes.local import LocalRuntime
from openpod.entry.commands import _limit_table, _node_runtime
from openpod.node.reconcile import PerGpuLimits
from openpod.settings import NodeSettings


def test_each_runtime_from_its_settings(tmp_path: Path) -> None:
    local = _node_runtime(NodeSettings(data_dir=tmp_path / "l"))
    assert isinstance(local, LocalRuntime)
    docker = _node_runtime(
        NodeSettings(
            data_dir=tmp_path / "d",
            runtime="docker",
            docker_host="unix:///nonexistent.sock",
            docker_network="host",
            docker_gpu_driver="",
            docker_pull=False,
        )
    )
    assert isinstance(docker, DockerRuntime)
    assert (docker.network, docker.gpu_driver, docker.pull_missing) == ("host", "", False)
    docker.close()
    kube = _node_runtime(
        NodeSettings(
            runtime="kubernetes",
            kube_server="http://127.0.0.1:1",
            kube_token="t0ken",
            kube_namespace="gpu-pods",
        )
    )
    assert isinstance(kube, KubernetesRuntime)
    assert kube.config.namespace == "gpu-pods"
    assert "t0ken" not in repr(kube.config)
    kube.close()


def test_limits_per_gpu_type() -> None:
    table = _limit_table({"rtx4090": {"cpus": 8, "memory_gib": 1.5, "pids": 4096}})
    assert table == {"rtx4090": PerGpuLimits(cpus=8, memory_bytes=3 * 2**29, pids=4096)}
    with pytest.raises(typer.BadParameter, match="unknown cpu"):
        _limit_table({"": {"cpu": 2}})
    with pytest.raises(typer.BadParameter, match="must be above 0"):
        _limit_table({"": {"pids": 0}})


def test_a_kubernetes_node_without_a_cluster_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "OPENPOD_NODE_RUNTIME": "kubernetes", "OPENPOD_NODE_TOKEN": "x"}
    argv = [sys.executable, "-m", "openpod", "node", "--gpus", "NVIDIA GeForce RTX 4090:1",
            "--data-dir", str(tmp_path)]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "set kubeconfig, service_account or server" in done.stderr
