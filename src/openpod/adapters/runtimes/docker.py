"""The Docker runtime: a pod is one container of the provider's dockerd.

The container runs the pod's image with its entrypoint wrapped by the boot script
(`sh /run/openpod/boot.sh <the image's entrypoint + cmd, or the pod's command>`), the script
bound read-only from this package, so SSH works in any image that has an sshd. Beside it:

- /workspace: a named volume per pod, kept across stop and resume, deleted by remove;
- /run/openpod: the pod's boot dir on the host (<root>/pods/<id>/run/boot: boot status,
  host keys made at the first boot, sshd config and log), so readiness and the host key
  are read without entering the container;
- docker-init as PID 1 (`Init`), so the workload gets its signals and zombies are reaped;
- limits from the launch (NanoCpus, Memory with no extra swap, PidsLimit) and the pod's
  GPUs as an NVIDIA device request for exactly its indices (`gpu_driver=None` on hosts
  without the NVIDIA container toolkit: then only CUDA_VISIBLE_DEVICES says which);
- labels (pod id, generation, and which runtime root owns it), by which a restarted agent
  finds its containers again and removes any it has no record of.

Networking: `network="bridge"` (production) publishes each pod port on a free host port of
`bind_host`; `network="host"` shares the host's network as the local runtime does, the pod
binding the host ports given in OPENPOD_TCP_PORT_<port> (tests use it: they may not create
networks). Either way port_mappings maps container port -> host port.

The meter is a host process (as for the local runtime): outside the container, out of the
workload's reach, watching the container's first process by pid + start time. The agent's
state of each run (ports, meter, stopped) lives in <root>/pods/<id>/run/state.json; the
container is the truth about whether the run is alive and how it ended. `stop` removes the
container (nothing of the run is left but its volume); the next start makes a new one.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from openpod.adapters.runtimes import _meters, _procs, readiness
from openpod.adapters.runtimes._dockerapi import DockerApi, DockerError, NotFound
from openpod.adapters.runtimes._launch import BOOT_SCRIPT, POD_RUN_DIR, pod_env
from openpod.adapters.runtimes._podfiles import (
    PodPaths,
    PodState,
    host_key,
    launch_record,
    pod_lock,
    read_state,
    record_exit,
    recorded_exit,
    recorded_states,
    write_atomic,
)
from openpod.adapters.runtimes._probing import Prober
from openpod.adapters.runtimes.base import (
    PodLaunch,
    PodObservation,
    PodPhase,
    PodStartError,
    RuntimeError_,
    check_limits,
)

log = logging.getLogger("openpod.runtime")

LABEL_POD = "io.openpod.pod"
LABEL_GENERATION = "io.openpod.generation"
LABEL_OWNER = "io.openpod.owner"  # which runtime root made it: two agents never mix pods
NETWORKS = ("bridge", "host")


class DockerRuntime:
    """Pods as containers of one dockerd. One agent process per root_dir."""

    name = "docker"

    def __init__(
        self,
        root_dir: Path,
        docker_host: str = "unix:///var/run/docker.sock",
        bind_host: str = "127.0.0.1",
        *,
        network: str = "bridge",
        gpu_driver: str | None = "nvidia",
        pull_missing: bool = True,
        probe_timeout: float = 0.2,
        replace_grace_seconds: float = 10.0,
        meter_drain_seconds: float = 2.0,
    ) -> None:
        """`pull_missing`: pull an image the node does not have (off where no registry may
        be reached, as in tests). `gpu_driver`: the device-request driver for GPUs."""
        if network not in NETWORKS:
            raise ValueError(f"docker network must be one of {', '.join(NETWORKS)}: {network!r}")
        self.root_dir = Path(root_dir).resolve()
        self.api = DockerApi(docker_host)
        self.bind_host = bind_host
        self.network = network
        self.gpu_driver = gpu_driver
        self.pull_missing = pull_missing
        self.replace_grace_seconds = replace_grace_seconds
        self.meter_drain_seconds = meter_drain_seconds
        self.owner = hashlib.sha256(str(self.root_dir).encode()).hexdigest()[:12]
        self._prober = Prober(bind_host, probe_timeout)
        self._meters = _meters.MeterKeeper(lambda pod_id: pod_lock(self.root_dir, pod_id))

    def close(self) -> None:
        """Close the connection to dockerd (the pods run on)."""
        self.api.close()

    def container_name(self, pod_id: str) -> str:
        return f"openpod-{self.owner}-{pod_id}"

    def volume_name(self, pod_id: str) -> str:
        return f"openpod-{self.owner}-{pod_id}-workspace"

    # -- Runtime protocol -------------------------------------------------------------

    def start(self, launch: PodLaunch) -> PodObservation:
        """Start this generation of the pod, or return it if it already runs."""
        paths = PodPaths.of(self.root_dir, launch.pod_id)
        with pod_lock(self.root_dir, launch.pod_id):
            old = read_state(paths)
            if old is not None and not old.stopped and self._running(old) is not None:
                if old.generation == launch.generation:
                    return self.observe(launch.pod_id)
                if old.generation > launch.generation:
                    raise PodStartError(
                        f"pod {launch.pod_id} already runs generation {old.generation}"
                    )
                self._stop_locked(paths, old, self.replace_grace_seconds)
            check_limits(launch.limits)
            image = self._image(launch.image)
            self._make_dirs(paths)
            name = self.container_name(launch.pod_id)
            self._docker(self.api.remove_container, name)  # a leftover of a crashed start
            for stale in (paths.boot_status, paths.exit, paths.ssh / "sshd.log"):
                stale.unlink(missing_ok=True)  # judged afresh for each run
            with pod_lock(self.root_dir, ".ports"):
                try:
                    ports = readiness.allocate_ports(
                        self.bind_host,
                        [22, *(p.port for p in launch.ports)],
                        self._ports_of_live_pods(except_pod=launch.pod_id),
                        old.ports if old is not None else {},
                    )
                except OSError as exc:
                    raise PodStartError(str(exc)) from exc
                try:
                    pid = self._create_and_start(name, launch, image, ports, paths)
                except PodStartError:
                    if old is None:  # a first start leaves nothing (later ones keep the files)
                        self._docker(self.api.remove_volume, self.volume_name(launch.pod_id))
                        shutil.rmtree(paths.pod, ignore_errors=True)
                    raise
            state = PodState(
                pod_id=launch.pod_id,
                generation=launch.generation,
                pid=pid,
                start_time=_procs.start_time(pid) or 0,
                ports=ports,
                launch={**launch_record(launch), "ssh_user": _user_of(image)},
                started_at=time.time(),
            )
            self._meters.begin(paths, state, launch)
        return self.observe(launch.pod_id)

    def observe(self, pod_id: str) -> PodObservation:
        paths = PodPaths.of(self.root_dir, pod_id)
        state = read_state(paths) if paths.pod.is_dir() else None
        if state is None:
            return PodObservation(pod_id, 0, PodPhase.ABSENT)
        obs = PodObservation(
            pod_id,
            state.generation,
            PodPhase.STOPPED,
            ssh_user=str(state.launch.get("ssh_user", "root")),
            ssh_host_key=host_key(paths),
        )
        _meters.reap()
        if state.stopped:
            obs.reason = "stopped"
            obs.exit_code = recorded_exit(paths, state)
            obs.exited_at = state.exited_at
            return obs
        info = self._container(state)
        if info is None:
            obs.phase = PodPhase.EXITED
            obs.reason = "the pod's container is gone (removed outside openpod)"
            obs.exited_at = state.exited_at or record_exit(paths, state, None)
            return obs
        status = info["State"]
        if not status.get("Running"):
            obs.phase = PodPhase.EXITED
            obs.exit_code = int(status.get("ExitCode", 0))
            obs.reason = _exit_reason(status, state)
            obs.exited_at = _docker_time(status.get("FinishedAt")) or time.time()
            return obs
        self._meters.keep(paths, state, lambda _p, s: self._running(s) is not None)
        obs.port_mappings = dict(state.ports)
        self._prober.probe(paths, state, obs)
        return obs

    def stop(self, pod_id: str, grace_seconds: float) -> PodObservation:
        """Stop the container (SIGTERM, SIGKILL after the grace), then remove it; the
        workspace volume stays."""
        paths = PodPaths.of(self.root_dir, pod_id)
        with pod_lock(self.root_dir, pod_id):
            state = read_state(paths) if paths.pod.is_dir() else None
            if state is not None and not state.stopped:
                self._stop_locked(paths, state, grace_seconds)
        return self.observe(pod_id)

    def remove(self, pod_id: str, grace_seconds: float) -> None:
        """Stop, then delete the container, the workspace volume and the pod's files."""
        paths = PodPaths.of(self.root_dir, pod_id)
        with pod_lock(self.root_dir, pod_id):
            state = read_state(paths) if paths.pod.is_dir() else None
            if state is not None and not state.stopped:
                self._stop_locked(paths, state, grace_seconds)
            self._docker(self.api.remove_container, self.container_name(pod_id))
            self._docker(self.api.remove_volume, self.volume_name(pod_id))
            meter = state.meter if state is not None else None
            if meter is not None:  # let it send `stopped` before its journal goes
                _meters.drain(meter, self.meter_drain_seconds)
            shutil.rmtree(paths.pod, ignore_errors=True)
            if meter is not None:
                _meters.kill(meter)
            if paths.pod.exists():
                raise RuntimeError_(f"pod {pod_id}: could not delete {paths.pod}")

    def adopt(self) -> list[PodObservation]:
        """Every pod with a state file, observed; containers of this root that no state
        file accounts for (a start cut short) are removed."""
        known = {state.pod_id: state.generation for state in recorded_states(self.root_dir)}
        for container in self._docker(self.api.containers, {LABEL_OWNER: self.owner}):
            labels = container.get("Labels") or {}
            pod_id = labels.get(LABEL_POD, "")
            if known.get(pod_id) != _int(labels.get(LABEL_GENERATION)):
                log.warning("removing container %s: no run of this node has it", container["Id"])
                self._docker(self.api.remove_container, container["Id"])
        return [self.observe(pod_id) for pod_id in known]

    # -- internals ----------------------------------------------------------------------

    def _docker(self, call: Any, *args: Any) -> Any:
        """A dockerd call whose refusal is a runtime failure the owner may read."""
        try:
            return call(*args)
        except DockerError as exc:
            raise RuntimeError_(f"docker: {exc.message}") from exc

    def _image(self, ref: str) -> dict[str, Any]:
        try:
            return self.api.image(ref)
        except NotFound:
            if not self.pull_missing:
                raise PodStartError(
                    f"the image {ref} is not on this node (and this node does not pull)"
                ) from None
        except DockerError as exc:
            raise PodStartError(f"docker: {exc.message}") from exc
        try:
            self.api.pull(ref)
            return self.api.image(ref)
        except DockerError as exc:
            raise PodStartError(f"the image {ref} could not be pulled: {exc.message}") from exc

    def _make_dirs(self, paths: PodPaths) -> None:
        paths.pod.parent.mkdir(parents=True, exist_ok=True)
        for private in (paths.pod, paths.run, paths.boot, paths.ssh, paths.pod / "meter"):
            private.mkdir(mode=0o700, exist_ok=True)

    def _create_and_start(
        self,
        name: str,
        launch: PodLaunch,
        image: dict[str, Any],
        ports: dict[int, int],
        paths: PodPaths,
    ) -> int:
        """Create and start the container; the host pid of its first process. On failure
        the container is removed (the volume, which may hold the user's files, is not)."""
        labels = {
            LABEL_POD: launch.pod_id,
            LABEL_GENERATION: str(launch.generation),
            LABEL_OWNER: self.owner,
        }
        try:
            self.api.create_volume(
                self.volume_name(launch.pod_id), {LABEL_POD: launch.pod_id, LABEL_OWNER: self.owner}
            )
            body = container_body(self, launch, image, ports, paths, labels)
            self.api.create(name, body)
            self.api.start(name)
            info = self.api.inspect(name)
        except DockerError as exc:
            self._docker(self.api.remove_container, name)
            raise PodStartError(f"pod {launch.pod_id} could not start: {exc.message}") from exc
        return int(info["State"].get("Pid") or 0)

    def _container(self, state: PodState) -> dict[str, Any] | None:
        """The container of this run, or None when it is gone or belongs to another run."""
        try:
            info = self.api.inspect(self.container_name(state.pod_id))
        except NotFound:
            return None
        except DockerError as exc:
            raise RuntimeError_(f"docker: {exc.message}") from exc
        labels = info.get("Config", {}).get("Labels") or {}
        if _int(labels.get(LABEL_GENERATION)) != state.generation:
            return None
        return info

    def _running(self, state: PodState) -> dict[str, Any] | None:
        info = self._container(state)
        return info if info is not None and info["State"].get("Running") else None

    def _stop_locked(self, paths: PodPaths, state: PodState, grace: float) -> None:
        name = self.container_name(state.pod_id)
        info = self._container(state)
        code: int | None = None
        if info is not None:
            if info["State"].get("Running"):
                self._docker(self.api.stop, name, grace)
                info = self._container(state) or info
            code = int(info["State"].get("ExitCode", 0))
            self._docker(self.api.remove_container, name)
        state.exited_at = record_exit(paths, state, code)
        state.stopped = True
        write_atomic(paths.state, state.to_json())

    def _ports_of_live_pods(self, except_pod: str) -> set[int]:
        taken: set[int] = set()
        for state in recorded_states(self.root_dir):
            if state.pod_id != except_pod and not state.stopped:
                taken.update(state.ports.values())
        return taken


def container_body(
    runtime: DockerRuntime,
    launch: PodLaunch,
    image: dict[str, Any],
    ports: dict[int, int],
    paths: PodPaths,
    labels: dict[str, str],
) -> dict[str, Any]:
    """The create request (POST /containers/create) of one run."""
    config = image.get("Config") or {}
    workload = list(launch.command) or [
        *(config.get("Entrypoint") or []),
        *(config.get("Cmd") or []),
    ]
    host_mode = runtime.network == "host"
    inside = ports if host_mode else {port: port for port in ports}
    env = pod_env(launch, inside, runtime.bind_host)
    for name in ("PATH", "LANG", "HOME"):  # the image's own, unless the user set them
        if name not in launch.env:
            env.pop(name, None)
    if not host_mode:
        env.pop("OPENPOD_SSH_LISTEN", None)
    host: dict[str, Any] = {
        "NetworkMode": runtime.network,
        "Init": True,
        "RestartPolicy": {"Name": "no"},
        "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
        "Mounts": [
            {"Type": "bind", "Source": str(paths.boot), "Target": POD_RUN_DIR},
            {
                "Type": "bind",
                "Source": str(BOOT_SCRIPT),
                "Target": f"{POD_RUN_DIR}/boot.sh",
                "ReadOnly": True,
            },
            {
                "Type": "volume",
                "Source": runtime.volume_name(launch.pod_id),
                "Target": "/workspace",
            },
        ],
    }
    limits = launch.limits
    if limits.cpus is not None:
        host["NanoCpus"] = int(limits.cpus * 1e9)
    if limits.memory_bytes is not None:
        host["Memory"] = limits.memory_bytes
        host["MemorySwap"] = limits.memory_bytes  # no swap beyond the limit
    if limits.pids is not None:
        host["PidsLimit"] = limits.pids
    if launch.gpu_indices and runtime.gpu_driver:
        host["DeviceRequests"] = [
            {
                "Driver": runtime.gpu_driver,
                "DeviceIDs": [str(i) for i in launch.gpu_indices],
                "Capabilities": [["gpu"]],
            }
        ]
    body: dict[str, Any] = {
        "Image": launch.image,
        "Entrypoint": ["/bin/sh", f"{POD_RUN_DIR}/boot.sh"],
        "Cmd": workload,
        "Env": [f"{k}={v}" for k, v in env.items()],
        "WorkingDir": "/workspace",
        "Labels": labels,
        "HostConfig": host,
    }
    if not host_mode:
        body["Hostname"] = launch.pod_id[:63]
        body["ExposedPorts"] = {f"{port}/tcp": {} for port in ports}
        host["PortBindings"] = {
            f"{cport}/tcp": [{"HostIp": runtime.bind_host, "HostPort": str(hport)}]
            for cport, hport in ports.items()
        }
    return body


def _user_of(image: dict[str, Any]) -> str:
    user = str((image.get("Config") or {}).get("User") or "root")
    return user.split(":", 1)[0] or "root"


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _exit_reason(status: dict[str, Any], state: PodState) -> str:
    if status.get("OOMKilled"):
        limit = (state.launch.get("limits") or {}).get("memory_bytes")
        shown = f" (limit {int(limit) // (1024 * 1024)} MiB)" if limit else ""
        return f"the pod ran out of memory{shown}"
    if status.get("Error"):
        return f"the pod could not run: {status['Error']}"
    return f"workload exited with code {int(status.get('ExitCode', 0))}"


def _docker_time(value: object) -> float | None:
    """dockerd's RFC 3339 times (nanoseconds, `Z`); its zero time means never."""
    if not isinstance(value, str) or value.startswith("0001-"):
        return None
    text = value.replace("Z", "+00:00")
    if "." in text:  # Python parses at most microseconds
        head, _, tail = text.partition(".")
        digits = "".join(ch for ch in tail if ch.isdigit())
        text = f"{head}.{digits[:6]}{tail[len(digits) :]}"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None
