"""The gateway's fast path with the real OpenSSH client and real pods: `openpod ssh proxy` as a
ProxyCommand (the socket handed to ssh by ProxyUseFdpass, or relayed through stdio), scp
both ways, the same refusals as the SSH gateway, and the handshake's own guards (a stale or
forged signature, an unknown key, garbage) on a raw socket."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from openpod.adapters.gateway.fastpath import FastPath, _Spliced
from openpod.adapters.runtimes.base import PodLaunch, PodObservation, PodPhase, PortRequest
from openpod.adapters.runtimes.local import LocalRuntime
from openpod.domain import relay
from tests.gateway.fakes import FakeDirectory, GatewayThread, Keys
from tests.gateway.test_gateway_openssh import wait_for
from tests.support.net import wait_until


@dataclass
class World:
    runtime: LocalRuntime
    path: FastPath
    home: Path
    pod: PodObservation
    keys: Keys
    directory: FakeDirectory

    def ssh(
        self, key: Path, *args: str, tool: str = "ssh", fdpass: bool = True, port: int = 0
    ) -> subprocess.CompletedProcess[str]:
        relay_port = port or self.path.port
        proxy = f"{sys.executable} -m openpod ssh proxy %h --relay 127.0.0.1:{relay_port} -i {key}"
        argv = [
            tool, "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.home / 'known_hosts'}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", f"ProxyCommand={proxy}", "-o", f"ProxyUseFdpass={'yes' if fdpass else 'no'}",
            *args,
        ]  # fmt: skip
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[World]:
    home = tmp_path_factory.mktemp("fastpath")
    runtime = LocalRuntime(home / "root")
    directory = FakeDirectory(runtime=runtime)
    directory.add_account("acc_alice", keys.public(keys.alice))
    directory.add_account("acc_bob", keys.public(keys.bob))
    directory.owners.update(fastpod1="acc_alice", fastpod2="acc_alice")
    ports = (PortRequest(22, "tcp"),)
    alice = (keys.public(keys.alice),)
    thread = GatewayThread(FastPath(directory, port=0))
    try:
        runtime.start(PodLaunch("fastpod1", 1, "local", (), {}, ports, (), alice))
        runtime.start(PodLaunch("fastpod2", 1, "local", (), {}, ports, (), alice))
        pod = wait_for(runtime, "fastpod1", 22)
        wait_for(runtime, "fastpod2", 22)
        assert runtime.stop("fastpod2", 5).phase is PodPhase.STOPPED
        path = thread.start().gateway
        (home / "known_hosts").write_text(f"fastpod1 {pod.ssh_host_key}\n")
        yield World(runtime, path, home, pod, keys, directory)
    finally:
        thread.stop()
        for pod_id in ("fastpod1", "fastpod2"):
            runtime.remove(pod_id, 1)


@pytest.mark.parametrize("fdpass", [True, False])
def test_ssh_through_the_fast_path(world: World, fdpass: bool) -> None:
    done = world.ssh(world.keys.alice, "root@fastpod1", "hostname; pwd", fdpass=fdpass)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "fastpod1\n/workspace\n"


@pytest.mark.parametrize("splice", [True, False])
def test_scp_up_and_down(world: World, tmp_path: Path, splice: bool) -> None:
    """Linux joins the two sockets in the kernel (splice); elsewhere asyncio relays."""
    thread = GatewayThread(FastPath(world.directory, port=0, splice=splice))
    port = thread.start().gateway.port
    try:
        up = tmp_path / "up.bin"
        up.write_bytes(os.urandom(8 * 1024 * 1024 + 5))
        done = world.ssh(world.keys.alice, str(up), "root@fastpod1:up.bin", tool="scp", port=port)
        assert done.returncode == 0, done.stderr
        workspace = world.runtime.root_dir / "pods" / "fastpod1" / "workspace"
        digest = hashlib.sha256(up.read_bytes()).hexdigest()
        assert hashlib.sha256((workspace / "up.bin").read_bytes()).hexdigest() == digest
        down = tmp_path / "down.bin"
        done = world.ssh(world.keys.alice, "root@fastpod1:up.bin", str(down), tool="scp", port=port)
        assert done.returncode == 0, done.stderr
        assert hashlib.sha256(down.read_bytes()).hexdigest() == digest
        # Both sessions over, both ways: the gateway holds nothing of them (an asyncio pair
        # whose two ends had both sent EOF stayed open, counted against max_connections).
        path = thread.gateway
        wait_until(lambda: not path.clients and not path.spliced, 10, "relays still open")
    finally:
        thread.stop()


def test_a_spliced_pair_sends_small_messages_at_once() -> None:
    """Both of the gateway's sockets go without Nagle (an SFTP download's small read requests
    waited behind it), bytes pass both ways, and an end's close ends the pair."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname(), timeout=10)
        client_side, _ = server.accept()
        pod = socket.create_connection(server.getsockname(), timeout=10)
        pod_side, _ = server.accept()
    live: set[_Spliced] = set()
    pair = _Spliced(client_side, pod_side, live)
    live.add(pair)
    with client, pod:
        for sock in pair.sockets:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        client.sendall(b"read 1")
        assert pod.recv(16) == b"read 1"
        pod.sendall(b"data 1")
        assert client.recv(16) == b"data 1"
        client.shutdown(socket.SHUT_WR)
        assert pod.recv(16) == b""  # the client's EOF, passed on
        pod.sendall(b"last")  # the other direction still flows (half-close)
        assert client.recv(16) == b"last"
    wait_until(lambda: not live, 10, "the pair to end once both ends closed")
    assert pair.sockets[0].fileno() == -1 and pair.sockets[1].fileno() == -1


@pytest.mark.parametrize(
    ("who", "pod", "said"),
    [
        ("bob", "fastpod1", "no such pod fastpod1"),  # another account's pod: as if missing
        ("alice", "nopod", "no such pod nopod"),
        ("alice", "fastpod2", "pod fastpod2 is not running (STOPPED)"),
        ("stranger", "fastpod1", "none of your SSH keys is registered with openpod"),
    ],
)
def test_refusals_are_clear(world: World, who: str, pod: str, said: str) -> None:
    done = world.ssh(getattr(world.keys, who), f"root@{pod}", "true")
    assert done.returncode == 255
    assert f"openpod: {said}" in done.stderr


def _handshake(world: World) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", world.path.port), timeout=10)
    line = sock.makefile("rb").readline()
    return sock, relay.parse_greeting(line)


def test_a_signature_is_good_for_its_own_nonce_and_pod_only(world: World) -> None:
    key = asyncssh.load_keypairs([str(world.keys.alice)])[0]
    public = world.keys.public(world.keys.alice)
    first, nonce = _handshake(world)
    stale = key.sign(relay.signed_payload(nonce, "fastpod1"))
    wrong_pod = key.sign(relay.signed_payload(nonce, "fastpod2"))
    # Replayed on another connection (another nonce), or given for another pod: not the key's.
    second, _ = _handshake(world)
    with second, second.makefile("rb") as answers:
        second.sendall(relay.hello("fastpod1", public, stale))
        assert relay.answer(answers.readline())[0] == "NO"
        second.sendall(relay.hello("fastpod1", public, wrong_pod))
        assert relay.answer(answers.readline())[0] == "NO"
    with first, first.makefile("rb") as answers:
        first.sendall(relay.hello("fastpod1", public, stale))
        word, _ = relay.answer(answers.readline())
        assert word == "OK"
        assert answers.readline().startswith(b"SSH-2.0-")  # the pod's sshd speaks


def test_garbage_and_too_many_tries_are_refused(world: World) -> None:
    sock, _ = _handshake(world)
    with sock, sock.makefile("rb") as answers:
        sock.sendall(b"not json\n")
        assert relay.answer(answers.readline()) == ("ERR", "the hello is not {pod, key, sig} JSON")
        assert answers.readline() == b""  # closed
    key = asyncssh.load_keypairs([str(world.keys.stranger)])[0]
    public = world.keys.public(world.keys.stranger)
    sock, nonce = _handshake(world)
    signature = key.sign(relay.signed_payload(nonce, "fastpod1"))
    with sock, sock.makefile("rb") as answers:
        words = []
        for _ in range(relay.MAX_TRIES):
            sock.sendall(relay.hello("fastpod1", public, signature))
            words.append(relay.answer(answers.readline())[0])
        assert words == ["NO"] * (relay.MAX_TRIES - 1) + ["ERR"]
