"""Benchmark: `openpod send`/`receive` on each transport against OpenSSH scp, same file.

Run `python -m bench.transfer` as root (a local pod for scp's sshd, a control plane for the
rooms and the relay; about 4 minutes); it replaces its own section of bench/RESULTS.md.
Everything runs on 127.0.0.1. A 1 GiB file of random bytes, 3 runs each, interleaved:

- `scp -c aes128-gcm@openssh.com` into a local pod's sshd: the reference;
- `openpod send --transport direct` → `openpod receive` (two CLI processes, each as a user
  runs it): the best path, timed from starting `receive` to its exit, so Python's start,
  the handshake and the SHA-256 checks count;
- the same forced over the relay (through the control plane);
then one WebRTC run of the same file (aiortc, whose SCTP is pure Python: about a minute) and
the browser → browser rate measured by the page in Chromium (bench/transfer_browser.py).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import stop_cleanly_on_sigterm
from bench.gateway import FILE_SIZE, POD, random_file, run, wait_ready
from bench.results import write_section
from openpod.adapters.runtimes.base import PodLaunch, PortRequest
from openpod.adapters.runtimes.local import LocalRuntime
from tests.gateway.fakes import make_key
from tests.support.platform import ControlPlane

HEADING = "## openpod send/receive vs scp (aes128-gcm), 1 GiB on 127.0.0.1"
RUNS = 3
SCP = "scp -c aes128-gcm into a pod's sshd"
DIRECT = "openpod send → receive, direct"
RELAY = "openpod send → receive, relay"


def send_receive(url: str, root: Path, source: Path, transport: str) -> tuple[float, float]:
    """(wall seconds of `receive`, the MB/s it reports) for one transfer of `source`."""
    env = {**os.environ, "OPENPOD_API_URL": url, "OPENPOD_CONFIG_DIR": str(root / "cfg")}
    into = root / "in"
    shutil.rmtree(into, ignore_errors=True)
    argv = [sys.executable, "-m", "openpod"]
    flags = ["--json", "--loopback", "--transport", transport]
    sender = subprocess.Popen(
        [*argv, "send", str(source), *flags], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert sender.stdout is not None
        code = json.loads(sender.stdout.readline())["code"]
        started = time.perf_counter()
        done = subprocess.run(
            [*argv, "receive", code, "--dir", str(into), *flags],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
        )
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"receive over {transport} failed: {done.stderr}")
        summary = json.loads(done.stdout.splitlines()[-1])
        if sender.wait(60) != 0:
            raise RuntimeError(f"send over {transport} failed")
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait()
    if (into / source.name).stat().st_size != source.stat().st_size:
        raise RuntimeError(f"{transport}: the received file has the wrong size")
    return seconds, float(summary["mbPerSecond"])


def measure(root: Path, plane: ControlPlane, runtime: LocalRuntime) -> dict[str, list[float]]:
    key = make_key(root / "id_ed25519")
    public = key.with_suffix(".pub").read_text().strip()
    runtime.start(PodLaunch(POD, 1, "local", (), {}, (PortRequest(22, "tcp"),), (), (public,)))
    pod = wait_ready(runtime, POD)
    known = root / "known_hosts"
    port = pod.port_mappings[22]
    known.write_text(f"[127.0.0.1]:{port} {pod.ssh_host_key}\n")
    scp = ["scp", "-q", "-F", "/dev/null", "-i", str(key), "-c", "aes128-gcm@openssh.com",
           "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known}", "-P", str(port)]  # fmt: skip
    source = root / "big.bin"
    random_file(source)
    landed = runtime.root_dir / "pods" / POD / "workspace" / "big.bin"
    mbps: dict[str, list[float]] = {}
    for _ in range(RUNS):
        landed.unlink(missing_ok=True)
        seconds = run([*scp, str(source), f"{pod.ssh_user}@127.0.0.1:big.bin"])
        mbps.setdefault(SCP, []).append(FILE_SIZE / 1e6 / seconds)
        for name, transport in ((DIRECT, "direct"), (RELAY, "relay")):
            seconds, inner = send_receive(plane.url, root, source, transport)
            mbps.setdefault(name, []).append(FILE_SIZE / 1e6 / seconds)
            mbps.setdefault(name + " (transfer only)", []).append(inner)
        print({name: f"{runs[-1]:.0f}" for name, runs in mbps.items()}, flush=True)
    seconds, inner = send_receive(plane.url, root, source, "webrtc")
    mbps["openpod send → receive, webrtc (1 run)"] = [FILE_SIZE / 1e6 / seconds]
    mbps["openpod send → receive, webrtc (1 run) (transfer only)"] = [inner]
    return mbps


def report(mbps: dict[str, list[float]], browser: str) -> str:
    med = {name: statistics.median(runs) for name, runs in mbps.items()}
    rows = [
        f"| {name} | {med[name]:.0f} | {', '.join(f'{v:.0f}' for v in runs)} | "
        f"{med[name] / med[SCP]:.2f}x |"
        for name, runs in mbps.items()
    ]
    version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.split(",")[0]
    best = med[DIRECT] / med[SCP]
    return "\n".join(
        [
            f"{HEADING} ({time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, "
            f"{version.strip()})",
            "",
            "`python -m bench.transfer`. A 1 GiB file of random bytes; scp into a local pod's "
            "sshd against two `openpod` CLI processes (`send`, then `receive` timed from its "
            f"start to its exit, Python start, handshake and SHA-256 checks included), {RUNS} "
            "runs each, interleaved. '(transfer only)' is the rate `receive` reports from its "
            "first data to its last. The control plane runs the rooms and the relay.",
            "",
            "| way | median MB/s | runs | vs scp |",
            "|---|---|---|---|",
            *rows,
            "",
            f"send/receive on its best path (direct) / scp: **{best:.2f}x** (target ≥ 0.5x: "
            f"{'met' if best >= 0.5 else 'missed'}); over the relay: {med[RELAY] / med[SCP]:.2f}x.",
            "",
            browser,
            "",
        ]
    )


def main() -> None:
    stop_cleanly_on_sigterm()
    if os.geteuid() != 0:
        raise SystemExit("bench.transfer runs a real local pod for scp: run it as root")
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="openpod-bench-transfer-"))
    runtime = LocalRuntime(root / "node")
    (root / "plane").mkdir()
    plane = ControlPlane(root / "plane")
    try:
        plane.start()
        mbps = measure(root, plane, runtime)
    finally:
        plane.stop()
        runtime.remove(POD, 1.0)
        shutil.rmtree(root, ignore_errors=True)
    from bench.transfer_browser import browser_section

    text = report(mbps, browser_section())
    print(text)
    write_section(HEADING, text)
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
