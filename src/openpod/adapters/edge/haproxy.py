"""The edge proxy: HAProxy routing `{pod}-{port}.{domain}` to pods, changed at runtime.

Two copies of the routes are kept equal: the map file (what HAProxy loads when it starts,
so a restart comes back with every route) and the running proxy's map (changed over the
runtime API with `add`/`set`/`del map`, so no change ever needs a reload and no open
connection is cut). Every change rewrites the file first, then updates the running proxy;
if the second step fails the file is still right and the next change or restart repairs it.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from openpod.adapters.edge.config import (
    page_html,
    page_statuses,
    refused_response,
    render_config,
)
from openpod.adapters.edge.files import EdgePaths, write_atomic
from openpod.adapters.edge.model import (
    EdgeError,
    EdgeSettings,
    InvalidRoute,
    Route,
    normalise_host,
)
from openpod.adapters.edge.process import HaproxyProcess
from openpod.adapters.edge.routemap import RouteMap, map_value, route_from_map
from openpod.adapters.edge.runtime_api import AdminSocket

__all__ = ["EdgeError", "EdgeProxy", "EdgeSettings", "InvalidRoute", "Route"]

START_TIMEOUT_S = 10.0


class EdgeProxy:
    """One HAProxy edge. Thread-safe: every file write and runtime call holds one lock.

    Any EdgeProxy on a state dir drives the HAProxy that serves it, whether it started it
    or not: `openpod edge` starts and supervises the process, the control plane only
    changes routes. Both may run at once (an flock orders their changes).
    """

    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        self.paths = EdgePaths(settings.state_dir)
        self._admin = AdminSocket(self.paths.admin_socket)
        self._process = HaproxyProcess(settings.haproxy, self.paths)
        self._lock = threading.RLock()
        self._desired: RouteMap | None = None  # the map file, loaded on first use
        self._desired_identity: tuple[int, int, int] | None = None
        self._flock_fd: int | None = None
        self._flock_depth = 0

    # --- the process ---------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._process.pid

    def alive(self) -> bool:
        with self._lock:
            return self._process.alive()

    def start(self) -> None:
        """Write the config and pages, start HAProxy and return once its admin socket answers.

        An HAProxy already serving this state dir (ours, or one a crashed parent left) is
        kept if it runs this very config: its open connections live on."""
        with self._changing():
            config = render_config(self.settings, self.paths)
            if self._process.alive():
                if self._process.owned:
                    return
                if self._read(self.paths.config) == config and self._admin.answers():
                    self._reconcile(self._load().routes)  # repair what a failed update missed
                    return
                self._process.stop(self.settings.stop_timeout)
            try:
                for status in page_statuses():
                    write_atomic(self.paths.page(status), page_html(status))
                write_atomic(self.paths.refused_response, refused_response())
                if not self.paths.routes_map.exists():
                    write_atomic(self.paths.routes_map, RouteMap().text())
                write_atomic(self.paths.config, config)
            except OSError as error:
                where = self.paths.state_dir
                raise EdgeError(f"cannot write the edge's files in {where}: {error}") from error
            self._process.spawn()
            self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._admin.answers():
            if not self._process.alive():
                raise EdgeError(f"HAProxy exited at start:\n{self._process.log_tail()}")
            if time.monotonic() > deadline:
                self._process.stop(self.settings.stop_timeout)
                raise EdgeError(f"HAProxy did not answer on {self.paths.admin_socket} in time")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop HAProxy by its PID. The map file stays: the next start serves every route."""
        with self._lock:
            self._process.stop(self.settings.stop_timeout)

    # --- routes --------------------------------------------------------------------------

    def set_routes(self, routes: Iterable[Route]) -> None:
        """Make the edge hold exactly `routes` (a later route for a host wins)."""
        new = RouteMap(routes)
        for route in new.routes.values():
            self._check_domain(route)
        with self._changing():
            self._save(new)
            if self._process.alive():
                self._reconcile(new.routes)

    def add_route(self, route: Route) -> None:
        """Add a route, or change where (and how privately) its host is served."""
        self._check_domain(route)
        with self._changing():
            desired = self._load()
            desired.put(route)
            self._save(desired)
            if self._process.alive():
                set_cmd = f"set map {self.paths.routes_map} {route.host} {map_value(route)}"
                if not self._admin.try_apply(set_cmd):
                    self._admin.apply([set_cmd.replace("set map", "add map", 1)])

    def remove_route(self, host: str) -> None:
        """Stop serving `host` (a 404 from the next request on); unknown hosts are fine."""
        try:
            host = normalise_host(host)
        except InvalidRoute:
            return  # a host no route can have is already not routed
        with self._changing():
            desired = self._load()
            desired.drop(host)
            self._save(desired)
            if self._process.alive():
                self._admin.try_apply(f"del map {self.paths.routes_map} {host}")

    def routes(self) -> dict[str, Route]:
        """The routes as the running proxy holds them (read back over the runtime API)."""
        with self._lock:
            if not self._process.alive():
                raise EdgeError("the edge proxy is not running")
            found: dict[str, Route] = {}
            for host, value in self._admin.show_map(self.paths.routes_map):
                found.setdefault(host, route_from_map(host, value))
            return found

    # --- inside the lock -----------------------------------------------------------------

    def _reconcile(self, new: Mapping[str, Route]) -> None:
        """Bring the running map to `new` with the fewest commands; hosts that ended up in it
        twice (only `add map` makes duplicates) are deleted and added once."""
        current: dict[str, list[str]] = {}
        for host, value in self._admin.show_map(self.paths.routes_map):
            current.setdefault(host, []).append(value)
        path, commands = self.paths.routes_map, []
        for host in current.keys() - new.keys():
            commands.append(f"del map {path} {host}")
        for host, route in new.items():
            value, values = map_value(route), current.get(host, [])
            if values == [value]:
                continue
            if len(values) == 1:
                commands.append(f"set map {path} {host} {value}")
            else:
                if values:
                    commands.append(f"del map {path} {host}")
                commands.append(f"add map {path} {host} {value}")
        self._admin.apply(commands)

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """One change at a time, across threads (the lock) and across processes sharing the
        state dir (an flock): `openpod edge` restarting HAProxy while the control plane
        changes routes must not interleave their map writes and runtime calls."""
        with self._lock:
            if self._flock_depth == 0:
                self._open_flock()
            self._flock_depth += 1
            try:
                yield
            finally:
                self._flock_depth -= 1
                if self._flock_depth == 0 and self._flock_fd is not None:
                    os.close(self._flock_fd)  # closing releases the flock
                    self._flock_fd = None

    def _open_flock(self) -> None:
        try:
            self.paths.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise EdgeError(f"cannot open {self.paths.lock}: {error}") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as error:
            os.close(fd)
            raise EdgeError(f"cannot lock {self.paths.lock}: {error}") from error
        self._flock_fd = fd

    def _load(self) -> RouteMap:
        """The map file's routes, parsed again only when another writer replaced the file."""
        try:
            stat = self.paths.routes_map.stat()
            identity = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            identity = None
        except OSError as error:
            raise EdgeError(f"cannot read {self.paths.routes_map}: {error}") from error
        if self._desired is None or identity != self._desired_identity:
            text = self._read(self.paths.routes_map)
            self._desired = RouteMap.parse(text) if text is not None else RouteMap()
            self._desired_identity = identity
        return self._desired

    def _save(self, routes: RouteMap) -> None:
        """Write the map file; the in-memory copy follows only once it is written."""
        self._desired = None
        try:
            write_atomic(self.paths.routes_map, routes.text())
            stat = self.paths.routes_map.stat()
        except OSError as error:
            raise EdgeError(f"cannot write {self.paths.routes_map}: {error}") from error
        self._desired = routes
        self._desired_identity = (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def _check_domain(self, route: Route) -> None:
        if not route.host.endswith(f".{self.settings.domain}"):
            raise InvalidRoute(
                f"{route.host} is not under the edge's domain {self.settings.domain}"
            )

    @staticmethod
    def _read(path: Path) -> str | None:
        try:
            return path.read_text()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise EdgeError(f"cannot read {path}: {error}") from error
