"""Where the edge keeps its files, and how it writes them (whole, or not at all)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EdgePaths:
    """Where each of the edge's files lives inside its state dir."""

    state_dir: Path

    @property
    def config(self) -> Path:
        return self.state_dir / "haproxy.cfg"

    @property
    def routes_map(self) -> Path:
        return self.state_dir / "routes.map"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "haproxy.pid"

    @property
    def lock(self) -> Path:
        return self.state_dir / "edge.lock"

    @property
    def admin_socket(self) -> Path:
        return self.state_dir / "admin.sock"

    @property
    def log(self) -> Path:
        return self.state_dir / "haproxy.log"

    def page(self, status: int) -> Path:
        return self.state_dir / f"{status}.html"

    @property
    def refused_response(self) -> Path:
        return self.state_dir / "refused.http"


def write_atomic(path: Path, text: str) -> None:
    """Write a whole file or nothing: a reader (or a restarted HAProxy) sees old or new.

    Not fsynced: the routes' source of truth is the store, reconciled into the edge at every
    control-plane start; the file only has to survive the edge's restarts, not power loss.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)
