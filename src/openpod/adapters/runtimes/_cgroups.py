"""Per-pod cgroups for the local runtime: the CPU, memory and pids limits the kernel enforces.

Where: in each controller's hierarchy, at `<mount>/openpod-<hash of root_dir>/pod-<pod id>`.
The name alone finds a pod's group again after an agent restart (adoption), and two runtimes
(two root dirs: two agents, two test runs) never share one. `pod-` keeps a pod id such as
`pids.max` from colliding with a control file.

Which hierarchy: a controller is taken from a cgroup v1 hierarchy that carries it (hybrid
hosts, like our CI: /sys/fs/cgroup/{cpu,memory,pids}), else from the cgroup v2 hierarchy when
its cgroup.controllers lists it (pure v2 hosts, most providers). On v2 the controller is
enabled in cgroup.subtree_control of the mount's root and of `openpod-<hash>`, which never
holds a process itself (v2 allows no process in a group that hands controllers down), the
way Docker's cgroupfs driver does it.

How a pod joins, before it forks anything: its leader starts as
`sh -c 'read go; exec unshare ...'` with stdin a pipe. It waits there, having forked nothing,
while the agent writes its pid into each group's cgroup.procs; then the agent writes `go` and
sh execs unshare under the same pid, so everything the pod ever runs is born inside. (A
Popen preexec_fn would run Python between fork and exec, which is unsafe in a threaded
agent; the gate costs one sh exec, and a failure to join is a clean PodStartError with the
child killed before it ran anything.) The agent and the pod's meter stay where they are,
outside every pod's group.

Memory limits cover RAM and swap together (memsw on v1, swap.max 0 on v2): a pod over its
limit is OOM-killed, not swapped out. A pod with no limits touches no cgroup at all, so hosts
without cgroups and tests that do not run as root still work. A group is removed (rmdir)
once its processes are gone; one that still holds processes is an error, never ignored.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from openpod.adapters.runtimes.base import (
    PodStartError,
    ResourceLimits,
    RuntimeError_,
    check_limits,
)

CONTROLLERS = ("cpu", "memory", "pids")
CPU_PERIOD_US = 100_000  # the CFS period: a pod gets cpus * 100 ms of CPU time per 100 ms
_UNLIMITED_V1 = 1 << 62  # v1 reads "no memory limit" back as a page-rounded 2**63 - 1
_MOUNTINFO = Path("/proc/self/mountinfo")
_GUARD = threading.Lock()  # mkdir of a runtime's group vs rmdir of it when its last pod goes

# The leader's first program: wait for the agent's word on stdin, then become the pod.
_GATE = 'IFS= read -r go && [ "$go" = go ] && exec "$@" </dev/null; exit 125'


@dataclass(frozen=True)
class Hierarchy:
    """Where one controller is mounted, and the cgroup version of that mount (1 or 2)."""

    mount: Path
    version: int


@dataclass(frozen=True)
class CgroupReading:
    """What the kernel holds for a pod's group: its limits (read back) and its usage now."""

    limits: ResourceLimits
    pids: int | None  # processes and threads now
    memory_bytes: int | None  # charged memory now, page cache included
    oom_kills: int | None  # processes the OOM killer took for the memory limit


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def hierarchies(mountinfo: Path = _MOUNTINFO) -> dict[str, Hierarchy]:
    """The hierarchy that carries each of CONTROLLERS here: v1 first (hybrid hosts), then v2."""
    try:
        text = mountinfo.read_text()
    except OSError:
        return {}
    found: dict[str, Hierarchy] = {}
    unified: Path | None = None
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, fs = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(fs) < 3:
            continue
        mount = Path(_unescape(fields[4]))
        if fs[0] == "cgroup":
            for option in fs[2].split(","):
                if option in CONTROLLERS:
                    found.setdefault(option, Hierarchy(mount, 1))
        elif fs[0] == "cgroup2" and unified is None:
            unified = mount
    if unified is not None:
        available = _read(unified / "cgroup.controllers") or ""
        for controller in CONTROLLERS:
            if controller in available.split():
                found.setdefault(controller, Hierarchy(unified, 2))
    return found


def _settings(limits: ResourceLimits, version: int) -> dict[str, list[tuple[str, str]]]:
    """Control files to write, in order, per controller with a limit."""
    out: dict[str, list[tuple[str, str]]] = {}
    if limits.cpus is not None:
        quota = str(round(limits.cpus * CPU_PERIOD_US))
        out["cpu"] = (
            [("cpu.cfs_period_us", str(CPU_PERIOD_US)), ("cpu.cfs_quota_us", quota)]
            if version == 1
            else [("cpu.max", f"{quota} {CPU_PERIOD_US}")]
        )
    if limits.memory_bytes is not None:
        size = str(limits.memory_bytes)
        out["memory"] = (  # the RAM limit first: memsw may never be under it
            [("memory.limit_in_bytes", size), ("memory.memsw.limit_in_bytes?", size)]
            if version == 1
            else [("memory.max", size), ("memory.swap.max?", "0")]  # ?: where swap is counted
        )
    if limits.pids is not None:
        out["pids"] = [("pids.max", str(limits.pids))]
    return out


def group_name(root_dir: Path) -> str:
    """The group of every pod of the runtime at `root_dir` (the resolved path)."""
    return "openpod-" + hashlib.sha256(str(root_dir).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class PodCgroup:
    """One pod's group: its directory in the hierarchy of each controller it is limited by."""

    pod_id: str
    dirs: dict[str, tuple[Path, int]]  # controller -> (group directory, cgroup version)

    def paths(self) -> list[Path]:
        """Each directory once (controllers may share a hierarchy: always so on v2)."""
        return sorted({path for path, _ in self.dirs.values()})

    def procs(self) -> set[int]:
        """Pids of the processes in the group now."""
        found: set[int] = set()
        for path in self.paths():
            found |= _pids_in(path)
        return found

    def join(self, pid: int) -> None:
        """Move process `pid` into the group (every hierarchy); PodStartError if it cannot."""
        for path in self.paths():
            try:
                (path / "cgroup.procs").write_text(str(pid))
            except OSError as exc:
                raise PodStartError(
                    f"cannot put pod {self.pod_id} into its cgroup {path}: {exc.strerror}"
                ) from exc

    def read(self) -> CgroupReading:
        """Limits and usage as the kernel reports them now."""
        cpu, memory, pids = (self.dirs.get(c) for c in CONTROLLERS)
        cpus = used = oom = None
        if cpu is not None:
            path, version = cpu
            if version == 1:
                quota = _number(path / "cpu.cfs_quota_us")
                period = _number(path / "cpu.cfs_period_us")
            else:
                quota_text, _, period_text = (_read(path / "cpu.max") or "max").partition(" ")
                quota, period = _parse(quota_text), _parse(period_text)
            cpus = quota / period if quota is not None and quota > 0 and period else None
        memory_limit = None
        if memory is not None:
            path, version = memory
            names = ("memory.limit_in_bytes", "memory.usage_in_bytes", "memory.oom_control")
            if version == 2:
                names = ("memory.max", "memory.current", "memory.events")
            memory_limit, used = _number(path / names[0]), _number(path / names[1])
            if memory_limit is not None and memory_limit >= _UNLIMITED_V1:
                memory_limit = None
            for line in (_read(path / names[2]) or "").splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    oom = int(value)
        limits = ResourceLimits(
            cpus, memory_limit, _number(pids[0] / "pids.max") if pids is not None else None
        )
        current = _number(pids[0] / "pids.current") if pids is not None else None
        return CgroupReading(limits, current, used, oom)

    def remove(self, settle: float = 2.0) -> None:
        """rmdir the group once its processes are gone (waiting up to `settle` seconds for
        the dying ones); RuntimeError_ naming them if some remain. The runtime's group goes
        with its last pod."""
        for path in self.paths():
            deadline = time.monotonic() + settle
            while True:
                left = _pids_in(path)
                late = time.monotonic() > deadline
                if left and late:
                    raise RuntimeError_(
                        f"pod {self.pod_id}: processes {sorted(left)} are still in its "
                        f"cgroup {path} after the pod stopped"
                    )
                if not left:
                    try:
                        path.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError as exc:  # EBUSY: the last ones are still dying
                        if exc.errno != errno.EBUSY or late:
                            raise RuntimeError_(
                                f"pod {self.pod_id}: cannot remove its cgroup {path}: "
                                f"{exc.strerror}"
                            ) from exc
                time.sleep(0.01)
            with _GUARD, contextlib.suppress(OSError):  # other pods' groups may be in it
                path.parent.rmdir()


def find(
    root_dir: Path, pod_id: str, found: dict[str, Hierarchy] | None = None
) -> PodCgroup | None:
    """The pod's group, by its name, where it exists (after an agent restart too)."""
    found = hierarchies() if found is None else found
    name = group_name(root_dir)
    dirs = {
        c: (h.mount / name / f"pod-{pod_id}", h.version)
        for c, h in found.items()
        if (h.mount / name / f"pod-{pod_id}").is_dir()
    }
    return PodCgroup(pod_id, dirs) if dirs else None


def release(root_dir: Path, pod_id: str) -> None:
    """Remove the pod's group where it exists (no-op without one); see PodCgroup.remove."""
    group = find(root_dir, pod_id)
    if group is not None:
        group.remove()


def create(
    root_dir: Path, pod_id: str, limits: ResourceLimits, found: dict[str, Hierarchy] | None = None
) -> PodCgroup | None:
    """A fresh group holding `limits` (an earlier run's group is removed first), or None,
    touching nothing, when the pod has no limits. PodStartError when a controller is missing
    or the kernel refuses a value; nothing is left behind then."""
    check_limits(limits)
    if limits == ResourceLimits():
        return None
    found = hierarchies() if found is None else found
    wanted = _settings(limits, 1)
    missing = [c for c in wanted if c not in found]
    if missing:
        raise PodStartError(
            f"cannot enforce the pod's {' and '.join(missing)} limit: no cgroup hierarchy "
            f"mounted on this host has the {' and '.join(missing)} controller"
        )
    stale = find(root_dir, pod_id, found)
    if stale is not None:
        stale.remove()
    name = group_name(root_dir)
    group = PodCgroup(
        pod_id,
        {c: (found[c].mount / name / f"pod-{pod_id}", found[c].version) for c in wanted},
    )
    try:
        with _GUARD:
            for controller, (path, version) in group.dirs.items():
                if version == 2:
                    _enable(path.parent.parent, controller)
                path.parent.mkdir(exist_ok=True)
                if version == 2:
                    _enable(path.parent, controller)
                path.mkdir(exist_ok=True)
        for controller, (path, version) in group.dirs.items():
            for file, value in _settings(limits, version)[controller]:
                _write(path, file, value)
    except BaseException:
        group.remove()
        raise
    return group


@contextlib.contextmanager
def pod_group(root_dir: Path, pod_id: str, limits: ResourceLimits) -> Iterator[PodCgroup | None]:
    """For a pod's start: an earlier run's group removed, then a fresh one made for `limits`
    (None without limits), removed again if the start fails inside the block."""
    release(root_dir, pod_id)
    group = create(root_dir, pod_id, limits)
    try:
        yield group
    except BaseException:
        if group is not None:
            group.remove()
        raise


def start_leader(
    argv: list[str],
    group: PodCgroup | None,
    *,
    sh: str,
    stdout: IO[bytes],
    stderr: IO[bytes],
    env: dict[str, str],
    cwd: Path,
) -> subprocess.Popen[bytes]:
    """Start the pod's leader in a session of its own, inside `group` when it has one: the
    gate holds it until it is in the group (see the module's docstring). OSError: it could
    not be started; PodStartError: it could not join its group (it is killed, unrun)."""
    proc = subprocess.Popen(
        argv if group is None else [sh, "-c", _GATE, "openpod-cgroup-gate", *argv],
        stdin=subprocess.DEVNULL if group is None else subprocess.PIPE,
        stdout=stdout,
        stderr=stderr,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    if group is None:
        return proc
    assert proc.stdin is not None
    try:
        group.join(proc.pid)
        proc.stdin.write(b"go\n")
        proc.stdin.close()
    except BaseException as exc:
        proc.kill()
        proc.wait()
        with contextlib.suppress(OSError):
            proc.stdin.close()
        if isinstance(exc, OSError):
            raise PodStartError(f"cannot start pod {group.pod_id}: {exc}") from exc
        raise
    return proc


def oom_note(root_dir: Path, pod_id: str, launch: dict[str, Any]) -> str:
    """For an exited run (`launch`: its launch record) with a memory limit: what the OOM
    killer took from its group, as a note for the exit reason; "" when nothing (or no limit).
    The exit code alone cannot tell: a SIGKILLed namespace init reads as 1 from unshare."""
    if not (launch.get("limits") or {}).get("memory_bytes"):
        return ""
    group = find(root_dir, pod_id)
    kills = group.read().oom_kills if group is not None else None
    if not kills:
        return ""
    return f" (out of memory: the kernel killed {kills} of its processes at its memory limit)"


def _enable(parent: Path, controller: str) -> None:
    """Hand `controller` down from a v2 group to its children (where not done yet)."""
    if controller in (_read(parent / "cgroup.subtree_control") or "").split():
        return
    try:
        _write(parent, "cgroup.subtree_control", f"+{controller}")
    except PodStartError as exc:
        raise PodStartError(
            f"{exc}; on cgroup v2 pods' groups go under the hierarchy's root, so the agent "
            "must see the real root (not a cgroup namespace whose root holds processes)"
        ) from exc


def _write(path: Path, file: str, value: str) -> None:
    """Write one control file; a name ending in `?` is written only where the kernel has it."""
    optional = file.endswith("?")
    target = path / file.rstrip("?")
    if optional and not target.exists():
        return
    try:
        target.write_text(value)
    except OSError as exc:
        raise PodStartError(f"cannot set {target} to {value}: {exc.strerror}") from exc


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _pids_in(path: Path) -> set[int]:
    return {int(pid) for pid in (_read(path / "cgroup.procs") or "").split()}


def _parse(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else None  # "max": no limit


def _number(path: Path) -> int | None:
    return _parse(_read(path) or "")
