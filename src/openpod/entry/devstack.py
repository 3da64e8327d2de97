"""`openpod up` (what `make up` runs): the whole platform on one machine until Ctrl-C.

Starts the control plane and one local node as child processes, creates (once) a demo account
that is also the node's provider, adds the user's SSH key to it, configures the local `openpod`
CLI for it, and prints a quickstart. Ctrl-C stops the node, the pods it runs and the control
plane, each by the PID this process started; the next `openpod up` resumes the pods.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from openpod.adapters.runtimes.local import LocalRuntime

DEMO_WALLET = "0x00000000000000000000000000000000000d3e70"
EDGE_PORT = 8480  # http://{pod}-{port}.proxy.localhost:8480/
GATEWAY_PORT = 2222  # ssh -J openpod@127.0.0.1:2222 root@POD


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "openpod", *args], stdout=out, stderr=subprocess.STDOUT, env=env
    )


def _wait_healthy(api: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the control plane exited ({proc.returncode}); see {log}")
        try:
            if httpx.get(f"{api}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the control plane did not answer within 60 s; see {log}")


def _ssh_public_key() -> Path:
    """The user's SSH public key, made with ssh-keygen when the user has none."""
    ssh_dir = Path.home() / ".ssh"
    for name in ("id_ed25519", "id_ecdsa", "id_rsa"):
        if (ssh_dir / f"{name}.pub").exists():
            return ssh_dir / f"{name}.pub"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    key = ssh_dir / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    print(f"created an SSH key for you: {key}")
    return key.with_name("id_ed25519.pub")


def _link_cli() -> str:
    """Put `openpod` on PATH (a symlink in /usr/local/bin) so the next terminal has it."""
    target = Path(sys.executable).with_name("openpod")
    link = Path("/usr/local/bin/openpod")
    try:
        if link.is_symlink() and link.resolve() == target.resolve():
            return "openpod"
        if not link.exists() and not link.is_symlink() and os.access(link.parent, os.W_OK):
            link.symlink_to(target)
            return "openpod"
    except OSError:
        pass
    return str(target)


def _demo(api: str, state_file: Path) -> dict[str, str]:
    """The demo account, provider and node (made once, kept in a 0600 file under data_dir)."""
    if state_file.exists():
        demo: dict[str, str] = json.loads(state_file.read_text())
        me = httpx.get(f"{api}/me", headers={"Authorization": f"Bearer {demo['api_key']}"})
        if me.status_code == 200:
            return demo
    key = httpx.post(f"{api}/accounts", json={"name": "demo"}).raise_for_status().json()["apiKey"]
    auth = {"Authorization": f"Bearer {key}"}
    httpx.post(
        f"{api}/providers", json={"payoutWallet": DEMO_WALLET}, headers=auth
    ).raise_for_status()
    node = (
        httpx.post(f"{api}/nodes", json={"name": "local"}, headers=auth).raise_for_status().json()
    )
    demo = {"api_key": key, "node_token": node["token"], "node_id": node["id"]}
    state_file.touch(mode=0o600)
    state_file.write_text(json.dumps(demo))
    return demo


def _add_key(api: str, api_key: str, path: Path) -> None:
    response = httpx.post(
        f"{api}/ssh-keys",
        json={"publicKey": path.read_text(), "name": path.name},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    if response.status_code not in (201, 409):  # 409: already there
        raise SystemExit(f"could not add {path}: {response.json().get('detail')}")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_for(path: Path, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        if proc.poll() is not None:
            raise SystemExit(f"the {what} exited ({proc.returncode}); see {log}")
        if time.monotonic() > deadline:
            raise SystemExit(f"the {what} did not start within 30 s; see {log}")
        time.sleep(0.05)


def run_devstack(data_dir: Path, port: int, gpus: str) -> int:
    data_dir.mkdir(parents=True, exist_ok=True)
    api = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    logs = {name: data_dir / f"{name}.log" for name in ("server", "node", "edge", "gateway")}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    host_key = data_dir / "gateway_host_key"
    server_env = {
        **env,
        "OPENPOD_EDGE_STATE_DIR": str(data_dir / "edge"),
        "OPENPOD_PROXY_PORT": str(EDGE_PORT),
        "OPENPOD_GATEWAY_HOST": "127.0.0.1",
        "OPENPOD_GATEWAY_PORT": str(GATEWAY_PORT),
        "OPENPOD_GATEWAY_HOST_KEY_FILE": f"{host_key}.pub",
        # The demo account (and any signed up here) starts with 1,000 tokens to spend.
        "OPENPOD_SIGNUP_CREDIT": env.get("OPENPOD_SIGNUP_CREDIT", str(1000 * 10**18)),
    }
    try:
        procs["edge"] = _spawn(
            ["edge", "--data-dir", str(data_dir), "--port", str(EDGE_PORT)], logs["edge"], env
        )
        procs["gateway"] = _spawn(
            ["gateway", "--data-dir", str(data_dir), "--port", str(GATEWAY_PORT),
             "--host-key", str(host_key)],
            logs["gateway"],
            env,
        )  # fmt: skip
        _wait_for(
            host_key.with_name(host_key.name + ".pub"), procs["gateway"], "gateway", logs["gateway"]
        )
        procs["server"] = _spawn(
            ["server", "--port", str(port), "--data-dir", str(data_dir)], logs["server"], server_env
        )
        _wait_healthy(api, procs["server"], logs["server"])
        demo = _demo(api, data_dir / "demo.json")
        _add_key(api, demo["api_key"], _ssh_public_key())
        configure = [sys.executable, "-m", "openpod", "config", "--api-url", api]
        subprocess.run(
            [*configure, "--api-key", demo["api_key"]], check=True, stdout=subprocess.DEVNULL
        )
        procs["node"] = _spawn(
            ["node", "--api-url", api, "--gpus", gpus, "--data-dir", str(data_dir / "node")],
            logs["node"],
            {**env, "OPENPOD_NODE_TOKEN": demo["node_token"]},  # not argv: `ps` shows argv
        )
        print(_quickstart(api, demo["api_key"], data_dir, _link_cli()), flush=True)
        while not stopping and all(proc.poll() is None for proc in procs.values()):
            try:
                time.sleep(0.5)
            except KeyboardInterrupt:
                break
        for name, proc in procs.items():
            if proc.poll() is not None and not stopping:
                print(f"the {name} exited ({proc.returncode}); see {logs[name]}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping: node, pods, control plane, gateway, edge", flush=True)
        _stop(procs.get("node"))
        runtime = LocalRuntime(data_dir / "node")
        for obs in runtime.adopt():
            runtime.stop(obs.pod_id, 5.0)
        for name in ("server", "gateway", "edge"):
            _stop(procs.get(name))
    return 0


def _quickstart(api: str, api_key: str, data_dir: Path, cli: str) -> str:
    return f"""
openpod is up: control plane {api} (OpenAPI: {api}/docs), one local node,
  pod URLs at http://POD-PORT.proxy.localhost:{EDGE_PORT}/, SSH gateway on 127.0.0.1:{GATEWAY_PORT}.
  demo API key (the CLI is already configured with it): {api_key}
  logs and state: {data_dir}

In another terminal:
  {cli} gpu list
  {cli} pod create --name demo --image local --gpu-type "NVIDIA GeForce RTX 4090" --gpu-count 1 \\
      --ports 8888/http,22/tcp --cmd 'python3 -m http.server $OPENPOD_TCP_PORT_8888'
  {cli} ssh POD_ID                       # through the gateway; or the command `pod create` printed
  {cli} ssh config --write               # then: ssh POD_ID.openpod, scp, sftp, rsync
  {cli} pod stop POD_ID; {cli} pod resume POD_ID; {cli} pod terminate POD_ID

Ctrl-C stops everything this started.
"""
