"""LocalRuntime and boot.sh against the real OpenSSH sshd and the real ssh client.

Pods are found through /proc (their PID namespace link), independently of the code under
test. All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from openpod.adapters.runtimes.base import (
    PodLaunch,
    PodObservation,
    PodPhase,
    PodStartError,
)
from openpod.adapters.runtimes.local import BOOT_SCRIPT, LocalRuntime

SSH = shutil.which("ssh")
RUNNING = PodPhase.RUNNING


def wait_phase(rt: LocalRuntime, pod_id: str, *phases: PodPhase) -> PodObservation:
    """Poll observe() until the pod reaches one of `phases`, within a deadline."""
    deadline = time.monotonic() + 10
    obs = rt.observe(pod_id)
    while obs.phase not in phases:
        assert time.monotonic() < deadline, f"pod {pod_id} still {obs}"
        time.sleep(0.02)
        obs = rt.observe(pod_id)
    return obs


def ssh_argv(key: Path, obs: PodObservation, remote: str) -> list[str]:
    """A real ssh command trusting nothing but the host key the runtime reported."""
    assert SSH is not None
    assert obs.ssh_host_key
    port = obs.port_mappings[22]
    known = key.parent / f"known_hosts_{port}"
    known.write_text(f"[127.0.0.1]:{port} {obs.ssh_host_key}\n")
    return [
        SSH, "-F", "/dev/null", "-p", str(port), "-i", str(key), "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known}",
        "-o", "ConnectTimeout=5", f"{obs.ssh_user}@127.0.0.1", remote,
    ]  # fmt: skip


def ssh_run(key: Path, obs: PodObservation, remote: str) -> str:
    argv = ssh_argv(key, obs, remote)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def leader(rt: LocalRuntime, pod_id: str) -> tuple[int, str]:
    """The pod's unshare pid and the PID namespace it made, read from /proc."""
    state = json.loads((rt.root_dir / "pods" / pod_id / "run" / "state.json").read_text())
    pid = int(state["pid"])
    return pid, os.readlink(f"/proc/{pid}/ns/pid_for_children")


def leaders_of(rt: LocalRuntime, pod_id: str) -> list[int]:
    """Leaders started for this pod: processes of the host's PID namespace whose argv names
    the pod's boot dir (inside the pod's own namespace, bwrap's argv names it too)."""
    boot = str(rt.root_dir / "pods" / pod_id / "run" / "boot").encode()
    host_ns = os.readlink("/proc/self/ns/pid")
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                named = boot in cmdline.read().split(b"\0")
            if (
                named
                and _proc_state(entry) != "Z"
                and os.readlink(f"/proc/{entry}/ns/pid") == host_ns
            ):
                found.append(int(entry))
        except OSError:
            continue
    return found


def _proc_state(pid: int | str) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def pids_in_ns(ns: str) -> list[int]:
    """Every live (non-zombie) process of PID namespace `ns`."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            in_ns = os.readlink(f"/proc/{entry}/ns/pid") == ns
        except OSError:
            continue
        if in_ns and _proc_state(entry) not in (None, "Z"):
            found.append(int(entry))
    return found


def refuses(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def bindable(port: int) -> bool:
    """A server can listen there again (SO_REUSEADDR: TIME_WAIT leftovers do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_ssh_stop_resume_remove(
    runtime: LocalRuntime, make_launch: Callable[..., PodLaunch], client_key: Path
) -> None:
    env = {"GREETING": "hello  big world", "OPENPOD_REGION": "local"}
    first = runtime.start(make_launch(env=env, ports=(22, 8888)))
    assert first.phase in (PodPhase.STARTING, RUNNING)
    obs = wait_phase(runtime, "pod1", RUNNING)
    assert obs.ssh_ready
    assert obs.ssh_available
    assert 22 in obs.ready_ports
    assert set(obs.port_mappings) == {22, 8888}
    remote = (
        'echo $OPENPOD_POD_ID; pwd; echo "$GREETING"; echo "$OPENPOD_REGION $OPENPOD_TCP_PORT_8888"; '
        'echo "$HOME"'
    )
    out = ssh_run(client_key, obs, remote + "; echo hi > /workspace/f; cat f")
    pod_id, cwd, greeting, extra, home, cat = out.splitlines()
    assert (pod_id, greeting, cat) == ("pod1", "hello  big world", "hi")
    assert extra == f"local {obs.port_mappings[8888]}"
    assert (cwd, home) == ("/workspace", "/workspace")  # logins land in the pod's workspace
    assert (runtime.root_dir / "pods/pod1/workspace/f").read_text() == "hi\n"

    pid, ns = leader(runtime, "pod1")
    stopped = runtime.stop("pod1", 5)
    assert stopped.phase is PodPhase.STOPPED
    assert _proc_state(pid) in (None, "Z")
    assert pids_in_ns(ns) == []
    assert refuses(obs.port_mappings[22])
    assert bindable(obs.port_mappings[22])
    assert runtime.stop("pod1", 5).phase is PodPhase.STOPPED  # idempotent

    runtime.start(make_launch(generation=2, ports=(22, 8888)))
    again = wait_phase(runtime, "pod1", RUNNING)
    assert again.generation == 2
    assert again.ssh_host_key == obs.ssh_host_key
    assert again.port_mappings == obs.port_mappings  # free again: reused, known_hosts holds
    assert ssh_run(client_key, again, "cat /workspace/f") == "hi\n"

    runtime.remove("pod1", 5)
    assert not (runtime.root_dir / "pods" / "pod1").exists()
    assert runtime.observe("pod1").phase is PodPhase.ABSENT
    runtime.remove("pod1", 5)  # idempotent


def test_stop_kills_open_ssh_session(
    runtime: LocalRuntime, make_launch: Callable[..., PodLaunch], client_key: Path
) -> None:
    runtime.start(make_launch())
    obs = wait_phase(runtime, "pod1", RUNNING)
    argv = ssh_argv(client_key, obs, "echo ready; exec sleep 300")
    session = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert session.stdout is not None
        assert session.stdout.readline() == b"ready\n"
        pid, ns = leader(runtime, "pod1")
        assert len(pids_in_ns(ns)) >= 4  # init, sshd, its session, the remote sleep
        started = time.monotonic()
        runtime.stop("pod1", 5)
        assert time.monotonic() - started < 2  # TERM honoured; a deaf init is not waited for
        assert session.wait(timeout=5) != 0  # the client saw its session end
    finally:
        session.kill()  # only if a failed assertion left it running
        session.communicate()
    assert pids_in_ns(ns) == []
    assert _proc_state(pid) in (None, "Z")


def test_image_without_sshd_still_runs(
    runtime: LocalRuntime, make_launch: Callable[..., PodLaunch]
) -> None:
    runtime.start(make_launch(env={"OPENPOD_SSHD": "/nonexistent"}))
    obs = wait_phase(runtime, "pod1", RUNNING)
    assert not obs.ssh_available
    assert not obs.ssh_ready
    assert obs.reason is not None
    assert "no sshd" in obs.reason
    assert pids_in_ns(leader(runtime, "pod1")[1])


def test_workload_exit_code_and_logs(
    runtime: LocalRuntime, make_launch: Callable[..., PodLaunch]
) -> None:
    script = 'echo "to stdout $OPENPOD_POD_ID"; echo "to stderr" >&2; exit 7'
    runtime.start(make_launch(command=("sh", "-c", script)))
    obs = wait_phase(runtime, "pod1", PodPhase.EXITED)
    assert obs.exit_code == 7
    assert obs.reason is not None
    assert "7" in obs.reason
    run_dir = runtime.root_dir / "pods" / "pod1" / "run"
    assert (run_dir / "stdout.log").read_text() == "to stdout pod1\n"
    assert (run_dir / "stderr.log").read_text() == "to stderr\n"


def test_adopt_after_restart_and_no_duplicate(
    runtime: LocalRuntime, make_launch: Callable[..., PodLaunch]
) -> None:
    runtime.start(make_launch())
    wait_phase(runtime, "pod1", RUNNING)
    pid, ns = leader(runtime, "pod1")
    fresh = LocalRuntime(runtime.root_dir)  # what a restarted agent builds
    [adopted] = fresh.adopt()
    assert (adopted.pod_id, adopted.phase) == ("pod1", RUNNING)
    assert fresh.start(make_launch()).phase is RUNNING
    assert leader(fresh, "pod1")[0] == pid
    assert leaders_of(runtime, "pod1") == [pid]
    assert fresh.stop("pod1", 5).phase is PodPhase.STOPPED
    assert pids_in_ns(ns) == []
    assert [o.phase for o in LocalRuntime(runtime.root_dir).adopt()] == [PodPhase.STOPPED]


def test_gpu_env_and_workload_port(
    runtime: LocalRuntime, make_launch: Callable[..., PodLaunch]
) -> None:
    show = 'echo "$CUDA_VISIBLE_DEVICES|$NVIDIA_VISIBLE_DEVICES|$OPENPOD_GPU_COUNT|$HOME|$PWD"'
    serve = f"{show} > gpus; exec python3 -m http.server -b 127.0.0.1 $OPENPOD_TCP_PORT_8000"
    runtime.start(make_launch(command=("sh", "-c", serve), gpus=(2, 3), ports=(22, 8000)))
    deadline = time.monotonic() + 10
    while 8000 not in (obs := runtime.observe("pod1")).ready_ports:
        assert obs.phase is not PodPhase.EXITED, obs
        assert time.monotonic() < deadline, obs
        time.sleep(0.02)
    workspace = runtime.root_dir / "pods" / "pod1" / "workspace"
    assert (workspace / "gpus").read_text() == "2,3|2,3|2|/workspace|/workspace\n"
    runtime.stop("pod1", 5)
    assert bindable(obs.port_mappings[8000])

    runtime.start(make_launch(pod_id="pod2", command=("sh", "-c", f"{show} > gpus")))
    wait_phase(runtime, "pod2", PodPhase.EXITED)
    gpus = (runtime.root_dir / "pods" / "pod2" / "workspace" / "gpus").read_text()
    assert gpus == "|void|0|/workspace|/workspace\n"


def test_unknown_pod_and_stale_generation(
    runtime: LocalRuntime, make_launch: Callable[..., PodLaunch]
) -> None:
    assert runtime.observe("nope").phase is PodPhase.ABSENT
    assert runtime.stop("nope", 1).phase is PodPhase.ABSENT
    runtime.remove("nope", 1)
    runtime.start(make_launch(generation=3))
    with pytest.raises(PodStartError, match="generation 3"):
        runtime.start(make_launch(generation=2))


def test_start_refuses_without_root(
    tmp_path: Path, make_launch: Callable[..., PodLaunch], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(PodStartError, match="root"):
        LocalRuntime(tmp_path).start(make_launch())


# make test installs dash, busybox and bash: each must run the boot script.
SHELLS = ["dash", "busybox", "bash"]


@pytest.mark.parametrize("shell", SHELLS)
def test_boot_script_in_posix_shells(tmp_path: Path, shell: str) -> None:
    """No sshd: keys and environment are still written, the status says why, argv runs."""
    found = shutil.which(shell)
    assert found is not None, f"{shell} is not installed (make test installs it)"
    argv = [found, *(["sh"] if shell == "busybox" else [])]
    env = dict(PATH=os.environ["PATH"], HOME=str(tmp_path / "home"), SPACED=" a  b ")
    env.update(PUBLIC_KEY="ssh-ed25519 AAAA one\nssh-ed25519 BBBB two", value="kept")
    env.update(OPENPOD_BOOT_STATUS=str(tmp_path / "status"), OPENPOD_SSHD="/nonexistent")
    env.update(OPENPOD_SSH_DIR=str(tmp_path / "ssh"), MULTI="one\nINJECTED=1")
    cmd = [*argv, str(BOOT_SCRIPT), "sh", "-c", 'echo "ran $# $1"', "x", "y"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=10, check=True)
    assert done.stdout == "ran 1 y\n"
    dot_ssh = tmp_path / "home" / ".ssh"
    assert dot_ssh.stat().st_mode & 0o777 == 0o700
    assert (dot_ssh / "authorized_keys").stat().st_mode & 0o777 == 0o600
    assert (dot_ssh / "authorized_keys").read_text() == env["PUBLIC_KEY"] + "\n"
    lines = (dot_ssh / "environment").read_text().splitlines()
    assert {"SPACED= a  b ", "value=kept", "OPENPOD_SSHD=/nonexistent"} <= set(lines)
    left_out = ("PUBLIC_KEY=", "HOME=", "MULTI=", "INJECTED=")
    assert not [line for line in lines if line.startswith(left_out)]
    assert (tmp_path / "status").read_text() == "ssh=unavailable: no sshd binary at /nonexistent\n"


def test_ready_pods_are_not_probed_on_every_look(
    runtime: LocalRuntime, make_launch: Callable[..., PodLaunch], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each SSH banner probe is a connection sshd logs: once all is ready, look by /proc only."""
    from openpod.adapters.runtimes import _probing, readiness

    runtime.start(make_launch())
    wait_phase(runtime, "pod1", RUNNING)
    runtime.observe("pod1")  # a full probe that finds everything ready
    probes: list[int] = []
    real_banner = readiness.ssh_banner

    def counting_banner(host: str, port: int, timeout: float = 0.2) -> bool:
        probes.append(port)
        return real_banner(host, port, timeout)

    monkeypatch.setattr(readiness, "ssh_banner", counting_banner)
    for _ in range(5):
        assert runtime.observe("pod1").phase is RUNNING
    assert probes == []
    monkeypatch.setattr(_probing, "REPROBE_SECONDS", 0.0)
    assert runtime.observe("pod1").ssh_ready
    assert len(probes) == 1
    runtime.stop("pod1", 5)
    assert runtime.observe("pod1").phase is PodPhase.STOPPED


def test_the_pods_view_of_the_host(
    runtime: LocalRuntime, make_launch: Callable[..., PodLaunch], client_key: Path, tmp_path: Path
) -> None:
    """Own hostname, /tmp and processes in both modes; with bubblewrap, a read-only host."""
    runtime.start(make_launch())
    obs = wait_phase(runtime, "pod1", RUNNING)
    marker = f"openpod-view-{tmp_path.name}"
    # Without bubblewrap the host's filesystem is writable from the pod: never probe it then.
    probe = "touch /usr/openpod-probe 2>&1 || true" if runtime.bubblewrap else "echo skipped"
    out = ssh_run(
        client_key,
        obs,
        f"hostname; touch /tmp/{marker} && echo tmp-ok; ps -e -o comm= | wc -l; "
        f"{probe}; touch /workspace/w && echo ws-ok",
    )
    lines = out.splitlines()
    assert lines[0] == "pod1"
    assert lines[1] == "tmp-ok"
    assert not Path(f"/tmp/{marker}").exists()  # the pod's /tmp is its own
    assert int(lines[2]) < 12  # its own processes only: the host has far more
    assert lines[-1] == "ws-ok"
    if runtime.bubblewrap:
        assert "Read-only file system" in lines[3]
        assert not Path("/usr/openpod-probe").exists()
