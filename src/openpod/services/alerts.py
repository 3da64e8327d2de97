"""The alert dispatcher: one `submit` from the watch, delivery to every sink on its own.

The hot-wallet watch (balance floor, foreign transactions, refused signatures) calls `submit`,
which never waits: the alert is de-duplicated (the same key in the same state within
`dedupe_s` is sent once, unless its severity got worse), rate-limited per sink (CRITICAL
always passes) and queued on each sink's own bounded queue. One delivery task per sink sends
and retries with exponential backoff, so a webhook that is down or an SMTP server that hangs
delays only its own queue. Failures are logged by sink name and reason only: never a webhook
URL or a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from openpod.adapters.alerts import SinkError
from openpod.domain.alerts import Alert, Severity

log = logging.getLogger("openpod.alerts.dispatch")
DROP_REASONS = ("rate_limited", "queue_full", "gave_up")  # always exported, even at 0
_SINK_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # also a Prometheus label value
_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class AlertSink(Protocol):
    @property
    def name(self) -> str: ...  # "webhook", "email", "log": never a secret

    async def send(self, alert: Alert) -> None: ...  # raises SinkError or OSError on failure


@dataclass
class AlertMetrics:
    """Counters exported at GET /metrics."""

    sent: Counter[tuple[str, str]] = field(default_factory=Counter)  # (sink, severity)
    failed: Counter[str] = field(default_factory=Counter)  # failed attempts, by sink
    retried: int = 0  # attempts made again after a failure
    suppressed: int = 0  # duplicates within the de-duplication window
    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)  # (sink, reason)


def backoff_s(failures: int, first_s: float, max_s: float) -> float:
    """The wait before the next attempt after `failures` failed ones: first_s, doubling, capped."""
    return float(min(max_s, first_s * 2 ** max(0, failures - 1)))


class _Lane:
    """One sink's queue, token bucket and delivery task."""

    def __init__(self, sink: AlertSink, rate_per_minute: int, now: float) -> None:
        self.sink = sink
        self.name = sink.name
        self.queue: deque[Alert] = deque()
        self.wake = asyncio.Event()
        self.busy = False  # an alert is being sent (or waiting for its retry)
        self.task: asyncio.Task[None] | None = None
        self.capacity = float(rate_per_minute)
        self.tokens = float(rate_per_minute)
        self.refill_per_s = rate_per_minute / 60.0
        self.refilled_at = now

    def take_token(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.refilled_at) * self.refill_per_s)
        self.refilled_at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Alerts:
    """Dispatches alerts to sinks: de-duplicated, rate-limited, queued and retried per sink."""

    def __init__(
        self,
        sinks: Sequence[AlertSink],
        *,
        dedupe_s: float = 300.0,
        rate_per_minute: int = 20,
        retry_first_s: float = 1.0,
        retry_max_s: float = 60.0,
        max_attempts: int = 10,
        queue_size: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        names = [sink.name for sink in sinks]
        if len(set(names)) != len(names) or not all(map(_SINK_NAME.fullmatch, names)):
            raise ValueError(f"alert sinks need distinct plain names (a-z, 0-9, _-.), got {names}")
        if rate_per_minute < 1 or max_attempts < 1 or queue_size < 1:
            raise ValueError("rate_per_minute, max_attempts and queue_size must be at least 1")
        self._dedupe_s = dedupe_s
        self._retry_first_s = retry_first_s
        self._retry_max_s = retry_max_s
        self._max_attempts = max_attempts
        self._queue_size = queue_size
        self._clock = clock
        self._lanes = [_Lane(sink, rate_per_minute, clock()) for sink in sinks]
        self._last: dict[str, tuple[bool, int, float]] = {}  # key -> resolved, rank, accepted at
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self.metrics = AlertMetrics()

    # --- submitting -------------------------------------------------------------------------

    def submit(self, alert: Alert) -> bool:
        """Queues `alert` for every sink without waiting; False if suppressed or dropped by all.

        Call it from the event loop's thread (worker threads use `submit_threadsafe`)."""
        if self._closing:
            log.warning("alert %s not sent: alerting is stopped", alert.key)
            return False
        now = self._clock()
        rank = _RANK[alert.severity]
        last = self._last.get(alert.key)
        if (
            last is not None
            and last[0] == alert.resolved
            and rank <= last[1]  # a worse severity is news, not a duplicate
            and now - last[2] < self._dedupe_s
        ):
            self.metrics.suppressed += 1
            return False
        queued = [lane for lane in self._lanes if self._enqueue(lane, alert, now)]
        if not queued:
            return False
        if len(self._last) > 10_000:  # forget keys whose window is over
            self._last = {k: v for k, v in self._last.items() if now - v[2] < self._dedupe_s}
        self._last[alert.key] = (alert.resolved, rank, now)
        self._idle.clear()
        return True

    def submit_threadsafe(self, alert: Alert) -> None:
        """`submit` from a worker thread: handed to the event loop that ran `start`."""
        loop = self._loop
        if loop is None:
            log.warning("alert %s not sent: alerting is not running", alert.key)
            return
        loop.call_soon_threadsafe(self.submit, alert)

    def _enqueue(self, lane: _Lane, alert: Alert, now: float) -> bool:
        critical = alert.severity is Severity.CRITICAL
        if not lane.take_token(now) and not critical:
            self.metrics.dropped[(lane.name, "rate_limited")] += 1
            log.debug("alert %s not sent to %s: over the rate limit", alert.key, lane.name)
            return False
        if len(lane.queue) >= self._queue_size:
            victim = next((a for a in lane.queue if a.severity is not Severity.CRITICAL), None)
            if victim is None and not critical:
                victim = alert  # only CRITICAL queued: the newcomer gives way
            elif victim is None:
                victim = lane.queue[0]
            self.metrics.dropped[(lane.name, "queue_full")] += 1
            log.warning("alert %s not sent to %s: its queue is full", victim.key, lane.name)
            if victim is alert:
                return False
            lane.queue.remove(victim)
        lane.queue.append(alert)
        lane.wake.set()
        return True

    # --- delivering -------------------------------------------------------------------------

    async def start(self) -> None:
        """Starts one delivery task per sink on the running loop."""
        if self._loop is not None:
            raise RuntimeError("alerting is already started")
        self._loop = asyncio.get_running_loop()
        for lane in self._lanes:
            self._spawn(lane)

    def _spawn(self, lane: _Lane) -> None:
        assert self._loop is not None
        lane.task = self._loop.create_task(self._deliver(lane), name=f"alerts-{lane.name}")
        lane.task.add_done_callback(lambda task: self._on_task_done(lane, task))

    def _on_task_done(self, lane: _Lane, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None or self._closing:
            return
        # A sink broke its contract (raised something other than SinkError/OSError): the
        # alert in hand is lost, the sink keeps getting the next ones.
        lane.busy = False
        self.metrics.dropped[(lane.name, "sink_error")] += 1
        log.error("alert sink %s failed unexpectedly (%s)", lane.name, type(exc).__name__)
        self._spawn(lane)
        self._update_idle()

    async def _deliver(self, lane: _Lane) -> None:
        while True:
            while not lane.queue:
                lane.wake.clear()
                self._update_idle()
                await lane.wake.wait()
            alert = lane.queue.popleft()
            lane.busy = True
            await self._send(lane, alert)
            lane.busy = False

    async def _send(self, lane: _Lane, alert: Alert) -> None:
        for attempt in range(1, self._max_attempts + 1):
            try:
                await lane.sink.send(alert)
            except (SinkError, OSError) as exc:
                self.metrics.failed[lane.name] += 1
                reason = str(exc) if isinstance(exc, SinkError) else type(exc).__name__
                if attempt == self._max_attempts:
                    self.metrics.dropped[(lane.name, "gave_up")] += 1
                    log.error(
                        "gave up sending alert %s to %s after %d attempts: %s",
                        alert.key, lane.name, attempt, reason,
                    )  # fmt: skip
                    return
                delay = backoff_s(attempt, self._retry_first_s, self._retry_max_s)
                log.warning(
                    "alert %s to %s failed (attempt %d of %d): %s; retrying in %.2fs",
                    alert.key, lane.name, attempt, self._max_attempts, reason, delay,
                )  # fmt: skip
                self.metrics.retried += 1
                await asyncio.sleep(delay)
            else:
                self.metrics.sent[(lane.name, alert.severity.value)] += 1
                return

    def _update_idle(self) -> None:
        if all(not lane.queue and not lane.busy for lane in self._lanes):
            self._idle.set()
        else:
            self._idle.clear()

    async def idle(self) -> None:
        """Returns once every queue is empty and no alert is being sent (for tests)."""
        await self._idle.wait()

    async def stop(self, drain_s: float = 5.0) -> None:
        """Refuses new alerts, delivers what is queued within `drain_s`, then stops the tasks."""
        self._closing = True
        tasks = [lane.task for lane in self._lanes if lane.task is not None]
        if tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), drain_s)
        for lane in self._lanes:
            left = len(lane.queue) + (1 if lane.busy else 0)
            if left:
                self.metrics.dropped[(lane.name, "shutdown")] += left
                log.warning("%d alert(s) for %s not sent before shutdown", left, lane.name)
            lane.queue.clear()
            if lane.task is not None:
                lane.task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for lane in self._lanes:
            lane.busy = False
            lane.task = None
        self._loop = None
        self._update_idle()

    # --- metrics ----------------------------------------------------------------------------

    def prometheus(self) -> str:
        m = self.metrics
        names = [lane.name for lane in self._lanes]
        lines = [
            "# HELP openpod_alerts_sent_total Alerts delivered, by sink and severity.",
            "# TYPE openpod_alerts_sent_total counter",
        ]
        for name in names:
            for sev in Severity:
                sent = m.sent[(name, sev.value)]
                lines.append(f'openpod_alerts_sent_total{{sink="{name}",severity="{sev}"}} {sent}')
        lines += [
            "# HELP openpod_alerts_failed_total Alert delivery attempts that failed, by sink.",
            "# TYPE openpod_alerts_failed_total counter",
        ]
        for name in names:
            lines.append(f'openpod_alerts_failed_total{{sink="{name}"}} {m.failed[name]}')
        lines += [
            "# HELP openpod_alerts_retried_total Alert delivery attempts made again after a failure.",
            "# TYPE openpod_alerts_retried_total counter",
            f"openpod_alerts_retried_total {m.retried}",
            "# HELP openpod_alerts_suppressed_total Alerts not sent: a duplicate within the window.",
            "# TYPE openpod_alerts_suppressed_total counter",
            f"openpod_alerts_suppressed_total {m.suppressed}",
            "# HELP openpod_alerts_dropped_total Alerts not sent to a sink, by sink and reason.",
            "# TYPE openpod_alerts_dropped_total counter",
        ]
        pairs = {(n, r) for n in names for r in DROP_REASONS} | set(m.dropped)
        for name, reason in sorted(pairs):
            dropped = m.dropped[(name, reason)]
            lines.append(
                f'openpod_alerts_dropped_total{{sink="{name}",reason="{reason}"}} {dropped}'
            )
        return "\n".join(lines) + "\n"
