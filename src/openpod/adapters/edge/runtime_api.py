"""A client for HAProxy's runtime API (the stats socket at `level admin`).

Each call opens the Unix socket, sends one line of `;`-separated commands and reads until
HAProxy closes it (the non-interactive mode: no prompt to parse). HAProxy reads a line into
one buffer (16 KiB by default), so long batches are cut into lines well under that.
Commands that change a map answer with an empty line when they succeed; any other text is
HAProxy saying what went wrong.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

from openpod.adapters.edge.model import EdgeError

MAX_LINE = 8192
_NOT_FOUND = ("entry not found.", "key not found.")


class AdminSocket:
    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        if len(str(path).encode()) >= 108:  # sun_path, with its terminating NUL
            raise EdgeError(f"admin socket path too long for a Unix socket: {path}")
        self.path, self.timeout = path, timeout

    def execute(self, line: str) -> str:
        """Run one line (one command, or several joined by `;`) and return HAProxy's answer."""
        if "\n" in line:
            raise EdgeError("a runtime API line cannot hold a newline")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(self.path))
                sock.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as error:
            raise EdgeError(f"HAProxy admin socket {self.path}: {error}") from error
        return b"".join(chunks).decode(errors="replace")

    def answers(self) -> bool:
        try:
            return "Name: HAProxy" in self.execute("show info")
        except EdgeError:
            return False

    def apply(self, commands: Sequence[str]) -> None:
        """Run map-changing commands in order; raise with HAProxy's words if any refused."""
        for line in _batches(commands):
            complaint = self.execute(line).strip()
            if complaint:
                raise EdgeError(f"HAProxy refused {line[:200]!r}: {complaint}")

    def try_apply(self, command: str) -> bool:
        """One map-changing command; False where the key was not there (`set`/`del map`)."""
        answer = self.execute(command).strip()
        if answer.lower() in _NOT_FOUND:
            return False
        if answer:
            raise EdgeError(f"HAProxy refused {command!r}: {answer}")
        return True

    def show_map(self, map_path: Path) -> list[tuple[str, str]]:
        """Every (key, value) of a map as the running proxy holds it, duplicates included."""
        answer = self.execute(f"show map {map_path}")
        entries = []
        for line in answer.splitlines():
            if not line.strip():
                continue
            parts = line.split(" ", 2)
            if len(parts) != 3 or not parts[0].startswith("0x"):
                raise EdgeError(f"unexpected answer to show map: {answer[:300]!r}")
            entries.append((parts[1], parts[2]))
        return entries


def _batches(commands: Sequence[str]) -> Iterator[str]:
    line: list[str] = []
    size = 0
    for command in commands:
        if ";" in command or "\n" in command:
            raise EdgeError(f"a runtime API command cannot hold ';' or a newline: {command!r}")
        if line and size + len(command) + 1 > MAX_LINE:
            yield ";".join(line)
            line, size = [], 0
        line.append(command)
        size += len(command) + 1
    if line:
        yield ";".join(line)
