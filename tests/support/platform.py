"""Real servers for end-to-end tests: the control plane and node agents as child processes.

Each is started with `python -m openpod ...` on a free port and a temp dir, waited for by
polling its health (or its node's online flag), and stopped by the PID we started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.support.net import free_port, port_open, wait_until


class Proc:
    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args, self.log = args, log
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "openpod", *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class ControlPlane(Proc):
    def __init__(
        self, root: Path, database_url: str | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            "server",
            "--port",
            str(self.port),
            "--data-dir",
            str(root),
            "--log-level",
            "warning",
        ]
        if database_url:
            args += ["--database-url", database_url]
        # Settlements every second as the tests want them; signed-up accounts can pay.
        defaults = {"OPENPOD_SETTLEMENT_PERIOD": "1", "OPENPOD_SIGNUP_CREDIT": str(10**30)}
        super().__init__(args, root / "server.log", {**defaults, **(env or {})})

    def start(self) -> None:
        super().start()

        def healthy() -> bool:
            assert self.alive(), f"control plane exited:\n{self.output()}"
            try:
                return httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 30, "the control plane to answer /healthz", step=0.05)


class NodeAgentProc(Proc):
    def __init__(
        self,
        plane: ControlPlane,
        token: str,
        root: Path,
        gpus: str,
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            [
                "node",
                "--api-url",
                plane.url,
                "--gpus",
                gpus,
                "--data-dir",
                str(root),
                "--log-level",
                "warning",
            ],
            root.parent / f"{root.name}.log",
            {"OPENPOD_NODE_TOKEN": token, "OPENPOD_NODE_STOP_GRACE_SECONDS": "1", **(env or {})},
        )


class Api:
    """A small synchronous client for tests (the CLI has its own)."""

    def __init__(self, url: str, key: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=30)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.http, name)

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def ok(self, method: str, path: str, **kw: Any) -> Any:
        response = self.http.request(method, path, **kw)
        assert response.status_code < 300, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return response.json() if response.content else None

    def wait(self, pod_id: str, status: str = "RUNNING", timeout: float = 30) -> dict[str, Any]:
        pod: dict[str, Any] = self.ok(
            "GET", f"/pods/{pod_id}/wait", params={"status": status, "timeout": timeout}
        )
        return pod


def signup(url: str, name: str) -> Api:
    key = httpx.post(f"{url}/accounts", json={"name": name}).raise_for_status().json()["apiKey"]
    return Api(url, key)


def wait_node_online(provider: Api, node_id: str, timeout: float = 30) -> None:
    def online() -> bool:
        nodes = provider.ok("GET", "/nodes")
        return any(n["id"] == node_id and n["online"] for n in nodes)

    wait_until(online, timeout, f"node {node_id} to come online", step=0.05)


class EdgeProc(Proc):
    """`openpod edge`: HAProxy supervised, its files under the plane's data dir."""

    def __init__(self, root: Path, idle_timeout: float = 3600.0) -> None:
        self.port = free_port()
        self.state_dir = root / "edge"
        super().__init__(
            ["edge", "--data-dir", str(root), "--port", str(self.port),
             "--idle-timeout", str(idle_timeout), "--log-level", "warning"],
            root / "edge.log",
        )  # fmt: skip

    def start(self) -> None:
        super().start()
        wait_until(lambda: port_open(self.port), 30, "the edge to listen", step=0.05)

    def haproxy_pid(self) -> int:
        return int((self.state_dir / "haproxy.pid").read_text())


class GatewayProc(Proc):
    """`openpod gateway` over the plane's database (with its fast path when `fast`)."""

    def __init__(self, root: Path, *, fast: bool = False) -> None:
        self.port = free_port()
        self.fast_port = free_port() if fast else None
        self.host_key = root / "gateway_host_key"
        fast_args = ["--fast-port", str(self.fast_port)] if self.fast_port else []
        super().__init__(
            ["gateway", "--data-dir", str(root), "--port", str(self.port),
             "--host-key", str(self.host_key), "--log-level", "warning", *fast_args],
            root / "gateway.log",
        )  # fmt: skip

    def start(self) -> None:
        super().start()
        wait_until(lambda: port_open(self.port), 30, "the gateway to listen", step=0.05)
        if self.fast_port is not None:
            fast = self.fast_port
            wait_until(lambda: port_open(fast), 30, "the fast path to listen", step=0.05)

    def public_key(self) -> str:
        return self.host_key.with_name(self.host_key.name + ".pub").read_text().strip()


def remove_pods(node_root: Path) -> None:
    """Remove every pod a local node's runtime still holds (teardown after its agent stops)."""
    from openpod.adapters.runtimes.local import LocalRuntime

    runtime = LocalRuntime(node_root)
    for obs in runtime.adopt():
        runtime.remove(obs.pod_id, 1.0)
