"""The local runtime runs each pod's meter beside it, and hides its files from every pod.

The control plane is a fake (tests/meter/plane.py) on 127.0.0.1; meters beat every 0.2 s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from openpod.adapters.runtimes.base import MeterLaunch, PodLaunch, PodPhase
from openpod.adapters.runtimes.local import LocalRuntime
from tests.meter.plane import TOKEN, FakePlane
from tests.support.net import wait_until

HEARTBEAT = 0.2


@pytest.fixture
def plane() -> Iterator[FakePlane]:
    with FakePlane() as fake:
        yield fake


def _state(rt: LocalRuntime, pod_id: str) -> dict[str, object]:
    state: dict[str, object] = json.loads(
        (rt.root_dir / "pods" / pod_id / "run" / "state.json").read_text()
    )
    return state


def _meter_pid(rt: LocalRuntime, pod_id: str) -> int:
    meter = _state(rt, pod_id)["meter"]
    assert isinstance(meter, dict)
    return int(meter["pid"])


def _proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def _ancestors(pid: int) -> list[int]:
    found = []
    while pid > 1:
        text = Path(f"/proc/{pid}/stat").read_text()
        pid = int(text.rsplit(")", 1)[1].split()[1])
        found.append(pid)
    return found


def test_the_meter_runs_beside_the_pod_and_is_restarted_when_killed(
    runtime: LocalRuntime, make_launch: Callable[..., PodLaunch], plane: FakePlane
) -> None:
    meter = MeterLaunch(plane.url, TOKEN, HEARTBEAT)
    runtime.start(make_launch(meter=meter, gpus=(0,)))
    plane.wait(lambda p: len(p.stored) >= 2, 10, "started and a heartbeat")
    assert plane.stored[1]["kind"] == "started"

    pod_dir = runtime.root_dir / "pods" / "pod1"
    state = _state(runtime, "pod1")
    leader, pid = int(str(state["pid"])), _meter_pid(runtime, "pod1")
    # Outside the pod: the host's PID namespace, its own session, not under the leader.
    assert os.readlink(f"/proc/{pid}/ns/pid") == os.readlink("/proc/self/ns/pid")
    assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink(f"/proc/{leader}/ns/pid_for_children")
    assert os.getsid(pid) == pid
    assert leader not in _ancestors(pid)
    # The token: in the meter's environment and a 0600 file, never in argv or state.json.
    assert TOKEN.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert f"OPENPOD_METER_TOKEN={TOKEN}".encode() in Path(f"/proc/{pid}/environ").read_bytes()
    assert (pod_dir / "run" / "meter.token").stat().st_mode & 0o777 == 0o600
    assert TOKEN not in (pod_dir / "run" / "state.json").read_text()
    assert (pod_dir / "meter" / "1" / "events.jsonl").exists()
    assert "--gpus 0" in " ".join(Path(f"/proc/{pid}/cmdline").read_text().split("\0"))

    plane.store_limit = max(plane.seqs())  # what is sent from now on is lost on the way
    plane.wait(lambda p: len(p.received) >= len(p.stored) + 2, 5, "two events lost")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: _proc_state(pid) in (None, "Z"), 5, "the meter's death")
    journal = (pod_dir / "meter" / "1" / "events.jsonl").read_text().splitlines()
    seen = json.loads(journal[-1])["seq"]
    assert seen >= plane.store_limit + 2
    plane.store_limit = None

    def restarted() -> bool:
        runtime.observe("pod1")
        return _meter_pid(runtime, "pod1") != pid and seen + 1 in plane.stored

    wait_until(restarted, 10, "a new meter's first event")
    assert plane.stored[seen + 1]["kind"] == "heartbeat"  # a restart continues the run
    assert plane.seqs()[: seen + 1] == list(range(1, seen + 2))  # the lost ones: replayed
    assert _proc_state(pid) is None  # the killed one was reaped: no zombie

    second = _meter_pid(runtime, "pod1")
    began = time.time()
    stopped = runtime.stop("pod1", 5)
    assert stopped.exited_at is not None
    assert began <= stopped.exited_at <= time.time()
    plane.wait(lambda p: p.closed, 5, "stopped from the meter")
    wait_until(lambda: _proc_state(second) in (None, "Z"), 5, "the meter's exit")
    last = plane.stored[max(plane.stored)]
    assert last["kind"] == "stopped"
    assert abs(float(last["at"]) - stopped.exited_at) < 1
    runtime.observe("pod1")
    assert _proc_state(second) is None  # reaped
    assert plane.acks_sent
    assert sorted(plane.stored) == list(range(1, len(plane.stored) + 1))
    assert TOKEN not in (pod_dir / "run" / "meter.log").read_text()


def test_exited_at_is_when_the_exit_was_seen(
    runtime: LocalRuntime, make_launch: Callable[..., PodLaunch]
) -> None:
    began = time.time()
    runtime.start(make_launch(command=("sh", "-c", "exit 3")))
    deadline = time.monotonic() + 10
    while (obs := runtime.observe("pod1")).phase is not PodPhase.EXITED:
        assert time.monotonic() < deadline, obs
        time.sleep(0.02)
    assert obs.exited_at is not None
    assert began <= obs.exited_at <= time.time()
    assert runtime.observe("pod1").exited_at == obs.exited_at  # recorded once
    stopped = runtime.stop("pod1", 1)
    assert stopped.phase is PodPhase.STOPPED
    assert stopped.exited_at == obs.exited_at  # it had exited before the stop
    running = runtime.start(make_launch(generation=2))
    assert running.exited_at is None


@pytest.fixture(params=["bubblewrap", "namespaces"])
def outside_tmp(request: pytest.FixtureRequest) -> Iterator[LocalRuntime]:
    """A runtime whose root_dir is outside /tmp (which every pod has its own of anyway)."""
    root = Path(tempfile.mkdtemp(prefix="openpod-test-", dir="/var/lib"))
    rt = LocalRuntime(root, bubblewrap=request.param == "bubblewrap", meter_drain_seconds=0)
    try:
        yield rt
    finally:
        for obs in LocalRuntime(root).adopt():
            rt.remove(obs.pod_id, 0)
        shutil.rmtree(root, ignore_errors=True)


def test_a_pod_sees_nothing_of_other_pods_nor_of_meters(
    outside_tmp: LocalRuntime, make_launch: Callable[..., PodLaunch], plane: FakePlane
) -> None:
    rt = outside_tmp
    meter = MeterLaunch(plane.url, TOKEN, HEARTBEAT)
    rt.start(
        make_launch(pod_id="victim", meter=meter, command=("sh", "-c", "echo s > mine; sleep 60"))
    )
    plane.wait(lambda p: len(p.stored) >= 1, 10, "the victim's meter")
    victim = rt.root_dir / "pods" / "victim"
    assert (victim / "run" / "meter.token").read_text() == TOKEN
    script = (
        f"ls -A {rt.root_dir} > seen; cat {victim}/run/meter.token > token 2>&1; "
        f"cat {victim}/workspace/mine >> token 2>&1; cat {victim}/meter/1/events.jsonl >> token 2>&1; "
        "echo mine > own; cat own"
    )
    rt.start(make_launch(pod_id="snoop", command=("sh", "-c", script)))
    deadline = time.monotonic() + 10
    while (obs := rt.observe("snoop")).phase is not PodPhase.EXITED:
        assert time.monotonic() < deadline, obs
        time.sleep(0.02)
    workspace = rt.root_dir / "pods" / "snoop" / "workspace"
    assert (workspace / "seen").read_text() == ""  # root_dir is empty inside the pod
    leaked = (workspace / "token").read_text()
    assert TOKEN not in leaked
    assert "No such file" in leaked
    assert '"kind"' not in leaked
    assert (rt.root_dir / "pods" / "snoop" / "run" / "stdout.log").read_text() == "mine\n"


def test_remove_kills_a_meter_that_cannot_deliver(
    tmp_path: Path, make_launch: Callable[..., PodLaunch], plane: FakePlane
) -> None:
    """A meter whose `stopped` is never acked would linger: remove() kills that very process
    after deleting the pod (here one an earlier agent started: not this process's child)."""
    from openpod.adapters.runtimes import _meters

    rt = LocalRuntime(tmp_path / "root", meter_drain_seconds=1.0)
    plane.ack = False
    rt.start(make_launch(meter=MeterLaunch(plane.url, TOKEN, HEARTBEAT)))
    plane.wait(lambda p: len(p.received) >= 1, 10, "started")
    pid = _meter_pid(rt, "pod1")
    proc = _meters._METERS.pop(pid)  # as after an agent restart: known by pid + start time only
    try:
        began = time.monotonic()
        rt.remove("pod1", 1)
        assert time.monotonic() - began < 5
        assert proc.wait(5) == -signal.SIGKILL
        assert plane.received[-1]["kind"] == "stopped"  # it was sent, never acked
        assert not (rt.root_dir / "pods" / "pod1").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
