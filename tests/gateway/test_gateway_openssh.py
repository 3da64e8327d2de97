"""The gateway with real OpenSSH clients (ssh -J, scp, sftp, rsync, -L) and real pods.

Pods run on the local runtime with their own sshd; the gateway asks an in-memory Directory
whose pods' states come from that runtime. Every client trusts only the host keys this test
wrote (the gateway's and each pod's), reads no user config (`-F` our file) and never prompts.
All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from openpod.adapters.gateway.server import SSHGateway
from openpod.adapters.runtimes.base import PodLaunch, PodObservation, PodPhase, PortRequest
from openpod.adapters.runtimes.local import LocalRuntime
from tests.gateway.fakes import FakeDirectory, GatewayThread, Keys
from tests.support.net import free_port

# Needs root (local pods), the OpenSSH client and server, and rsync: `make test` installs them,
# and a missing one fails the tests rather than skipping them.

SERVE = (
    "echo hello from the pod > hello.txt;"
    " exec python3 -m http.server -b 127.0.0.1 $OPENPOD_TCP_PORT_8000"
)


@dataclass
class World:
    runtime: LocalRuntime
    gateway: SSHGateway
    home: Path
    pod: PodObservation  # alicepod1, running, serving HTTP on its port 8000
    configs: dict[str, Path]  # ssh config per user: alice, bob, stranger

    def ssh(self, user: str, *args: str, tool: str = "ssh") -> subprocess.CompletedProcess[str]:
        argv = [tool, "-F", str(self.configs[user]), *args]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False
        )

    @property
    def jump(self) -> str:
        return f"openpod@127.0.0.1:{self.gateway.port}"

    def workspace(self, pod_id: str = "alicepod1") -> Path:
        return self.runtime.root_dir / "pods" / pod_id / "workspace"


def wait_for(runtime: LocalRuntime, pod_id: str, ready_port: int) -> PodObservation:
    deadline = time.monotonic() + 15
    while True:
        obs = runtime.observe(pod_id)
        if obs.phase is PodPhase.RUNNING and ready_port in obs.ready_ports:
            return obs
        assert obs.phase in (PodPhase.STARTING, PodPhase.RUNNING), obs
        assert time.monotonic() < deadline, f"pod {pod_id} not ready: {obs}"
        time.sleep(0.02)


def write_config(home: Path, name: str, key: Path, gateway_port: int) -> Path:
    """An ssh config like a user's: the pods behind `ProxyJump gw`, our keys pinned."""
    config = home / f"ssh_config_{name}"
    config.write_text(
        f"Host gw\n  HostName 127.0.0.1\n  Port {gateway_port}\n  User openpod\n"
        "Host alicepod1 alicepod2\n  ProxyJump gw\n  User root\n"
        f"Host *\n  IdentityFile {key}\n  IdentitiesOnly yes\n  BatchMode yes\n"
        f"  StrictHostKeyChecking yes\n  UserKnownHostsFile {home / 'known_hosts'}\n"
        "  GlobalKnownHostsFile /dev/null\n  ConnectTimeout 5\n"
    )
    return config


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[World]:
    home = tmp_path_factory.mktemp("gateway")
    runtime = LocalRuntime(home / "root")
    directory = FakeDirectory(runtime=runtime)
    directory.add_account("acc_alice", keys.public(keys.alice))
    directory.add_account("acc_bob", keys.public(keys.bob))
    directory.owners.update(alicepod1="acc_alice", alicepod2="acc_alice")
    ports = (PortRequest(22, "tcp"), PortRequest(8000, "tcp"))
    alice = (keys.public(keys.alice),)
    thread = GatewayThread(SSHGateway(directory, home / "host_key", port=0))
    try:
        runtime.start(PodLaunch("alicepod1", 1, "local", ("sh", "-c", SERVE), {}, ports, (), alice))
        runtime.start(PodLaunch("alicepod2", 1, "local", (), {}, ports[:1], (), alice))
        pod = wait_for(runtime, "alicepod1", 8000)
        stopped = wait_for(runtime, "alicepod2", 22)
        assert runtime.stop("alicepod2", 5).phase is PodPhase.STOPPED
        gateway = thread.start().gateway
        (home / "known_hosts").write_text(
            f"[127.0.0.1]:{gateway.port} {gateway.host_public_key}\n"
            f"alicepod1 {pod.ssh_host_key}\nalicepod2 {stopped.ssh_host_key}\n"
            f"alicepod1.openpod {pod.ssh_host_key}\n"
        )
        configs = {
            name: write_config(home, name, getattr(keys, name), gateway.port)
            for name in ("alice", "bob", "stranger")
        }
        yield World(runtime, gateway, home, pod, configs)
    finally:
        thread.stop()
        for pod_id in ("alicepod1", "alicepod2"):
            runtime.remove(pod_id, 1)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_ssh_dash_j_runs_a_command_in_the_pod(world: World) -> None:
    user = world.pod.ssh_user
    done = world.ssh("alice", "-J", world.jump, f"{user}@alicepod1", "hostname; pwd; cat hello.txt")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "alicepod1\n/workspace\nhello from the pod\n"


def test_proxyjump_config_block_works_the_same(world: World) -> None:
    done = world.ssh("alice", "alicepod1", "echo $((6 * 7))")
    assert (done.returncode, done.stdout) == (0, "42\n"), done.stderr


def test_the_openpod_ssh_config_alias_reaches_the_pod(world: World) -> None:
    """`openpod ssh config` writes `Host *.openpod` with a ProxyJump and no HostName."""
    done = world.ssh("alice", "-J", world.jump, "root@alicepod1.openpod", "hostname")
    assert (done.returncode, done.stdout) == (0, "alicepod1\n"), done.stderr


@pytest.mark.parametrize("protocol", ["sftp", "scp"])
def test_scp_up_and_down(world: World, tmp_path: Path, protocol: str) -> None:
    """scp in both of its protocols: SFTP (OpenSSH's default now) and the old one (-O)."""
    up = tmp_path / "up.bin"
    up.write_bytes(os.urandom(4 * 1024 * 1024 + 17))
    flag = ["-O"] if protocol == "scp" else []
    done = world.ssh("alice", *flag, str(up), f"alicepod1:up-{protocol}.bin", tool="scp")
    assert done.returncode == 0, done.stderr
    assert sha256(world.workspace() / f"up-{protocol}.bin") == sha256(up)
    down = tmp_path / "down.bin"
    done = world.ssh("alice", *flag, f"alicepod1:up-{protocol}.bin", str(down), tool="scp")
    assert done.returncode == 0, done.stderr
    assert sha256(down) == sha256(up)


def test_sftp_batch_put_and_get(world: World, tmp_path: Path) -> None:
    local = tmp_path / "local.bin"
    local.write_bytes(os.urandom(3 * 1024 * 1024))
    batch = tmp_path / "batch"
    batch.write_text(
        f"mkdir sftpdir\nput {local} sftpdir/one.bin\nget sftpdir/one.bin {tmp_path}/back.bin\n"
    )
    done = world.ssh("alice", "-b", str(batch), "alicepod1", tool="sftp")
    assert done.returncode == 0, done.stderr
    assert sha256(world.workspace() / "sftpdir" / "one.bin") == sha256(local)
    assert sha256(tmp_path / "back.bin") == sha256(local)


def test_rsync_over_the_jump(world: World, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("a\n")
    (tree / "sub" / "b.bin").write_bytes(os.urandom(1024 * 1024))
    shell = f"ssh -F {world.configs['alice']} -J {world.jump}"
    argv = ["rsync", "-a", "-e", shell, f"{tree}/", "root@alicepod1:synced/"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    synced = world.workspace() / "synced"
    assert (synced / "a.txt").read_text() == "a\n"
    assert sha256(synced / "sub" / "b.bin") == sha256(tree / "sub" / "b.bin")


def test_local_forward_through_the_jump_to_a_port_in_the_pod(world: World) -> None:
    local, pod_port = free_port(), world.pod.port_mappings[8000]
    forward = f"{local}:127.0.0.1:{pod_port}"
    argv = ["ssh", "-F", str(world.configs["alice"]), "-N", "-o", "ExitOnForwardFailure=yes"]
    tunnel = subprocess.Popen(
        [*argv, "-L", forward, "alicepod1"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert tunnel.poll() is None, tunnel.communicate()[1]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{local}/hello.txt", timeout=2) as r:
                    assert r.read() == b"hello from the pod\n"
                    break
            except OSError:
                assert time.monotonic() < deadline, "the forwarded port never answered"
                time.sleep(0.05)
    finally:
        tunnel.terminate()
        tunnel.communicate(timeout=10)


def test_another_accounts_pod_looks_missing(world: World) -> None:
    theirs = world.ssh("bob", "-J", world.jump, "root@alicepod1", "true")
    missing = world.ssh("alice", "-J", world.jump, "root@nopod42", "true")
    assert theirs.returncode == missing.returncode == 255
    assert "administratively prohibited: no such pod alicepod1" in theirs.stderr
    assert "administratively prohibited: no such pod nopod42" in missing.stderr


def test_a_stopped_pod_is_refused(world: World) -> None:
    done = world.ssh("alice", "alicepod2", "true")
    assert done.returncode == 255
    assert "administratively prohibited: pod alicepod2 is not running (STOPPED)" in done.stderr


def test_unknown_key_is_denied(world: World) -> None:
    done = world.ssh("stranger", "-J", world.jump, "root@alicepod1", "true")
    assert done.returncode == 255
    assert "openpod@127.0.0.1: Permission denied (publickey)" in done.stderr


def test_wrong_gateway_user_is_told_the_right_one(world: World) -> None:
    jump = f"root@127.0.0.1:{world.gateway.port}"
    done = world.ssh("alice", "-J", jump, "root@alicepod1", "true")
    assert done.returncode == 255
    assert "log in as openpod, not 'root'" in done.stderr
    assert "Permission denied (publickey)" in done.stderr


def test_only_pod_ids_and_port_22_are_reachable(world: World) -> None:
    other_port = world.ssh("alice", "-J", world.jump, "-p", "8000", "root@alicepod1", "true")
    assert "the gateway connects to port 22 (the pod's SSH) only, not 8000" in other_port.stderr
    not_a_pod = world.ssh("alice", "-J", world.jump, "root@127.0.0.1", "true")
    assert "'127.0.0.1' is not a pod id" in not_a_pod.stderr
    assert other_port.returncode == not_a_pod.returncode == 255


@pytest.mark.parametrize("command", [[], ["ls", "/"]])
def test_direct_login_prints_how_to_use_the_gateway(world: World, command: list[str]) -> None:
    done = world.ssh("alice", "-p", str(world.gateway.port), "openpod@127.0.0.1", *command)
    assert done.returncode == 1
    assert "this is the openpod SSH gateway" in done.stderr
    assert f"use ssh -J {world.jump} root@POD_ID" in done.stderr
    assert done.stdout == ""


def test_remote_forwarding_is_refused(world: World) -> None:
    argv = ["-p", str(world.gateway.port), "-N", "-o", "ExitOnForwardFailure=yes"]
    done = world.ssh("alice", *argv, "-R", "0:127.0.0.1:9", "openpod@127.0.0.1")
    assert done.returncode == 255
    assert "remote port forwarding failed" in done.stderr
