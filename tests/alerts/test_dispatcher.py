"""The alert dispatcher on in-memory sinks: de-duplication, rate limit, queues, retries, metrics."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import pytest

from openpod.adapters.alerts import SinkError
from openpod.domain.alerts import Alert, InvalidAlert, Severity
from openpod.services.alerts import Alerts, backoff_s


class FakeSink:
    """Records what it is sent; fails the first `failures` attempts; waits for `gate` if set."""

    def __init__(self, name: str = "fake", failures: int = 0, error: Exception | None = None):
        self.name = name
        self.sent: list[Alert] = []
        self.attempts = 0
        self.failures = failures
        self.error = error or SinkError(f"{name}: down (https://hooks.example/SECRET)")
        self.gate: asyncio.Event | None = None
        self.got = asyncio.Event()

    async def send(self, alert: Alert) -> None:
        self.attempts += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.attempts <= self.failures:
            raise self.error
        self.sent.append(alert)
        self.got.set()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def alert(
    key: str = "hot-wallet:balance-floor", sev: Severity = Severity.WARNING, resolved: bool = False
) -> Alert:
    return Alert(key=key, severity=sev, title=f"{key} {sev}", text="detail", resolved=resolved)


def test_alert_summary_body_and_validation() -> None:
    a = Alert("k", Severity.CRITICAL, "Hot wallet low", "below floor", fields=(("balance", "1"),))
    assert a.summary() == "[CRITICAL] Hot wallet low"
    assert Alert("k", Severity.CRITICAL, "t", "x", resolved=True).summary() == "[RESOLVED] t"
    assert a.body() == "below floor\nbalance: 1"
    assert a.at.tzinfo is not None
    with pytest.raises(InvalidAlert):
        Alert("k", Severity.INFO, "two\nlines", "x")
    with pytest.raises(InvalidAlert):
        Alert(" ", Severity.INFO, "t", "x")
    with pytest.raises(InvalidAlert):
        Alert("k", Severity.INFO, "t", "x", at=datetime(2026, 1, 1))


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_s(n, 1.0, 5.0) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_sink_names_must_be_distinct_and_plain() -> None:
    with pytest.raises(ValueError, match="distinct"):
        Alerts([FakeSink("a"), FakeSink("a")])
    with pytest.raises(ValueError, match="plain"):
        Alerts([FakeSink('we"bhook')])


async def test_dedupe_suppresses_repeats_and_passes_state_changes() -> None:
    sink, clock = FakeSink(), Clock()
    alerts = Alerts([sink], dedupe_s=300, clock=clock)
    await alerts.start()
    assert alerts.submit(alert()) is True
    assert alerts.submit(alert()) is False  # same key, still firing
    assert alerts.submit(alert(resolved=True)) is True
    assert alerts.submit(alert(resolved=True)) is False
    assert alerts.submit(alert()) is True  # firing again after resolved
    clock.now += 301
    assert alerts.submit(alert()) is True  # reminder once the window is over
    assert alerts.submit(alert(key="other")) is True
    assert alerts.submit(alert(key="other", sev=Severity.INFO)) is False  # not worse
    assert alerts.submit(alert(key="other", sev=Severity.CRITICAL)) is True  # escalated
    assert alerts.submit(alert(key="other", sev=Severity.WARNING)) is False
    await alerts.idle()
    assert [(a.key, a.resolved) for a in sink.sent] == [
        ("hot-wallet:balance-floor", False),
        ("hot-wallet:balance-floor", True),
        ("hot-wallet:balance-floor", False),
        ("hot-wallet:balance-floor", False),
        ("other", False),
        ("other", False),
    ]
    assert sink.sent[-1].severity is Severity.CRITICAL
    assert alerts.metrics.suppressed == 4
    await alerts.stop()


async def test_rate_limit_drops_warnings_but_never_critical() -> None:
    sink, clock = FakeSink(), Clock()
    alerts = Alerts([sink], rate_per_minute=3, clock=clock)
    await alerts.start()
    accepted = [alerts.submit(alert(key=f"w{i}")) for i in range(5)]
    assert accepted == [True, True, True, False, False]
    assert alerts.submit(alert(key="c1", sev=Severity.CRITICAL)) is True
    assert alerts.submit(alert(key="c2", sev=Severity.CRITICAL)) is True
    clock.now += 20  # one token back (3 per minute)
    assert alerts.submit(alert(key="w5")) is True
    assert alerts.submit(alert(key="w6")) is False
    await alerts.idle()
    assert [a.key for a in sink.sent] == ["w0", "w1", "w2", "c1", "c2", "w5"]
    assert alerts.metrics.dropped[("fake", "rate_limited")] == 3
    await alerts.stop()


async def test_dropped_by_rate_limit_is_not_remembered_for_dedupe() -> None:
    sink, clock = FakeSink(), Clock()
    alerts = Alerts([sink], rate_per_minute=1, clock=clock)
    await alerts.start()
    assert alerts.submit(alert(key="a")) is True
    assert alerts.submit(alert(key="b")) is False  # rate-limited
    clock.now += 60
    assert alerts.submit(alert(key="b")) is True  # not suppressed as a duplicate
    await alerts.idle()
    assert [a.key for a in sink.sent] == ["a", "b"]
    assert alerts.metrics.suppressed == 0
    await alerts.stop()


async def test_queue_full_drops_the_oldest_non_critical() -> None:
    sink = FakeSink()
    alerts = Alerts([sink], queue_size=2)
    # Not started yet: the queue fills up.
    assert alerts.submit(alert(key="w1")) is True
    assert alerts.submit(alert(key="c1", sev=Severity.CRITICAL)) is True
    assert alerts.submit(alert(key="i1", sev=Severity.INFO)) is True  # w1 gives way
    assert alerts.submit(alert(key="c2", sev=Severity.CRITICAL)) is True  # i1 gives way
    assert alerts.submit(alert(key="w2")) is False  # only CRITICAL queued: w2 gives way
    assert alerts.submit(alert(key="c3", sev=Severity.CRITICAL)) is True  # c1, the oldest
    await alerts.start()
    await alerts.idle()
    assert [a.key for a in sink.sent] == ["c2", "c3"]
    assert alerts.metrics.dropped[("fake", "queue_full")] == 4
    await alerts.stop()


async def test_a_stuck_sink_blocks_neither_submit_nor_other_sinks() -> None:
    stuck, fast = FakeSink("stuck"), FakeSink("fast")
    stuck.gate = asyncio.Event()
    alerts = Alerts([stuck, fast])
    await alerts.start()
    assert alerts.submit(alert(key="a", sev=Severity.CRITICAL)) is True
    assert alerts.submit(alert(key="b", sev=Severity.CRITICAL)) is True
    await asyncio.wait_for(fast.got.wait(), 5)
    while len(fast.sent) < 2:
        fast.got.clear()
        await asyncio.wait_for(fast.got.wait(), 5)
    assert stuck.sent == []
    stuck.gate.set()
    await asyncio.wait_for(alerts.idle(), 5)
    assert [a.key for a in stuck.sent] == ["a", "b"]
    await alerts.stop()


async def test_failed_sends_are_retried_then_given_up(caplog: pytest.LogCaptureFixture) -> None:
    flaky, dead = FakeSink("flaky", failures=2), FakeSink("dead", failures=99)
    alerts = Alerts([flaky, dead], retry_first_s=0.001, retry_max_s=0.004, max_attempts=4)
    await alerts.start()
    with caplog.at_level(logging.WARNING, logger="openpod.alerts"):
        alerts.submit(alert(sev=Severity.CRITICAL))
        await asyncio.wait_for(alerts.idle(), 5)
    m = alerts.metrics
    assert len(flaky.sent) == 1 and flaky.attempts == 3
    assert dead.sent == [] and dead.attempts == 4
    assert m.failed == {"flaky": 2, "dead": 4}
    assert m.retried == 2 + 3
    assert m.sent[("flaky", "CRITICAL")] == 1
    assert m.dropped[("dead", "gave_up")] == 1
    assert "gave up sending alert hot-wallet:balance-floor to dead after 4 attempts" in caplog.text
    await alerts.stop()


async def test_oserror_is_retried_and_logged_by_type_only(caplog: pytest.LogCaptureFixture) -> None:
    sink = FakeSink(failures=1, error=ConnectionRefusedError("to https://hooks.example/SECRET"))
    alerts = Alerts([sink], retry_first_s=0.001)
    await alerts.start()
    with caplog.at_level(logging.WARNING, logger="openpod.alerts"):
        alerts.submit(alert())
        await asyncio.wait_for(alerts.idle(), 5)
    assert len(sink.sent) == 1
    assert "ConnectionRefusedError" in caplog.text
    assert "SECRET" not in caplog.text
    await alerts.stop()


async def test_a_sink_breaking_its_contract_loses_one_alert_only() -> None:
    sink = FakeSink(failures=1, error=ValueError("bug"))
    alerts = Alerts([sink])
    await alerts.start()
    alerts.submit(alert(key="a"))
    await asyncio.wait_for(alerts.idle(), 5)
    alerts.submit(alert(key="b"))
    await asyncio.wait_for(alerts.idle(), 5)
    assert [a.key for a in sink.sent] == ["b"]
    assert alerts.metrics.dropped[("fake", "sink_error")] == 1
    await alerts.stop()


async def test_submit_threadsafe_from_a_worker_thread() -> None:
    sink = FakeSink()
    alerts = Alerts([sink])
    await alerts.start()
    await asyncio.to_thread(alerts.submit_threadsafe, alert(key="from-thread"))
    await asyncio.wait_for(sink.got.wait(), 5)
    assert [a.key for a in sink.sent] == ["from-thread"]
    await alerts.stop()


async def test_stop_drains_then_cancels_and_refuses_new_alerts() -> None:
    ok, stuck = FakeSink("ok"), FakeSink("stuck")
    stuck.gate = asyncio.Event()
    alerts = Alerts([ok, stuck])
    await alerts.start()
    alerts.submit(alert(key="a"))
    alerts.submit(alert(key="b"))
    await alerts.stop(drain_s=0.2)
    assert [a.key for a in ok.sent] == ["a", "b"]
    assert alerts.metrics.dropped[("stuck", "shutdown")] == 2  # one in hand, one queued
    assert alerts.submit(alert(key="c")) is False
    assert [a.key for a in ok.sent] == ["a", "b"]


async def test_prometheus_text() -> None:
    ok, dead = FakeSink("ok"), FakeSink("dead", failures=99)
    clock = Clock()
    alerts = Alerts([ok, dead], rate_per_minute=1, max_attempts=2, retry_first_s=0.001, clock=clock)
    await alerts.start()
    alerts.submit(alert(key="a", sev=Severity.CRITICAL))
    alerts.submit(alert(key="a", sev=Severity.CRITICAL))  # duplicate
    alerts.submit(alert(key="b"))  # over the rate
    await asyncio.wait_for(alerts.idle(), 5)
    await alerts.stop()
    text = alerts.prometheus()
    lines = set(text.splitlines())
    for line in [
        "# TYPE openpod_alerts_sent_total counter",
        'openpod_alerts_sent_total{sink="ok",severity="CRITICAL"} 1',
        'openpod_alerts_sent_total{sink="ok",severity="WARNING"} 0',
        'openpod_alerts_sent_total{sink="dead",severity="CRITICAL"} 0',
        "# TYPE openpod_alerts_failed_total counter",
        'openpod_alerts_failed_total{sink="dead"} 2',
        'openpod_alerts_failed_total{sink="ok"} 0',
        "openpod_alerts_retried_total 1",
        "# TYPE openpod_alerts_suppressed_total counter",
        "openpod_alerts_suppressed_total 1",
        "# TYPE openpod_alerts_dropped_total counter",
        'openpod_alerts_dropped_total{sink="dead",reason="gave_up"} 1',
        'openpod_alerts_dropped_total{sink="ok",reason="rate_limited"} 1',
        'openpod_alerts_dropped_total{sink="dead",reason="rate_limited"} 1',
        'openpod_alerts_dropped_total{sink="ok",reason="queue_full"} 0',
    ]:
        assert line in lines, line
    assert text.endswith("\n")
    assert all(line.startswith(("# HELP ", "# TYPE ", "openpod_alerts_")) for line in lines)
