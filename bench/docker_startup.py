"""Benchmark: create → SSH-ready of a pod on a node that runs pods with Docker.

Run by `make bench`; writes bench/RESULTS.md. A real dockerd (started here, as the tests do,
its data in a temp dir) runs the offline pod image (Debian + openssh-server, already pulled:
"cached"). Measured, 20 pods one after another:

- through openpod: POST /pods → the API says RUNNING with SSH ready, and → the first
  `ssh true` into the pod succeeds (node agent `--runtime docker`, host networking);
- the reference, on the same dockerd and image: what `docker run` of sshd does by hand
  (create + start a container that makes its host key, writes the authorized key and execs
  sshd) → the first `ssh true`.
"""

from __future__ import annotations

import json
import platform as host
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench import stop_cleanly_on_sigterm
from bench.pod_startup import PODS, ms, openpod_startup, pct, ssh_true
from bench.results import write_section
from openpod.adapters.runtimes._dockerapi import DockerApi
from tests.support.dockerd import Dockerd
from tests.support.net import free_port
from tests.support.platform import (
    ControlPlane,
    NodeAgentProc,
    remove_pods,
    signup,
    wait_node_online,
)

BY_HAND = (
    "mkdir -p /run/sshd /root/.ssh && printf '%s\\n' \"$KEY\" > /root/.ssh/authorized_keys && "
    "ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key && "
    'exec /usr/sbin/sshd -D -e -p "$PORT" -o ListenAddress=127.0.0.1 '
    "-h /etc/ssh/ssh_host_ed25519_key"
)


def docker_run_by_hand(api: DockerApi, image: str, key: Path, root: Path) -> list[float]:
    times = []
    public = key.with_suffix(".pub").read_text().strip()
    for i in range(PODS):
        port = free_port()
        name = f"bench-by-hand-{i}"
        start = time.perf_counter()
        api.create(
            name,
            {
                "Image": image,
                "Cmd": ["sh", "-c", BY_HAND],
                "Env": [f"KEY={public}", f"PORT={port}"],
                "HostConfig": {"NetworkMode": "host"},
            },
        )
        api.start(name)
        try:
            while not ssh_true("127.0.0.1", port, key, root / f"known-hand{i}"):
                time.sleep(0.005)
            times.append(time.perf_counter() - start)
        finally:
            api.remove_container(name)
    return times


def main() -> None:
    stop_cleanly_on_sigterm()
    root = Path(tempfile.mkdtemp(prefix="openpod-bench-docker-"))
    (root / "plane").mkdir()
    daemon = Dockerd()
    plane = ControlPlane(root / "plane")
    node = None
    try:
        daemon.start()
        image = daemon.load_pod_image()
        plane.start()
        provider = signup(plane.url, "provider")
        provider.ok("POST", "/providers", json={"payoutWallet": "0x" + "33" * 20})
        created = provider.ok("POST", "/nodes", json={"name": "docker"})
        env = {
            "OPENPOD_NODE_RUNTIME": "docker",
            "OPENPOD_NODE_DOCKER_HOST": daemon.host,
            "OPENPOD_NODE_DOCKER_NETWORK": "host",
            "OPENPOD_NODE_DOCKER_GPU_DRIVER": "",
            "OPENPOD_NODE_DOCKER_PULL": "false",
        }
        node = NodeAgentProc(
            plane, created["token"], root / "node", "NVIDIA GeForce RTX 4090:1", env
        )
        node.start()
        wait_node_online(provider, created["id"])
        user = signup(plane.url, "user")
        key = root / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        user.ok("POST", "/ssh-keys", json={"publicKey": key.with_suffix(".pub").read_text()})
        api = DockerApi(daemon.host)
        try:
            by_hand = docker_run_by_hand(api, image, key, root)
        finally:
            api.close()
        api_ready, ssh_ready = openpod_startup(user.http, key, root, image)
    finally:
        if node is not None:
            node.stop()
            remove_pods(root / "node")
        plane.stop()
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)

    rows = [
        ("create → RUNNING with SSH ready (API)", api_ready),
        ("create → first `ssh true` succeeds", ssh_ready),
        ("reference: `docker run` of sshd by hand → `ssh true`", by_hand),
    ]
    table = "\n".join(f"| {name} | {ms(pct(v, 0.5))} | {ms(pct(v, 0.95))} |" for name, v in rows)
    ratio = pct(ssh_ready, 0.5) / pct(by_hand, 0.5)
    write_section(
        "## Docker pod start-up",
        f"""## Docker pod start-up

{host.node()} ({host.machine()}), dockerd 20.10 (overlay2), the offline Debian + sshd image
already on the node; {PODS} pods one after another (`python -m bench.docker_startup`):

| measure | p50 | p95 |
|---|---|---|
{table}

Ratio openpod / `docker run` by hand (p50, create → `ssh true`): {ratio:.2f}x.
Target: p50 < 1 s through openpod.
""",
    )
    print(json.dumps({"api_p50": pct(api_ready, 0.5), "ssh_p50": pct(ssh_ready, 0.5),
                      "by_hand_p50": pct(by_hand, 0.5)}))  # fmt: skip


if __name__ == "__main__":
    main()
