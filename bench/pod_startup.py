"""Benchmark: pod create → SSH-ready, and pod creates per second through the API.

Run by `make bench`; writes bench/RESULTS.md. Every number is set beside a reference measured
in the same run on the same machine:

- create → SSH-ready (p50/p95 over 20 pods, a real node with the local runtime, ready = the
  real `ssh` client ran `true` in the pod) against the floor of doing the same by hand: start a
  bare OpenSSH sshd with a fresh host key and run `ssh true` against it;
- pod creates per second (POST /pods, 8 concurrent clients) against authenticated reads per
  second (GET /me) on the same server. The pods go to a node that speaks the real node protocol
  but runs nothing (it acknowledges each start at once), so the number is the control plane's
  own cost, not the 2-core host's ability to boot hundreds of sshd processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform as host
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from bench import stop_cleanly_on_sigterm
from bench.results import write_section
from tests.support.net import free_port
from tests.support.platform import (
    ControlPlane,
    EdgeProc,
    NodeAgentProc,
    remove_pods,
    signup,
    wait_node_online,
)

PODS = 20
BURST = 16  # pods created at once on the real node (8 concurrent clients)
CREATES = 400
CONCURRENCY = 8


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ssh_true(host_: str, port: int, key: Path, known: Path) -> bool:
    argv = [
        "ssh",
        "-p",
        str(port),
        "-i",
        str(key),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        f"UserKnownHostsFile={known}",
        "-o",
        "LogLevel=ERROR",
        f"root@{host_}",
        "true",
    ]
    return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0


def bare_sshd(root: Path, key: Path) -> list[float]:
    """The floor: a bare sshd started by hand, timed to its first `ssh true`."""
    times = []
    authorized = root / "authorized_keys"
    authorized.write_text(key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    for i in range(PODS):
        port = free_port()
        d = root / f"sshd{i}"
        d.mkdir()
        start = time.perf_counter()
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host")], check=True
        )
        config = d / "sshd_config"
        config.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\nPidFile {d / 'pid'}\n"
            f"AuthorizedKeysFile {authorized}\nPasswordAuthentication no\nUsePAM no\nStrictModes no\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)
        proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(config)])
        try:
            while not ssh_true("127.0.0.1", port, key, d / "known"):
                time.sleep(0.005)
            times.append(time.perf_counter() - start)
        finally:
            proc.terminate()
            proc.wait()
    return times


def openpod_startup(
    api: httpx.Client, key: Path, root: Path, image: str = "local"
) -> tuple[list[float], list[float]]:
    api_ready, ssh_ready = [], []
    for i in range(PODS):
        start = time.perf_counter()
        pod = (
            api.post(
                "/pods",
                json={
                    "name": f"b{i}",
                    "imageName": image,
                    "gpuTypeId": "NVIDIA GeForce RTX 4090",
                    "gpuCount": 1,
                },
            )
            .raise_for_status()
            .json()
        )
        pod = api.get(f"/pods/{pod['id']}/wait", params={"timeout": 30}).raise_for_status().json()
        api_ready.append(time.perf_counter() - start)
        while not ssh_true(pod["publicIp"], pod["ssh"]["port"], key, root / f"known{i}"):
            time.sleep(0.005)
        ssh_ready.append(time.perf_counter() - start)
        api.delete(f"/pods/{pod['id']}").raise_for_status()
        api.get(
            f"/pods/{pod['id']}/wait", params={"status": "TERMINATED", "timeout": 30}
        ).raise_for_status()
    return api_ready, ssh_ready


# The smallest HTTP server a pod can run: answers every connection with a 200, at once.
TINY_HTTP = (
    "import os, socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', int(os.environ['OPENPOD_TCP_PORT_8888']))); s.listen(64)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.recv(65536)\n"
    "    c.sendall(b'HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\nconnection: close\\r\\n\\r\\nok')\n"
    "    c.close()\n"
)


def url_after_running(api: httpx.Client, edge_port: int) -> list[float]:
    """Seconds from the API saying RUNNING to the pod's URL answering 200 through the edge
    (the workload's own start-up included: it binds its port after sshd is up)."""
    times = []
    with httpx.Client(timeout=5) as web:
        for i in range(PODS):
            body = {"name": f"w{i}", "imageName": "local", "gpuTypeId": "NVIDIA GeForce RTX 4090",
                    "ports": "8888/http", "dockerStartCmd": ["python3", "-c", TINY_HTTP]}  # fmt: skip
            pod = api.post("/pods", json=body).raise_for_status().json()
            pod = (
                api.get(f"/pods/{pod['id']}/wait", params={"timeout": 30}).raise_for_status().json()
            )
            running = time.perf_counter()
            host = f"{pod['id']}-8888.proxy.localhost"
            while True:
                try:
                    answer = web.get(f"http://127.0.0.1:{edge_port}/", headers={"Host": host})
                    if answer.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.002)
            times.append(time.perf_counter() - running)
            api.delete(f"/pods/{pod['id']}").raise_for_status()
            params: dict[str, str | int] = {"status": "TERMINATED", "timeout": 30}
            api.get(f"/pods/{pod['id']}/wait", params=params).raise_for_status()
    return times


async def burst(url: str, key: str) -> float:
    """Seconds from the first of BURST concurrent creates to the last pod RUNNING, SSH ready."""
    headers = {"Authorization": f"Bearer {key}"}
    body = {"name": "burst", "imageName": "local", "gpuTypeId": "NVIDIA GeForce RTX 4090"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one() -> str:
            async with gate:
                pod = (await client.post("/pods", json=body)).raise_for_status().json()
            waited = await client.get(f"/pods/{pod['id']}/wait", params={"timeout": 60})
            return str(waited.raise_for_status().json()["id"])

        start = time.perf_counter()
        ids = await asyncio.gather(*(one() for _ in range(BURST)))
        elapsed = time.perf_counter() - start
        for pod_id in ids:
            (await client.delete(f"/pods/{pod_id}")).raise_for_status()
        for pod_id in ids:
            params: dict[str, str | int] = {"status": "TERMINATED", "timeout": 60}
            (await client.get(f"/pods/{pod_id}/wait", params=params)).raise_for_status()
    return elapsed


async def sink_node(url: str, token: str, ready: asyncio.Event, stop: asyncio.Event) -> None:
    """A node that speaks the node protocol and reports every start as running at once."""
    ws_url = url.replace("http://", "ws://") + "/nodes/connect"
    async with connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.send(
            json.dumps(
                {
                    "type": "hello",
                    "runtime": "sink",
                    "public_host": "127.0.0.1",
                    "gpus": [{"index": i, "type": "NVIDIA H200"} for i in range(CREATES + 10)],
                    "pods": [],
                }
            )
        )
        ready.set()
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.2)
            except TimeoutError:
                continue
            msg = json.loads(raw)
            if msg["type"] == "pod" and msg["pod"]["desired"] == "running":
                a = msg["pod"]
                await ws.send(
                    json.dumps(
                        {
                            "type": "pod_status",
                            "pod": {
                                "pod_id": a["pod_id"],
                                "generation": a["generation"],
                                "phase": "running",
                                "port_mappings": {"22": 1},
                                "ready_ports": [22],
                                "ssh_ready": True,
                            },
                        }
                    )
                )


async def throughput(url: str, key: str, path: str, body: dict[str, Any] | None, n: int) -> float:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        queue = list(range(n))

        async def worker() -> None:
            while queue:
                queue.pop()
                if body is None:
                    (await client.get(path)).raise_for_status()
                else:
                    (await client.post(path, json=body)).raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return n / (time.perf_counter() - start)


async def api_rates(url: str, user_key: str, sink_token: str) -> tuple[float, float]:
    ready, stop = asyncio.Event(), asyncio.Event()
    sink = asyncio.create_task(sink_node(url, sink_token, ready, stop))
    await asyncio.wait_for(ready.wait(), 10)
    await throughput(url, user_key, "/me", None, 50)  # warm-up
    reads = await throughput(url, user_key, "/me", None, CREATES)
    creates = await throughput(
        url,
        user_key,
        "/pods",
        {"name": "t", "imageName": "local", "gpuTypeId": "NVIDIA H200", "gpuCount": 1},
        CREATES,
    )
    stop.set()
    await sink
    return creates, reads


def main() -> None:
    stop_cleanly_on_sigterm()
    root = Path(tempfile.mkdtemp(prefix="openpod-bench-"))
    (root / "plane").mkdir()
    edge = EdgeProc(root / "plane")
    plane = ControlPlane(
        root / "plane",
        env={"OPENPOD_EDGE_STATE_DIR": str(edge.state_dir), "OPENPOD_PROXY_PORT": str(edge.port)},
    )
    node = None
    try:
        edge.start()
        plane.start()
        provider = signup(plane.url, "provider")
        provider.ok("POST", "/providers", json={"payoutWallet": "0x" + "22" * 20})
        real = provider.ok("POST", "/nodes", json={"name": "local"})
        sink = provider.ok("POST", "/nodes", json={"name": "sink"})
        node = NodeAgentProc(
            plane, real["token"], root / "node", f"NVIDIA GeForce RTX 4090:{BURST}"
        )
        node.start()
        wait_node_online(provider, real["id"])
        user = signup(plane.url, "user")
        key = root / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        user.ok("POST", "/ssh-keys", json={"publicKey": key.with_suffix(".pub").read_text()})

        floor = bare_sshd(root, key)
        api_ready, ssh_ready = openpod_startup(user.http, key, root)
        url_ready = url_after_running(user.http, edge.port)
        user_key = user.http.headers["Authorization"].removeprefix("Bearer ")
        burst_seconds = asyncio.run(burst(plane.url, user_key))
        creates, reads = asyncio.run(api_rates(plane.url, user_key, sink["token"]))
    finally:
        if node is not None:
            node.stop()
            remove_pods(root / "node")
        plane.stop()
        edge.stop()
        shutil.rmtree(root, ignore_errors=True)

    rows = [
        (
            "create → RUNNING with SSH ready (API)",
            ms(pct(api_ready, 0.5)),
            ms(pct(api_ready, 0.95)),
        ),
        ("create → first `ssh true` succeeds", ms(pct(ssh_ready, 0.5)), ms(pct(ssh_ready, 0.95))),
        (
            "reference: bare sshd (keygen + start) → `ssh true`",
            ms(pct(floor, 0.5)),
            ms(pct(floor, 0.95)),
        ),
    ]
    report = [
        f"## Pod start-up and API throughput ({time.strftime('%Y-%m-%d')}, {host.node()}, "
        f"{os.cpu_count()} cores, local runtime, SQLite)",
        "",
        f"Pod start-up, {PODS} pods one after another (`python -m bench.pod_startup`):",
        "",
        "| measure | p50 | p95 |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        f"Ratio openpod / bare sshd (p50, create → `ssh true`): "
        f"{pct(ssh_ready, 0.5) / pct(floor, 0.5):.2f}x",
        "",
        f"Pod RUNNING → its URL answers 200 through the edge (HAProxy), {PODS} pods: "
        f"p50 {ms(pct(url_ready, 0.5))}, p95 {ms(pct(url_ready, 0.95))} (includes the "
        "workload's own start: it binds its port after sshd is up).",
        "",
        f"{BURST} pods created at once ({CONCURRENCY} concurrent clients) on the real node, "
        f"all RUNNING with SSH ready: {burst_seconds:.2f} s ({BURST / burst_seconds:.1f} pods/s).",
        "",
        f"API, {CREATES} requests, {CONCURRENCY} concurrent clients:",
        "",
        "| measure | per second |",
        "|---|---|",
        f"| POST /pods (scheduled and sent to a node) | {creates:.0f} |",
        f"| reference: GET /me (authenticated read) | {reads:.0f} |",
        "",
        f"Ratio creates / authenticated reads: {creates / reads:.2f}",
        "",
    ]
    text = "\n".join(report)
    print(text)
    write_section("## Pod start-up and API throughput", text)


if __name__ == "__main__":
    main()
