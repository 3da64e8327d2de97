"""A kubelet for the runtime conformance suite: it runs the in-process Kube API server's Pods
(tests/support/kubeapi.py) as real containers on the fixtures' real dockerd.

No cluster can run on the test machines; this is the part of a node the Kubernetes runtime's
Pods need, so that the same conformance suite as the local and Docker runtimes runs real
sshd, real workloads and the real meter sidecar through the Kubernetes runtime:

- Pod sandbox: a pause container (`sleep infinity`, network `none`, the Pod's hostname);
  the Pod's workload joins its network namespace (`container:` network mode), so every Pod
  has a loopback of its own and its sshd listens on 22, as in a cluster.
- Pod IP: a 127.a.b.c address of its own on the node's loopback (tests create no network).
  For each container port that listens inside the Pod, the kubelet listens on Pod IP:port
  and forwards each connection into the Pod's namespace (127.0.0.1:port there): the node
  reaches a Pod IP, as the SSH gateway and the edge do. A port is reachable on the Pod IP
  only while something listens on it inside the Pod (checked every `tick`).
- Volumes: emptyDir and configMap (directories of the kubelet's; configMap files written
  with their mode), persistentVolumeClaim (a directory per claim uid, subPath directories
  made on demand, deleted once the claim is gone: reclaim policy Delete).
- Environment: `value` and `secretKeyRef` (read from the Secret in the API server).
- Native sidecars (init containers with restartPolicy Always): started before the workload,
  SIGTERMed once it has ended or the Pod is deleted. They run on the node's network, not in
  the Pod's: the meter must reach the test's control plane on the node's loopback, where a
  cluster's Pod network would route it. This is the one way this kubelet's Pods differ from
  a cluster's; nothing in a Pod talks to its sidecar over the network.
- Resources: cpu and memory limits become dockerd's NanoCpus and Memory; `nvidia.com/gpu`
  is handed out by a device-plugin stand-in (`gpus` fake GPUs, NVIDIA_VISIBLE_DEVICES set
  to the indices given); the node's `pod_pids_limit` (kubelet podPidsLimit) applies to each.
- readinessProbe `exec`: run in the workload's namespaces (nsenter) every `tick`.
- Status: phase, Pod IP, conditions, the workload's state (running; terminated with its
  exit code, OOMKilled from dockerd) and the sidecar's.
- Deletion (the API server's `graceful_pods`): the workload is stopped within the grace
  period (SIGTERM, then SIGKILL), then the sidecar, then the containers and the Pod's
  directories are removed and the Pod object with them.

`images` maps an image name the Pods use to the dockerd image to run, with environment and
read-only mounts of its own: the meter image is the pod image with this checkout's source
and the test environment's site-packages mounted (a real meter image installs openpod).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import functools
import logging
import random
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openpod.adapters.runtimes._dockerapi import DockerApi, DockerError
from tests.support.kubeapi import KubeApiServer, pod_status, workload_status
from tests.support.net import NetnsSockets

log = logging.getLogger("tests.kubelet")

Obj = dict[str, Any]
LABEL = "io.openpod.test-kubelet"


@dataclass(frozen=True)
class Image:
    """What the kubelet runs for an image name: a dockerd image, plus env and mounts."""

    ref: str
    env: dict[str, str] = field(default_factory=dict)
    mounts: tuple[tuple[str, str], ...] = ()  # (host path, container path), read-only


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cpu_nanos(quantity: str) -> int:
    if quantity.endswith("m"):
        return int(quantity[:-1]) * 1_000_000
    return int(float(quantity) * 1_000_000_000)


_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}


def _bytes(quantity: str) -> int:
    for suffix, size in _SUFFIX.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * size
    return int(quantity)


def _listening(pid: int) -> set[int]:
    """TCP ports listening in the network namespace of process `pid`."""
    ports = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        pass


class _Sandbox:
    """A running Pod: its containers, directories, Pod IP and port forwarders."""

    def __init__(self, kubelet: Kubelet, pod: Obj) -> None:
        self.kubelet = kubelet
        self.name: str = pod["metadata"]["name"]
        self.uid: str = pod["metadata"]["uid"]
        self.pod = pod
        self.dir = kubelet.dir / "pods" / self.uid
        self.ip = kubelet.new_ip()
        self.pause: str | None = None
        self.pause_pid = 0
        self.workload: str | None = None
        self.sidecars: list[str] = []
        self.netns: NetnsSockets | None = None
        self.servers: dict[int, asyncio.AbstractServer] = {}
        self.forwards: set[asyncio.Task[None]] = set()  # connections being forwarded
        self.gpus: list[int] = []
        self.deleting = threading.Event()
        self.started_at = _now()
        self.thread = threading.Thread(target=self._life, name=f"kubelet-{self.name}", daemon=True)

    # -- the Pod's life, on its own thread ------------------------------------------------

    def _life(self) -> None:
        try:
            self._start()
        except (DockerError, OSError, KeyError, ValueError) as exc:
            log.warning("pod %s did not start: %s", self.name, exc)
            self._report_waiting("CreateContainerError", str(exc))
            self.deleting.wait()
        else:
            try:
                self._watch()
            except (DockerError, OSError) as exc:  # dockerd lost a container under us
                log.warning("pod %s: %s", self.name, exc)
                self.deleting.wait()
        self._teardown()

    def _start(self) -> None:
        spec = self.pod["spec"]
        volumes = self._volumes(spec.get("volumes") or [])
        api = self.kubelet.docker
        pause = self.kubelet.images.get("pause", Image(self.kubelet.pause_image))
        self.pause = api.create(
            f"k8s-pause-{self.uid}",
            {
                "Image": pause.ref,
                "Entrypoint": ["sleep", "infinity"],
                "Hostname": spec.get("hostname", self.name),
                "Labels": {LABEL: self.uid},
                "HostConfig": {"NetworkMode": "none"},
            },
        )
        api.start(self.pause)
        pid = int(api.inspect(self.pause)["State"]["Pid"])
        self.netns = NetnsSockets(pid)
        self.pause_pid = pid
        for container in spec.get("initContainers") or []:
            if container.get("restartPolicy") == "Always":
                ref = self._container(container, volumes, network="host")
                api.start(ref)
                self.sidecars.append(ref)
        workload = spec["containers"][0]
        self.workload = self._container(workload, volumes, network=f"container:{self.pause}")
        api.start(self.workload)
        self.started_at = _now()

    def _watch(self) -> None:
        """Until deleted: forward the ports that listen, run the readiness probe, report."""
        assert self.workload is not None
        api, ready, reported = self.kubelet.docker, False, None
        probe = self._probe_command()
        while not self.deleting.is_set():
            state = api.inspect(self.workload)["State"]
            if not state["Running"]:
                self._sync_ports(set())
                self._report_terminated(state)
                for ref in self.sidecars:
                    api.stop(ref, self._grace())
                self.deleting.wait()
                return
            self._sync_ports(_listening(self.pause_pid))
            ready = self._probe(probe, int(state["Pid"])) if probe is not None else True
            if reported != ready:
                self._report_running(ready)
                reported = ready
            self.deleting.wait(self.kubelet.tick)

    def _teardown(self) -> None:
        api = self.kubelet.docker
        self._sync_ports(set())
        grace = self._grace()
        for ref in [self.workload, *self.sidecars]:
            if ref is not None:
                with contextlib.suppress(DockerError):
                    api.stop(ref, grace)
        for ref in [self.workload, *self.sidecars, self.pause]:
            if ref is not None:
                api.remove_container(ref)
        if self.netns is not None:
            self.netns.close()
        self.kubelet.release_gpus(self.gpus)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.kubelet.forget(self)
        with contextlib.suppress(KeyError):
            self.kubelet.api.remove_object("pods", self.name)

    def _grace(self) -> float:
        meta = self.kubelet.api.objects("pods").get(self.name, self.pod)["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return float(grace)

    # -- containers -----------------------------------------------------------------------

    def _volumes(self, volumes: list[Obj]) -> dict[str, Path]:
        """Each volume's directory on the node."""
        found: dict[str, Path] = {}
        for volume in volumes:
            name = volume["name"]
            if "emptyDir" in volume:
                path = self.dir / "volumes" / name
                path.mkdir(parents=True)
                path.chmod(0o777)  # any container user may write, as an emptyDir allows
            elif "configMap" in volume:
                source = volume["configMap"]
                config = self.kubelet.api.objects("configmaps")[source["name"]]
                path = self.dir / "volumes" / name
                path.mkdir(parents=True)
                for key, value in (config.get("data") or {}).items():
                    (path / key).write_text(value)
                    (path / key).chmod(source.get("defaultMode", 0o644))
            elif "persistentVolumeClaim" in volume:
                claim_name = volume["persistentVolumeClaim"]["claimName"]
                claim = self.kubelet.api.objects("persistentvolumeclaims")[claim_name]
                path = self.kubelet.claim_dir(claim["metadata"]["uid"])
            else:
                raise ValueError(f"volume {name}: this kubelet has no such volume type")
            found[name] = path
        return found

    def _env(self, container: Obj) -> list[str]:
        secrets = self.kubelet.api.objects("secrets")
        env = []
        for item in container.get("env") or []:
            if "value" in item:
                env.append(f"{item['name']}={item['value']}")
            else:
                ref = item["valueFrom"]["secretKeyRef"]
                raw = secrets[ref["name"]]["data"][ref["key"]]
                env.append(f"{item['name']}={base64.b64decode(raw).decode()}")
        return env

    def _container(self, container: Obj, volumes: dict[str, Path], network: str) -> str:
        image = self.kubelet.images.get(container["image"], Image(container["image"]))
        binds = [f"{host}:{inside}:ro" for host, inside in image.mounts]
        for mount in container.get("volumeMounts") or []:
            source = volumes[mount["name"]]
            if mount.get("subPath"):
                source = source / mount["subPath"]
                source.mkdir(parents=True, exist_ok=True)
            mode = "ro" if mount.get("readOnly") else "rw"
            binds.append(f"{source}:{mount['mountPath']}:{mode}")
        env = [f"{k}={v}" for k, v in image.env.items()] + self._env(container)
        host: Obj = {"NetworkMode": network, "Binds": binds}
        limits = (container.get("resources") or {}).get("limits") or {}
        if "cpu" in limits:
            host["NanoCpus"] = _cpu_nanos(str(limits["cpu"]))
        if "memory" in limits:
            host["Memory"] = _bytes(str(limits["memory"]))
            host["MemorySwap"] = host["Memory"]
        if "nvidia.com/gpu" in limits:
            self.gpus = self.kubelet.take_gpus(int(limits["nvidia.com/gpu"]))
            env.append(f"NVIDIA_VISIBLE_DEVICES={','.join(map(str, self.gpus))}")
        if self.kubelet.pod_pids_limit is not None:
            host["PidsLimit"] = self.kubelet.pod_pids_limit
        security = container.get("securityContext") or {}
        body: Obj = {
            "Image": image.ref,
            "Entrypoint": container["command"],
            "Cmd": container.get("args") or [],
            "Env": env,
            "Labels": {LABEL: self.uid},
            "HostConfig": host,
        }
        if "workingDir" in container:
            body["WorkingDir"] = container["workingDir"]
        if "runAsUser" in security:
            body["User"] = f"{security['runAsUser']}:{security.get('runAsGroup', 0)}"
        if security.get("readOnlyRootFilesystem"):
            host["ReadonlyRootfs"] = True
        if "ALL" in ((security.get("capabilities") or {}).get("drop") or []):
            host["CapDrop"] = ["ALL"]
        if security.get("allowPrivilegeEscalation") is False:
            host["SecurityOpt"] = ["no-new-privileges"]
        return self.kubelet.docker.create(f"k8s-{container['name']}-{self.uid}", body)

    # -- readiness ------------------------------------------------------------------------

    def _probe_command(self) -> list[str] | None:
        probe = self.pod["spec"]["containers"][0].get("readinessProbe")
        if probe is None:
            return None
        command: list[str] = probe["exec"]["command"]
        return command

    def _probe(self, command: list[str], pid: int) -> bool:
        """The exec probe, in the workload's mount, network and PID namespaces."""
        argv = ["nsenter", "-t", str(pid), "-m", "-n", "-p", "--", *command]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    # -- the Pod IP -----------------------------------------------------------------------

    def _sync_ports(self, listening: set[int]) -> None:
        declared = {
            port["containerPort"]
            for container in self.pod["spec"]["containers"]
            for port in container.get("ports") or []
        }
        self.kubelet.call(self._sync_servers(declared & listening))

    async def _sync_servers(self, wanted: set[int]) -> None:
        for port in set(self.servers) - wanted:
            server = self.servers.pop(port)
            server.close()
            await server.wait_closed()
        if not wanted:  # the Pod's ports are gone: so are the connections to them
            for task in list(self.forwards):
                task.cancel()
            await asyncio.gather(*self.forwards, return_exceptions=True)
        for port in wanted - set(self.servers):
            self.servers[port] = await asyncio.start_server(
                functools.partial(self._forward, port=port), self.ip, port, reuse_address=True
            )

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int
    ) -> None:
        assert self.netns is not None
        task = asyncio.current_task()
        assert task is not None
        self.forwards.add(task)
        task.add_done_callback(self.forwards.discard)
        inner_writer: asyncio.StreamWriter | None = None
        try:
            inner = await self.netns.made()
            try:
                inner.setblocking(False)
                await asyncio.get_running_loop().sock_connect(inner, ("127.0.0.1", port))
                inner_reader, inner_writer = await asyncio.open_connection(sock=inner)
            except BaseException:
                inner.close()
                raise
            await asyncio.gather(_pipe(reader, inner_writer), _pipe(inner_reader, writer))
        except OSError:
            pass  # nothing listens there (any more): the client sees the connection close
        finally:
            writer.close()
            if inner_writer is not None:
                inner_writer.close()

    # -- status ---------------------------------------------------------------------------

    def _status(self, phase: str, ready: bool, state: Obj) -> Obj:
        status = pod_status(phase, self.ip, ready)
        status["startTime"] = self.started_at
        status["containerStatuses"] = [workload_status(self.pod, ready, state)]
        return status

    def _set(self, status: Obj) -> None:
        with contextlib.suppress(KeyError):  # deleted meanwhile
            self.kubelet.api.set_pod_status(self.name, status)

    def _report_running(self, ready: bool) -> None:
        self._set(self._status("Running", ready, {"running": {"startedAt": self.started_at}}))

    def _report_terminated(self, state: Obj) -> None:
        code = int(state["ExitCode"])
        reason = "OOMKilled" if state.get("OOMKilled") else ("Completed" if code == 0 else "Error")
        finished = str(state.get("FinishedAt") or _now())[:19] + "Z"
        terminated = {
            "exitCode": code, "reason": reason, "startedAt": self.started_at,
            "finishedAt": finished,
        }  # fmt: skip
        phase = "Succeeded" if code == 0 else "Failed"
        self._set(self._status(phase, False, {"terminated": terminated}))

    def _report_waiting(self, reason: str, message: str) -> None:
        status = pod_status("Pending", None, False)
        waiting = {"waiting": {"reason": reason, "message": message}}
        status["containerStatuses"] = [workload_status(self.pod, False, waiting)]
        self._set(status)


class Kubelet:
    """`with Kubelet(api, docker_host, pause_image) as kubelet:` runs every Pod the API
    server holds, until the Pod is deleted (the API server's graceful_pods is turned on)."""

    def __init__(
        self,
        api: KubeApiServer,
        docker_host: str,
        pause_image: str,
        *,
        images: dict[str, Image] | None = None,
        gpus: int = 4,
        pod_pids_limit: int | None = None,
        tick: float = 0.05,
    ) -> None:
        self.api = api
        self.docker = DockerApi(docker_host)
        self.pause_image = pause_image
        self.images = images or {}
        self.pod_pids_limit = pod_pids_limit
        self.tick = tick
        self.dir = Path(tempfile.mkdtemp(prefix="opkubelet-"))
        self._free_gpus = list(range(gpus))
        self._ips: set[str] = set()
        self._sandboxes: dict[str, _Sandbox] = {}  # by Pod uid
        self._guard = threading.Lock()
        self._stopping = False
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread = threading.Thread(target=self._run, name="kubelet", daemon=True)

    def __enter__(self) -> Kubelet:
        self.api.graceful_pods = True
        self._loop_thread.start()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        with self.api.changed:
            self._stopping = True
            self.api.changed.notify_all()
        self._thread.join(30)
        with self._guard:
            sandboxes = list(self._sandboxes.values())
        for sandbox in sandboxes:
            sandbox.deleting.set()
        for sandbox in sandboxes:
            sandbox.thread.join(60)
        self.call(self._cancel_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(10)
        self._loop.close()
        self.docker.close()
        self.api.graceful_pods = False
        shutil.rmtree(self.dir, ignore_errors=True)

    async def _cancel_all(self) -> None:
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- shared by the sandboxes ----------------------------------------------------------

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def new_ip(self) -> str:
        with self._guard:
            while True:
                ip = f"127.{random.randint(1, 254)}.{random.randint(0, 254)}.{random.randint(2, 254)}"
                if ip not in self._ips:
                    self._ips.add(ip)
                    return ip

    def take_gpus(self, count: int) -> list[int]:
        with self._guard:
            if count > len(self._free_gpus):
                raise ValueError(f"{count} GPUs asked for, {len(self._free_gpus)} free")
            taken, self._free_gpus = self._free_gpus[:count], self._free_gpus[count:]
            return taken

    def release_gpus(self, gpus: list[int]) -> None:
        with self._guard:
            self._free_gpus = sorted(self._free_gpus + gpus)

    def claim_dir(self, uid: str) -> Path:
        path = self.dir / "claims" / uid
        path.mkdir(parents=True, exist_ok=True)
        return path

    def forget(self, sandbox: _Sandbox) -> None:
        with self._guard:
            self._sandboxes.pop(sandbox.uid, None)
            self._ips.discard(sandbox.ip)

    # -- the sync loop --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self.api.changed:
                if self._stopping:
                    return
                self.api.changed.wait(1.0)
                if self._stopping:
                    return
            self._sync()

    def _sync(self) -> None:
        pods = self.api.objects("pods")
        with self._guard:
            known = dict(self._sandboxes)
        for name, pod in pods.items():
            uid = pod["metadata"]["uid"]
            deleting = "deletionTimestamp" in pod["metadata"]
            if uid in known:
                if deleting:
                    known[uid].deleting.set()
            elif deleting:
                with contextlib.suppress(KeyError):
                    self.api.remove_object("pods", name)  # never ran here: nothing to stop
            elif (pod.get("status") or {}).get("phase") == "Pending":
                sandbox = _Sandbox(self, pod)
                with self._guard:
                    self._sandboxes[uid] = sandbox
                sandbox.thread.start()
        claims = {c["metadata"]["uid"] for c in self.api.objects("persistentvolumeclaims").values()}
        for path in (self.dir / "claims").glob("*") if (self.dir / "claims").exists() else ():
            if path.name not in claims:
                shutil.rmtree(path, ignore_errors=True)  # reclaim policy Delete
