"""The meter as a process (`python -m openpod.meter`) against a fake control plane.

Heartbeats every 0.2 s; the workload is a real `sleep` process this test started.
"""

from __future__ import annotations

import itertools
import signal
import time

from openpod.adapters.gpus import nvml
from tests.meter.conftest import HEARTBEAT, StartMeter, Workload
from tests.meter.plane import TOKEN, FakePlane


def _seqs(events: list[dict[str, object]]) -> list[int]:
    return [int(str(e["seq"])) for e in events]


def test_started_heartbeats_then_stopped_when_the_workload_exits(
    plane: FakePlane, workload: Workload, start_meter: StartMeter
) -> None:
    meter = start_meter()
    plane.wait(lambda p: len(p.stored) >= 3, 5, "started and two heartbeats")
    workload.end()
    assert meter.wait() == 0  # stopped acked: done
    kinds = plane.kinds()
    assert kinds[0] == "started"
    assert kinds[-1] == "stopped"
    assert set(kinds[1:-1]) == {"heartbeat"}
    events = [plane.stored[s] for s in sorted(plane.stored)]
    assert _seqs(events) == list(range(1, len(events) + 1))
    times = [float(str(e["at"])) for e in events]
    assert times == sorted(times)
    gaps = [b - a for a, b in itertools.pairwise(times[:-1])]
    assert all(0 < gap < 1.0 for gap in gaps), gaps
    assert HEARTBEAT * 0.5 < sum(gaps) / len(gaps) < HEARTBEAT * 2, gaps
    assert meter.acked() == len(events)
    assert "gpus" not in events[0]  # no --gpus: no samples
    assert TOKEN not in meter.log_text()


def test_every_event_is_journalled_before_it_is_sent(
    plane: FakePlane, workload: Workload, start_meter: StartMeter
) -> None:
    plane.ack = False  # a control plane that never answers
    meter = start_meter(linger=0.3)
    plane.journal = meter.journal / "events.jsonl"
    plane.wait(lambda p: len(p.on_disk_first) >= 3, 5, "three events")
    meter.proc.send_signal(signal.SIGTERM)
    assert meter.wait() == 0  # lingered 0.3 s for an ack that never came
    assert all(plane.on_disk_first)
    journalled = meter.events()
    assert journalled[-1]["kind"] == "stopped"
    assert _seqs(journalled) == list(range(1, len(journalled) + 1))
    assert meter.acked() == 0


def test_a_killed_meter_restarts_replays_and_continues_its_seq(
    plane: FakePlane, workload: Workload, start_meter: StartMeter
) -> None:
    plane.store_limit = 2  # events above 2 are lost on the way
    meter = start_meter()
    plane.wait(lambda p: len(p.received) >= 4, 5, "four events sent")
    meter.proc.kill()
    meter.wait()
    assert meter.acked() == 2
    before = meter.events()
    assert len(before) >= 4
    plane.store_limit = None
    restarted = start_meter()
    first_new = len(before) + 1
    plane.wait(lambda p: first_new in p.stored, 5, "the restarted meter's first event")
    assert plane.stored[first_new]["kind"] == "heartbeat"
    assert plane.seqs()[:first_new] == list(range(1, first_new + 1))  # the lost ones replayed
    workload.end()
    assert restarted.wait() == 0
    assert plane.kinds()[-1] == "stopped"
    sent = _seqs(plane.received)
    assert sent.count(1) == 1
    assert sent.count(2) == 1  # acked before the kill: never sent again
    assert all(sent.count(s) <= 2 for s in sent)


def test_a_meter_restarted_after_the_workload_ended_stops_at_the_last_seen_time(
    plane: FakePlane, workload: Workload, start_meter: StartMeter
) -> None:
    meter = start_meter()
    plane.wait(lambda p: len(p.stored) >= 2, 5, "two events")
    meter.proc.kill()
    meter.wait()
    workload.end()
    last = meter.events()[-1]
    assert start_meter().wait() == 0
    stopped = plane.stored[max(plane.stored)]
    assert stopped["kind"] == "stopped"
    assert stopped["seq"] == int(str(last["seq"])) + 1
    assert stopped["at"] == last["at"]  # time nobody observed is not billed


def test_sigterm_journals_stopped_and_leaves_the_workload_running(
    plane: FakePlane, workload: Workload, start_meter: StartMeter
) -> None:
    meter = start_meter()
    plane.wait(lambda p: len(p.stored) >= 1, 5, "started")
    meter.proc.send_signal(signal.SIGTERM)
    assert meter.wait() == 0
    assert plane.kinds()[-1] == "stopped"
    assert workload.proc.poll() is None


def test_a_refused_token_is_retried_with_backoff(
    plane: FakePlane, workload: Workload, start_meter: StartMeter
) -> None:
    wrong = "mt1.pod1.1.d3Jvbmc"
    meter = start_meter(token=wrong, linger=0.1)
    plane.wait(lambda p: len(p.refusals) >= 4, 8, "four refused connections")
    assert meter.proc.poll() is None  # refused, but still trying
    gaps = [b - a for a, b in itertools.pairwise(plane.refusals)]
    assert gaps[-1] > gaps[0]  # backing off: 0.2 s, 0.4 s, 0.8 s...
    meter.proc.send_signal(signal.SIGTERM)
    assert meter.wait() == 0
    log = meter.log_text()
    assert "invalid meter token" in log
    assert wrong not in log
    assert plane.stored == {}


def test_malformed_replies_and_dropped_connections_are_survived(
    plane: FakePlane, workload: Workload, start_meter: StartMeter
) -> None:
    plane.garbage = 1  # the first welcome is not JSON
    plane.drop_batches = 2  # the next two connections are cut after their first batch
    meter = start_meter("--gpus", "0")
    plane.wait(lambda p: len(p.stored) >= 4 and p.acked >= 4, 10, "events after the faults")
    workload.end()
    assert meter.wait() == 0
    assert plane.connections >= 4
    assert sorted(plane.stored) == list(range(1, len(plane.stored) + 1))
    assert "protocol error" in meter.log_text()
    if nvml.discover() is None:
        assert all("gpus" not in e for e in plane.stored.values())


def test_a_closed_run_ends_the_meter(
    plane: FakePlane, workload: Workload, start_meter: StartMeter
) -> None:
    first = start_meter()
    plane.wait(lambda p: len(p.stored) >= 1, 5, "started")
    workload.end()
    assert first.wait() == 0
    began = time.monotonic()
    again = start_meter()  # the run is closed: a restarted meter has nothing to do
    assert again.wait() == 0
    assert time.monotonic() - began < 5
    assert (first.journal / "done").exists()
