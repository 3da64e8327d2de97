"""A running platform for end-to-end tests: control plane + one local node + a user with a key."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.platform import (
    Api,
    ControlPlane,
    NodeAgentProc,
    remove_pods,
    signup,
    wait_node_online,
)

GPUS = "NVIDIA GeForce RTX 4090:4,NVIDIA H100 80GB HBM3:2"


@dataclass
class Platform:
    root: Path
    plane: ControlPlane
    node: NodeAgentProc
    node_id: str
    provider: Api
    user: Api
    key_file: Path


@contextlib.contextmanager
def running_platform(
    plane_env: dict[str, str] | None = None, node_env: dict[str, str] | None = None
) -> Iterator[Platform]:
    """Control plane (with `plane_env`) + one node (local runtime unless `node_env` says
    otherwise) + a user with an SSH key."""
    root = Path(tempfile.mkdtemp(prefix="openpod-e2e-"))
    plane = ControlPlane(root / "plane", env=plane_env)
    (root / "plane").mkdir()
    node: NodeAgentProc | None = None
    clients: list[Api] = []
    try:
        plane.start()
        provider = signup(plane.url, "provider")
        clients.append(provider)
        provider.ok("POST", "/providers", json={"payoutWallet": "0x" + "11" * 20})
        created = provider.ok("POST", "/nodes", json={"name": "local"})
        node = NodeAgentProc(plane, created["token"], root / "node", GPUS, node_env)
        node.start()
        wait_node_online(provider, created["id"])
        user = signup(plane.url, "user")
        clients.append(user)
        key_file = root / "id_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_file)], check=True
        )
        user.ok("POST", "/ssh-keys", json={"publicKey": key_file.with_suffix(".pub").read_text()})
        yield Platform(root, plane, node, created["id"], provider, user, key_file)
    finally:
        for client in clients:
            client.http.close()
        if node is not None:
            node.stop()
            remove_pods(root / "node")
        plane.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    with running_platform() as running:
        yield running
