"""The link to the control plane: one thread that connects, replays and reads acks.

Whatever the watcher journals is sent at once by `flush()` while a connection is up; on each
(re)connection the `welcome` says what the control plane holds and everything journalled above
it is sent again, in order. Lost connections are retried with capped exponential backoff.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

from openpod.meter.journal import Journal
from openpod.meter.wire import (
    REFUSED,
    Ack,
    Error,
    ProtocolError,
    Unknown,
    Welcome,
    events_message,
    parse_reply,
)

log = logging.getLogger("openpod.meter")

BACKOFF_FIRST_S = 0.2
BACKOFF_CAP_S = 5.0
WELCOME_TIMEOUT_S = 10.0
MAX_BATCH = 500  # events per message: a long outage is replayed in messages of bounded size


class Link:
    """Delivers the journal; `done` is set once `stopped` is acked or the run is closed."""

    def __init__(
        self, url: str, token: str, journal: Journal, on_done: Callable[[], None] | None = None
    ) -> None:
        self.url = url
        self._token = token
        self._journal = journal
        self._on_done = on_done
        self.done = threading.Event()
        self._lock = threading.Lock()  # orders sends: the watcher's and the link thread's
        self._ws: ClientConnection | None = None
        self._sent = 0  # highest seq sent on the current connection
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meter-link", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def flush(self) -> None:
        """Send what is journalled and not yet sent on this connection (no-op when down)."""
        with self._lock:
            ws = self._ws
            if ws is None:
                return
            pending = self._journal.pending(after=self._sent)
            for start in range(0, len(pending), MAX_BATCH):
                batch = pending[start : start + MAX_BATCH]
                try:
                    ws.send(events_message(batch))
                except (ConnectionClosed, OSError):
                    return  # the link thread sees the loss and reconnects
                self._sent = int(batch[-1]["seq"])

    def close(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        with self._lock:
            ws = self._ws
        if ws is not None:
            ws.close()
        self._thread.join(timeout)

    # -- the link thread --------------------------------------------------------------------

    def _finish(self) -> None:
        self.done.set()
        if self._on_done is not None:
            self._on_done()

    def _run(self) -> None:
        backoff = BACKOFF_FIRST_S
        while not self._stopping.is_set() and not self.done.is_set():
            welcomed = False
            try:
                welcomed = self._session()
            except InvalidStatus as error:
                log.warning("refused by %s: HTTP %s", self.url, error.response.status_code)
            except ConnectionClosed as error:
                rcvd = error.rcvd
                if rcvd is not None and rcvd.code == REFUSED:
                    log.error("refused by %s: %s (%s)", self.url, rcvd.reason, rcvd.code)
                elif not self._stopping.is_set():
                    log.info("disconnected from %s: %s", self.url, error)
            except ProtocolError as error:
                log.error("protocol error from %s: %s", self.url, error)
            except InvalidURI as error:
                log.error("bad control plane URL: %s", error)
            except (OSError, InvalidHandshake, TimeoutError) as error:
                log.info("cannot connect to %s: %s", self.url, error or type(error).__name__)
            if welcomed:
                backoff = BACKOFF_FIRST_S
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, BACKOFF_CAP_S)

    def _session(self) -> bool:
        """One connection: welcome, replay, then acks until it ends. True once welcomed."""
        headers = {"Authorization": f"Bearer {self._token}"}
        with connect(
            self.url, additional_headers=headers, open_timeout=10, close_timeout=1, proxy=None
        ) as ws:
            welcome = parse_reply(ws.recv(timeout=WELCOME_TIMEOUT_S))
            if not isinstance(welcome, Welcome):
                raise ProtocolError(f"expected welcome, got {welcome}")
            self._journal.ack(welcome.acked)
            log.info("connected to %s (acked %d)", self.url, welcome.acked)
            if welcome.closed or self._journal.delivered:
                self._close_run(welcome.closed)
                return True
            try:
                with self._lock:
                    self._ws, self._sent = ws, self._journal.acked
                self.flush()
                for raw in ws:
                    reply = parse_reply(raw)
                    if isinstance(reply, Ack):
                        self._journal.ack(reply.acked)
                        if reply.closed or self._journal.delivered:
                            self._close_run(reply.closed)
                            return True
                    elif isinstance(reply, Error):
                        raise ProtocolError(f"batch refused: {reply.error}")
                    elif isinstance(reply, Unknown | Welcome):
                        log.debug("ignored a %s message", type(reply).__name__)
            finally:
                with self._lock:
                    self._ws = None
            log.info("disconnected from %s: %s", self.url, ws.close_code)
            return True

    def _close_run(self, closed: bool) -> None:
        self._journal.mark_done()
        log.info("run %s", "closed by the control plane" if closed else "delivered")
        self._finish()
