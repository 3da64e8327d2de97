"""Benchmark: SSH into a real pod through the openpod SSH gateway against straight to the pod's
own sshd, with the real OpenSSH client; an OpenSSH sshd as the jump host is a second reference.

Run `python -m bench.gateway` as root (local pods; about 1.5 minutes); it replaces its own
section of bench/RESULTS.md. One pod on the local runtime (its own sshd, as in production), one
`SSHGateway` (asyncssh, in this process on an event loop of its own, as the gateway tests run
it) asking an in-memory Directory, everything on 127.0.0.1. Four ways to the pod, measured
interleaved so that the noise of a shared 2-core host falls on all alike:

- straight to the pod's sshd port: the reference;
- through an OpenSSH sshd on the host used as a jump host (`ssh -J` to it): what the standard
  C implementation of the same relay costs on this machine;
- through the openpod gateway (`ssh -J openpod@GATEWAY POD`);
- through the gateway's fast path (`openpod ssh proxy` as ProxyCommand, ProxyUseFdpass), what
  `openpod ssh` and `openpod ssh config` use: no second SSH session, so no second encryption.

Measured: `scp` of a 1 GiB file of random bytes up into the pod and back down (OpenSSH's scp,
which speaks SFTP), 5 runs each way, MB/s (10^6 bytes) medians, with the CPU time the whole
host spent per GiB (from /proc/stat) and the gateway's own; and `ssh POD true`, 10 runs each,
median wall time (connection set-up, authentication, one command), also through the fast path
with the key in an ssh-agent (the proxy then never loads `cryptography`).

One cipher everywhere, `aes128-gcm@openssh.com` (the fastest OpenSSH has with AES-NI): for the
session with the pod on every way, and for the jump's own session (`ssh -W`, what `ssh -J`
runs, as a ProxyCommand), the only kind the gateway offers. Every client reads no user config
(`-F /dev/null`), never prompts and trusts only the host keys written here.
"""

from __future__ import annotations

import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import asyncssh

from bench import stop_cleanly_on_sigterm
from bench.results import write_section
from openpod.adapters.gateway.fastpath import FastPath
from openpod.adapters.gateway.server import SSHGateway
from openpod.adapters.runtimes.base import PodLaunch, PodObservation, PodPhase, PortRequest
from openpod.adapters.runtimes.local import LocalRuntime
from openpod.cli.ssh import fast_path_command
from tests.gateway.fakes import FakeDirectory, GatewayThread, make_key
from tests.support.net import free_port, port_open
from tests.support.ssh import ssh_agent

HEADING = "## SSH gateway: scp and ssh through the gateway vs straight to the pod"
POD = "benchpod0001"
ACCOUNT = "acc_bench"
FILE_SIZE = 1 << 30
CHUNK = 64 << 20
SCP_RUNS = 5
TRUE_RUNS = 10
CIPHER = "aes128-gcm@openssh.com"
DIRECT = "straight to the pod's sshd"
JUMP = "through an OpenSSH sshd as jump host"
GATEWAY = "through the openpod gateway"
FAST = "through the openpod gateway's fast path"
FAST_AGENT = "through the fast path, the key in an ssh-agent"
COMMAND_TIMEOUT_S = 300


@dataclass(frozen=True)
class Way:
    """One way a client reaches the pod: ssh's and scp's argv up to the destination."""

    name: str
    ssh: list[str]
    scp: list[str]
    host: str  # user@host as ssh and scp name it
    env: dict[str, str] | None = None  # where it differs from ours


class JumpSshd:
    """A bare OpenSSH sshd on the host, used only as a jump host; stopped by its PID."""

    def __init__(self, home: Path, key: Path) -> None:
        home.mkdir()
        self.home, self.port = home, free_port()
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / "host_key")]
        subprocess.run(keygen, check=True)
        authorized = home / "authorized_keys"
        authorized.write_text(key.with_suffix(".pub").read_text())
        self.config = home / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {home / 'host_key'}\n"
            f"PidFile {home / 'sshd.pid'}\nAuthorizedKeysFile {authorized}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "StrictModes no\nAllowTcpForwarding yes\nPermitTTY no\nX11Forwarding no\n"
            "UseDNS no\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host_public_key(self) -> str:
        return " ".join((self.home / "host_key.pub").read_text().split()[:2])

    def start(self) -> None:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        log = (self.home / "sshd.log").open("wb")
        argv = ["/usr/sbin/sshd", "-D", "-e", "-f", str(self.config)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=log)
        log.close()
        deadline = time.monotonic() + 10
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start:\n{(self.home / 'sshd.log').read_text()}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def ways(
    root: Path,
    key: Path,
    gateway: SSHGateway,
    jump: JumpSshd,
    pod: PodObservation,
    fast: FastPath,
) -> list[Way]:
    """Straight to the pod's sshd; through the OpenSSH jump host; through the gateway (`ssh
    -J`, and its fast path: `openpod ssh proxy` as ProxyCommand with ProxyUseFdpass); last,
    FAST_AGENT, the fast path signing with an agent's key (for `ssh POD true` only: its
    env, the agent's, is for the caller to set)."""
    known = root / "known_hosts"
    pod_port = pod.port_mappings[22]
    known.write_text(
        f"[127.0.0.1]:{gateway.port} {gateway.host_public_key}\n"
        f"[127.0.0.1]:{jump.port} {jump.host_public_key}\n"
        f"[127.0.0.1]:{pod_port} {pod.ssh_host_key}\n"
        f"{POD} {pod.ssh_host_key}\n"
    )
    common = ["-F", "/dev/null", "-i", str(key), "-c", CIPHER]
    for option in (
        "BatchMode=yes",
        "IdentitiesOnly=yes",
        "StrictHostKeyChecking=yes",
        f"UserKnownHostsFile={known}",
        "GlobalKnownHostsFile=/dev/null",
        "LogLevel=ERROR",
    ):
        common += ["-o", option]

    def proxy(port: int, login: str) -> list[str]:
        argv = ["ssh", *common, "-p", str(port), "-W", "%h:%p", f"{login}@127.0.0.1"]
        return ["-o", f"ProxyCommand={shlex.join(argv)}"]

    user, port = pod.ssh_user, str(pod_port)
    via_jump, via_gateway = proxy(jump.port, "root"), proxy(gateway.port, "openpod")

    def via_fast(identities: list[str]) -> list[str]:
        command = fast_path_command("127.0.0.1", fast.port, identities)
        return ["-o", f"ProxyCommand={command}", "-o", "ProxyUseFdpass=yes"]

    with_key, with_agent = via_fast([f"-i {shlex.quote(str(key))}"]), via_fast([])
    return [
        Way(DIRECT, ["ssh", *common, "-p", port], ["scp", *common, "-P", port], f"{user}@127.0.0.1"),
        Way(JUMP, ["ssh", *common, *via_jump, "-p", port], ["scp", *common, *via_jump, "-P", port],
            f"{user}@127.0.0.1"),
        Way(GATEWAY, ["ssh", *common, *via_gateway], ["scp", *common, *via_gateway],
            f"{user}@{POD}"),
        Way(FAST, ["ssh", *common, *with_key], ["scp", *common, *with_key], f"{user}@{POD}"),
        Way(FAST_AGENT, ["ssh", *common, *with_agent], [], f"{user}@{POD}"),
    ]  # fmt: skip


def run(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds `argv` took; fails with its stderr if it did not succeed."""
    start = time.perf_counter()
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=COMMAND_TIMEOUT_S,
        env=env,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    return elapsed


def wait_ready(runtime: LocalRuntime, pod_id: str) -> PodObservation:
    deadline = time.monotonic() + 20
    while True:
        obs = runtime.observe(pod_id)
        if obs.phase is PodPhase.RUNNING and 22 in obs.ready_ports and obs.ssh_host_key:
            return obs
        if obs.phase not in (PodPhase.STARTING, PodPhase.RUNNING) or time.monotonic() > deadline:
            raise RuntimeError(f"pod {pod_id} did not get ready: {obs}")
        time.sleep(0.02)


def random_file(path: Path) -> None:
    """FILE_SIZE bytes of os.urandom, written out (no holes for scp or the disk to skip)."""
    with path.open("wb") as out:
        for _ in range(FILE_SIZE // CHUNK):
            out.write(os.urandom(CHUNK))


def own_cpu_seconds() -> float:
    """This process's CPU time: the gateway's, as the main thread only waits on clients."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def host_cpu_seconds() -> float:
    """CPU time the whole host has spent busy (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


@dataclass
class Measured:
    true_s: dict[str, list[float]] = field(default_factory=dict)
    # direction ("up", "down") -> way -> runs
    scp_mbps: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    host_cpu_s: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # per GiB
    # this process's CPU per GiB (the gateway and its fast path live here), same keys
    own_cpu_s: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def scp(self, direction: str, way: Way, argv: list[str], landed: Path) -> None:
        """One timed scp `argv` of the file by `way`, which must leave FILE_SIZE bytes at
        `landed`."""
        own, host = own_cpu_seconds(), host_cpu_seconds()
        seconds = run(argv)
        host, own = host_cpu_seconds() - host, own_cpu_seconds() - own
        if landed.stat().st_size != FILE_SIZE:
            raise RuntimeError(f"scp {direction} {way.name} left {landed.stat().st_size} bytes")
        mbps = FILE_SIZE / 1e6 / seconds
        for table, value in ((self.scp_mbps, mbps), (self.host_cpu_s, host), (self.own_cpu_s, own)):
            table.setdefault(direction, {}).setdefault(way.name, []).append(value)
        print(f"  scp {direction} {way.name}: {mbps:.0f} MB/s, host CPU {host:.1f} s", flush=True)


def measure(root: Path, runtime: LocalRuntime, pod: PodObservation, key: Path) -> Measured:
    directory = FakeDirectory(runtime=runtime)
    directory.add_account(ACCOUNT, key.with_suffix(".pub").read_text())
    directory.owners[POD] = ACCOUNT
    thread = GatewayThread(SSHGateway(directory, root / "gateway_host_key", port=0))
    fast_thread = GatewayThread(FastPath(directory, port=0))
    jump = JumpSshd(root / "jump", key)
    measured = Measured()
    try:
        gateway = thread.start().gateway
        fast = fast_thread.start().gateway
        jump.start()
        *every, by_agent = ways(root, key, gateway, jump, pod, fast)
        with ssh_agent(root / "agent.sock", key) as agent_env:
            # `ssh POD true` only: the proxy signs through the agent (no -i), as for most users.
            connects = [*every, replace(by_agent, env=agent_env)]
            for way in connects:  # warm-up, and proof that each way reaches this very pod
                run([*way.ssh, way.host, f"test $OPENPOD_POD_ID = {POD}"], way.env)
            for _ in range(TRUE_RUNS):
                for way in connects:
                    seconds = run([*way.ssh, way.host, "true"], way.env)
                    measured.true_s.setdefault(way.name, []).append(seconds)
        upload = root / "upload.bin"
        random_file(upload)
        landed = runtime.root_dir / "pods" / POD / "workspace" / "upload.bin"
        back = root / "download.bin"
        for turn in range(SCP_RUNS):
            order = every if turn % 2 == 0 else every[::-1]
            for way in order:
                landed.unlink(missing_ok=True)
                measured.scp("up", way, [*way.scp, str(upload), f"{way.host}:upload.bin"], landed)
            os.sync()  # the uploads' writeback is not charged to the downloads
            for way in order:
                back.unlink(missing_ok=True)
                measured.scp("down", way, [*way.scp, f"{way.host}:upload.bin", str(back)], back)
                back.unlink()
                os.sync()
        landed.unlink(missing_ok=True)
        upload.unlink()
        return measured
    finally:
        jump.stop()
        fast_thread.stop()
        thread.stop()


def scp_table(measured: Measured, direction: str) -> list[str]:
    med = statistics.median
    runs_by_way = measured.scp_mbps[direction]
    mbps = {name: med(runs) for name, runs in runs_by_way.items()}
    return [
        "| way | median MB/s | runs | host CPU per GiB | vs straight |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {mbps[name]:.0f} | {', '.join(f'{v:.0f}' for v in runs)} | "
            f"{med(measured.host_cpu_s[direction][name]):.1f} s | "
            f"{mbps[name] / mbps[DIRECT]:.2f}x |"
            for name, runs in runs_by_way.items()
        ),
    ]


def report(measured: Measured) -> str:
    med = statistics.median
    mbps = {name: med(runs) for name, runs in measured.scp_mbps["up"].items()}
    down = {name: med(runs) for name, runs in measured.scp_mbps["down"].items()}
    true_ms = {name: med(runs) * 1000 for name, runs in measured.true_s.items()}
    true_rows = [
        f"| {name} | {true_ms[name]:.0f} ms | {min(runs) * 1000:.0f} to {max(runs) * 1000:.0f} ms"
        f" | {true_ms[name] / true_ms[DIRECT]:.2f}x |"
        for name, runs in measured.true_s.items()
    ]
    ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr
    gated = mbps[GATEWAY] / mbps[DIRECT]
    lines = [
        f"{HEADING} ({time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, "
        f"{ssh_version.split(',')[0].strip()}, asyncssh {asyncssh.__version__})",
        "",
        "`python -m bench.gateway`. One pod on the local runtime (its own sshd); the gateway "
        "(asyncssh) in the benchmark's process; a bare OpenSSH sshd on the host as a second "
        f"reference jump host; all on 127.0.0.1. Cipher `{CIPHER}` everywhere: the session with "
        "the pod, and the jump's own session (ProxyCommand `ssh -W`, what `ssh -J` runs); host "
        "keys pinned, no user config. The fast path: `openpod ssh proxy` (a Python process per "
        "connection, ~70 ms to hand over the socket with a key file, ~40 ms with an agent's key, "
        "included in every figure) signs the gateway's nonce and hands "
        "the socket to ssh (ProxyUseFdpass); the gateway joins it to the pod's sshd in the kernel "
        "(splice): the pod's SSH session as it is. The four ways are measured interleaved.",
        "",
        f"`scp` (SFTP protocol) of a 1 GiB file of random bytes up into the pod, then back down "
        f"(after a sync, so that no upload's writeback falls on a download), {SCP_RUNS} runs each "
        "way, every other round in reverse order, MB/s (10^6 bytes); host CPU = busy time of all "
        "cores per GiB. Up:",
        "",
        *scp_table(measured, "up"),
        "",
        "Down:",
        "",
        *scp_table(measured, "down"),
        "",
        f"Fast path / straight: **{mbps[FAST] / mbps[DIRECT]:.2f}x** up, "
        f"**{down[FAST] / down[DIRECT]:.2f}x** down (target ≥ 0.8x; the fast path spent "
        f"{med(measured.own_cpu_s['up'][FAST]):.1f} s of CPU per GiB up, "
        f"{med(measured.own_cpu_s['down'][FAST]):.1f} s down: the kernel's work for the second TCP "
        "hop, which on this host shares the 2 cores with both ends' encryption); "
        f"gateway (`ssh -J`) / straight: {gated:.2f}x; OpenSSH jump host / straight: "
        f"{mbps[JUMP] / mbps[DIRECT]:.2f}x; gateway / OpenSSH jump host: "
        f"{mbps[GATEWAY] / mbps[JUMP]:.2f}x. The gateway itself spent "
        f"{med(measured.own_cpu_s['up'][GATEWAY]):.1f} s of CPU per GiB relayed (it decrypts the jump "
        "session's every byte and hands the still-encrypted inner session to the pod).",
        "",
        f"`ssh POD true` (connect, authenticate, run one command), {TRUE_RUNS} runs each:",
        "",
        "| way | median | range | vs straight |",
        "|---|---|---|---|",
        *true_rows,
        "",
        f"Through the gateway: +{true_ms[GATEWAY] - true_ms[DIRECT]:.0f} ms (a second SSH "
        "handshake, with the gateway, and its lookups of the key and the pod); through the "
        f"fast path: +{true_ms[FAST] - true_ms[DIRECT]:.0f} ms with a key file, "
        f"+{true_ms[FAST_AGENT] - true_ms[DIRECT]:.0f} ms with the key in an ssh-agent (mostly "
        "the proxy's start-up: Python, and for a key file `cryptography`).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    stop_cleanly_on_sigterm()
    if os.geteuid() != 0:
        raise SystemExit("bench.gateway runs a real local pod: run it as root")
    for tool in ("ssh", "scp", "ssh-keygen"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench.gateway needs {tool} (apt-get install -y openssh-client)")
    if not Path("/usr/sbin/sshd").exists():
        raise SystemExit("bench.gateway needs sshd (apt-get install -y openssh-server)")
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="openpod-bench-gw-"))
    runtime = LocalRuntime(root / "node")
    try:
        key = make_key(root / "id_ed25519")
        launch = PodLaunch(
            POD,
            1,
            "local",
            (),
            {},
            (PortRequest(22, "tcp"),),
            (),
            (key.with_suffix(".pub").read_text().strip(),),
        )
        runtime.start(launch)
        measured = measure(root, runtime, wait_ready(runtime, POD), key)
    finally:
        runtime.remove(POD, 1.0)
        shutil.rmtree(root, ignore_errors=True)
    text = report(measured)
    print(text)
    write_section(HEADING, text)
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
