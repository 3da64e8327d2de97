"""The Kubernetes runtime: each openpod pod run is one bare Pod, driven straight over the Kube API.

Per pod a PersistentVolumeClaim holds /workspace (kept by stop, deleted by remove); per run
a Pod (workload container + meter sidecar) and a Secret (meter token, user's env values);
one shared immutable ConfigMap holds the boot script. Never a Service or an Ingress: the
edge proxy and the SSH gateway reach the Pod IP, reported as the observation's `address`
with container ports as the ports (docs/kubernetes.md).

The node agent calls the Runtime methods from worker threads; this runtime keeps its own
asyncio loop on a thread of its own, on which two informers (Pods, claims) list and watch
and keep a cache. observe() and adopt() read that cache (no request per call) and probe the
Pod IP over TCP the way the SSH gateway and the edge will reach it; start, stop and remove
send requests and wait, with a deadline, for the watch to show their effect.

The pod's SSH host key is read the same way, from the node on the Pod IP: once port 22
greets with an SSH banner, one SSH key exchange (ed25519 only, asyncssh) gives the key the
sshd proves it holds, reported as `ssh-ed25519 <base64>`. It is fetched once per Pod (its
name, which holds the generation, and its IP) and then kept, so observe() does not repeat
the exchange; a new Pod is asked again (its key, kept on the workspace claim, is normally
the same). A failed exchange leaves the key unknown until a later observe() gets it. The
trust model is the first key the node sees from the Pod IP: the boot script makes the key
before it starts sshd, so the first sshd answering on a new Pod's IP holds it; the control
plane hands that key out and clients pin it from then on (`openpod ssh`, straight or
through the SSH gateway, trusts no other), and the key kept for a Pod is not fetched again,
so a workload that later swaps its sshd's key is refused by clients, not believed. It is
only as good as the Pod network between node and Pod: whoever could answer on a Pod IP in
the Pod's place at its boot could present a key of their own. With `probe_pods` off no key
is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar, cast

import httpx2
from lightkube import AsyncClient, KubeConfig
from lightkube.core.exceptions import ApiError, ConfigError
from lightkube.resources.core_v1 import ConfigMap, PersistentVolumeClaim, Pod, Secret

from openpod.adapters.runtimes import _kube_manifests as manifests
from openpod.adapters.runtimes import readiness
from openpod.adapters.runtimes._kube_config import KubernetesConfig
from openpod.adapters.runtimes._kube_status import generation_of, observation_of, pod_id_of
from openpod.adapters.runtimes._kube_watch import Informer, describe, make_client, status_code
from openpod.adapters.runtimes.base import (
    PodLaunch,
    PodObservation,
    PodPhase,
    PodStartError,
    RuntimeError_,
)

log = logging.getLogger("openpod.runtime.kubernetes")

T = TypeVar("T")

__all__ = ["KubernetesConfig", "KubernetesRuntime"]


class KubernetesRuntime:
    """Runs pods as bare Pods in one namespace of one cluster (see module docstring)."""

    name = "kubernetes"

    def __init__(self, config: KubernetesConfig) -> None:
        self.config = config
        self._layout = config.layout()
        self._boot_files = manifests.boot_files()
        try:
            kube_config = config.kube_config()
        except (ValueError, ConfigError, OSError) as exc:
            raise RuntimeError_(f"Kubernetes runtime config: {exc}") from exc
        self._changed = threading.Condition()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._generations: dict[str, int] = {}  # last generation started or seen, by pod id
        # The host key fetched from each pod's current Pod: pod id -> (Pod name, Pod IP, key).
        self._host_keys: dict[str, tuple[str, str, str]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kube", daemon=True)
        self._thread.start()
        try:
            self._client: AsyncClient = self._call(self._make_client(kube_config))
        except RuntimeError_:
            self._stop_loop()
            raise
        ns = config.namespace
        self.pods = Informer(
            self._client, Pod, ns, self._notify, watch_seconds=config.watch_seconds
        )
        self.claims = Informer(
            self._client,
            PersistentVolumeClaim,
            ns,
            self._notify,
            watch_seconds=config.watch_seconds,
        )
        self._tasks: list[asyncio.Task[None]] = self._call(self._watch_all())

    async def _watch_all(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(informer.run()) for informer in (self.pods, self.claims)]

    async def _make_client(self, kube_config: KubeConfig) -> AsyncClient:
        try:
            return make_client(
                kube_config,
                self.config.context,
                self.config.namespace,
                self.config.watch_seconds,
                self.config.request_seconds,
            )
        except (ValueError, ConfigError, OSError) as exc:
            raise RuntimeError_(f"Kubernetes runtime config: {exc}") from exc

    def close(self) -> None:
        """Stop watching and close the connection (pods keep running in the cluster)."""
        if self._loop.is_closed():
            return
        with contextlib.suppress(RuntimeError_):
            self._call(self._shutdown())
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def _shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.close()

    # -- Runtime protocol -------------------------------------------------------------

    def start(self, launch: PodLaunch) -> PodObservation:
        """Create this run's Pod (and the claim, Secret, ConfigMap it needs), or return it
        if it exists; an older run still up is deleted first (never two at once)."""
        try:
            manifests.check_launch(launch)
        except manifests.ManifestError as exc:
            raise PodStartError(f"pod {launch.pod_id}: {exc}") from exc
        self._require_synced()
        with self._lock(launch.pod_id):
            others = []
            for pod in self._pods_of(launch.pod_id):
                generation = generation_of(pod)
                if generation == launch.generation and not _deleting(pod):
                    return self.observe(launch.pod_id)
                if generation > launch.generation and observation_of(pod).phase in _LIVE:
                    raise PodStartError(f"pod {launch.pod_id} already runs generation {generation}")
                others.append(pod)
            if others:
                self._delete_pods(launch.pod_id, others, self.config.grace_seconds)
            had_claim = self._claim_of(launch.pod_id) is not None
            try:
                self._call(self._create_run(launch))
            except PodStartError:
                if not had_claim:  # rolled back: let the cache see it before anyone asks
                    self._wait(
                        lambda: self._claim_of(launch.pod_id) is None, self.config.request_seconds
                    )
                raise
            self._generations[launch.pod_id] = launch.generation
            name = manifests.pod_name(launch.pod_id, launch.generation)
            self._wait(lambda: self.pods.get(name) is not None, self.config.request_seconds)
        return self.observe(launch.pod_id)

    def observe(self, pod_id: str) -> PodObservation:
        """The newest run's Pod from the watch cache, its ports probed on the Pod IP."""
        self._require_synced()
        pods = self._pods_of(pod_id)
        if pods:
            newest = max(pods, key=generation_of)
            obs = observation_of(newest)
            self._generations[pod_id] = max(obs.generation, self._generations.get(pod_id, 0))
            self._probe(obs, newest.metadata.name if newest.metadata else None)
            return obs
        generation = self._generations.get(pod_id, 0)
        if self._claim_of(pod_id) is not None:
            return PodObservation(pod_id, generation, PodPhase.STOPPED, reason="stopped")
        return PodObservation(pod_id, generation, PodPhase.ABSENT)

    def stop(self, pod_id: str, grace_seconds: float) -> PodObservation:
        """Delete the run's Pod and Secret; keep the workspace claim."""
        self._require_synced()
        with self._lock(pod_id):
            pods = self._pods_of(pod_id)
            if pods:
                self._delete_pods(pod_id, pods, grace_seconds)
            stopped_at = time.time() if pods else None  # its Pods are gone now
            obs = self.observe(pod_id)
            if obs.phase is not PodPhase.ABSENT:
                obs.exited_at = obs.exited_at or stopped_at
                obs.phase, obs.reason = PodPhase.STOPPED, "stopped"
                obs.address, obs.port_mappings, obs.ready_ports = None, {}, ()
                obs.ssh_ready = False
            return obs

    def remove(self, pod_id: str, grace_seconds: float) -> None:
        """Delete the Pods, Secrets and the workspace claim of the pod."""
        self._require_synced()
        with self._lock(pod_id):
            pods = self._pods_of(pod_id)
            if pods:
                self._delete_pods(pod_id, pods, grace_seconds)
            self._call(self._delete_rest(pod_id))
            self._wait(lambda: self._claim_of(pod_id) is None, self.config.request_seconds)
            self._generations.pop(pod_id, None)
            self._host_keys.pop(pod_id, None)

    def adopt(self) -> list[PodObservation]:
        """Every pod this namespace holds for openpod (a Pod or a workspace claim)."""
        self._require_synced()
        found = {pod_id_of(p) for p in self.pods.snapshot()}
        found |= {pod_id_of(c) for c in self.claims.snapshot() if not _deleting(c)}
        return [self.observe(pod_id) for pod_id in sorted(i for i in found if i)]

    # -- requests (on the loop) ---------------------------------------------------------

    async def _create_run(self, launch: PodLaunch) -> None:
        """ConfigMap, claim, Secret, Pod, in that order; what this call created is deleted
        again if a later step is refused, so a failed start leaves nothing half-made."""
        layout, ns = self._layout, self.config.namespace
        created: list[tuple[type[Any], str]] = []
        try:
            await self._ensure(ConfigMap, manifests.config_map(layout, self._boot_files))
            if await self._ensure(PersistentVolumeClaim, manifests.claim(layout, launch.pod_id)):
                created.append((PersistentVolumeClaim, manifests.claim_name(launch.pod_id)))
            secret = manifests.secret(layout, launch)
            name = manifests.secret_name(launch.pod_id, launch.generation)
            with contextlib.suppress(ApiError):  # a leftover of an interrupted start
                await self._client.delete(Secret, name, namespace=ns)
            await self._client.create(_model(Secret, secret))
            created.append((Secret, name))
            config_map_name = manifests.config_map_name(self._boot_files)
            body = manifests.pod(layout, launch, config_map_name)
            await self._client.create(_model(Pod, body))
        except httpx2.HTTPError as exc:
            for kind, name in reversed(created):
                with contextlib.suppress(httpx2.HTTPError):
                    await self._client.delete(kind, name, namespace=ns)
            raise PodStartError(f"pod {launch.pod_id}: {describe(exc)}") from exc

    async def _ensure(self, kind: type[M], body: manifests.Manifest) -> bool:
        """Create the object; True if created, False if it was there already."""
        try:
            await self._client.create(_model(kind, body))
        except ApiError as exc:
            if status_code(exc) == 409:
                return False
            raise
        return True

    async def _delete(self, kind: type[Any], name: str, grace: int | None = None) -> None:
        try:
            await self._client.delete(
                kind, name, namespace=self.config.namespace, grace_period=grace
            )
        except ApiError as exc:
            if status_code(exc) != 404:
                raise

    async def _delete_runs(self, names: list[tuple[str, str]], grace: int) -> None:
        for pod, secret in names:
            await self._delete(Pod, pod, grace)
            await self._delete(Secret, secret)

    async def _delete_rest(self, pod_id: str) -> None:
        ns = self.config.namespace
        selector: dict[str, Any] = {
            manifests.POD_ID: pod_id,
            manifests.MANAGED_BY: manifests.MANAGER,
        }
        async for secret in self._client.list(Secret, namespace=ns, labels=selector):
            if secret.metadata is not None and secret.metadata.name:
                await self._delete(Secret, secret.metadata.name)
        await self._delete(PersistentVolumeClaim, manifests.claim_name(pod_id))

    # -- helpers ------------------------------------------------------------------------

    def _delete_pods(self, pod_id: str, pods: list[Pod], grace_seconds: float) -> None:
        grace = max(0, math.ceil(grace_seconds))
        names = []
        for pod in pods:
            generation = generation_of(pod)
            names.append(
                (manifests.pod_name(pod_id, generation), manifests.secret_name(pod_id, generation))
            )
        self._call(self._delete_runs(names, grace))
        gone = {name for name, _ in names}
        if not self._wait(
            lambda: not any(self.pods.get(name) for name in gone),
            grace + self.config.request_seconds,
        ):
            log.warning("pod %s: its Pods are still terminating", pod_id)

    def _pods_of(self, pod_id: str) -> list[Pod]:
        return [pod for pod in self.pods.snapshot() if pod_id_of(pod) == pod_id]

    def _claim_of(self, pod_id: str) -> PersistentVolumeClaim | None:
        claim = self.claims.get(manifests.claim_name(pod_id))
        return None if claim is None or _deleting(claim) else claim

    def _probe(self, obs: PodObservation, pod_name: str | None) -> None:
        """Readiness from outside, on the Pod IP: how the gateway and the edge reach it;
        and, once SSH answers there, the sshd's host key."""
        if obs.phase is not PodPhase.RUNNING or obs.address is None:
            return
        if not self.config.probe_pods:
            obs.ssh_ready = True  # the container is Ready: sshd listens (or SSH is unavailable)
            return
        timeout = self.config.probe_timeout
        obs.ssh_ready = readiness.ssh_banner(obs.address, 22, timeout)
        obs.ready_ports = tuple(
            port
            for port in obs.port_mappings
            if (port == 22 and obs.ssh_ready)
            or (port != 22 and readiness.port_open(obs.address, port, timeout))
        )
        if obs.ssh_ready and pod_name:
            obs.ssh_host_key = self._host_key(obs.pod_id, pod_name, obs.address)

    def _host_key(self, pod_id: str, pod_name: str, address: str) -> str | None:
        """The host key of the sshd on this Pod's IP: the one fetched before for the same
        Pod (name and IP), else one key exchange now (None when that fails)."""
        known = self._host_keys.get(pod_id)
        if known is not None and known[:2] == (pod_name, address):
            return known[2]
        timeout = min(max(self.config.probe_timeout, HOST_KEY_SECONDS), self.config.request_seconds)
        try:
            key = self._call(_fetch_host_key(address, 22, timeout))
        except (OSError, RuntimeError_) as exc:
            key, why = None, str(exc) or type(exc).__name__
        else:
            why = "no ed25519 host key in the key exchange"
        if key is None:
            log.debug("pod %s: no host key from %s:22 yet: %s", pod_id, address, why)
            return None
        self._host_keys[pod_id] = (pod_name, address, key)
        return key

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _wait(self, check: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not check():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def _require_synced(self) -> None:
        for informer in (self.pods, self.claims):
            if not informer.synced.wait(self.config.sync_seconds):
                why = informer.last_error or "no answer"
                raise RuntimeError_(f"no list of the cluster's pods yet: {why}")

    def _lock(self, pod_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(pod_id, threading.Lock())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(self.config.request_seconds)
        except TimeoutError:
            future.cancel()
            raise RuntimeError_(
                f"the Kubernetes API did not answer within {self.config.request_seconds}s"
            ) from None
        except httpx2.HTTPError as exc:
            raise RuntimeError_(describe(exc)) from exc


_LIVE = (PodPhase.STARTING, PodPhase.RUNNING)

HOST_KEY_SECONDS = 1.0  # for one SSH key exchange with a Pod (at least probe_timeout)


async def _fetch_host_key(host: str, port: int, timeout: float) -> str | None:
    """The ed25519 host key host:port presents in an SSH key exchange, as `ssh-ed25519
    <base64>` (no comment); None if the server has none. OSError when no exchange completes."""
    import asyncssh  # here, not at the top: a node agent on another runtime never loads it

    try:
        key = await asyncio.wait_for(
            asyncssh.get_server_host_key(
                host,
                port,
                server_host_key_algs=["ssh-ed25519"],
                config=None,  # never the node user's ~/.ssh/config (a ProxyCommand, a HostName)
            ),
            timeout,
        )
    except asyncssh.Error as exc:  # refused or broken key exchange, connection lost
        raise OSError(f"{type(exc).__name__}: {exc.reason}") from exc
    except TimeoutError:  # an OSError for _call, whose TimeoutError means the API's deadline
        raise OSError(f"no key exchange within {timeout}s") from None
    if key is None:
        return None
    line = key.export_public_key("openssh").decode("ascii", "replace").split()
    return " ".join(line[:2]) if line[:1] == ["ssh-ed25519"] and len(line) >= 2 else None


M = TypeVar("M", ConfigMap, PersistentVolumeClaim, Secret, Pod)


def _model(kind: type[M], body: manifests.Manifest) -> M:
    """The lightkube model of a manifest (its types checked against the schema's)."""
    obj = cast(Any, kind).from_dict(body)
    assert isinstance(obj, kind)
    return obj


def _deleting(obj: Any) -> bool:
    metadata = getattr(obj, "metadata", None)
    return getattr(metadata, "deletionTimestamp", None) is not None
