"""What Kubernetes says about a Pod, surfaced to the pod's owner as a clear reason."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from openpod.adapters.runtimes.base import PodPhase, ResourceLimits
from openpod.adapters.runtimes.kubernetes import KubernetesRuntime
from tests.kubernetes.conftest import launch_of, observe_until, pod_ip
from tests.support.kubeapi import KubeApiServer

POD = "openpod-podrrr111-1"


@pytest.fixture
def started(api: KubeApiServer, runtime: KubernetesRuntime) -> KubernetesRuntime:
    runtime.start(launch_of("podrrr111", image="registry.example/nope:1"))
    return runtime


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("ErrImagePull", 'failed to pull and unpack image "registry.example/nope:1": not found'),
        ("ImagePullBackOff", 'Back-off pulling image "registry.example/nope:1"'),
    ],
)
def test_image_pull_failures(
    api: KubeApiServer, started: KubernetesRuntime, reason: str, message: str
) -> None:
    api.fail_image_pull(POD, reason, message)
    obs = observe_until(started, "podrrr111", lambda o: o.reason is not None, "a reason")
    assert obs.phase is PodPhase.STARTING
    assert obs.reason == f"the image registry.example/nope:1 could not be pulled: {message}"


def test_out_of_memory(api: KubeApiServer, started: KubernetesRuntime) -> None:
    api.run_pod(POD, pod_ip())
    api.oom_kill(POD)
    obs = observe_until(started, "podrrr111", lambda o: o.phase is PodPhase.EXITED, "the exit")
    assert obs.reason == "the pod ran out of memory (limit 1 GiB)"
    assert obs.exit_code == 137 and obs.exited_at is not None


def test_out_of_memory_with_an_odd_limit(api: KubeApiServer, runtime: KubernetesRuntime) -> None:
    runtime.start(launch_of("podrrr222", limits=ResourceLimits(memory_bytes=1_500_000)))
    api.oom_kill("openpod-podrrr222-1")
    obs = observe_until(runtime, "podrrr222", lambda o: o.phase is PodPhase.EXITED, "the exit")
    assert obs.reason == "the pod ran out of memory (limit 1500000 bytes)"


def test_unschedulable(api: KubeApiServer, started: KubernetesRuntime) -> None:
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    api.unschedulable(POD, message)
    obs = observe_until(started, "podrrr111", lambda o: o.reason is not None, "a reason")
    assert obs.phase is PodPhase.STARTING
    assert obs.reason == f"no node can run it: {message}"


@pytest.mark.parametrize("code", [0, 3])
def test_the_workload_exits(api: KubeApiServer, started: KubernetesRuntime, code: int) -> None:
    api.run_pod(POD, pod_ip())
    before = time.time()
    api.exit_pod(POD, code)
    obs = observe_until(started, "podrrr111", lambda o: o.phase is PodPhase.EXITED, "the exit")
    assert obs.exit_code == code
    assert obs.reason == f"workload exited with code {code}"
    assert obs.exited_at is not None and obs.exited_at >= int(before)
    assert obs.address is None and not obs.ssh_ready
    stopped = started.stop("podrrr111", 1)  # what the agent does with an exited pod
    assert stopped.phase is PodPhase.STOPPED


def test_evicted(api: KubeApiServer, started: KubernetesRuntime) -> None:
    api.evict(POD, "The node was low on resource: ephemeral-storage.")
    obs = observe_until(started, "podrrr111", lambda o: o.phase is PodPhase.EXITED, "the exit")
    assert (
        obs.reason == "the node evicted the pod: The node was low on resource: ephemeral-storage."
    )


def test_a_container_that_cannot_be_created(api: KubeApiServer, started: KubernetesRuntime) -> None:
    api.fail_image_pull(POD, "CreateContainerConfigError", 'secret "x" not found')
    obs = observe_until(started, "podrrr111", lambda o: o.reason is not None, "a reason")
    assert obs.reason == 'the container could not be started: secret "x" not found'


def test_reasons_reach_a_restarted_agent(
    api: KubeApiServer, make_runtime: Callable[..., KubernetesRuntime]
) -> None:
    first = make_runtime()
    first.start(launch_of("podrrr333"))
    api.unschedulable("openpod-podrrr333-1", "0/1 nodes are available: 1 node(s) didn't match")
    first.close()
    (obs,) = make_runtime().adopt()
    assert obs.reason == "no node can run it: 0/1 nodes are available: 1 node(s) didn't match"
