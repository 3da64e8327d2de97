"""The Kubernetes objects of one openpod pod, as plain JSON-ready dicts (no I/O).

Per pod: a PersistentVolumeClaim for /workspace (kept across stop/resume, deleted by remove).
Per run (generation): a bare Pod and a Secret holding the meter token and the user's env
values. Shared: one immutable ConfigMap with the boot script and the meter launcher, named
by the hash of its content so that a new openpod version never changes a running pod's
script. No Service, no Ingress: the edge proxy and the SSH gateway dial the Pod IP.

Resource limits: `cpus` and `memory_bytes` become the workload container's
`resources.limits` (requests default to limits). `pids` has no per-Pod field: the PID limit
of a Pod is a kubelet setting (`podPidsLimit`) that the cluster operator chooses for the
node, so it is not sent. GPUs: `nvidia.com/gpu` = the GPU count (the device plugin picks
which; the agent's indices mean nothing here), the GPU type by `nodeSelector` on a node label.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from openpod.adapters.runtimes._kube_meter import METER_SH
from openpod.adapters.runtimes._launch import BOOT_SCRIPT, POD_RUN_DIR, pod_env
from openpod.adapters.runtimes.base import PodLaunch, PodStartError, check_limits

MANAGED_BY = "app.kubernetes.io/managed-by"
POD_ID = "openpod.io/pod-id"
GENERATION = "openpod.io/generation"
MANAGER = "openpod"
GPU_RESOURCE = "nvidia.com/gpu"

BOOT_DIR = f"{POD_RUN_DIR}/boot"  # the ConfigMap, read-only
METER_DIR = f"{POD_RUN_DIR}/meter"  # the meter's journal (an emptyDir only the meter sees)
POD_VIEW_DIR = f"{POD_RUN_DIR}/pod"  # in the meter: the workload's /run/openpod, read-only
METER_TOKEN_KEY = "meter-token"  # noqa: S105 (a key name, not a secret)
ENV_KEY_PREFIX = "env."  # Secret keys of the user's env values
METER_UID = 65532  # the meter needs no root: a uid of its own, no capabilities

# The workload container is Ready once the boot script has finished: sshd listens on 22
# (seen in /proc/net/tcp{,6}: local port 0016, state 0A LISTEN) or SSH is known to be
# unavailable. Plain POSIX sh, like boot.sh: it must run in any image.
READINESS_SH = f"""read -r s < {POD_RUN_DIR}/boot-status || exit 1
case $s in ssh=unavailable*) exit 0 ;; ssh=started) ;; *) exit 1 ;; esac
for f in /proc/net/tcp /proc/net/tcp6; do
  [ -r "$f" ] || continue
  while read -r _ l _ st _; do case "$l:$st" in *:0016:0A) exit 0 ;; esac; done < "$f"
done
exit 1"""

_POD_ID = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
# Set by the GPU device plugin alone: a pod that sets them could see GPUs it was not given.
_DEVICE_PLUGIN_ENV = ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")


Manifest = dict[str, Any]  # one Kubernetes object, as sent


class ManifestError(ValueError):
    """The launch cannot be expressed as valid Kubernetes objects; says which value is wrong."""


@dataclass(frozen=True)
class KubeLayout:
    """What the cluster operator chooses (from the runtime's config)."""

    namespace: str
    gpu_type_label: str = "openpod.io/gpu-type"
    storage_class: str | None = None  # None: the cluster's default StorageClass
    workspace_size: str = "20Gi"
    meter_image: str = "openpod/meter:latest"
    meter_python: str = "python3"
    image_pull_policy: str = "IfNotPresent"
    grace_seconds: int = 30


def pod_name(pod_id: str, generation: int) -> str:
    return f"openpod-{pod_id}-{generation}"


def secret_name(pod_id: str, generation: int) -> str:
    return f"openpod-{pod_id}-{generation}"


def claim_name(pod_id: str) -> str:
    return f"openpod-{pod_id}-workspace"


def boot_files() -> dict[str, str]:
    return {"boot.sh": BOOT_SCRIPT.read_text(), "meter.sh": METER_SH}


def config_map_name(files: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for key in sorted(files):
        digest.update(key.encode() + b"\0" + files[key].encode() + b"\0")
    return f"openpod-boot-{digest.hexdigest()[:12]}"


def labels(pod_id: str, generation: int | None = None) -> dict[str, str]:
    found = {MANAGED_BY: MANAGER, POD_ID: pod_id}
    if generation is not None:
        found[GENERATION] = str(generation)
    return found


def check_launch(launch: PodLaunch) -> None:
    """Refuse, before anything is sent, a launch the API server would reject or that
    could not be named: the message names the bad value."""
    if not _POD_ID.match(launch.pod_id):
        raise ManifestError(f"pod id {launch.pod_id!r} is not a DNS label of at most 40 characters")
    if launch.generation < 0:
        raise ManifestError(f"generation must be 0 or more, not {launch.generation}")
    if not launch.image or launch.image != launch.image.strip() or " " in launch.image:
        raise ManifestError(f"image {launch.image!r} is not an image reference")
    if launch.gpu_type and not _LABEL_VALUE.match(launch.gpu_type):
        raise ManifestError(f"GPU type {launch.gpu_type!r} cannot be a node label value")
    for request in launch.ports:
        if not 1 <= request.port <= 65535:
            raise ManifestError(f"port {request.port} is outside 1-65535")
        if request.protocol not in ("http", "tcp"):
            raise ManifestError(f"port {request.port}: protocol {request.protocol!r} unknown")
    for name in launch.env:
        if not _ENV_NAME.match(name):
            raise ManifestError(f"environment variable name {name!r} is not a C identifier")
    try:
        check_limits(launch.limits)  # the rules every runtime shares
    except PodStartError as exc:
        raise ManifestError(str(exc)) from None


def config_map(layout: KubeLayout, files: dict[str, str]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(files),
            "namespace": layout.namespace,
            "labels": {MANAGED_BY: MANAGER},
        },
        "immutable": True,
        "data": dict(files),
    }


def claim(layout: KubeLayout, pod_id: str) -> Manifest:
    spec: Manifest = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": layout.workspace_size}},
    }
    if layout.storage_class is not None:
        spec["storageClassName"] = layout.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim_name(pod_id),
            "namespace": layout.namespace,
            "labels": labels(pod_id),
        },
        "spec": spec,
    }


def workload_env(launch: PodLaunch) -> dict[str, str]:
    """The pod's environment as on every runtime, with Kubernetes' differences: container
    ports are the real ports, HOME is the image's (sshd reads authorized_keys from the
    passwd home), and the GPU visibility variables belong to the device plugin."""
    ports = {22: 22, **{p.port: p.port for p in launch.ports}}
    env = pod_env(launch, ports, bind_host="")
    del env["OPENPOD_SSH_LISTEN"]
    if "HOME" in launch.env:
        env["HOME"] = launch.env["HOME"]
    else:
        del env["HOME"]
    for name in _DEVICE_PLUGIN_ENV:
        env.pop(name, None)
    return env


def secret(layout: KubeLayout, launch: PodLaunch) -> Manifest:
    """The run's Secret: the meter token and the user's own env values (which may hold the
    user's credentials): none of them is ever written into the Pod object."""
    data = {f"{ENV_KEY_PREFIX}{name}": value for name, value in launch.env.items()}
    if launch.meter is not None:
        data[METER_TOKEN_KEY] = launch.meter.token
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(launch.pod_id, launch.generation),
            "namespace": layout.namespace,
            "labels": labels(launch.pod_id, launch.generation),
        },
        "type": "Opaque",
        "stringData": data,
    }


def _env_list(launch: PodLaunch) -> list[Manifest]:
    user = launch.env
    items: list[Manifest] = []
    for name, value in workload_env(launch).items():
        if name in user and user[name] == value:
            ref = {"name": secret_name(launch.pod_id, launch.generation)}
            ref["key"] = f"{ENV_KEY_PREFIX}{name}"
            items.append({"name": name, "valueFrom": {"secretKeyRef": ref}})
        else:
            items.append({"name": name, "value": value})
    return items


def _limits(launch: PodLaunch) -> dict[str, str]:
    found: dict[str, str] = {}
    if launch.limits.cpus is not None:
        found["cpu"] = f"{max(1, round(launch.limits.cpus * 1000))}m"
    if launch.limits.memory_bytes is not None:
        found["memory"] = str(launch.limits.memory_bytes)
    if launch.gpu_indices:
        found[GPU_RESOURCE] = str(len(launch.gpu_indices))
    return found


def _workload(layout: KubeLayout, launch: PodLaunch) -> Manifest:
    ports = [22, *(p.port for p in launch.ports)]
    container: Manifest = {
        "name": "workload",
        "image": launch.image,
        "imagePullPolicy": layout.image_pull_policy,
        "command": ["sh", f"{BOOT_DIR}/boot.sh", *launch.command],
        "workingDir": "/workspace",
        "env": _env_list(launch),
        "ports": [{"containerPort": p, "protocol": "TCP"} for p in dict.fromkeys(ports)],
        "readinessProbe": {
            "exec": {"command": ["sh", "-c", READINESS_SH]},
            "periodSeconds": 2,
            "failureThreshold": 1,
        },
        "volumeMounts": [
            {"name": "run", "mountPath": POD_RUN_DIR},
            {"name": "boot", "mountPath": BOOT_DIR, "readOnly": True},
            {"name": "workspace", "mountPath": "/workspace", "subPath": "workspace"},
            # Host keys on the claim too: the same host key after a resume.
            {"name": "workspace", "mountPath": f"{POD_RUN_DIR}/ssh", "subPath": "ssh"},
        ],
    }
    limits = _limits(launch)
    if limits:
        container["resources"] = {"limits": limits}
    return container


def _meter(layout: KubeLayout, launch: PodLaunch) -> Manifest:
    """The meter as a native sidecar (an init container that restarts): it starts before
    the workload, is restarted if it dies (it replays its journal), gets SIGTERM once the
    workload has exited, and does not keep the Pod alive. It sees the workload's
    /run/openpod read-only (to learn that the workload started: _kube_meter.py) and
    nothing else of it; the Pod does not share its process namespace."""
    assert launch.meter is not None
    meter = launch.meter
    argv = [
        "sh", f"{BOOT_DIR}/meter.sh", layout.meter_python,
        f"{POD_VIEW_DIR}/boot-status", f"{METER_DIR}/journal",
        "--pod", launch.pod_id, "--generation", str(launch.generation), "--url", meter.url,
        "--heartbeat", repr(meter.heartbeat_s),
    ]  # fmt: skip
    token_ref = {"name": secret_name(launch.pod_id, launch.generation), "key": METER_TOKEN_KEY}
    return {
        "name": "meter",
        "image": layout.meter_image,
        "imagePullPolicy": layout.image_pull_policy,
        "restartPolicy": "Always",
        "command": argv,
        "env": [
            {"name": "OPENPOD_METER_TOKEN", "valueFrom": {"secretKeyRef": token_ref}},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        ],
        "resources": {"limits": {"cpu": "100m", "memory": "128Mi"}},
        "securityContext": {
            "runAsUser": METER_UID,
            "runAsGroup": METER_UID,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "boot", "mountPath": BOOT_DIR, "readOnly": True},
            {"name": "meter", "mountPath": METER_DIR},
            {"name": "run", "mountPath": POD_VIEW_DIR, "readOnly": True},
        ],
    }


def pod(layout: KubeLayout, launch: PodLaunch, boot_config_map: str) -> Manifest:
    """The bare Pod of one run: restartPolicy Never (a run ends when its workload ends)."""
    volumes: list[Manifest] = [
        {"name": "run", "emptyDir": {"sizeLimit": "64Mi"}},
        {"name": "boot", "configMap": {"name": boot_config_map, "defaultMode": 0o444}},
        {"name": "workspace", "persistentVolumeClaim": {"claimName": claim_name(launch.pod_id)}},
    ]
    spec: Manifest = {
        "restartPolicy": "Never",
        "hostname": launch.pod_id,
        "automountServiceAccountToken": False,  # a pod has no business with the Kube API
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": layout.grace_seconds,
        "containers": [_workload(layout, launch)],
        "volumes": volumes,
    }
    if launch.meter is not None:
        spec["initContainers"] = [_meter(layout, launch)]
        volumes.append({"name": "meter", "emptyDir": {"sizeLimit": "64Mi"}})
    if launch.gpu_type:
        spec["nodeSelector"] = {layout.gpu_type_label: launch.gpu_type}
    if launch.gpu_indices:
        spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(launch.pod_id, launch.generation),
            "namespace": layout.namespace,
            "labels": labels(launch.pod_id, launch.generation),
        },
        "spec": spec,
    }
