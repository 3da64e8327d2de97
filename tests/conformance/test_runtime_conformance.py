"""The runtime conformance suite: what every runtime must do, checked the same way for each.

Each test runs once per runtime (`pods.kind`: local, docker, kubernetes; Kubernetes Pods run
on the same dockerd through a test kubelet, tests/support/kubelet.py, each at a Pod IP of
its own on the host's loopback). Pods are looked at from
outside: OpenSSH with the user's key on the SSH port the runtime reports, TCP and HTTP on
the others, /proc for what still runs (a pod's processes all carry OPENPOD_POD_ID in their
environment, containers included: they are processes of this host), and the meter's events
at a fake control plane. Docker pods use the host's network here (tests create none).
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from openpod.adapters.runtimes._kube_manifests import POD_ID
from openpod.adapters.runtimes.base import (
    MeterLaunch,
    PodPhase,
    PodStartError,
    ResourceLimits,
)
from openpod.adapters.runtimes.docker import DockerRuntime
from openpod.adapters.runtimes.kubernetes import KubernetesRuntime
from tests.conformance.conftest import Pods
from tests.meter.plane import TOKEN, FakePlane
from tests.support.net import wait_until

MIB = 1024 * 1024


def new_id(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def processes_of(pod_id: str) -> list[int]:
    """Every process of this host whose environment names `pod_id` as its pod."""
    marker = f"OPENPOD_POD_ID={pod_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry))
    return found


def refused(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((address, port)) != 0


def read_when_there(pods: Pods, obs_pod: str, path: str) -> str:
    """A file the pod's workload writes to /workspace, read over SSH once it exists."""
    seen: list[str] = []

    def written() -> bool:
        out = pods.ssh(pods.running(obs_pod), f"cat {path} 2>/dev/null || true")
        seen.append(out)
        return bool(out.strip())

    wait_until(written, 30, f"{path} in pod {obs_pod}", 0.1)
    return seen[-1].strip()


def test_start_boot_ports_and_readiness(pods: Pods, tmp_path: Path) -> None:
    pod = new_id("web")
    serve = (
        'echo "$GREETING" > /workspace/greeting; '
        'exec python3 -m http.server --bind 127.0.0.1 "$OPENPOD_TCP_PORT_8080"'
    )
    pods.runtime.start(
        pods.launch(pod, command=("sh", "-c", serve), env={"GREETING": "hi"}, ports=(22, 8080))
    )
    obs = pods.running(pod)
    assert set(obs.port_mappings) == {22, 8080}
    assert len(set(obs.port_mappings.values())) == 2

    # SSH: the user's key gets in, the pod's environment reaches the session.
    assert pods.ssh(obs, "cat /workspace/greeting; echo $GREETING").split() == ["hi", "hi"]
    # The host key the runtime reports is the one the pod's sshd presents.
    scan = subprocess.run(
        ["ssh-keyscan", "-t", "ed25519", "-p", str(obs.port_mappings[22]), pods.address(obs)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert obs.ssh_host_key is not None
    assert obs.ssh_host_key in scan.stdout
    # Another key is refused.
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    other = Pods(pods.kind, pods.root, pods.runtime, pods.image, stranger, pods.make)
    assert other.ssh(obs, "true", check=False) == ""

    # The HTTP port: ready once the server listens, and it serves the workspace.
    def http_ready() -> bool:
        return 8080 in pods.runtime.observe(pod).ready_ports

    wait_until(http_ready, 30, "port 8080 ready")
    page = httpx.get(f"http://{pods.address(obs)}:{obs.port_mappings[8080]}/", timeout=10)
    assert page.status_code == 200
    assert "greeting" in page.text


def test_a_workload_exit_code_is_reported(pods: Pods) -> None:
    pod = new_id("exit")
    pods.runtime.start(pods.launch(pod, command=("sh", "-c", "exit 7")))
    obs = pods.until(pod, PodPhase.EXITED)
    assert obs.exit_code == 7
    assert obs.reason is not None and "7" in obs.reason
    assert obs.exited_at is not None


def test_stop_leaves_nothing_and_resume_keeps_the_workspace(pods: Pods) -> None:
    pod = new_id("resume")
    pods.runtime.start(pods.launch(pod))
    obs = pods.running(pod)
    ssh_port, address = obs.port_mappings[22], pods.address(obs)
    pods.ssh(obs, "echo kept > /workspace/kept.txt; (sleep 300 >/dev/null 2>&1 &)")
    assert processes_of(pod)

    stopped = pods.runtime.stop(pod, 5)
    assert stopped.phase is PodPhase.STOPPED
    assert stopped.exited_at is not None
    assert processes_of(pod) == []  # the SSH session's child included
    assert refused(address, ssh_port)
    assert pods.runtime.stop(pod, 5).phase is PodPhase.STOPPED  # again: nothing to do

    pods.runtime.start(pods.launch(pod, generation=2))
    again = pods.running(pod)
    assert again.generation == 2
    assert again.port_mappings[22] == ssh_port  # the address stays the same when free
    assert pods.ssh(again, "cat /workspace/kept.txt").strip() == "kept"
    assert again.ssh_host_key == obs.ssh_host_key  # the pod's host key is its own, kept


def test_terminate_removes_everything(pods: Pods) -> None:
    pod = new_id("gone")
    pods.runtime.start(pods.launch(pod))
    pods.ssh(pods.running(pod), "echo x > /workspace/x.txt")
    pods.runtime.remove(pod, 5)
    assert pods.runtime.observe(pod).phase is PodPhase.ABSENT
    assert processes_of(pod) == []
    assert not (pods.root / "pods" / pod).exists()
    if isinstance(pods.runtime, DockerRuntime):
        api = pods.runtime.api
        assert api.containers({"io.openpod.pod": pod}) == []
        with pytest.raises(Exception, match="no such volume"):
            api.volume(pods.runtime.volume_name(pod))
    if pods.kube_api is not None:  # no Pod, Secret or claim of it is left in the cluster
        for plural in ("pods", "secrets", "persistentvolumeclaims"):
            left = pods.kube_api.objects(plural).values()
            assert [o for o in left if o["metadata"]["labels"].get(POD_ID) == pod] == []
    pods.runtime.remove(pod, 5)  # again: nothing to do

    pods.runtime.start(pods.launch(pod, generation=2))
    assert pods.ssh(pods.running(pod), "ls -A /workspace | grep -c x.txt || true").strip() == "0"


def test_a_restarted_agent_adopts_its_pods(pods: Pods) -> None:
    pod = new_id("adopt")
    stamp = "date +%s%N > /workspace/started; exec sleep 3600"
    launch = pods.launch(pod, command=("sh", "-c", stamp))
    pods.runtime.start(launch)
    first = read_when_there(pods, pod, "/workspace/started")

    agent = pods.make(pods.root)  # a new process would see only what is on disk and in dockerd
    adopted = {obs.pod_id: obs for obs in agent.adopt()}
    assert set(adopted) == {pod}
    assert adopted[pod].generation == 1
    assert adopted[pod].phase in (PodPhase.STARTING, PodPhase.RUNNING)
    again = agent.start(launch)  # the same run: not started twice
    assert again.generation == 1
    assert read_when_there(pods, pod, "/workspace/started") == first

    with pytest.raises(PodStartError, match="already runs generation 1"):
        agent.start(pods.launch(pod, generation=0))
    assert agent.stop(pod, 5).phase is PodPhase.STOPPED
    assert processes_of(pod) == []


def test_the_meter_runs_beside_the_pod_out_of_its_reach(pods: Pods) -> None:
    pod = new_id("meter")
    with FakePlane() as plane:
        pods.runtime.start(pods.launch(pod, meter=MeterLaunch(plane.url, TOKEN, 0.2), gpus=(0,)))
        pods.running(pod)
        plane.wait(lambda p: len(p.stored) >= 2, 15, "started and a heartbeat")
        assert plane.stored[1]["kind"] == "started"
        # The token is in no process of the pod, and the meter is not one of them.
        for pid in processes_of(pod):
            try:
                assert TOKEN.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
                assert b"openpod.meter" not in Path(f"/proc/{pid}/cmdline").read_bytes()
            except FileNotFoundError:
                continue  # ended meanwhile
        pods.runtime.stop(pod, 5)
        plane.wait(lambda p: p.closed, 15, "stopped from the meter")
        assert plane.stored[max(plane.stored)]["kind"] == "stopped"


def test_gpus_given_to_the_pod(pods: Pods) -> None:
    pod = new_id("gpu")
    pods.runtime.start(pods.launch(pod, gpus=(1, 3)))
    seen = pods.ssh(
        pods.running(pod), 'echo "$CUDA_VISIBLE_DEVICES|$NVIDIA_VISIBLE_DEVICES|$OPENPOD_GPU_COUNT"'
    )
    if pods.kind == "kubernetes":
        # The cluster's device plugin picks which GPUs (the agent's indices mean nothing
        # there) and names them in NVIDIA_VISIBLE_DEVICES; the container sees only those,
        # so CUDA_VISIBLE_DEVICES is left unset.
        cuda, nvidia, count = seen.strip().split("|")
        assert (cuda, count) == ("", "2")
        assert len(set(nvidia.split(","))) == 2
    else:
        assert seen.strip() == "1,3|1,3|2"


# Starts up to 100 processes at once, counts them, then ends them (so SSH can fork again).
SPAWN = """
import subprocess
children = []
try:
    for _ in range(100):
        children.append(subprocess.Popen(["sleep", "600"]))
except OSError:
    pass
for child in children:
    child.kill()
    child.wait()
open("/workspace/spawned", "w").write(str(len(children)))
import time
time.sleep(3600)
"""


def test_a_process_limit_holds(pods: Pods) -> None:
    free, limited = new_id("free"), new_id("pids")
    pods.runtime.start(pods.launch(free, command=("python3", "-c", SPAWN)))
    pods.runtime.start(
        pods.launch(limited, command=("python3", "-c", SPAWN), limits=ResourceLimits(pids=40))
    )
    assert read_when_there(pods, free, "/workspace/spawned") == "100"
    spawned = int(read_when_there(pods, limited, "/workspace/spawned"))
    if pods.kind == "kubernetes":
        # A Pod has no PID limit field: the node's kubelet (podPidsLimit) limits every Pod
        # alike, so the launch's own limit is not sent (docs/kubernetes.md) and this pod
        # spawns what the free one did.
        assert spawned == 100
        assert isinstance(pods.runtime, KubernetesRuntime)
        for sent in pods.runtime.pods.snapshot():
            for container in sent.spec.containers if sent.spec else ():
                limits = container.resources.limits if container.resources else None
                assert set(limits or {}) <= {"cpu", "memory", "nvidia.com/gpu"}
    else:
        assert 1 <= spawned < 40


EAT = """
small = bytearray(16 << 20)
open("/workspace/ate", "w").write("16")
big = bytearray(512 << 20)
open("/workspace/ate", "w").write("512")
"""


def test_a_memory_limit_holds(pods: Pods) -> None:
    pod = new_id("mem")
    limits = ResourceLimits(memory_bytes=128 * MIB)
    pods.runtime.start(pods.launch(pod, command=("python3", "-c", EAT), limits=limits))
    obs = pods.until(pod, PodPhase.EXITED)
    assert obs.exit_code == 137  # SIGKILLed by the OOM killer
    if isinstance(pods.runtime, DockerRuntime):
        assert obs.reason == "the pod ran out of memory (limit 128 MiB)"
    pods.runtime.start(pods.launch(pod, generation=2))
    assert pods.ssh(pods.running(pod), "cat /workspace/ate").strip() == "16"


BURN = """
import time
wall = time.monotonic()
cpu = time.process_time()
while time.monotonic() - wall < 1.5:
    pass
share = (time.process_time() - cpu) / (time.monotonic() - wall)
open("/workspace/share", "w").write(f"{share:.3f}")
time.sleep(3600)
"""


def test_a_cpu_limit_holds(pods: Pods) -> None:
    pod = new_id("cpu")
    limits = ResourceLimits(cpus=0.2)
    pods.runtime.start(pods.launch(pod, command=("python3", "-c", BURN), limits=limits))
    share = float(read_when_there(pods, pod, "/workspace/share"))
    assert 0 < share < 0.5  # unlimited, a busy loop gets a whole core when it is free


@pytest.mark.parametrize(
    ("limits", "named"),
    [
        (ResourceLimits(pids=0), "pids must be at least 1"),
        (ResourceLimits(cpus=0), "cpus must be a number"),
        (ResourceLimits(memory_bytes=1024), "memory_bytes must be at least"),
    ],
)
def test_bad_limits_are_refused_before_anything_runs(
    pods: Pods, limits: ResourceLimits, named: str
) -> None:
    pod = new_id("bad")
    with pytest.raises(PodStartError, match=named):
        pods.runtime.start(pods.launch(pod, limits=limits))
    assert pods.runtime.observe(pod).phase is PodPhase.ABSENT
    assert processes_of(pod) == []
