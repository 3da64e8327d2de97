"""The run's journal: `events.jsonl` (one event a line, fsynced before it is sent) and
`acked` (the highest seq the control plane acknowledged), in a 0700 directory.

Once `stopped` is acknowledged, or the control plane says the run is closed, the meter also
writes an empty `done` file: neither it nor a restarted meter has anything left to do for
the run (the runtime that starts meters does not restart one whose journal says `done`).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

Event = dict[str, Any]  # {"seq": int, "kind": str, "at": float, "gpus"?: [...]}

COMPACT_LINES = 1000  # rewrite events.jsonl once it holds more lines and everything is acked


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _line(event: Event) -> bytes:
    return (json.dumps(event, separators=(",", ":")) + "\n").encode()


class Journal:
    """Events of one run on disk; safe to use from the watcher and the link thread at once."""

    def __init__(self, directory: Path, compact_lines: int = COMPACT_LINES) -> None:
        self.dir = directory
        self._events_path = directory / "events.jsonl"
        self._acked_path = directory / "acked"
        self._done_path = directory / "done"
        self._compact_lines = compact_lines
        self._lock = threading.Lock()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        self.acked = self._read_acked()
        self.last: Event | None = None
        self._pending: list[Event] = []  # journalled, seq above `acked`, in seq order
        self._lines = 0
        self._load()
        self._file = open(self._events_path, "ab")  # noqa: SIM115 (held for the meter's life)

    def _read_acked(self) -> int:
        try:
            return int(self._acked_path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _load(self) -> None:
        """Read the events back; a line torn by a crash mid-write (the last one) is cut off."""
        try:
            data = self._events_path.read_bytes()
        except FileNotFoundError:
            return
        good = 0
        for raw in data.splitlines(keepends=True):
            try:
                event = json.loads(raw)
                seq = int(event["seq"])
            except (ValueError, KeyError, TypeError):
                break
            if not raw.endswith(b"\n"):
                break
            good += len(raw)
            self._lines += 1
            self.last = event
            if seq > self.acked:
                self._pending.append(event)
        if good < len(data):
            with open(self._events_path, "r+b") as out:
                out.truncate(good)
                os.fsync(out.fileno())

    # -- reading ----------------------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        """The run's last event is `stopped`: nothing more will be journalled."""
        return self.last is not None and self.last.get("kind") == "stopped"

    @property
    def delivered(self) -> bool:
        """`stopped` is journalled and acknowledged: the meter's work is done."""
        return self.stopped and self.last is not None and self.acked >= int(self.last["seq"])

    @property
    def done(self) -> bool:
        """The `done` file is there: the run needs this meter no more."""
        return self._done_path.exists()

    def pending(self, after: int = 0) -> list[Event]:
        """Journalled events not yet acknowledged, with seq above `after`, in seq order."""
        with self._lock:
            return [e for e in self._pending if int(e["seq"]) > after]

    # -- writing ----------------------------------------------------------------------------

    def append(self, kind: str, at: float, gpus: list[dict[str, int]] | None = None) -> Event:
        """Journal the next event (fsynced) and return it."""
        with self._lock:
            last_seq = int(self.last["seq"]) if self.last is not None else 0
            event: Event = {"seq": max(last_seq, self.acked) + 1, "kind": kind, "at": at}
            if gpus:
                event["gpus"] = gpus
            first = self._lines == 0
            self._file.write(_line(event))
            self._file.flush()
            os.fsync(self._file.fileno())
            if first:
                _fsync_dir(self.dir)  # the file's name is durable too
            self._lines += 1
            self.last = event
            self._pending.append(event)
            return event

    def ack(self, acked: int) -> None:
        """The control plane holds every event <= `acked`."""
        with self._lock:
            if acked <= self.acked:
                return
            self.acked = acked
            self._pending = [e for e in self._pending if int(e["seq"]) > acked]
            tmp = self._acked_path.with_name("acked.tmp")
            tmp.write_text(f"{acked}\n")
            os.replace(tmp, self._acked_path)
            if self._lines > self._compact_lines and not self._pending:
                self._compact()

    def mark_done(self) -> None:
        self._done_path.write_text("")

    def _compact(self) -> None:
        """Rewrite events.jsonl keeping only the last event (which carries the seq on)."""
        assert self.last is not None
        tmp = self._events_path.with_name("events.jsonl.tmp")
        with open(tmp, "wb") as out:
            out.write(_line(self.last))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self._events_path)
        _fsync_dir(self.dir)
        self._file.close()
        self._file = open(self._events_path, "ab")  # noqa: SIM115
        self._lines = 1

    def close(self) -> None:
        with self._lock:
            self._file.close()
