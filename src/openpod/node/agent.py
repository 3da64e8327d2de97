"""The node agent's asyncio shell: the WebSocket to the control plane, and a watch loop.

The agent keeps no state of its own beyond what the runtime holds on disk: after any restart
(even `kill -9`) it adopts what the runtime still runs, says hello with it, and the control
plane's `sync` answer says what to keep, start, stop or remove.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from openpod.adapters.runtimes.base import PodPhase, Runtime
from openpod.node.reconcile import LimitTable, reconcile, report_of
from openpod.protocol import (
    GpuInfo,
    Hello,
    PodAssignment,
    PodMessage,
    PodReport,
    PodSpec,
    PodStatusMessage,
    Sync,
    control_message,
)

log = logging.getLogger("openpod.node")

FAST_WATCH = 0.02  # seconds between looks while a pod is starting (readiness within ~20 ms)
SLOW_WATCH = 1.0  # seconds between looks at running pods


class NodeAuthError(Exception):
    """The control plane refused the node token: retrying will not help."""


def _ws_url(api_url: str, path: str) -> str:
    parts = urlsplit(api_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"API URL {api_url!r} must start with http:// or https://")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, "", ""))


def channel_url(api_url: str) -> str:
    """The node channel: ws(s)://HOST:PORT[/base]/nodes/connect."""
    return _ws_url(api_url, "/nodes/connect")


def meter_url(api_url: str) -> str:
    """Where pods' meters connect (docs/metering.md): /meter/connect beside the node channel."""
    return _ws_url(api_url, "/meter/connect")


class NodeAgent:
    def __init__(
        self,
        *,
        api_url: str,
        token: str,
        runtime: Runtime,
        gpus: list[GpuInfo],
        public_host: str,
        stop_grace: float = 5.0,
        limits: LimitTable | None = None,
    ) -> None:
        self.url = channel_url(api_url)
        self.meter_url = meter_url(api_url)
        self._token = token
        self.runtime = runtime
        self.gpus = gpus
        self.public_host = public_host
        self.stop_grace = stop_grace
        self.limits = dict(limits or {})
        self._wanted: dict[str, PodAssignment] = {}
        self._sent: dict[str, PodReport] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._ws: ClientConnection | None = None
        self._wake = asyncio.Event()

    async def run(self) -> None:
        """Serve until cancelled, reconnecting with backoff after any disconnect."""
        watcher = asyncio.create_task(self._watch())
        backoff = 0.1
        try:
            while True:
                try:
                    await self._serve_once()
                    backoff = 0.1
                except InvalidStatus as error:
                    if error.response.status_code in (401, 403):
                        raise NodeAuthError("the control plane refused this node's token") from None
                    log.warning("control plane answered %s", error.response.status_code)
                except (OSError, ConnectionClosed, TimeoutError) as error:
                    log.info("channel to %s lost: %s", self.url, error)
                except InvalidURI as error:
                    raise ValueError(str(error)) from None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        finally:
            watcher.cancel()

    async def _serve_once(self) -> None:
        headers = {"Authorization": f"Bearer {self._token}"}
        async with connect(self.url, additional_headers=headers, open_timeout=10) as ws:
            known = set(self._wanted)  # what the plane wanted before this connection
            held = await asyncio.to_thread(self.runtime.adopt)
            reports = [report_of(obs) for obs in held]
            hello = Hello(
                runtime=self.runtime.name,
                public_host=self.public_host,
                gpus=self.gpus,
                pods=reports,
            )
            await ws.send(hello.model_dump_json())
            self._sent = {r.pod_id: r for r in reports}
            self._ws = ws
            log.info("connected to %s with %d pods", self.url, len(reports))
            try:
                async for raw in ws:
                    message = control_message.validate_json(raw)
                    if isinstance(message, Sync):
                        self._on_sync(message, known | {r.pod_id for r in reports})
                    elif isinstance(message, PodMessage):
                        self._spawn(message.pod)
            finally:
                self._ws = None

    def _on_sync(self, sync: Sync, known: set[str]) -> None:
        """The full desired state of this node: apply it; remove what it no longer lists.

        A pod held on disk, or wanted before this connection, that the plane does not list
        was terminated while we were away. Pods pushed on this connection are not in `known`,
        so a `pod` message that overtook the `sync` is never undone by it.
        """
        listed = {a.pod_id for a in sync.pods}
        for assignment in sync.pods:
            self._spawn(assignment)
        for pod_id in known - listed:
            self._spawn(
                PodAssignment(
                    pod_id=pod_id,
                    generation=0,
                    desired="terminated",
                    spec=PodSpec(image=""),
                )
            )

    def _spawn(self, assignment: PodAssignment) -> None:
        """Take an assignment unless a newer one (higher revision) was already taken.

        Messages can overtake each other (a `sync` built before a user's change but sent
        after its `pod` message); revisions order them. A termination is always taken: it
        is final, so no assignment can be newer.
        """
        current = self._wanted.get(assignment.pod_id)
        if (
            current is not None
            and assignment.desired != "terminated"
            and assignment.revision < current.revision
        ):
            return
        self._wanted[assignment.pod_id] = assignment
        task = asyncio.create_task(self._apply(assignment))
        task.add_done_callback(_log_failure)

    async def _apply(self, assignment: PodAssignment) -> None:
        lock = self._locks.setdefault(assignment.pod_id, asyncio.Lock())
        async with lock:
            if self._wanted.get(assignment.pod_id) is not assignment:
                return  # a newer assignment came in while we waited: it will be applied
            report = await asyncio.to_thread(
                reconcile,
                self.runtime,
                assignment,
                self.stop_grace,
                self.meter_url,
                self.limits,
            )
            if assignment.desired == "terminated":
                self._wanted.pop(assignment.pod_id, None)
                self._locks.pop(assignment.pod_id, None)
            await self._report(report)
        self._wake.set()

    async def _report(self, report: PodReport) -> None:
        if self._sent.get(report.pod_id) == report:
            return
        ws = self._ws
        if ws is None:
            return  # the next hello carries it
        try:
            await ws.send(PodStatusMessage(pod=report).model_dump_json())
        except ConnectionClosed:
            return
        self._sent[report.pod_id] = report

    async def _watch(self) -> None:
        """Look at every pod that should run; report readiness, exits and port changes."""
        while True:
            starting = False
            for pod_id, assignment in list(self._wanted.items()):
                if assignment.desired != "running":
                    continue
                lock = self._locks.setdefault(pod_id, asyncio.Lock())
                if lock.locked():
                    starting = True  # being started right now: look again soon
                    continue
                async with lock:
                    obs = await asyncio.to_thread(self.runtime.observe, pod_id)
                    if obs.generation == assignment.generation:
                        await self._report(report_of(obs))
                        starting = starting or obs.phase is PodPhase.STARTING
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FAST_WATCH if starting else SLOW_WATCH)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("applying a pod change failed", exc_info=task.exception())
