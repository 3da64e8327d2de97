"""The Kubernetes runtime's lifecycle against the in-process API server.

The runtime-conformance list, as far as an API server without a kubelet allows: start,
ports and readiness (on the Pod IP), boot (the script from the ConfigMap), the meter
sidecar, stop, resume with /workspace kept, terminate, adoption after a restart, resource
limits and GPU assignment. What a kubelet would do is done by the test (`api.run_pod`...).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from openpod.adapters.runtimes import _kube_manifests as m
from openpod.adapters.runtimes.base import PodPhase, PodStartError, RuntimeError_
from openpod.adapters.runtimes.kubernetes import KubernetesRuntime
from tests.kubernetes.conftest import (
    API_TOKEN,
    METER_TOKEN,
    Listeners,
    config_for,
    launch_of,
    observe_until,
    pod_ip,
)
from tests.support.kubeapi import KINDS, KubeApiServer
from tests.support.net import free_port


def owned(api: KubeApiServer, plural: str, pod_id: str) -> dict[str, dict[str, Any]]:
    return {
        name: obj
        for name, obj in api.objects(plural).items()
        if obj["metadata"].get("labels", {}).get(m.POD_ID) == pod_id
    }


def test_start_creates_one_pod_its_claim_secret_and_the_boot_config_map(
    api: KubeApiServer, runtime: KubernetesRuntime
) -> None:
    obs = runtime.start(launch_of("podaaa111"))
    assert obs.phase is PodPhase.STARTING and obs.generation == 1
    pods = owned(api, "pods", "podaaa111")
    assert list(pods) == ["openpod-podaaa111-1"]
    assert list(owned(api, "persistentvolumeclaims", "podaaa111")) == [
        "openpod-podaaa111-workspace"
    ]
    secret = owned(api, "secrets", "podaaa111")["openpod-podaaa111-1"]
    data = secret["data"]
    assert isinstance(data, dict)
    assert base64.b64decode(data[m.METER_TOKEN_KEY]).decode() == METER_TOKEN
    assert METER_TOKEN not in json.dumps(pods)
    (config_map,) = api.objects("configmaps").values()
    assert config_map["data"]["boot.sh"] == m.boot_files()["boot.sh"]
    # Only the four kinds, each object valid for the pinned schema (none refused).
    assert api.kinds_requested() <= set(KINDS) and not api.refused
    assert {r.method for r in api.requests if r.kind == "pods"} >= {"POST", "GET"}
    spec = pods["openpod-podaaa111-1"]["spec"]
    assert isinstance(spec, dict)
    limits = spec["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "2000m", "memory": str(2**30), "nvidia.com/gpu": "1"}
    assert spec["nodeSelector"] == {"openpod.io/gpu-type": "rtx4090"}


def test_start_again_is_idempotent(api: KubeApiServer, runtime: KubernetesRuntime) -> None:
    runtime.start(launch_of("podaaa222"))
    posts = [r for r in api.requests if r.method == "POST"]
    again = runtime.start(launch_of("podaaa222"))
    assert again.phase is PodPhase.STARTING
    assert [r for r in api.requests if r.method == "POST"] == posts


def test_running_on_the_pod_ip_with_ports_and_ssh_ready(
    api: KubeApiServer, runtime: KubernetesRuntime, listeners: Listeners
) -> None:
    runtime.start(launch_of("podbbb111"))
    ip = pod_ip()
    api.run_pod("openpod-podbbb111-1", ip, ready=False)
    obs = observe_until(runtime, "podbbb111", lambda o: o.address == ip, "the Pod IP")
    assert obs.phase is PodPhase.STARTING  # running, but the boot script has not finished
    api.run_pod("openpod-podbbb111-1", ip, ready=True)
    obs = observe_until(runtime, "podbbb111", lambda o: o.phase is PodPhase.RUNNING, "Ready")
    assert obs.port_mappings == {22: 22, 8888: 8888}
    assert not obs.ssh_ready and obs.ready_ports == ()  # nothing answers on the Pod IP yet
    listeners.serve(ip, 22)
    listeners.serve(ip, 8888)
    obs = observe_until(runtime, "podbbb111", lambda o: o.ssh_ready, "the SSH banner")
    assert obs.ready_ports == (22, 8888) and obs.address == ip


def test_stop_keeps_the_claim_and_resume_mounts_the_same_one(
    api: KubeApiServer, runtime: KubernetesRuntime
) -> None:
    runtime.start(launch_of("podccc111"))
    api.run_pod("openpod-podccc111-1", pod_ip())
    claim_uid = api.objects("persistentvolumeclaims")["openpod-podccc111-workspace"]["metadata"]
    stopped = runtime.stop("podccc111", 5)
    assert stopped.phase is PodPhase.STOPPED and stopped.address is None
    assert owned(api, "pods", "podccc111") == {} and owned(api, "secrets", "podccc111") == {}
    assert runtime.observe("podccc111").phase is PodPhase.STOPPED
    delete = [r for r in api.requests if r.method == "DELETE" and r.kind == "pods"]
    assert delete[-1].query == "gracePeriodSeconds=5"

    runtime.start(launch_of("podccc111", generation=2))
    claims = api.objects("persistentvolumeclaims")
    assert claims["openpod-podccc111-workspace"]["metadata"] == claim_uid  # never recreated
    (pod,) = owned(api, "pods", "podccc111").values()
    assert pod["metadata"]["name"] == "openpod-podccc111-2"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["workspace"]["persistentVolumeClaim"]["claimName"] == (
        "openpod-podccc111-workspace"
    )
    assert runtime.stop("podccc111", 1).phase is PodPhase.STOPPED
    assert runtime.stop("podccc111", 1).phase is PodPhase.STOPPED  # idempotent


def test_a_newer_generation_replaces_the_running_one(
    api: KubeApiServer, runtime: KubernetesRuntime
) -> None:
    runtime.start(launch_of("podddd111"))
    api.run_pod("openpod-podddd111-1", pod_ip())
    obs = runtime.start(launch_of("podddd111", generation=2))
    assert obs.generation == 2
    assert list(owned(api, "pods", "podddd111")) == ["openpod-podddd111-2"]
    assert list(owned(api, "secrets", "podddd111")) == ["openpod-podddd111-2"]
    with pytest.raises(PodStartError, match="already runs generation 2"):
        runtime.start(launch_of("podddd111", generation=1))


def test_remove_deletes_pod_claim_and_secrets(
    api: KubeApiServer, runtime: KubernetesRuntime
) -> None:
    runtime.start(launch_of("podeee111"))
    runtime.start(launch_of("podeee222"))
    runtime.remove("podeee111", 1)
    for plural in ("pods", "secrets", "persistentvolumeclaims"):
        assert owned(api, plural, "podeee111") == {}, plural
        assert owned(api, plural, "podeee222") != {}, plural
    assert runtime.observe("podeee111").phase is PodPhase.ABSENT
    runtime.remove("podeee111", 1)  # idempotent
    runtime.remove("never-was", 1)


def test_adoption_by_a_new_runtime_after_a_restart(
    api: KubeApiServer, make_runtime: Callable[..., KubernetesRuntime], listeners: Listeners
) -> None:
    first = make_runtime()
    first.start(launch_of("podfff111"))
    first.start(launch_of("podfff222", generation=4))
    first.start(launch_of("podfff333"))
    first.stop("podfff333", 1)
    ip = pod_ip()
    api.run_pod("openpod-podfff111-1", ip)
    listeners.serve(ip, 22)
    first.close()

    second = make_runtime()
    adopted = {obs.pod_id: obs for obs in second.adopt()}
    assert set(adopted) == {"podfff111", "podfff222", "podfff333"}
    assert adopted["podfff111"].phase is PodPhase.RUNNING and adopted["podfff111"].ssh_ready
    assert adopted["podfff111"].address == ip
    assert adopted["podfff222"].phase is PodPhase.STARTING
    assert adopted["podfff222"].generation == 4
    assert adopted["podfff333"].phase is PodPhase.STOPPED
    assert second.stop("podfff111", 1).phase is PodPhase.STOPPED  # and it drives them
    assert owned(api, "pods", "podfff111") == {}


def test_bad_input_is_refused_before_any_request(
    api: KubeApiServer, runtime: KubernetesRuntime
) -> None:
    before = len(api.requests)
    with pytest.raises(PodStartError, match="is not a DNS label"):
        runtime.start(launch_of("Not_A_Label"))
    with pytest.raises(PodStartError, match="not a C identifier"):
        runtime.start(launch_of("podggg111", env={"bad-name": "x"}))
    assert api.requests[before:] == []


def test_a_refused_pod_leaves_nothing_half_created(
    api: KubeApiServer, runtime: KubernetesRuntime
) -> None:
    api.refuse("pods", 403, "Forbidden", "exceeded quota: gpus, requested: nvidia.com/gpu=1")
    with pytest.raises(PodStartError, match="exceeded quota: gpus"):
        runtime.start(launch_of("podggg222"))
    for plural in ("pods", "secrets", "persistentvolumeclaims"):
        assert owned(api, plural, "podggg222") == {}, plural
    assert runtime.observe("podggg222").phase is PodPhase.ABSENT


def test_a_refused_resume_keeps_the_existing_workspace(
    api: KubeApiServer, runtime: KubernetesRuntime
) -> None:
    runtime.start(launch_of("podggg333"))
    runtime.stop("podggg333", 1)
    api.refuse("pods", 403, "Forbidden", "exceeded quota")
    with pytest.raises(PodStartError, match="exceeded quota"):
        runtime.start(launch_of("podggg333", generation=2))
    assert list(owned(api, "persistentvolumeclaims", "podggg333")) == [
        "openpod-podggg333-workspace"
    ]
    assert owned(api, "secrets", "podggg333") == {}


def test_the_server_refuses_an_invalid_object(api: KubeApiServer) -> None:
    """The test server's own check: what the runtime sends passes because it is valid."""
    import httpx

    body = m.pod(config_for(api).layout(), launch_of("podhhh111"), "cm")
    body["spec"]["containers"][0]["gpus"] = 1
    answer = httpx.post(
        f"{api.url}/api/v1/namespaces/openpod/pods",
        json=body,
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    assert answer.status_code == 422 and "'gpus' was unexpected" in answer.json()["message"]


def test_no_service_or_ingress_is_ever_requested(
    api: KubeApiServer, runtime: KubernetesRuntime, listeners: Listeners
) -> None:
    runtime.start(launch_of("podiii111"))
    ip = pod_ip()
    api.run_pod("openpod-podiii111-1", ip)
    listeners.serve(ip, 22)
    observe_until(runtime, "podiii111", lambda o: o.ssh_ready, "ssh ready")
    runtime.stop("podiii111", 1)
    runtime.start(launch_of("podiii111", generation=2))
    runtime.adopt()
    runtime.remove("podiii111", 1)
    kinds = api.kinds_requested()
    assert kinds <= set(KINDS)
    assert not {"services", "ingresses", "endpoints", "endpointslices"} & kinds
    assert not api.refused


def test_unreachable_api_is_a_clear_runtime_error(
    make_runtime: Callable[..., KubernetesRuntime],
) -> None:
    runtime = make_runtime(server=f"http://127.0.0.1:{free_port()}", sync_seconds=0.5)
    with pytest.raises(
        RuntimeError_,
        match=r"no list of the cluster's pods yet: the Kubernetes API cannot be reached: ConnectError",
    ):
        runtime.observe("podjjj111")


def test_a_wrong_token_is_a_clear_runtime_error_without_the_token(
    make_runtime: Callable[..., KubernetesRuntime],
) -> None:
    runtime = make_runtime(token="wrong-token-value", sync_seconds=1.0)
    with pytest.raises(RuntimeError_, match=r"refused it \(401 Unauthorized\)") as caught:
        runtime.adopt()
    assert "wrong-token-value" not in str(caught.value)
    assert "wrong-token-value" not in repr(runtime.config)
