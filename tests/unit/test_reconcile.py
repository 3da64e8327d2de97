"""The node agent's reconcile step, against an in-memory runtime (a fake of one layer)."""

from __future__ import annotations

import asyncio

import pytest

from openpod.adapters.runtimes.base import (
    MeterLaunch,
    PodLaunch,
    PodObservation,
    PodPhase,
    PodStartError,
    ResourceLimits,
)
from openpod.node.agent import NodeAgent, channel_url, meter_url
from openpod.node.reconcile import PerGpuLimits, launch_of, limits_for, reconcile, report_of
from openpod.protocol import PodAssignment, PodSpec, Sync


class FakeRuntime:
    name = "fake"

    def __init__(self, phase: PodPhase = PodPhase.ABSENT, generation: int = 0) -> None:
        self.obs = PodObservation("p1", generation, phase)
        self.calls: list[str] = []
        self.fail_start: str | None = None
        self.launches: list[PodLaunch] = []

    def start(self, launch: PodLaunch) -> PodObservation:
        self.calls.append(f"start:{launch.generation}")
        self.launches.append(launch)
        if self.fail_start:
            raise PodStartError(self.fail_start)
        self.obs = PodObservation("p1", launch.generation, PodPhase.STARTING, {22: 4000})
        return self.obs

    def observe(self, pod_id: str) -> PodObservation:
        return self.obs

    def stop(self, pod_id: str, grace_seconds: float) -> PodObservation:
        self.calls.append("stop")
        self.obs = PodObservation("p1", self.obs.generation, PodPhase.STOPPED)
        return self.obs

    def remove(self, pod_id: str, grace_seconds: float) -> None:
        self.calls.append("remove")
        self.obs = PodObservation("p1", self.obs.generation, PodPhase.ABSENT)

    def adopt(self) -> list[PodObservation]:
        return [self.obs]


def _want(
    desired: str,
    generation: int = 1,
    revision: int = 0,
    pod_id: str = "p1",
    meter_token: str | None = None,
) -> PodAssignment:
    spec = PodSpec(
        image="i",
        ports=["22/tcp", "8888/http"],
        gpu_indices=[1, 3],
        gpu_type="rtx4090",
        public_keys=["k"],
    )
    return PodAssignment.model_validate(
        {
            "pod_id": pod_id,
            "generation": generation,
            "desired": desired,
            "revision": revision,
            "spec": spec.model_dump(),
            "meter_token": meter_token,
            "meter_heartbeat": 2.5,
        }
    )


@pytest.mark.parametrize(
    ("phase", "generation", "desired", "calls", "reported"),
    [
        (PodPhase.ABSENT, 0, "running", ["start:1"], "starting"),
        (PodPhase.STOPPED, 1, "running", ["start:1"], "starting"),
        (PodPhase.RUNNING, 1, "running", [], "running"),
        (PodPhase.RUNNING, 0, "running", ["stop", "start:1"], "starting"),
        (PodPhase.EXITED, 1, "running", [], "exited"),  # never restarted behind the user's back
        (PodPhase.EXITED, 0, "running", ["start:1"], "starting"),
        (PodPhase.RUNNING, 1, "stopped", ["stop"], "stopped"),
        (PodPhase.EXITED, 1, "stopped", ["stop"], "stopped"),
        (PodPhase.STOPPED, 1, "stopped", [], "stopped"),
        (PodPhase.RUNNING, 1, "terminated", ["remove"], "absent"),
        (PodPhase.ABSENT, 0, "terminated", ["remove"], "absent"),
    ],
)
def test_reconcile_moves_one_step_towards_desired(
    phase: PodPhase, generation: int, desired: str, calls: list[str], reported: str
) -> None:
    runtime = FakeRuntime(phase, generation)
    report = reconcile(runtime, _want(desired), grace=1.0)
    assert runtime.calls == calls
    assert report.phase == reported


def test_a_start_error_is_reported_as_failed_with_its_reason() -> None:
    runtime = FakeRuntime()
    runtime.fail_start = "no free host port"
    report = reconcile(runtime, _want("running"), grace=1.0)
    assert (report.phase, report.reason, report.generation) == ("failed", "no free host port", 1)


def test_launch_of_an_assignment() -> None:
    launch = launch_of(_want("running", generation=4))
    assert launch.generation == 4
    assert [(p.port, p.protocol) for p in launch.ports] == [(22, "tcp"), (8888, "http")]
    assert launch.gpu_indices == (1, 3)
    assert launch.public_keys == ("k",)
    assert launch.meter is None  # no meter token: no meter


def test_launch_of_an_assignment_with_a_meter() -> None:
    url = "ws://h:1/meter/connect"
    launch = launch_of(_want("running", meter_token="mt1.p1.1.x"), url)
    assert launch.meter == MeterLaunch(url, "mt1.p1.1.x", 2.5)
    assert launch_of(_want("running", meter_token="mt1.p1.1.x")).meter is None  # no URL


def test_limits_by_gpu_type_scale_with_the_gpu_count() -> None:
    table = {
        "rtx4090": PerGpuLimits(cpus=8, memory_bytes=32 << 30, pids=4096),
        "": PerGpuLimits(cpus=2),
    }
    launch = launch_of(_want("running"), limits=table)
    assert launch.gpu_type == "rtx4090"
    assert launch.limits == ResourceLimits(cpus=16, memory_bytes=64 << 30, pids=4096)
    assert limits_for(table, "a100", 4) == ResourceLimits(cpus=8)  # the "" row
    assert limits_for(table, "a100", 0) == ResourceLimits(cpus=2)  # no GPU counts as one
    assert limits_for({}, "rtx4090", 2) == ResourceLimits()  # no table: no limits
    assert launch_of(_want("running")).limits == ResourceLimits()


def test_exited_at_is_reported() -> None:
    obs = PodObservation("p1", 1, PodPhase.EXITED, exit_code=0, exited_at=1764140000.5)
    assert report_of(obs).exited_at == 1764140000.5


def test_channel_url() -> None:
    assert channel_url("http://h:1/") == "ws://h:1/nodes/connect"
    assert channel_url("https://api.example/base") == "wss://api.example/base/nodes/connect"
    with pytest.raises(ValueError, match="must start with http"):
        channel_url("ftp://h")


def test_meter_url_is_beside_the_node_channel() -> None:
    assert meter_url("http://h:1/") == "ws://h:1/meter/connect"
    assert meter_url("https://api.example/base") == "wss://api.example/base/meter/connect"


async def _settle() -> None:
    await asyncio.gather(*(t for t in asyncio.all_tasks() if t is not asyncio.current_task()))


def _agent(runtime: FakeRuntime) -> NodeAgent:
    return NodeAgent(api_url="http://127.0.0.1:1", token="t", runtime=runtime, gpus=[],
                     public_host="127.0.0.1")  # fmt: skip


async def test_an_older_assignment_never_replaces_a_newer_one() -> None:
    runtime = FakeRuntime(PodPhase.RUNNING, generation=1)
    agent = _agent(runtime)
    agent._spawn(_want("stopped", revision=3))
    agent._spawn(_want("running", revision=2))  # overtaken: built before the stop
    await _settle()
    assert agent._wanted["p1"].revision == 3
    assert runtime.calls == ["stop"]
    agent._spawn(_want("terminated", revision=0))  # a termination is final: always taken
    await _settle()
    assert runtime.calls == ["stop", "remove"]
    assert "p1" not in agent._wanted


async def test_sync_removes_what_the_plane_no_longer_lists() -> None:
    runtime = FakeRuntime(PodPhase.RUNNING, generation=1)
    agent = _agent(runtime)
    agent._on_sync(Sync(pods=[_want("running", pod_id="p2")]), known={"p1", "p2"})
    await _settle()
    assert "remove" in runtime.calls  # p1: terminated while the node was away
    assert set(agent._wanted) == {"p2"}


async def test_the_agent_gives_each_run_its_meter() -> None:
    runtime = FakeRuntime()
    agent = _agent(runtime)
    agent._spawn(_want("running", meter_token="mt1.p1.1.x"))
    await _settle()
    [launch] = runtime.launches
    assert launch.meter == MeterLaunch("ws://127.0.0.1:1/meter/connect", "mt1.p1.1.x", 2.5)
