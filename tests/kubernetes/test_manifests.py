"""The Kubernetes objects of a pod, checked offline against the official schemas."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
from lightkube.resources.core_v1 import ConfigMap, PersistentVolumeClaim, Pod, Secret

from openpod.adapters.runtimes import _kube_manifests as m
from openpod.adapters.runtimes._launch import BOOT_SCRIPT
from openpod.adapters.runtimes.base import MeterLaunch, PodLaunch, PortRequest, ResourceLimits

# Native sidecars (initContainers[].restartPolicy) are on by default from 1.29.
VERSIONS = ("1.29", "1.30", "1.33", "1.37")
TOKEN = "meter-token-that-must-stay-secret"
USER_SECRET = "user-api-key-value-1234"
LAYOUT = m.KubeLayout(namespace="openpod", storage_class="fast-ssd", workspace_size="50Gi")


def gpu_launch(**changes: Any) -> PodLaunch:
    launch = PodLaunch(
        pod_id="p1a2b3c4d5e6",
        generation=3,
        image="ghcr.io/example/torch:2.5",
        command=("python3", "train.py", "--epochs", "3"),
        env={"HF_TOKEN": USER_SECRET, "PATH": "/opt/bin:/usr/bin:/bin"},
        ports=(PortRequest(22, "tcp"), PortRequest(8888, "http"), PortRequest(6006, "http")),
        gpu_indices=(2, 3),
        public_keys=("ssh-ed25519 AAAAC3Nza user@host",),
        meter=MeterLaunch("ws://127.0.0.1:8000/meter/connect", TOKEN, 5.0),
        gpu_type="h100-80g",
        limits=ResourceLimits(cpus=7.5, memory_bytes=64 * 2**30, pids=4096),
    )
    return replace(launch, **changes)


def all_objects(launch: PodLaunch) -> list[dict[str, Any]]:
    files = m.boot_files()
    return [
        m.pod(LAYOUT, launch, m.config_map_name(files)),
        m.claim(LAYOUT, launch.pod_id),
        m.secret(LAYOUT, launch),
        m.config_map(LAYOUT, files),
    ]


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    spec = pod["spec"]
    found: list[dict[str, Any]] = [
        c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name
    ]
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("meter", [True, False])
def test_every_object_is_valid_for_the_official_schema(version: str, meter: bool) -> None:
    launch = gpu_launch() if meter else gpu_launch(meter=None, gpu_indices=(), gpu_type="")
    for obj in all_objects(launch):
        assert kubernetes_validate.validate(obj, version, strict=True) == version


def test_the_schema_check_would_catch_a_wrong_field() -> None:
    pod = m.pod(LAYOUT, gpu_launch(), "cm")
    container(pod, "workload")["gpus"] = 2
    with pytest.raises(kubernetes_validate.ValidationError, match="'gpus' was unexpected"):
        kubernetes_validate.validate(pod, "1.30", strict=True)


def test_lightkube_models_carry_every_field() -> None:
    """What the client sends is exactly the manifest: nothing dropped by the models."""
    kinds: tuple[Any, ...] = (Pod, PersistentVolumeClaim, Secret, ConfigMap)
    for kind, obj in zip(kinds, all_objects(gpu_launch()), strict=True):
        assert kind.from_dict(obj).to_dict() == obj


def test_gpus_by_count_and_type_by_node_label() -> None:
    pod = m.pod(LAYOUT, gpu_launch(), "cm")
    limits = container(pod, "workload")["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "2"
    assert pod["spec"]["nodeSelector"] == {"openpod.io/gpu-type": "h100-80g"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
        "tolerations"
    ]
    env = {e["name"]: e for e in container(pod, "workload")["env"]}
    assert env["OPENPOD_GPU_COUNT"]["value"] == "2"
    assert "CUDA_VISIBLE_DEVICES" not in env and "NVIDIA_VISIBLE_DEVICES" not in env


def test_a_pod_cannot_choose_its_own_gpus() -> None:
    launch = gpu_launch(env={"NVIDIA_VISIBLE_DEVICES": "all", "CUDA_VISIBLE_DEVICES": "0,1,2"})
    names = [e["name"] for e in container(m.pod(LAYOUT, launch, "cm"), "workload")["env"]]
    assert "NVIDIA_VISIBLE_DEVICES" not in names and "CUDA_VISIBLE_DEVICES" not in names


def test_cpu_pod_has_no_gpu_request_nor_selector() -> None:
    pod = m.pod(LAYOUT, gpu_launch(gpu_indices=(), gpu_type=""), "cm")
    assert "nvidia.com/gpu" not in container(pod, "workload")["resources"]["limits"]
    assert "nodeSelector" not in pod["spec"] and "tolerations" not in pod["spec"]


def test_cpu_and_memory_limits_and_no_pids_field() -> None:
    pod = m.pod(LAYOUT, gpu_launch(), "cm")
    limits = container(pod, "workload")["resources"]["limits"]
    assert limits["cpu"] == "7500m"
    assert limits["memory"] == str(64 * 2**30)
    assert "pids" not in json.dumps(pod).lower().replace("podpidslimit", "")
    unlimited = m.pod(LAYOUT, gpu_launch(limits=ResourceLimits(), gpu_indices=()), "cm")
    assert "resources" not in container(unlimited, "workload")


def test_never_a_service_nor_an_ingress() -> None:
    kinds = {obj["kind"] for obj in all_objects(gpu_launch())}
    assert kinds == {"Pod", "PersistentVolumeClaim", "Secret", "ConfigMap"}


def test_meter_token_only_by_secret_key_ref() -> None:
    launch = gpu_launch()
    pod = m.pod(LAYOUT, launch, "cm")
    assert TOKEN not in json.dumps(pod)
    meter = container(pod, "meter")
    ref = {"name": m.secret_name(launch.pod_id, 3), "key": m.METER_TOKEN_KEY}
    assert {"name": "OPENPOD_METER_TOKEN", "valueFrom": {"secretKeyRef": ref}} in meter["env"]
    workload_env = json.dumps(container(pod, "workload")["env"])
    assert m.METER_TOKEN_KEY not in workload_env and "OPENPOD_METER_TOKEN" not in workload_env
    assert m.secret(LAYOUT, launch)["stringData"][m.METER_TOKEN_KEY] == TOKEN


def test_user_env_values_only_in_the_secret() -> None:
    launch = gpu_launch()
    pod = m.pod(LAYOUT, launch, "cm")
    assert USER_SECRET not in json.dumps(pod)
    env = {e["name"]: e for e in container(pod, "workload")["env"]}
    ref = {"name": m.secret_name(launch.pod_id, 3), "key": "env.HF_TOKEN"}
    assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": ref}}
    assert env["PATH"]["valueFrom"]["secretKeyRef"]["key"] == "env.PATH"  # the user's PATH wins
    assert env["OPENPOD_POD_ID"] == {"name": "OPENPOD_POD_ID", "value": launch.pod_id}
    assert env["OPENPOD_SSH_PORT"]["value"] == "22"
    assert env["OPENPOD_TCP_PORT_8888"]["value"] == "8888"
    assert env["PUBLIC_KEY"]["value"] == "ssh-ed25519 AAAAC3Nza user@host"
    assert "HOME" not in env  # sshd reads keys from the passwd home: the image's


def test_the_platform_overrides_what_the_user_sets() -> None:
    launch = gpu_launch(env={"OPENPOD_POD_ID": "someone-else"})
    env = {e["name"]: e for e in container(m.pod(LAYOUT, launch, "cm"), "workload")["env"]}
    assert env["OPENPOD_POD_ID"] == {"name": "OPENPOD_POD_ID", "value": launch.pod_id}


def test_labels_names_and_workspace_claim() -> None:
    launch = gpu_launch()
    pod, claim, secret, config_map = all_objects(launch)
    want = {
        "app.kubernetes.io/managed-by": "openpod",
        "openpod.io/pod-id": launch.pod_id,
        "openpod.io/generation": "3",
    }
    assert pod["metadata"]["labels"] == want and secret["metadata"]["labels"] == want
    assert pod["metadata"]["name"] == "openpod-p1a2b3c4d5e6-3"
    assert claim["metadata"]["labels"] == {k: v for k, v in want.items() if "generation" not in k}
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["workspace"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    mounts = {v["mountPath"]: v for v in container(pod, "workload")["volumeMounts"]}
    assert mounts["/workspace"]["subPath"] == "workspace"
    assert mounts["/run/openpod/boot"]["readOnly"] is True
    assert config_map["immutable"] is True


def test_boot_script_from_the_config_map_wraps_the_workload() -> None:
    files = m.boot_files()
    assert files["boot.sh"] == BOOT_SCRIPT.read_text()
    pod = m.pod(LAYOUT, gpu_launch(), m.config_map_name(files))
    workload = container(pod, "workload")
    assert workload["command"] == [
        "sh", "/run/openpod/boot/boot.sh", "python3", "train.py", "--epochs", "3",
    ]  # fmt: skip
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["boot"]["configMap"]["name"] == m.config_map_name(files)
    assert m.config_map_name(files) != m.config_map_name({**files, "boot.sh": "changed"})
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["automountServiceAccountToken"] is False


def test_meter_is_a_native_sidecar_out_of_the_workloads_reach() -> None:
    pod = m.pod(LAYOUT, gpu_launch(), "cm")
    assert "shareProcessNamespace" not in pod["spec"]  # the workload cannot see the meter
    meter = container(pod, "meter")
    assert meter["restartPolicy"] == "Always"
    assert meter["command"][:5] == [
        "sh", "/run/openpod/boot/meter.sh", "python3",
        "/run/openpod/pod/boot-status", "/run/openpod/meter/journal",
    ]  # fmt: skip
    argv = meter["command"][5:]
    assert argv[argv.index("--generation") + 1] == "3" and "--journal" not in argv
    assert meter["securityContext"]["runAsUser"] != 0
    assert meter["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "nvidia.com/gpu" not in meter["resources"]["limits"]
    mounts = {v["name"]: v for v in meter["volumeMounts"]}
    assert set(mounts) == {"boot", "meter", "run"}
    assert mounts["run"]["readOnly"] is True and mounts["boot"]["readOnly"] is True
    workload_volumes = {v["name"] for v in container(pod, "workload")["volumeMounts"]}
    assert "meter" not in workload_volumes  # the journal is the meter's alone
    plain = m.pod(LAYOUT, gpu_launch(meter=None), "cm")
    assert "initContainers" not in plain["spec"]
    assert "meter" not in {v["name"] for v in plain["spec"]["volumes"]}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"pod_id": "Bad_ID"}, "is not a DNS label"),
        ({"pod_id": "x" * 41}, "is not a DNS label"),
        ({"image": ""}, "is not an image reference"),
        ({"image": "debian 12"}, "is not an image reference"),
        ({"ports": (PortRequest(70000, "tcp"),)}, "outside 1-65535"),
        ({"ports": (PortRequest(80, "udp"),)}, "protocol 'udp' unknown"),
        ({"env": {"1BAD": "x"}}, "not a C identifier"),
        ({"gpu_type": "h100 80g"}, "cannot be a node label value"),
        ({"limits": ResourceLimits(cpus=0)}, "cpus must be a number of CPU cores"),
        ({"limits": ResourceLimits(memory_bytes=-1)}, "memory_bytes must be at least"),
        ({"generation": -1}, "generation must be 0 or more"),
    ],
)
def test_bad_launches_are_refused_with_the_value_named(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(m.ManifestError, match=message):
        m.check_launch(gpu_launch(**changes))


def test_a_good_launch_passes_the_check() -> None:
    m.check_launch(gpu_launch())
