"""Pod status -> observation, for states the test server's kubelet does not produce."""

from __future__ import annotations

from typing import Any

from lightkube.resources.core_v1 import Pod

from openpod.adapters.runtimes import _kube_manifests as m
from openpod.adapters.runtimes._kube_status import observation_of
from openpod.adapters.runtimes.base import PodPhase
from tests.kubernetes.conftest import launch_of


def pod_with(status: dict[str, Any], **metadata: Any) -> Pod:
    body = m.pod(m.KubeLayout(namespace="openpod"), launch_of("podsss111", 7), "cm")
    body["metadata"].update(metadata)
    body["status"] = status
    obj = Pod.from_dict(body)
    assert isinstance(obj, Pod)
    return obj


def test_a_pod_being_deleted_is_stopped_already() -> None:
    running = {"phase": "Running", "podIP": "127.0.0.5"}
    obs = observation_of(pod_with(running, deletionTimestamp="2026-01-01T00:00:00Z"))
    assert obs.phase is PodPhase.STOPPED and obs.generation == 7 and obs.address is None


def test_a_fresh_pod_is_starting_without_a_reason() -> None:
    obs = observation_of(pod_with({"phase": "Pending"}))
    assert (obs.phase, obs.reason, obs.pod_id) == (PodPhase.STARTING, None, "podsss111")


def test_container_creating_is_not_a_problem() -> None:
    waiting = {"waiting": {"reason": "ContainerCreating"}}
    status = {
        "phase": "Pending",
        "containerStatuses": [
            {"name": "workload", "image": "x", "imageID": "", "ready": False,
             "restartCount": 0, "state": waiting}
        ],
    }  # fmt: skip
    assert observation_of(pod_with(status)).reason is None


def test_a_failed_pod_without_container_status() -> None:
    status = {"phase": "Failed", "reason": "DeadlineExceeded", "message": "too long"}
    obs = observation_of(pod_with(status))
    assert obs.phase is PodPhase.EXITED and obs.reason == "the pod failed: too long"
