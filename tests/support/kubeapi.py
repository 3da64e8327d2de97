"""An in-process Kubernetes API server for the Kubernetes runtime's tests.

No cluster can run on the test machines. This server implements, for one namespace, what
the runtime uses of the core/v1 API for Pods, ConfigMaps, PersistentVolumeClaims and
Secrets, with the semantics that matter to a controller: create (409 AlreadyExists), get
(404 NotFound), delete, list with a labelSelector and the list's resourceVersion, and watch
(`?watch=true&resourceVersion=N&allowWatchBookmarks=true`: ADDED/MODIFIED/DELETED/BOOKMARK,
and 410 Gone, as an ERROR event or as the answer, when N is older than the events it keeps).

Every object it receives is validated with kubernetes-validate (strict: unknown fields are
refused) against the official schema of KUBE_VERSION and refused with 422 when invalid.
Every request is recorded (method, path, kind) so tests can assert what was never asked.
A test-side "kubelet" (plain methods) sets Pod status: running with a Pod IP, exit, OOM
kill, image pull failure, unschedulable. There is no scheduler or admission. With
`graceful_pods` (set by tests/support/kubelet.py, a kubelet that runs Pods on dockerd), a
Pod is deleted as the real API server does it: DELETE sets `deletionTimestamp` and
`deletionGracePeriodSeconds` (the `gracePeriodSeconds` asked for, else the Pod's own) and
the Pod stays until its kubelet has stopped its containers and removes it.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import json
import re
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.net import free_port, wait_until

KUBE_VERSION = "1.30"  # the schema every received object is validated against
KINDS = {
    "pods": "Pod",
    "configmaps": "ConfigMap",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "secrets": "Secret",
}
_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/([^/]+)(?:/([^/]+))?$")

Obj = dict[str, Any]


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    kind: str  # the resource's plural as asked ("pods", "services", ...)
    query: str


@dataclass
class _Watcher:
    plural: str
    selector: str
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[tuple[int, str, Obj] | str] = field(default_factory=asyncio.Queue)
    pending: int = 0  # events pushed, not yet taken (changed under the server's lock)

    def push(self, item: tuple[int, str, Obj] | str) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> Obj:
    return {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    }  # fmt: skip


def pod_status(phase: str, ip: str | None, ready: bool) -> Obj:
    """A Pod's status as a kubelet reports it: phase, conditions, node and Pod IP."""
    flag = "True" if ready else "False"
    conditions = [
        {"type": kind, "status": status, "lastTransitionTime": _now()}
        for kind, status in (
            ("PodScheduled", "True"), ("Initialized", "True"),
            ("ContainersReady", flag), ("Ready", flag),
        )
    ]  # fmt: skip
    status: Obj = {"phase": phase, "conditions": conditions, "hostIP": "127.0.0.1"}
    if ip:
        status["podIP"], status["podIPs"] = ip, [{"ip": ip}]
    return status


def workload_status(pod: Obj, ready: bool, state: Obj) -> Obj:
    """The status of the Pod's workload container in `state` (running, terminated...)."""
    image = next(c["image"] for c in pod["spec"]["containers"] if c["name"] == "workload")
    return {
        "name": "workload", "image": image, "imageID": "", "ready": ready,
        "restartCount": 0, "started": "running" in state, "state": state,
    }  # fmt: skip


def matches(labels: dict[str, str], selector: str) -> bool:
    """Equality-based label selectors: `a=b`, `a==b`, `a!=b`, `a`, `!a`, comma-joined."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class KubeApiServer:
    """Start with `with KubeApiServer(token) as api:`; `api.url` is its address."""

    def __init__(
        self,
        token: str,
        namespace: str = "openpod",
        *,
        bookmark_seconds: float = 0.2,
        tls: tuple[str, str] | None = None,
    ) -> None:
        """`tls`: (certificate file, key file) to serve https instead of http."""
        self.token = token
        self.namespace = namespace
        self.bookmark_seconds = bookmark_seconds
        self.history_limit = 1000  # events kept for watches that resume from a version
        self.gone_as_event = True  # 410 as an ERROR event (as the apiserver does) or answer
        self.requests: list[Recorded] = []
        self.refused: list[str] = []  # validation messages of refused objects
        self.refusals: dict[str, tuple[int, str, str]] = {}  # plural -> (code, reason, message)
        self._objects: dict[tuple[str, str], Obj] = {}
        self._events: deque[tuple[int, str, str, Obj]] = deque()
        self._oldest = 0  # every event after this version is still kept
        self._rv = 0
        self._held = 0  # watch requests waiting at the gate
        self._lock = threading.Lock()
        self._watchers: list[_Watcher] = []
        self._watch_gate = threading.Event()  # cleared: new watch requests wait
        self._watch_gate.set()
        self.graceful_pods = False
        self.changed = threading.Condition(self._lock)  # notified at every stored change
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        app = Starlette(
            routes=[
                Route(
                    "/{path:path}", self._handle, methods=["GET", "POST", "DELETE", "PUT", "PATCH"]
                )
            ]
        )
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="critical",
            timeout_graceful_shutdown=1, lifespan="off",
            ssl_certfile=tls[0] if tls else None, ssl_keyfile=tls[1] if tls else None,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> KubeApiServer:
        self._thread.start()
        wait_until(lambda: self._server.started, 20, "the Kube API server to start")
        return self

    def __exit__(self, *_: object) -> None:
        self.release_watches()
        self.drop_watches()
        self._server.should_exit = True
        self._thread.join(10)
        assert not self._thread.is_alive(), "the Kube API server did not stop"

    # -- what tests look at and change ------------------------------------------------

    def objects(self, plural: str) -> dict[str, Obj]:
        with self._lock:
            return {n: copy.deepcopy(o) for (p, n), o in self._objects.items() if p == plural}

    def kinds_requested(self) -> set[str]:
        return {r.kind for r in self.requests}

    def watch_requests(self) -> list[Recorded]:
        return [r for r in self.requests if "watch=" in r.query]

    @property
    def version(self) -> int:
        """The latest resourceVersion (of any kind)."""
        with self._lock:
            return self._rv

    def hold_watches(self) -> None:
        """New watch requests wait (the client's reconnect hangs) until release_watches()."""
        self._watch_gate.clear()

    def release_watches(self) -> None:
        self._watch_gate.set()

    def waiting_watches(self) -> int:
        with self._lock:
            return self._held

    def forget_history(self) -> None:
        """Drop every kept event: a watch resuming from any older version gets 410 Gone."""
        with self._lock:
            self._events.clear()
            self._oldest = self._rv

    def drop_watches(self, abrupt: bool = False) -> None:
        """End every open watch: cleanly (as at timeoutSeconds) or by cutting the stream."""
        with self._lock:
            watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            watcher.push("cut" if abrupt else "end")

    def expire_watches(self) -> None:
        """Send 410 Gone on every open watch (as after an etcd compaction)."""
        with self._lock:
            watchers, self._watchers = self._watchers, []
            self._events.clear()
            self._oldest = self._rv
        for watcher in watchers:
            watcher.push("gone")

    # -- the test-side kubelet ----------------------------------------------------------

    def run_pod(self, name: str, ip: str, ready: bool = True) -> None:
        """The Pod is scheduled and its workload container runs at `ip`."""

        def change(pod: Obj) -> None:
            pod["status"] = pod_status("Running", ip, ready)
            pod["status"]["containerStatuses"] = [
                workload_status(pod, ready, {"running": {"startedAt": _now()}})
            ]

        self._modify("pods", name, change)

    def exit_pod(self, name: str, code: int, reason: str | None = None) -> None:
        def change(pod: Obj) -> None:
            phase = "Succeeded" if code == 0 else "Failed"
            pod["status"] = pod_status(phase, pod["status"].get("podIP"), False)
            state = {
                "terminated": {
                    "exitCode": code, "reason": reason or ("Completed" if code == 0 else "Error"),
                    "startedAt": _now(), "finishedAt": _now(),
                }
            }  # fmt: skip
            pod["status"]["containerStatuses"] = [workload_status(pod, False, state)]

        self._modify("pods", name, change)

    def evict(self, name: str, message: str) -> None:
        def change(pod: Obj) -> None:
            pod["status"] = {"phase": "Failed", "reason": "Evicted", "message": message}

        self._modify("pods", name, change)

    def oom_kill(self, name: str) -> None:
        self.exit_pod(name, 137, "OOMKilled")

    def fail_image_pull(self, name: str, reason: str, message: str) -> None:
        def change(pod: Obj) -> None:
            pod["status"] = pod_status("Pending", None, False)
            state = {"waiting": {"reason": reason, "message": message}}
            pod["status"]["containerStatuses"] = [workload_status(pod, False, state)]

        self._modify("pods", name, change)

    def unschedulable(self, name: str, message: str) -> None:
        def change(pod: Obj) -> None:
            pod["status"] = {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": message, "lastTransitionTime": _now(),
                    }
                ],
            }  # fmt: skip

        self._modify("pods", name, change)

    def remove_object(self, plural: str, name: str) -> None:
        """Delete as someone else would (kubectl delete, a node's garbage collection)."""
        with self._lock:
            obj = self._objects.pop((plural, name))
            self._record_event("DELETED", plural, obj)

    def set_pod_status(self, name: str, status: Obj) -> None:
        """The kubelet's status update: the whole status, as it reports it."""

        def change(pod: Obj) -> None:
            pod["status"] = copy.deepcopy(status)

        self._modify("pods", name, change)

    def _modify(self, plural: str, name: str, change: Any) -> None:
        with self._lock:
            obj = self._objects.get((plural, name))
            if obj is None:
                raise KeyError(f"no {plural} named {name}")
            change(obj)
            self._record_event("MODIFIED", plural, obj)

    # -- the store ----------------------------------------------------------------------

    def _record_event(self, kind: str, plural: str, obj: Obj) -> None:
        """Under the lock: a new resourceVersion for `obj`, kept and sent to watchers."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        snapshot = copy.deepcopy(obj)
        self._events.append((self._rv, kind, plural, snapshot))
        while len(self._events) > self.history_limit:
            self._oldest = self._events.popleft()[0]
        for watcher in self._watchers:
            if watcher.plural == plural:
                watcher.pending += 1
                watcher.push((self._rv, kind, snapshot))
        self.changed.notify_all()

    def refuse(self, plural: str, code: int, reason: str, message: str) -> None:
        """Refuse every create of `plural` from now on, as admission or a quota would."""
        self.refusals[plural] = (code, reason, message)

    def _create(self, plural: str, body: Obj) -> JSONResponse:
        if plural in self.refusals:
            code, reason, message = self.refusals[plural]
            return JSONResponse(_status(code, reason, message), code)
        try:
            kubernetes_validate.validate(body, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            self.refused.append(error.message)
            return JSONResponse(_status(422, "Invalid", f"invalid {plural}: {error.message}"), 422)
        meta = body["metadata"]
        name = meta.get("name")
        if body.get("kind") != KINDS[plural] or not name:
            return JSONResponse(_status(400, "BadRequest", "kind or name missing"), 400)
        if meta.get("namespace", self.namespace) != self.namespace:
            return JSONResponse(_status(400, "BadRequest", "namespace mismatch"), 400)
        obj = copy.deepcopy(body)
        obj["metadata"].update(
            namespace=self.namespace, uid=str(uuid.uuid4()), creationTimestamp=_now()
        )
        if plural == "secrets" and "stringData" in obj:
            data = obj.setdefault("data", {})
            for key, value in obj.pop("stringData").items():
                data[key] = base64.b64encode(value.encode()).decode()
        if plural == "pods":
            obj["status"] = {"phase": "Pending"}
        if plural == "persistentvolumeclaims":
            obj["status"] = {"phase": "Pending"}
        with self._lock:
            if (plural, name) in self._objects:
                message = f'{plural} "{name}" already exists'
                return JSONResponse(_status(409, "AlreadyExists", message), 409)
            self._objects[(plural, name)] = obj
            self._record_event("ADDED", plural, obj)
            return JSONResponse(copy.deepcopy(obj), 201)

    def _delete(self, plural: str, name: str, grace: str | None) -> JSONResponse:
        with self._lock:
            obj = self._objects.get((plural, name))
            if obj is None:
                return JSONResponse(_status(404, "NotFound", f'{plural} "{name}" not found'), 404)
            if plural == "pods" and self.graceful_pods:
                meta = obj["metadata"]
                if "deletionTimestamp" not in meta:  # a second DELETE changes nothing here
                    default = obj["spec"].get("terminationGracePeriodSeconds", 30)
                    meta["deletionGracePeriodSeconds"] = int(grace) if grace else default
                    meta["deletionTimestamp"] = _now()
                    self._record_event("MODIFIED", plural, obj)
                return JSONResponse(copy.deepcopy(obj), 200)
            del self._objects[(plural, name)]
            self._record_event("DELETED", plural, obj)
            return JSONResponse(copy.deepcopy(obj), 200)

    def _list(self, plural: str, selector: str) -> JSONResponse:
        with self._lock:
            items = [
                copy.deepcopy(o)
                for (p, _), o in sorted(self._objects.items())
                if p == plural and matches(o["metadata"].get("labels") or {}, selector)
            ]
            version = str(self._rv)
        kind = f"{KINDS[plural]}List"
        body = {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": version}}
        return JSONResponse({**body, "items": items})

    # -- HTTP -----------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        path, query = request.url.path, request.url.query
        found = _PATH.match(path)
        plural = found.group(2) if found else path.strip("/").split("/")[-1]
        self.requests.append(Recorded(request.method, path, plural, query))
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse(_status(401, "Unauthorized", "Unauthorized"), 401)
        if found is None or plural not in KINDS or found.group(1) != self.namespace:
            return JSONResponse(_status(404, "NotFound", f"no such resource: {path}"), 404)
        name = found.group(3)
        params = request.query_params
        if request.method == "POST" and name is None:
            return self._create(plural, json.loads(await request.body()))
        if request.method == "DELETE" and name is not None:
            return self._delete(plural, name, params.get("gracePeriodSeconds"))
        if request.method == "GET" and name is not None:
            with self._lock:
                obj = self._objects.get((plural, name))
            if obj is None:
                return JSONResponse(_status(404, "NotFound", f'{plural} "{name}" not found'), 404)
            return JSONResponse(copy.deepcopy(obj))
        if request.method == "GET" and params.get("watch") in ("true", "1"):
            return await self._watch(request, plural)
        if request.method == "GET":
            return self._list(plural, params.get("labelSelector", ""))
        return JSONResponse(_status(405, "MethodNotAllowed", "not implemented here"), 405)

    async def _watch(self, request: Request, plural: str) -> Response:
        if not self._watch_gate.is_set():
            with self._lock:
                self._held += 1
            await asyncio.to_thread(self._watch_gate.wait)  # a test holds it
            with self._lock:
                self._held -= 1
        params = request.query_params
        selector = params.get("labelSelector", "")
        since = params.get("resourceVersion", "")
        bookmarks = params.get("allowWatchBookmarks") == "true"
        timeout = float(params.get("timeoutSeconds") or 3600)
        watcher = _Watcher(plural, selector, asyncio.get_running_loop())
        with self._lock:
            if since not in ("", "0") and int(since) < self._oldest:
                gone = True
            else:
                gone = False
                if since in ("", "0"):
                    replay = [
                        (self._rv, "ADDED", copy.deepcopy(o))
                        for (p, _), o in sorted(self._objects.items())
                        if p == plural
                    ]
                else:
                    replay = [
                        (rv, kind, obj)
                        for rv, kind, p, obj in self._events
                        if p == plural and rv > int(since)
                    ]
                start = self._rv if since in ("", "0") else int(since)
                watcher.pending = len(replay)
                self._watchers.append(watcher)
        message = f"too old resource version: {since} ({self._oldest})"
        if gone and not self.gone_as_event:
            return JSONResponse(_status(410, "Expired", message), 410)
        if gone:
            line = json.dumps({"type": "ERROR", "object": _status(410, "Expired", message)})
            return Response(line + "\n", media_type="application/json")
        for item in replay:
            watcher.queue.put_nowait(item)
        stream = self._stream(watcher, plural, start, bookmarks, timeout)
        return StreamingResponse(stream, media_type="application/json")

    async def _stream(
        self, watcher: _Watcher, plural: str, start: int, bookmarks: bool, timeout: float
    ) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delivered = start
        try:
            while loop.time() < deadline:
                wait = deadline - loop.time()
                if bookmarks:
                    wait = min(wait, self.bookmark_seconds)
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), wait)
                except TimeoutError:
                    if bookmarks:
                        with self._lock:  # all of this kind delivered: the current version
                            if watcher.pending == 0:
                                delivered = max(delivered, self._rv)
                        yield self._bookmark(plural, delivered)
                    continue
                if isinstance(item, tuple):
                    with self._lock:
                        watcher.pending -= 1
                if item == "end":
                    return
                if item == "cut":
                    raise ConnectionAbortedError("watch cut by the test")
                if item == "gone":
                    status = _status(410, "Expired", "too old resource version")
                    yield (json.dumps({"type": "ERROR", "object": status}) + "\n").encode()
                    return
                assert not isinstance(item, str)
                rv, kind, obj = item
                delivered = max(delivered, rv)
                if matches(obj["metadata"].get("labels") or {}, watcher.selector):
                    yield (json.dumps({"type": kind, "object": obj}) + "\n").encode()
        finally:
            with self._lock:
                if watcher in self._watchers:
                    self._watchers.remove(watcher)

    def _bookmark(self, plural: str, version: int) -> bytes:
        obj = {"kind": KINDS[plural], "apiVersion": "v1"}
        obj["metadata"] = {"resourceVersion": str(version)}  # type: ignore[assignment]
        return (json.dumps({"type": "BOOKMARK", "object": obj}) + "\n").encode()
