"""A fake of the control plane's `/meter/connect` (docs/metering.md): a real WebSocket server
on 127.0.0.1, in threads, with the faults the meter must survive.

Like the real one it stores events by seq (idempotent), acks the highest contiguous seq and
says `closed` once `stopped` is stored. Knobs: `store_limit` (events above it are lost in
flight: neither stored nor acked), `ack` (False: never answers a batch), `drop_batches` (so
many connections are cut right after their first batch), `garbage` (so many connections get a
malformed welcome).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from tests.support.net import free_port

TOKEN = "mt1.pod1.1.c2lnbmF0dXJl"


class FakePlane:
    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/meter/connect"
        self.store_limit: int | None = None
        self.ack = True
        self.drop_batches = 0
        self.garbage = 0
        self.journal: Path | None = None  # when set: was each event on disk when it arrived?
        self.received: list[dict[str, Any]] = []  # every event, in arrival order, repeats too
        self.stored: dict[int, dict[str, Any]] = {}
        self.acked = 0  # highest contiguous stored seq
        self.acks_sent: list[int] = []
        self.on_disk_first: list[bool] = []
        self.connections = 0
        self.refusals: list[float] = []  # monotonic times of refused connections
        self._cond = threading.Condition()
        self._server: Server = serve(self._handle, "127.0.0.1", self.port, compression=None)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(5)

    def __enter__(self) -> FakePlane:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return any(e["kind"] == "stopped" for s, e in self.stored.items() if s <= self.acked)

    def wait(self, check: Callable[[FakePlane], bool], timeout: float, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: check(self), timeout):
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def kinds(self) -> list[str]:
        with self._cond:
            return [self.stored[s]["kind"] for s in sorted(self.stored)]

    def seqs(self) -> list[int]:
        """The stored seqs now, in order (a copy: meters may still be sending)."""
        with self._cond:
            return sorted(self.stored)

    # -- the server side ---------------------------------------------------------------------

    def _handle(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):  # the meter went away (killed, in tests)
            self._serve(ws)

    def _serve(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        with self._cond:
            if ws.request.headers.get("Authorization") != f"Bearer {self.token}":
                self.refusals.append(time.monotonic())
                self._cond.notify_all()
                refused = True
            else:
                self.connections += 1
                refused = False
                garbage = self.garbage > 0
                self.garbage -= garbage
                drop = not garbage and self.drop_batches > 0
                self.drop_batches -= drop
                welcome = {"type": "welcome", "acked": self.acked, "closed": self.closed}
        if refused:
            ws.close(4401, "invalid meter token")
            return
        ws.send("{not json" if garbage else json.dumps(welcome))
        for raw in ws:
            batch = json.loads(raw)
            assert batch["type"] == "events"
            with self._cond:
                self._store(batch["events"])
                reply = {"type": "ack", "acked": self.acked, "closed": self.closed}
                if self.ack and not drop:
                    self.acks_sent.append(self.acked)
                self._cond.notify_all()
            if drop:
                ws.close()
                return
            if self.ack:
                ws.send(json.dumps(reply))

    def _store(self, events: list[dict[str, Any]]) -> None:
        on_disk = self.journal.read_text() if self.journal is not None else ""
        for event in events:
            self.received.append(event)
            seq = int(event["seq"])
            if self.journal is not None:
                line = json.dumps(event, separators=(",", ":"))
                self.on_disk_first.append(line in on_disk.splitlines())
            if self.store_limit is not None and seq > self.store_limit:
                continue
            self.stored.setdefault(seq, event)
        while self.acked + 1 in self.stored:
            self.acked += 1
