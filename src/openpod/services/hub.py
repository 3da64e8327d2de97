"""The live side of the node channel: which nodes are connected, and who waits on which pod.

One control-plane process holds the hub; the database stays the truth, so a restart loses
nothing: nodes reconnect, send `hello`, and get a full `sync` back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sqlalchemy.orm import Session

from openpod.adapters.store import Database, Pod
from openpod.protocol import (
    Hello,
    PodAssignment,
    PodMessage,
    PodStatusMessage,
    Sync,
    node_message,
)
from openpod.services import node_channel, providers
from openpod.services.connect import ConnectSettings
from openpod.services.edge_routes import EdgeRouter
from openpod.services.errors import InvalidInput
from openpod.services.meter_hub import MeterHub

log = logging.getLogger("openpod.hub")
T = TypeVar("T")


class NodeLink(Protocol):
    """A connected node, as the hub sees it (a WebSocket in the API layer)."""

    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


@dataclass(frozen=True)
class PodChange:
    """A pod a user just changed, with what its node must now be told (built in the same
    transaction as the change, so the node never hears of a state that was not committed)."""

    pod: Pod
    node_id: str | None
    assignment: PodAssignment

    @classmethod
    def of(cls, session: Session, pod: Pod) -> PodChange:
        pod.revision += 1
        session.flush()
        return cls(pod, pod.node_id, node_channel.assignment(session, pod))


class NodeHub:
    def __init__(
        self,
        db: Database,
        links: ConnectSettings | None = None,
        router: EdgeRouter | None = None,
        meters: MeterHub | None = None,
    ) -> None:
        self.db = db
        self.links = links or ConnectSettings()
        self.router = router
        self.meters = meters
        self._links: dict[str, NodeLink] = {}
        self._send_locks: dict[str, asyncio.Lock] = {}
        self._changes: dict[str, asyncio.Event] = {}

    async def run_db(self, fn: Callable[[Session], T], *, readonly: bool = False) -> T:
        """Run `fn` in one transaction on a worker thread (the store is synchronous)."""
        return await self.db.run(fn, readonly=readonly)

    # --- connections -------------------------------------------------------------------------

    def is_connected(self, node_id: str) -> bool:
        return node_id in self._links

    async def attach(self, node_id: str, link: NodeLink, hello: Hello) -> None:
        """A node said hello: record its GPUs, apply what it holds, and send it the full state."""
        old = self._links.pop(node_id, None)
        if old is not None:
            await old.close(4000, "replaced by a newer connection of the same node")

        def connect(session: Session) -> tuple[list[Pod], Sync]:
            providers.node_connected(
                session,
                node_id,
                runtime=hello.runtime,
                public_host=hello.public_host,
                gpus=hello.gpus,
            )
            outcomes = [
                node_channel.apply_report(session, node_id, report, self.links)
                for report in hello.pods
            ]
            changed = [o.pod for o in outcomes if o.changed and o.pod is not None]
            return changed, Sync(pods=node_channel.assignments(session, node_id))

        # Linked before the snapshot is read: a change committed meanwhile is pushed too (in
        # whatever order it arrives, revisions let the node keep the newest).
        self._links[node_id] = link
        self._send_locks[node_id] = asyncio.Lock()
        changed, sync = await self.run_db(connect)
        for pod in changed:
            await self._pod_updated(pod)
        sync.pods = [self._metered(assignment) for assignment in sync.pods]
        await self._send(node_id, sync.model_dump_json())
        log.info(
            "node %s connected with %d GPUs, %d pods", node_id, len(hello.gpus), len(sync.pods)
        )

    async def detach(self, node_id: str, link: NodeLink) -> None:
        if self._links.get(node_id) is not link:
            return  # already replaced by a newer connection
        del self._links[node_id]
        await self.run_db(lambda session: providers.node_disconnected(session, node_id))
        log.info("node %s disconnected", node_id)

    async def receive(self, node_id: str, text: str) -> None:
        """One message from a node after its hello."""
        message = node_message.validate_json(text)
        if not isinstance(message, PodStatusMessage):
            raise InvalidInput(f"unexpected {message.type!r} message after hello")
        report = message.pod
        outcome = await self.run_db(
            lambda s: node_channel.apply_report(s, node_id, report, self.links)
        )
        if outcome.changed and outcome.pod is not None:
            await self._pod_updated(outcome.pod)
        if outcome.reply is not None:
            await self._send(node_id, PodMessage(pod=outcome.reply).model_dump_json())

    async def _pod_updated(self, pod: Pod) -> None:
        """A pod's record changed: wake its waiters and bring its edge routes in step."""
        self.pod_changed(pod.id)
        if self.router is not None:
            await self.router.sync(pod.id, self.router.routes_for(pod))

    async def push(self, change: PodChange) -> None:
        """Tell the pod's node what is now wanted of it (nothing if the node is offline)."""
        await self._pod_updated(change.pod)
        if change.node_id is not None and change.node_id in self._links:
            message = PodMessage(pod=self._metered(change.assignment))
            await self._send(change.node_id, message.model_dump_json())

    def _metered(self, assignment: PodAssignment) -> PodAssignment:
        """A run the node should be running gets its meter's token (derived, never stored)."""
        if self.meters is None or assignment.desired != "running":
            return assignment
        token = self.meters.token_for(assignment.pod_id, assignment.generation)
        heartbeat = self.meters.config.heartbeat_s
        return assignment.model_copy(update={"meter_token": token, "meter_heartbeat": heartbeat})

    async def _send(self, node_id: str, data: str) -> None:
        link = self._links.get(node_id)
        if link is None:
            return
        async with self._send_locks[node_id]:
            try:
                await link.send_text(data)
            except (OSError, RuntimeError) as error:
                # The receive loop sees the broken connection and detaches it; the next
                # hello + sync resends everything.
                log.warning("send to node %s failed: %s", node_id, error)

    # --- waiting on pods ---------------------------------------------------------------------

    def pod_changed(self, pod_id: str) -> None:
        event = self._changes.pop(pod_id, None)
        if event is not None:
            event.set()

    def change_signal(self, pod_id: str) -> asyncio.Event:
        """An event set at the pod's next change; take it *before* reading the pod's state."""
        return self._changes.setdefault(pod_id, asyncio.Event())
