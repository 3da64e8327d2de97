"""`openpod ssh proxy` on its own (the fast path end to end, with ssh and a pod, is in
tests/gateway/test_gateway_fastpath.py): its arguments, what it imports (ssh starts it for
every connection), and its failures, each a clear message with no socket left open."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from openpod.cli import ssh_proxy
from openpod.cli.ssh_proxy import ProxyError, open_relay, parse_args
from openpod.domain import relay
from tests.cli.test_ssh_keys import keygen
from tests.support.net import free_port
from tests.support.ssh import ssh_agent


@pytest.mark.parametrize(
    ("argv", "parsed"),
    [
        (["pod1", "--relay", "gw:2223"], ("pod1", "gw:2223", [])),
        (["--relay=gw:2223", "pod1.openpod"], ("pod1.openpod", "gw:2223", [])),
        (
            ["pod1", "-i", "/k/a", "-i/k/b", "--relay", "[::1]:2223", "--identity", "/k/c"],
            ("pod1", "[::1]:2223", ["/k/a", "/k/b", "/k/c"]),
        ),
        (["--identity=/k/a", "pod1", "--relay", "gw:1"], ("pod1", "gw:1", ["/k/a"])),
    ],
)
def test_arguments(argv: list[str], parsed: tuple[str, str, list[str]]) -> None:
    assert parse_args(argv) == parsed


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--relay", "gw:1"], "name one pod"),
        (["a", "b", "--relay", "gw:1"], "one pod, not 2"),
        (["pod1"], "--relay HOST:PORT is required, once"),
        (["pod1", "--relay", "gw:1", "--relay", "gw:2"], "--relay HOST:PORT is required, once"),
        (["pod1", "--relay"], "--relay needs a value"),
        (["pod1", "--relay", "gw:1", "-i"], "-i needs a value"),
        (["pod1", "--relay", "gw:1", "-x"], "unknown option -x"),
    ],
)
def test_bad_arguments_exit_2_saying_what_is_wrong(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(said)}$"):
        parse_args(argv)
    assert ssh_proxy.main(argv) == 2
    assert capsys.readouterr().err == f"openpod ssh proxy: {said}\n{ssh_proxy.USAGE}\n"


def _imported_by(code: str, env: dict[str, str] | None = None) -> dict[str, object]:
    """What `code` (run in a fresh interpreter) leaves in {"new": modules it imported, ...}."""
    script = (
        "import json, sys\nbefore = set(sys.modules)\n"
        f"{code}\n"
        "print(json.dumps({'new': sorted(set(sys.modules) - before), 'out': out}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


HEAVY = {"asyncssh", "cryptography", "dataclasses", "typing", "argparse", "pathlib", "typer"}


def test_the_proxy_imports_nothing_heavy() -> None:
    """ssh runs the proxy for every connection: none of these (~45 ms together) at start."""
    new = _imported_by("import openpod.cli.ssh_proxy\nout = None")["new"]
    assert isinstance(new, list)
    assert "openpod.cli.ssh_proxy" in new
    assert not {name.split(".")[0] for name in new} & HEAVY


def test_an_agents_keys_need_no_cryptography(tmp_path: Path) -> None:
    """With an agent and no key files, `cryptography` (~25 ms) is never imported."""
    key = keygen(tmp_path / "ed", "ed25519", [])
    with ssh_agent(tmp_path / "agent.sock", key) as env:
        env = {**env, "HOME": str(tmp_path / "nohome")}
        code = (
            "from openpod.cli import ssh_keys\n"
            "out = [s.public_line for s in ssh_keys.signers([])]\n"
            "out.append(len(ssh_keys.signers([])[0].sign(b'data')))"
        )
        result = _imported_by(code, env)
    public = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    assert result["out"] == [public, 4 + 11 + 4 + 64]  # string "ssh-ed25519", string sig
    assert isinstance(result["new"], list)
    assert not [name for name in result["new"] if name.startswith("cryptography")]


class FakeGateway:
    """A listener that sends `greeting` to each connection it takes (or, with None, closes
    it at once) and keeps them."""

    def __init__(self, greeting: bytes | None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.greeting = greeting
        self.peers: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                peer, _ = self.listener.accept()
            except OSError:
                return
            self.peers.append(peer)
            if self.greeting is None:
                peer.close()
            else:
                peer.sendall(self.greeting)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        self.listener.close()
        self.thread.join(10)
        assert not self.thread.is_alive()
        for peer in self.peers:
            peer.close()

    def closed_by_client(self) -> bool:
        """The one connection made was closed by the proxy (EOF, nothing sent)."""
        (peer,) = self.peers
        peer.settimeout(10)
        return peer.recv(1) == b""


@pytest.fixture
def relay_greeting() -> Iterator[FakeGateway]:
    gateway = FakeGateway(relay.greeting(os.urandom(relay.NONCE_BYTES)))
    yield gateway
    gateway.close()


def test_an_unreachable_gateway_is_named(tmp_path: Path) -> None:
    key = keygen(tmp_path / "ed", "ed25519", [])
    port = free_port()  # nothing listens there
    with pytest.raises(
        ProxyError, match=rf"^cannot reach the gateway's fast path at 127\.0\.0\.1:{port}: "
    ):
        open_relay("127.0.0.1", port, "pod1", [key])


def test_no_key_closes_the_connection(tmp_path: Path, relay_greeting: FakeGateway) -> None:
    (tmp_path / "junk").write_text("not a key\n")
    with pytest.raises(
        ProxyError, match=r"^no SSH key to sign with: start ssh-agent, or pass -i KEY$"
    ):
        open_relay("127.0.0.1", relay_greeting.port, "pod1", [tmp_path / "junk"])
    assert relay_greeting.closed_by_client()


def test_something_else_than_a_relay_is_named(tmp_path: Path) -> None:
    key = keygen(tmp_path / "ed", "ed25519", [])
    gateway = FakeGateway(b"SSH-2.0-OpenSSH_9.2\r\n")
    try:
        with pytest.raises(ProxyError, match=r"^not an openpod relay \(it said b'SSH-2\.0-"):
            open_relay("127.0.0.1", gateway.port, "pod1", [key])
        assert gateway.closed_by_client()
    finally:
        gateway.close()


def test_a_gateway_that_closes_at_once_is_named(tmp_path: Path) -> None:
    key = keygen(tmp_path / "ed", "ed25519", [])
    gateway = FakeGateway(None)
    try:
        with pytest.raises(ProxyError, match=r"^the gateway closed the connection$"):
            open_relay("127.0.0.1", gateway.port, "pod1", [key])
    finally:
        gateway.close()
