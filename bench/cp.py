"""Benchmark: `openpod cp` against OpenSSH `scp -c aes128-gcm@openssh.com` on the same file.

Run `python -m bench.cp` as root (a local pod; about 2 minutes); it replaces its own section
of bench/RESULTS.md. One pod on the local runtime (its own sshd), the gateway's fast path
(`FastPath`, in this process on a loop of its own), everything on 127.0.0.1. A 1 GiB file of
random bytes is copied up into the pod, 9 runs of each way, interleaved (every other round in
reverse order):

- `scp -c aes128-gcm@openssh.com` straight to the pod's sshd: the reference;
- the same scp through the fast path (`openpod ssh proxy` as ProxyCommand);
- `openpod cp`'s copy (cli/transfer.copy) through the fast path, as the command runs it:
  asyncssh for sizes and the resume point, OpenSSH's sftp for a large file's bytes
  (cli/transfer_openssh.py: 64 requests of 255 KiB, AES-GCM); as the command runs without
  `--json` (which adds the SHA-256 of every file to its summary) or `--verify`; the API
  lookup `openpod cp` makes first is left out (no control plane here);
- the same with OPENPOD_CP_ENGINE=asyncssh: every byte through asyncssh's SFTP client (64
  requests of 255 KiB, AES-GCM, a 16 MiB window), the way where no `sftp` is installed;
- `openpod cp --direct`: straight to the pod's sshd as scp goes, no relay (on this one host
  the fast path's relay shares the 2 cores with client and pod; in production the gateway
  runs elsewhere).
Then the file is copied back down by `openpod cp` (both engines, through the fast path) and by
scp straight, 3 times each, interleaved, after a sync (the uploads leave GiBs to write back).
Last, two directories (1,000 files of 64 KiB; 100 files of 4 MiB) go up by `scp -r`
(straight, and through the fast path) and by `openpod cp` through the fast path, 3 times each,
interleaved.
The CLI's known_hosts go to a temp config dir (OPENPOD_CONFIG_DIR).
"""

from __future__ import annotations

import asyncio
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncssh

from bench import stop_cleanly_on_sigterm
from bench.gateway import FILE_SIZE, POD, random_file, run, wait_ready
from bench.results import write_section
from openpod.adapters.gateway.fastpath import FastPath
from openpod.adapters.runtimes.base import PodLaunch, PodObservation, PortRequest
from openpod.adapters.runtimes.local import LocalRuntime
from openpod.cli import transfer
from openpod.cli.ssh import Gateway, SshTarget, fast_path_command
from tests.gateway.fakes import FakeDirectory, GatewayThread, make_key

HEADING = "## openpod cp vs scp (aes128-gcm), 1 GiB into a pod"
RUNS = 9
DOWN_RUNS = 3
CIPHER = "aes128-gcm@openssh.com"
SCP = "scp -c aes128-gcm, straight to the pod's sshd"
SCP_FAST = "scp -c aes128-gcm, through the fast path"
CP = "openpod cp, through the fast path"
CP_ASYNCSSH = "openpod cp with OPENPOD_CP_ENGINE=asyncssh, through the fast path"
CP_DIRECT = "openpod cp --direct, straight to the pod's sshd"
# Directories: (files, bytes each); scp -r against openpod cp, DIR_RUNS times interleaved.
TREES = {"1,000 files of 64 KiB": (1000, 64 << 10), "100 files of 4 MiB": (100, 4 << 20)}
TREE_WAYS = (
    "scp -r, straight",
    "scp -r, through the fast path",
    "openpod cp, through the fast path",
)
DIR_RUNS = 3


async def openpod_cp(
    port: int, key: Path, pod: PodObservation, local: Path, up: bool, engine: str,
    direct: bool = False, remote: str = "upload.bin",
) -> None:  # fmt: skip
    """`openpod cp`'s copy (transfer.copy) through the fast path (or with `direct`, as
    `openpod cp --direct`, straight to the pod's sshd), as the command runs it after its API
    lookup (without --json: no SHA-256 of every file for the summary); `engine` as
    OPENPOD_CP_ENGINE says."""
    target = SshTarget(
        user=pod.ssh_user, host="127.0.0.1", port=pod.port_mappings[22], command="",
        host_key=pod.ssh_host_key, pod_id=POD,
        gateway=Gateway("127.0.0.1", port, "openpod", None, fast_port=port),
    )  # fmt: skip
    os.environ["OPENPOD_CP_ENGINE"] = engine
    try:
        await transfer.copy(
            target, remote, local, up, [key], direct, lambda _n: None, False, digests=False
        )
    finally:
        del os.environ["OPENPOD_CP_ENGINE"]


def measure(
    root: Path, runtime: LocalRuntime, pod: PodObservation, key: Path
) -> dict[str, list[float]]:
    directory = FakeDirectory(runtime=runtime)
    directory.add_account("acc_bench", key.with_suffix(".pub").read_text())
    directory.owners[POD] = "acc_bench"
    thread = GatewayThread(FastPath(directory, port=0))
    known = root / "known_hosts"
    pod_port = pod.port_mappings[22]
    known.write_text(f"[127.0.0.1]:{pod_port} {pod.ssh_host_key}\n{POD} {pod.ssh_host_key}\n")
    common = ["scp", "-q", "-F", "/dev/null", "-i", str(key), "-c", CIPHER, "-o", "BatchMode=yes",
              "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes"]  # fmt: skip
    mbps: dict[str, list[float]] = {}
    try:
        port = thread.start().gateway.port
        proxy = fast_path_command("127.0.0.1", port, [f"-i {shlex.quote(str(key))}"])
        fast = [*common, "-o", f"ProxyCommand={proxy}", "-o", "ProxyUseFdpass=yes"]
        upload = root / "upload.bin"
        random_file(upload)
        landed = runtime.root_dir / "pods" / POD / "workspace" / "upload.bin"
        ways: dict[str, Callable[[], float]] = {
            SCP: lambda: run([*common, "-P", str(pod_port), str(upload),
                              f"{pod.ssh_user}@127.0.0.1:upload.bin"]),
            SCP_FAST: lambda: run([*fast, str(upload), f"{pod.ssh_user}@{POD}:upload.bin"]),
            CP: lambda: _timed(openpod_cp(port, key, pod, upload, True, "openssh")),
            CP_ASYNCSSH: lambda: _timed(openpod_cp(port, key, pod, upload, True, "asyncssh")),
            CP_DIRECT: lambda: _timed(openpod_cp(port, key, pod, upload, True, "openssh", True)),
        }  # fmt: skip
        for turn in range(RUNS):
            # Every other round in reverse (as bench.gateway does): no way always follows the
            # same one, whose writeback and cache state it would inherit.
            for name, way in _order(ways, turn):
                landed.unlink(missing_ok=True)
                seconds = way()
                if landed.stat().st_size != FILE_SIZE:
                    raise RuntimeError(f"{name} left {landed.stat().st_size} bytes")
                mbps.setdefault(name, []).append(FILE_SIZE / 1e6 / seconds)
                print(f"  {name}: {mbps[name][-1]:.0f} MB/s", flush=True)
        back = root / "back.bin"
        # The uploads left GiBs of dirty pages: the first read behind them would pay for
        # their writeback (measured: ~110 MB/s for whichever way went first).
        os.sync()
        downs: dict[str, Callable[[], float]] = {
            "openpod cp down, openssh": lambda: _timed(
                openpod_cp(port, key, pod, back, False, "openssh")
            ),
            "openpod cp down, asyncssh": lambda: _timed(
                openpod_cp(port, key, pod, back, False, "asyncssh")
            ),
            "scp down, straight": lambda: run(
                [*common, "-P", str(pod_port), f"{pod.ssh_user}@127.0.0.1:upload.bin", str(back)]
            ),
        }
        for turn in range(DOWN_RUNS):
            for name, way in _order(downs, turn):
                back.unlink(missing_ok=True)
                mbps.setdefault(name, []).append(FILE_SIZE / 1e6 / way())
        back.unlink(missing_ok=True)
        upload.unlink()
        tree = root / "tree"
        there = runtime.root_dir / "pods" / POD / "workspace" / "tree"
        straight, through, cp = TREE_WAYS
        trees: dict[str, Callable[[], float]] = {
            straight: lambda: run([*common, "-r", "-P", str(pod_port), str(tree),
                                   f"{pod.ssh_user}@127.0.0.1:tree"]),
            through: lambda: run([*fast, "-r", str(tree), f"{pod.ssh_user}@{POD}:tree"]),
            cp: lambda: _timed(openpod_cp(port, key, pod, tree, True, "openssh", remote="tree")),
        }  # fmt: skip
        for label, (count, size) in TREES.items():
            tree.mkdir()
            for number in range(count):
                (tree / f"f{number:04d}.bin").write_bytes(os.urandom(size))
            for turn in range(DIR_RUNS):
                for name, way in _order(trees, turn):
                    shutil.rmtree(there, ignore_errors=True)
                    seconds = way()
                    if len(os.listdir(there)) != count:
                        raise RuntimeError(f"{name} left {len(os.listdir(there))} files")
                    mbps.setdefault(f"{label}: {name}", []).append(count * size / 1e6 / seconds)
            shutil.rmtree(there)
            shutil.rmtree(tree)
        return mbps
    finally:
        thread.stop()


def _order(
    ways: dict[str, Callable[[], float]], turn: int
) -> list[tuple[str, Callable[[], float]]]:
    every = list(ways.items())
    return every if turn % 2 == 0 else every[::-1]


def _timed(work: Coroutine[Any, Any, None]) -> float:
    started = time.perf_counter()
    asyncio.run(work)
    return time.perf_counter() - started


def report(mbps: dict[str, list[float]]) -> str:
    med = {name: statistics.median(runs) for name, runs in mbps.items()}
    rows = [
        f"| {name} | {med[name]:.0f} | {', '.join(f'{v:.0f}' for v in runs)} | "
        f"{med[name] / med[SCP]:.2f}x |"
        for name, runs in mbps.items()
        if "down" not in name and ": " not in name
    ]
    straight, through, cp = TREE_WAYS
    tree_rows = [
        f"| {label} | {med[f'{label}: {straight}']:.0f} | {med[f'{label}: {through}']:.0f} | "
        f"{med[f'{label}: {cp}']:.0f} | "
        f"{med[f'{label}: {cp}'] / med[f'{label}: {straight}']:.2f}x |"
        for label in TREES
    ]
    version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.split(",")[0]
    return "\n".join(
        [
            f"{HEADING} ({time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, "
            f"{version.strip()}, asyncssh {asyncssh.__version__})",
            "",
            "`python -m bench.cp`. One pod on the local runtime (its own sshd); the gateway's "
            "fast path in the benchmark's process; 127.0.0.1. A 1 GiB file of random bytes up "
            f"into the pod, {RUNS} runs of each way, interleaved (every other round in reverse "
            "order); `openpod cp` is its copy "
            "(transfer.copy) without the API lookup the command makes first, as it runs "
            "without `--json` (which adds a SHA-256 of every file): asyncssh for "
            "sizes and the resume point, OpenSSH's sftp for a large file's bytes (64 requests "
            "of 255 KiB in flight, AES-GCM); with OPENPOD_CP_ENGINE=asyncssh every byte goes "
            "through asyncssh's SFTP client (64 requests of 255 KiB, AES-GCM, a 16 MiB window). "
            f"Then {DOWN_RUNS} copies back down each, interleaved the same way.",
            "",
            "| way | median MB/s | runs | vs scp straight |",
            "|---|---|---|---|",
            *rows,
            "",
            f"openpod cp / scp: **{med[CP] / med[SCP]:.2f}x** (target ≥ 0.9x); through the same "
            f"fast path: {med[CP] / med[SCP_FAST]:.2f}x; asyncssh alone: "
            f"{med[CP_ASYNCSSH] / med[SCP]:.2f}x; `--direct` (no relay, as scp straight): "
            f"{med[CP_DIRECT] / med[SCP]:.2f}x. Down (medians of {DOWN_RUNS}, after a sync): "
            "openpod cp through the fast path "
            f"{med['openpod cp down, openssh']:.0f} MB/s, with asyncssh alone "
            f"{med['openpod cp down, asyncssh']:.0f} MB/s, scp straight "
            f"{med['scp down, straight']:.0f} MB/s.",
            "",
            f"A directory of many files up into the pod ({DIR_RUNS} runs of each way, "
            "interleaved; MB/s medians): `scp -r` against `openpod cp`, which copies 8 files at "
            "once, files under 2 MiB on asyncssh and larger ones through sftp.",
            "",
            "| directory | scp -r straight | scp -r through the fast path | openpod cp through "
            "the fast path | openpod cp / scp -r straight |",
            "|---|---|---|---|---|",
            *tree_rows,
            "",
        ]
    )


def main() -> None:
    stop_cleanly_on_sigterm()
    if os.geteuid() != 0:
        raise SystemExit("bench.cp runs a real local pod: run it as root")
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="openpod-bench-cp-"))
    os.environ["OPENPOD_CONFIG_DIR"] = str(root / "cli-config")  # the pinned known_hosts
    runtime = LocalRuntime(root / "node")
    try:
        key = make_key(root / "id_ed25519")
        public = key.with_suffix(".pub").read_text().strip()
        runtime.start(PodLaunch(POD, 1, "local", (), {}, (PortRequest(22, "tcp"),), (), (public,)))
        mbps = measure(root, runtime, wait_ready(runtime, POD), key)
    finally:
        runtime.remove(POD, 1.0)
        shutil.rmtree(root, ignore_errors=True)
    text = report(mbps)
    print(text)
    write_section(HEADING, text)
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
