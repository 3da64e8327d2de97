"""Resource limits of the local runtime: a cgroup per pod, enforced by the kernel.

These run on the host's real cgroups (v1 hybrid here and in CI: /sys/fs/cgroup/{cpu,memory,
pids}); what the pod itself observes (failed forks, an OOM kill, CPU time) is asserted as well
as what the cgroup holds. The v2 layout, which this host cannot mount, is checked on a fake
tree at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from openpod.adapters.runtimes import _cgroups, _procs
from openpod.adapters.runtimes.base import (
    MeterLaunch,
    PodLaunch,
    PodPhase,
    PodStartError,
    ResourceLimits,
    RuntimeError_,
)
from openpod.adapters.runtimes.local import LocalRuntime
from tests.meter.plane import TOKEN, FakePlane
from tests.support.net import wait_until

MiB = 1 << 20


def _group(rt: LocalRuntime, pod_id: str = "pod1") -> _cgroups.PodCgroup:
    group = _cgroups.find(rt.root_dir, pod_id)
    assert group is not None, f"pod {pod_id} has no cgroup"
    return group


def _runtime_groups(rt: LocalRuntime) -> list[Path]:
    """The runtime's group directory in every hierarchy where one exists."""
    name = _cgroups.group_name(rt.root_dir)
    return [h.mount / name for h in _cgroups.hierarchies().values() if (h.mount / name).exists()]


def _workspace_file(rt: LocalRuntime, name: str, pod_id: str = "pod1") -> Path:
    return rt.root_dir / "pods" / pod_id / "workspace" / name


def _python(code: str) -> tuple[str, ...]:
    return ("python3", "-c", code)


def _children() -> set[int]:
    """Pids of this test process's live children."""
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == os.getpid() and fields[0] not in ("Z", "X"):
                found.add(int(entry.name))
    return found


FORKS = """
import os, time
ok, error = 0, ""
for _ in range(40):
    try:
        pid = os.fork()
    except OSError as exc:
        error = exc.strerror
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    ok += 1
open("/workspace/forks", "w").write(f"{ok}:{error}")
time.sleep(60)
"""


def test_a_pod_cannot_fork_past_its_pids_limit(
    runtime: LocalRuntime, make_launch: Callable[..., PodLaunch]
) -> None:
    launch = make_launch(command=_python(FORKS), limits=ResourceLimits(pids=12))
    runtime.start(launch)
    result = _workspace_file(runtime, "forks")
    wait_until(lambda: bool(result.exists() and result.read_text()), 20, "the fork count")
    ok, error = result.read_text().split(":")
    assert 0 < int(ok) < 12  # the leader, bwrap or sh, sshd and python hold the rest
    assert error == "Resource temporarily unavailable"  # EAGAIN: the pids limit
    reading = _group(runtime).read()
    assert reading.limits.pids == 12
    assert reading.pids is not None and int(ok) < reading.pids <= 12
    assert runtime.observe("pod1").phase in (PodPhase.STARTING, PodPhase.RUNNING)


ALLOCATE = """
import sys, time
data = b"x" * (int(sys.argv[1]) << 20)
open("/workspace/allocated", "w").write(str(len(data)))
time.sleep(60)
"""


def test_a_pod_over_its_memory_limit_is_oom_killed_and_one_under_it_lives(
    runtime: LocalRuntime, make_launch: Callable[..., PodLaunch]
) -> None:
    limits = ResourceLimits(memory_bytes=64 * MiB)
    runtime.start(make_launch("big", command=(*_python(ALLOCATE), "200"), limits=limits))
    runtime.start(make_launch("small", command=(*_python(ALLOCATE), "16"), limits=limits))
    wait_until(lambda: runtime.observe("big").phase == PodPhase.EXITED, 20, "the big one killed")
    big = runtime.observe("big")
    # SIGKILL from the OOM killer: 137 under bwrap; unshare (util-linux 2.38) reports a
    # SIGKILLed namespace init as 1, so the reason is what tells it in both modes.
    assert big.exit_code == (137 if runtime.bubblewrap else 1)
    assert big.reason is not None
    assert "out of memory: the kernel killed 1 of its processes" in big.reason
    assert not _workspace_file(runtime, "allocated", "big").exists()
    reading = _group(runtime, "big").read()
    assert reading.oom_kills is not None and reading.oom_kills >= 1
    assert reading.limits.memory_bytes == 64 * MiB

    small_file = _workspace_file(runtime, "allocated", "small")
    wait_until(small_file.exists, 20, "the small pod's allocation")
    assert small_file.read_text() == str(16 * MiB)
    assert runtime.observe("small").phase in (PodPhase.STARTING, PodPhase.RUNNING)
    small = _group(runtime, "small").read()
    assert small.oom_kills == 0
    assert small.memory_bytes is not None and 16 * MiB < small.memory_bytes <= 64 * MiB


BUSY = """
import time
start = time.monotonic()
while time.monotonic() - start < 1.0:
    pass
open("/workspace/cpu", "w").write(repr(time.process_time()))
time.sleep(60)
"""


def test_a_pod_gets_no_more_cpu_than_its_limit(
    runtime: LocalRuntime, make_launch: Callable[..., PodLaunch]
) -> None:
    runtime.start(make_launch(command=_python(BUSY), limits=ResourceLimits(cpus=0.2)))
    assert _group(runtime).read().limits.cpus == pytest.approx(0.2)
    result = _workspace_file(runtime, "cpu")
    wait_until(lambda: bool(result.exists() and result.read_text()), 20, "the CPU time")
    assert float(result.read_text()) < 0.5  # 1 s of busy wall time at 0.2 CPUs: ~0.2 s


def test_every_process_of_the_pod_is_in_its_cgroup_and_its_meter_is_not(
    runtime: LocalRuntime, make_launch: Callable[..., PodLaunch]
) -> None:
    limits = ResourceLimits(cpus=1.5, memory_bytes=256 * MiB, pids=64)
    with FakePlane() as plane:
        meter = MeterLaunch(plane.url, TOKEN, 0.2)
        runtime.start(make_launch(command=("sleep", "60"), meter=meter, limits=limits))
        wait_until(lambda: runtime.observe("pod1").ssh_ready, 20, "sshd in the pod")
        state = (runtime.root_dir / "pods" / "pod1" / "run" / "state.json").read_text()
        leader, start = _procs_of_state(state)
        group = _group(runtime)
        with _procs.pinned_pid_ns(leader, start) as ns:
            assert ns is not None
            pod = ns
            assert len(_procs.ns_members(pod)) >= 2  # the namespace's init (or sleep), sshd
            wait_until(  # both read afresh each time: sshd may fork for a probe meanwhile
                lambda: group.procs() == {leader, *_procs.ns_members(pod)},
                5,
                "the pod's processes in its group, and no others",
            )
        assert os.getpid() not in group.procs()
        meter_pid = _meter_pid(state)
        assert meter_pid > 0 and _procs.start_time(meter_pid) is not None
        assert meter_pid not in group.procs()
        name = _cgroups.group_name(runtime.root_dir)
        assert name not in Path(f"/proc/{meter_pid}/cgroup").read_text()
        assert group.read().limits == limits
        runtime.remove("pod1", 0)


def _procs_of_state(state_text: str) -> tuple[int, int]:
    state = json.loads(state_text)
    return int(state["pid"]), int(state["start_time"])


def _meter_pid(state_text: str) -> int:
    return int(json.loads(state_text)["meter"]["pid"])


def test_stop_and_remove_leave_no_cgroup_and_adoption_finds_it(
    runtime: LocalRuntime, make_launch: Callable[..., PodLaunch]
) -> None:
    limits = ResourceLimits(pids=32)
    runtime.start(make_launch(command=("sleep", "60"), limits=limits))
    group = _group(runtime)
    assert len(_runtime_groups(runtime)) == 1  # pids only: one hierarchy
    wait_until(lambda: len(group.procs()) >= 2, 10, "the pod's processes in its group")
    stopped = runtime.stop("pod1", 1)
    assert stopped.phase == PodPhase.STOPPED
    assert _cgroups.find(runtime.root_dir, "pod1") is None
    assert _runtime_groups(runtime) == []

    runtime.start(make_launch(generation=2, command=("sleep", "60"), limits=limits))
    assert _group(runtime).read().limits.pids == 32
    again = LocalRuntime(runtime.root_dir)  # an agent restart: the group is found by name
    assert [obs.generation for obs in again.adopt()] == [2]
    assert _cgroups.find(again.root_dir, "pod1") is not None
    again.remove("pod1", 1)
    assert _cgroups.find(runtime.root_dir, "pod1") is None
    assert _runtime_groups(runtime) == []
    assert not (runtime.root_dir / "pods" / "pod1").exists()


def test_a_pod_that_exits_keeps_its_group_until_the_next_run(
    tmp_path: Path, make_launch: Callable[..., PodLaunch]
) -> None:
    rt = LocalRuntime(tmp_path / "root", bubblewrap=False)
    try:
        rt.start(make_launch(command=("true",), limits=ResourceLimits(pids=16)))
        wait_until(lambda: rt.observe("pod1").phase == PodPhase.EXITED, 10, "the exit")
        assert _group(rt).procs() == set()
        rt.start(make_launch(generation=2, command=("sleep", "60")))  # no limits this time
        assert _cgroups.find(rt.root_dir, "pod1") is None
        assert _runtime_groups(rt) == []
    finally:
        rt.remove("pod1", 0)


def test_a_pod_without_limits_gets_no_cgroup(
    runtime: LocalRuntime, make_launch: Callable[..., PodLaunch]
) -> None:
    runtime.start(make_launch(command=("sleep", "60")))
    assert _runtime_groups(runtime) == []
    state = (runtime.root_dir / "pods" / "pod1" / "run" / "state.json").read_text()
    leader, _ = _procs_of_state(state)
    assert Path(f"/proc/{leader}/cgroup").read_text() == Path("/proc/self/cgroup").read_text()


@pytest.mark.parametrize(
    ("limits", "named"),
    [
        (ResourceLimits(pids=0), "pids must be at least 1, not 0"),
        (ResourceLimits(memory_bytes=-1), "memory_bytes must be at least"),
        (ResourceLimits(cpus=0.0), "cpus must be a number of CPU cores of at least 0.01"),
        (ResourceLimits(cpus=float("nan"), pids=4), "not nan"),
        (ResourceLimits(memory_bytes=1 << 70), "memory_bytes must be at most"),
    ],
)
def test_an_invalid_limit_starts_nothing(
    tmp_path: Path, make_launch: Callable[..., PodLaunch], limits: ResourceLimits, named: str
) -> None:
    rt = LocalRuntime(tmp_path / "root", bubblewrap=False)
    before = _children()
    with pytest.raises(PodStartError, match="invalid resource limits") as caught:
        rt.start(make_launch(command=("sleep", "60"), limits=limits))
    assert named in str(caught.value)
    assert _children() == before
    assert not (rt.root_dir / "pods" / "pod1").exists()
    assert rt.observe("pod1").phase == PodPhase.ABSENT
    assert _runtime_groups(rt) == []


def test_a_value_the_kernel_refuses_starts_nothing(
    tmp_path: Path, make_launch: Callable[..., PodLaunch]
) -> None:
    rt = LocalRuntime(tmp_path / "root", bubblewrap=False)
    before = _children()
    with pytest.raises(PodStartError, match=r"cannot set /sys/fs/cgroup/\S*cpu\S* to .*Invalid"):
        rt.start(make_launch(command=("sleep", "60"), limits=ResourceLimits(cpus=1e9, pids=8)))
    assert _children() == before
    assert not (rt.root_dir / "pods" / "pod1").exists()
    assert _runtime_groups(rt) == []


def test_a_missing_controller_is_named(tmp_path: Path) -> None:
    only_pids = {"pids": _cgroups.Hierarchy(tmp_path / "pids", 1)}
    with pytest.raises(PodStartError, match="the memory controller"):
        _cgroups.create(tmp_path, "pod1", ResourceLimits(memory_bytes=64 * MiB), only_pids)
    assert not (tmp_path / "pids").exists()  # nothing made on the way


def test_a_leader_that_cannot_join_its_group_is_killed_unrun(tmp_path: Path) -> None:
    ghost = _cgroups.PodCgroup("pod1", {"pids": (tmp_path / "no-such-group", 1)})
    marker = tmp_path / "ran"
    before = _children()
    with (
        open(os.devnull, "wb") as null,
        pytest.raises(PodStartError, match="cannot put pod pod1 into its cgroup"),
    ):
        _cgroups.start_leader(
            ["/bin/sh", "-c", f"touch {marker}"],
            ghost,
            sh="/bin/sh",
            stdout=null,
            stderr=null,
            env={"PATH": "/usr/bin:/bin"},
            cwd=tmp_path,
        )
    assert _children() == before  # killed and reaped before the raise, never past its gate
    assert not marker.exists()


HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / {unified} rw,relatime - cgroup2 cgroup2 rw
"""


def test_a_hybrid_host_uses_its_v1_hierarchies(tmp_path: Path) -> None:
    unified = tmp_path / "unified"
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("\n")  # every controller is bound to v1
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(HYBRID.format(unified=unified))
    found = _cgroups.hierarchies(mountinfo)
    assert found == {
        "cpu": _cgroups.Hierarchy(Path("/sys/fs/cgroup/cpu"), 1),
        "memory": _cgroups.Hierarchy(Path("/sys/fs/cgroup/memory"), 1),
        "pids": _cgroups.Hierarchy(Path("/sys/fs/cgroup/pids"), 1),
    }


def test_a_v2_host_gets_its_controllers_enabled_and_v2_files(tmp_path: Path) -> None:
    """A fake v2 tree (plain directories): which files are written, with what, in order."""
    mount = tmp_path / "cgroup fs"  # a space: mountinfo escapes it as \\040
    mount.mkdir()
    (mount / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    mountinfo = tmp_path / "mountinfo"
    escaped = str(mount).replace(" ", "\\040")
    mountinfo.write_text(f"25 1 0:22 / {escaped} rw - cgroup2 cgroup2 rw,nsdelegate\n")
    found = _cgroups.hierarchies(mountinfo)
    assert set(found) == {"cpu", "memory", "pids"}
    assert {h.version for h in found.values()} == {2}

    limits = ResourceLimits(cpus=0.25, memory_bytes=64 * MiB, pids=20)
    group = _cgroups.create(tmp_path / "root", "pod1", limits, found)
    assert group is not None
    pod = mount / _cgroups.group_name(tmp_path / "root") / "pod-pod1"
    assert group.paths() == [pod]  # one group for every controller on v2
    assert (pod / "cpu.max").read_text() == "25000 100000"
    assert (pod / "memory.max").read_text() == str(64 * MiB)
    assert (pod / "pids.max").read_text() == "20"
    # the last controller handed down at each level (a plain file keeps the last write only)
    assert (mount / "cgroup.subtree_control").read_text() == "+pids"
    assert (pod.parent / "cgroup.subtree_control").read_text() == "+pids"
    assert group.read().limits == limits


def test_a_process_left_in_a_pods_group_is_reported_not_ignored(
    tmp_path: Path, make_launch: Callable[..., PodLaunch]
) -> None:
    rt = LocalRuntime(tmp_path / "root", bubblewrap=False)
    stray = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL)  # not of the pod
    try:
        rt.start(make_launch(command=("sleep", "60"), limits=ResourceLimits(pids=16)))
        _group(rt).join(stray.pid)
        with pytest.raises(RuntimeError_, match=rf"processes \[{stray.pid}\] are still in"):
            rt.stop("pod1", 0)
        assert _group(rt).procs() == {stray.pid}  # the group is kept, the stray untouched
        assert stray.poll() is None
    finally:
        stray.kill()
        stray.wait()
    rt.remove("pod1", 0)  # with the stray gone, the group goes too
    assert _runtime_groups(rt) == []
