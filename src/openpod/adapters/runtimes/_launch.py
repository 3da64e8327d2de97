"""How the local runtime launches one pod run: the unshare command line and the pod's env."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from openpod.adapters.runtimes._podfiles import MeterRecord, PodPaths, PodState
from openpod.adapters.runtimes.base import PodLaunch

BOOT_SCRIPT = Path(__file__).with_name("boot.sh")
POD_RUN_DIR = "/run/openpod"  # where the pod sees its boot dir (run/boot on the host)
SANE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Runs as PID 1 of the new namespaces, then execs the boot script (which execs the
# workload). A pod-private copy of /etc/passwd, in which the running user's home is
# /workspace, is bound over /etc/passwd: sshd logins then chdir to /workspace and get
# HOME=/workspace, exactly as the workload does. The runtime's root_dir ($5) is hidden
# under an empty tmpfs once the pod's own dirs are bound (before /tmp's, which may hold it).
_SETUP = """set -e
"$1" --bind "$2" /run/openpod
"$1" --bind "$3" /workspace
[ -z "$4" ] || "$1" --bind "$4" /etc/passwd
"$1" -t tmpfs -o mode=0755,nosuid,nodev,noexec,size=64k tmpfs "$5"
"$1" -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
hostname "$OPENPOD_POD_ID" 2>/dev/null || true
cd /workspace
shift 5
exec /bin/sh /run/openpod/boot.sh "$@"
"""


# Fresh tmpfs mounts of the pod's own (bwrap): nothing is shared with the host's.
_POD_SCRATCH = ("/tmp", "/var/tmp", "/dev/shm")  # noqa: S108


def pod_passwd(host_passwd: str, user_name: str) -> str:
    """/etc/passwd as the pod sees it: the running user's home directory is /workspace."""
    lines = []
    for line in host_passwd.splitlines():
        fields = line.split(":")
        if len(fields) == 7 and fields[0] == user_name:
            fields[5] = "/workspace"
            line = ":".join(fields)
        lines.append(line)
    return "\n".join(lines) + "\n"


def unshare_argv(
    tools: dict[str, str], paths: PodPaths, passwd: str, command: Sequence[str], pod_id: str
) -> list[str]:
    """New PID, mount, IPC and UTS namespaces (mounts private, fresh /proc, a private /tmp,
    the pod id as hostname); --kill-child: when the unshare process dies, so does the
    namespace's init, and with it the whole namespace.

    Inside, bubblewrap (where installed) builds the pod's view of the filesystem; without
    it a small sh script makes the same mounts, less the read-only host."""
    leader = [
        tools["unshare"], "--pid", "--fork", "--kill-child", "--mount-proc", "--mount",
        "--ipc", "--uts", "--propagation", "private", "--",
    ]  # fmt: skip
    if "bwrap" in tools:
        return [*leader, *bwrap_argv(tools["bwrap"], paths, passwd, pod_id), *command]
    return [
        *leader, tools["sh"], "-c", _SETUP, "openpod-setup",
        tools["mount"], str(paths.boot), str(paths.workspace), passwd, str(paths.root), *command,
    ]  # fmt: skip


def bwrap_argv(bwrap: str, paths: PodPaths, passwd: str, pod_id: str) -> list[str]:
    """bubblewrap as PID 1 of the pod's namespaces, running the boot script.

    The host's filesystem is read-only in the pod; writable are /workspace (the pod's own,
    kept across runs), fresh tmpfs /tmp, /var/tmp, /run and /dev/shm, and the devices
    (GPUs). The runtime's root_dir is an empty tmpfs: no pod sees another's workspace, nor
    any run dir, meter journal or meter token (the binds below take their sources from the
    host, so the pod's own dirs are still bound). bwrap stays the parent of the boot script
    and exits with its status, so the workload's exit code reaches the runtime as without it.
    """
    argv = [bwrap, "--ro-bind", "/", "/", "--tmpfs", str(paths.root)]
    argv += ["--dev-bind", "/dev", "/dev", "--proc", "/proc"]
    for scratch in _POD_SCRATCH:
        argv += ["--perms", "1777", "--tmpfs", scratch]
    argv += [
        "--tmpfs", "/run",
        "--bind", str(paths.boot), POD_RUN_DIR,
        "--bind", str(paths.workspace), "/workspace",
    ]  # fmt: skip
    if passwd:
        argv += ["--ro-bind", passwd, "/etc/passwd"]
    argv += ["--unshare-uts", "--hostname", pod_id, "--chdir", "/workspace", "--"]
    return [*argv, "/bin/sh", f"{POD_RUN_DIR}/boot.sh"]


def pod_env(launch: PodLaunch, ports: dict[int, int], bind_host: str) -> dict[str, str]:
    """The whole environment of the pod: nothing of the agent's own environment leaks in.

    The user's values override the defaults (PATH, LANG); the platform's values override
    the user's, so a pod cannot lie to its boot script about its ports or keys.
    """
    gpus = ",".join(str(i) for i in launch.gpu_indices)
    env = {"PATH": SANE_PATH, "LANG": "C.UTF-8"}
    env.update(launch.env)
    env.update({f"OPENPOD_TCP_PORT_{c}": str(h) for c, h in ports.items()})
    env.update(
        OPENPOD_POD_ID=launch.pod_id,
        OPENPOD_GPU_COUNT=str(len(launch.gpu_indices)),
        CUDA_VISIBLE_DEVICES=gpus,
        NVIDIA_VISIBLE_DEVICES=gpus or "void",
        PUBLIC_KEY="\n".join(launch.public_keys),
        OPENPOD_SSH_PORT=str(ports[22]),
        OPENPOD_SSH_LISTEN=bind_host,
        OPENPOD_SSH_DIR=f"{POD_RUN_DIR}/ssh",
        OPENPOD_BOOT_STATUS=f"{POD_RUN_DIR}/boot-status",
        HOME="/workspace",
    )
    return env


def meter_argv(python: str, paths: PodPaths, state: PodState, meter: MeterRecord) -> list[str]:
    """`python -m openpod.meter` for the run in `state` (docs/metering.md); no token here:
    argv is public (`ps`), the token goes by environment."""
    argv = [
        python, "-m", "openpod.meter", "--pod", state.pod_id,
        "--generation", str(state.generation), "--url", meter.url,
        "--journal", str(paths.meter_journal(state.generation)),
        "--watch-pid", str(state.pid), "--watch-start-time", str(state.start_time),
        "--heartbeat", repr(meter.heartbeat_s),
    ]  # fmt: skip
    if meter.gpus:
        argv += ["--gpus", ",".join(str(i) for i in meter.gpus)]
    return argv


def meter_env(token: str) -> dict[str, str]:
    """The meter's whole environment: its token, and nothing else of the agent's but the
    PYTHONPATH that finds openpod."""
    env = {"PATH": SANE_PATH, "LANG": "C.UTF-8", "OPENPOD_METER_TOKEN": token}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env
