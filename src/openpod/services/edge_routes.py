"""Edge routes as a function of the database: one route per HTTP port of each live pod.

A pod's routes exist while it is STARTING or RUNNING with its ports mapped (before the port
answers, the edge shows its "pod is starting" page) and go at stop or terminate. The router
keeps the proxy in step: every pod change syncs that pod's routes, and start-up reconciles all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from openpod.adapters.edge import EdgeError, InvalidRoute, Route
from openpod.adapters.store import Pod
from openpod.domain.lifecycle import PodStatus
from openpod.services import connect

log = logging.getLogger("openpod.edge")
_LIVE = (PodStatus.STARTING.value, PodStatus.RUNNING.value)


class RouteTable(Protocol):
    """The edge proxy as the router drives it (adapters.edge.EdgeProxy)."""

    def set_routes(self, routes: Iterable[Route]) -> None: ...

    def add_route(self, route: Route) -> None: ...

    def remove_route(self, host: str) -> None: ...


class EdgeRouter:
    def __init__(self, table: RouteTable, links: connect.ConnectSettings, secret: bytes) -> None:
        self.table = table
        self.links = links
        self._secret = secret
        self._by_pod: dict[str, dict[str, Route]] = {}
        self._lock = asyncio.Lock()

    def routes_for(self, pod: Pod) -> list[Route]:
        target = connect.target_host(pod)
        if pod.status not in _LIVE or not target:
            return []
        token = None
        if pod.private:
            token = connect.token_sha256(connect.access_token(self._secret, pod.id))
        routes = []
        for port in connect.http_ports(pod):
            mapped = pod.port_mappings.get(str(port))
            if not mapped:
                continue
            host = connect.route_host(self.links, pod.id, port)
            try:
                routes.append(Route(host, f"{target}:{mapped}", token))
            except InvalidRoute as error:  # e.g. a node that declared a name, not an address
                log.warning("pod %s port %d cannot be routed: %s", pod.id, port, error)
        return routes

    def all_routes(self, session: Session) -> dict[str, list[Route]]:
        query = select(Pod).where(Pod.status.in_(_LIVE))
        return {pod.id: self.routes_for(pod) for pod in session.scalars(query)}

    async def reconcile(self, routes_by_pod: dict[str, list[Route]]) -> None:
        """Make the proxy hold exactly these routes (start-up, or after losing track)."""
        async with self._lock:
            flat = [route for routes in routes_by_pod.values() for route in routes]
            await asyncio.to_thread(self.table.set_routes, flat)
            self._by_pod = {
                pod_id: {r.host: r for r in routes} for pod_id, routes in routes_by_pod.items()
            }
        log.info("edge reconciled: %d routes", len(flat))

    async def sync(self, pod_id: str, routes: list[Route]) -> None:
        """Bring one pod's routes to `routes`: add or change what differs, remove the rest."""
        async with self._lock:
            old = self._by_pod.get(pod_id, {})
            new = {route.host: route for route in routes}
            try:
                for host in old.keys() - new.keys():
                    await asyncio.to_thread(self.table.remove_route, host)
                for host, route in new.items():
                    if old.get(host) != route:
                        await asyncio.to_thread(self.table.add_route, route)
            except EdgeError as error:
                # The map file on disk is rewritten at every change, so a restarted proxy
                # comes back right; the next sync or reconcile retries the running one.
                log.warning("edge update for pod %s failed: %s", pod_id, error)
            if new:
                self._by_pod[pod_id] = new
            else:
                self._by_pod.pop(pod_id, None)
