"""Direct access end to end: pod URLs through the real edge (HAProxy) and SSH through the
real gateway, both driven by the real control plane and node."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.net import wait_until
from tests.support.platform import (
    Api,
    ControlPlane,
    EdgeProc,
    GatewayProc,
    NodeAgentProc,
    remove_pods,
    signup,
    wait_node_online,
)
from tests.support.ssh import ssh_agent

# A workload that answers every request with what it received, as JSON.
ECHO = r"""
import http.server, json, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path, "headers": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["OPENPOD_TCP_PORT_8888"])), H).serve_forever()
"""


@dataclass
class Access:
    root: Path
    plane: ControlPlane
    edge: EdgeProc
    gateway: GatewayProc
    alice: Api
    bob: Api
    alice_key: Path
    bob_key: Path


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def access() -> Iterator[Access]:
    root = Path(tempfile.mkdtemp(prefix="openpod-access-"))
    plane_dir = root / "plane"
    plane_dir.mkdir()
    # The gateway serves its fast path too: `openpod ssh` and `openpod ssh config` take it,
    # plain `ssh -J` the gateway's SSH port; the test below uses both.
    edge, gateway = EdgeProc(plane_dir, idle_timeout=2.0), GatewayProc(plane_dir, fast=True)
    plane = ControlPlane(
        plane_dir,
        env={
            "OPENPOD_EDGE_STATE_DIR": str(edge.state_dir),
            "OPENPOD_PROXY_PORT": str(edge.port),
            "OPENPOD_GATEWAY_HOST": "127.0.0.1",
            "OPENPOD_GATEWAY_PORT": str(gateway.port),
            "OPENPOD_GATEWAY_HOST_KEY_FILE": f"{gateway.host_key}.pub",
            "OPENPOD_GATEWAY_FAST_PORT": str(gateway.fast_port),
        },
    )
    node: NodeAgentProc | None = None
    clients: list[Api] = []
    try:
        edge.start()
        gateway.start()
        plane.start()
        provider = signup(plane.url, "provider")
        clients.append(provider)
        provider.ok("POST", "/providers", json={"payoutWallet": "0x" + "33" * 20})
        created = provider.ok("POST", "/nodes", json={"name": "local"})
        node = NodeAgentProc(plane, created["token"], root / "node", "NVIDIA GeForce RTX 4090:4")
        node.start()
        wait_node_online(provider, created["id"])
        alice, bob = signup(plane.url, "alice"), signup(plane.url, "bob")
        clients += [alice, bob]
        keys = {}
        for name, api in (("alice", alice), ("bob", bob)):
            keys[name] = _keygen(root / f"{name}_key")
            api.ok("POST", "/ssh-keys", json={"publicKey": (root / f"{name}_key.pub").read_text()})
        yield Access(root, plane, edge, gateway, alice, bob, keys["alice"], keys["bob"])
    finally:
        for client in clients:
            client.http.close()
        if node is not None:
            node.stop()
            remove_pods(root / "node")
        plane.stop()
        gateway.stop()
        edge.stop()
        shutil.rmtree(root, ignore_errors=True)


def _echo_pod(api: Api, **extra: Any) -> dict[str, Any]:
    body = {"name": "web", "imageName": "local", "gpuTypeId": "NVIDIA GeForce RTX 4090",
            "ports": "8888/http,22/tcp", "dockerStartCmd": ["python3", "-c", ECHO], **extra}  # fmt: skip
    pod = api.wait(api.ok("POST", "/pods", json=body)["id"])
    wait_until(lambda: 8888 in api.ok("GET", f"/pods/{pod['id']}")["readyPorts"], 30, "port 8888")
    result: dict[str, Any] = api.ok("GET", f"/pods/{pod['id']}")
    return result


def _get(access: Access, url: str, **kw: Any) -> httpx.Response:
    """GET a pod URL through the edge: *.localhost names are loopback, so dial 127.0.0.1."""
    parsed = httpx.URL(url)
    target = parsed.copy_with(host="127.0.0.1")
    headers = {"Host": f"{parsed.host}:{parsed.port}", **kw.pop("headers", {})}
    return httpx.get(target, headers=headers, timeout=10, **kw)


def test_a_pods_http_port_is_served_at_its_url(access: Access) -> None:
    pod = _echo_pod(access.alice)
    url = pod["urls"]["8888"]
    assert url == f"http://{pod['id']}-8888.proxy.localhost:{access.edge.port}/"
    assert set(pod["readyAt"]) >= {"22", "8888"}
    answer = _get(access, url + "hello?x=1")
    assert answer.status_code == 200
    seen = answer.json()
    assert seen["path"] == "/hello?x=1"
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"].startswith(f"{pod['id']}-8888.proxy.localhost")

    access.alice.ok("POST", f"/pods/{pod['id']}/stop")
    stopped_at = time.monotonic()
    wait_until(lambda: _get(access, url).status_code == 404, 1.0, "the route to go at stop")
    assert time.monotonic() - stopped_at < 1.0
    gone = _get(access, url)
    assert "does not exist or is not running" in gone.text
    access.alice.ok("DELETE", f"/pods/{pod['id']}")


def test_a_killed_proxy_comes_back_with_every_route(access: Access) -> None:
    pod = _echo_pod(access.alice)
    url = pod["urls"]["8888"]
    assert _get(access, url).status_code == 200
    old = access.edge.haproxy_pid()
    os.kill(old, signal.SIGKILL)  # the HAProxy process `openpod edge` started and supervises

    def back() -> bool:
        try:
            return access.edge.haproxy_pid() != old and _get(access, url).status_code == 200
        except (httpx.HTTPError, OSError, ValueError):
            return False

    wait_until(back, 10, "the edge to serve the route again after HAProxy was killed")
    access.alice.ok("DELETE", f"/pods/{pod['id']}")


def test_private_pods_need_their_token(access: Access) -> None:
    pod = _echo_pod(access.alice, private=True)
    url = pod["urls"]["8888"]
    assert pod["private"] is True
    assert _get(access, url).status_code == 401
    assert _get(access, url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    token = access.alice.ok("GET", f"/pods/{pod['id']}/access-token")["token"]
    through = _get(access, url, headers={"Authorization": f"Bearer {token}"})
    assert through.status_code == 200
    by_cookie = _get(access, url, cookies={"openpod_token": token})
    assert by_cookie.status_code == 200
    assert token not in json.dumps(by_cookie.json()["headers"])  # never passed to the pod
    assert access.bob.get(f"/pods/{pod['id']}/access-token").status_code == 404
    public = access.alice.get(f"/pods/{pod['id']}")  # owner sees it; a public pod has no token
    assert public.status_code == 200
    access.alice.ok("DELETE", f"/pods/{pod['id']}")


def _ssh_gateway(
    access: Access, pod: dict[str, Any], key: Path, command: str, tmp: Path
) -> subprocess.CompletedProcess[str]:
    """The API's gateway command, run by the real OpenSSH client with both host keys pinned."""
    known = tmp / "known_hosts"
    known.write_text(
        f"[127.0.0.1]:{access.gateway.port} {access.gateway.public_key()}\n"
        f"{pod['id']} {pod['ssh']['hostKey']}\n"
    )
    pinning = (
        f"-F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={known}"
    )
    jump = f"ssh {pinning} -i {key} -p {access.gateway.port} -W %h:%p openpod@127.0.0.1"
    words = pod["ssh"]["gatewayCommand"].split()
    assert words[:2] == ["ssh", "-J"]  # `ssh -J openpod@127.0.0.1:PORT root@POD`, as a ProxyCommand
    assert words[2] == f"openpod@127.0.0.1:{access.gateway.port}"
    argv = [
        "ssh",
        *pinning.split(),
        "-i",
        str(key),
        "-o",
        f"ProxyCommand={jump}",
        words[3],
        command,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def test_ssh_through_the_gateway_reaches_only_your_pods(access: Access, tmp_path: Path) -> None:
    pod = _echo_pod(access.alice)
    assert pod["sshCommand"] == pod["ssh"]["gatewayCommand"]
    out = _ssh_gateway(access, pod, access.alice_key, "echo $OPENPOD_POD_ID", tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == pod["id"]
    refused = _ssh_gateway(access, pod, access.bob_key, "true", tmp_path)
    assert refused.returncode == 255
    assert f"no such pod {pod['id']}" in refused.stderr

    env = {**os.environ, "OPENPOD_CONFIG_DIR": str(tmp_path / "cfg"),
           "OPENPOD_API_URL": access.plane.url,
           "OPENPOD_API_KEY": str(access.alice.http.headers["Authorization"]).removeprefix("Bearer ")}  # fmt: skip
    via_cli = subprocess.run(
        [sys.executable, "-m", "openpod", "ssh", pod["id"], "-i", str(access.alice_key),
         "-o", "BatchMode=yes", "-F", "/dev/null", "hostname"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert via_cli.returncode == 0, via_cli.stderr
    assert via_cli.stdout.strip() == pod["id"]
    bob_cli = subprocess.run(
        [sys.executable, "-m", "openpod", "ssh", pod["id"], "-i", str(access.bob_key),
         "-o", "BatchMode=yes", "-F", "/dev/null", "hostname"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    # Refused by the fast path (its client says so), as the SSH port refuses.
    assert bob_cli.returncode == 255
    assert f"openpod: no such pod {pod['id']}" in bob_cli.stderr

    block = subprocess.run(
        [sys.executable, "-m", "openpod", "ssh", "config"], capture_output=True, text=True,
        env=env, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert (
        "ProxyUseFdpass yes" in block and f"--relay 127.0.0.1:{access.gateway.fast_port}" in block
    )
    # As a user has it: the key in an ssh-agent (a ProxyCommand is not told ssh's
    # IdentityFile), the block in the ssh config.
    config = tmp_path / "ssh_config"
    config.write_text(block + f"\nHost *\n    IdentityFile {access.alice_key}\n    BatchMode yes\n")
    with ssh_agent(tmp_path / "agent.sock", access.alice_key) as agent_env:
        user_env = {**env, "SSH_AUTH_SOCK": agent_env["SSH_AUTH_SOCK"]}
        _scp_and_back(tmp_path, pod["id"], config, user_env)
    access.alice.ok("DELETE", f"/pods/{pod['id']}")


def _scp_and_back(tmp_path: Path, pod_id: str, config: Path, env: dict[str, str]) -> None:
    (tmp_path / "up.txt").write_text("through the gateway\n")
    scp = subprocess.run(
        ["scp", "-F", str(config), str(tmp_path / "up.txt"), f"{pod_id}.openpod:/workspace/"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert scp.returncode == 0, scp.stderr
    back = subprocess.run(
        ["ssh", "-F", str(config), f"{pod_id}.openpod", "cat /workspace/up.txt"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert back.stdout == "through the gateway\n", back.stderr
