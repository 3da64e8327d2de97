"""Metering on both backends: ingestion, usage, settlement cuts (services.metering)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from openpod.adapters.store import Account, Database
from openpod.adapters.store.models import MeterEventRow, PodRun, Settlement
from openpod.domain.metering import EventKind, MeterEvent
from openpod.services import metering, pods
from tests.store.test_store import _request, _setup

GRACE_MS = 15_000
T0 = 1_764_140_000_000  # ms, the node's clock
RATE = 3 * 10**15  # the seeded H100 rate per GPU-second, base units


def _pod(db: Database, gpu_count: int = 2) -> tuple[str, int]:
    user_id, _ = _setup(db)
    with db.transaction() as s:
        user = s.get(Account, user_id)
        assert user is not None
        pod = pods.create_pod(s, user, _request(gpu_count=gpu_count))
        return pod.id, pod.rate_per_second


def _run(pod_id: str, seconds: list[float], *, first_seq: int = 1) -> metering.Batch:
    events = []
    for i, at in enumerate(seconds):
        seq = first_seq + i
        kind = EventKind.STARTED if seq == 1 else EventKind.HEARTBEAT
        events.append(MeterEvent(seq, kind, T0 + round(at * 1000)))
    return metering.Batch((pod_id, 1), events)


def _ingest(db: Database, *batches: metering.Batch) -> list[metering.Ack]:
    with db.transaction() as s:
        return metering.ingest(s, list(batches), GRACE_MS).acks


def _settled(db: Database, pod_id: str) -> tuple[int, int, int]:
    """(settlements, Σ seconds, Σ amount) of the pod."""
    with db.transaction(readonly=True) as s:
        rows = s.scalars(select(Settlement).where(Settlement.pod_id == pod_id)).all()
        return len(rows), sum(r.seconds for r in rows), sum(r.amount for r in rows)


def test_a_run_of_3601_seconds_costs_exactly_3601_rate_gpus(db: Database) -> None:
    pod_id, rate = _pod(db, gpu_count=2)
    beats = [5.0 * i for i in range(721)] + [3601.0]  # 0, 5, ..., 3600, 3601
    for start in range(0, len(beats), 100):
        _ingest(db, _run(pod_id, beats[start : start + 100], first_seq=start + 1))
    stop = metering.Batch(
        (pod_id, 1), [MeterEvent(len(beats) + 1, EventKind.STOPPED, T0 + 3_601_000)]
    )
    acks = _ingest(db, stop)
    assert acks == [metering.Ack(len(beats) + 1, True)]
    count, seconds, amount = _settled(db, pod_id)
    assert seconds == 3601
    assert amount == 3601 * rate * 2
    assert count == 1  # cut once, at the close


def test_duplicates_and_replays_change_nothing(db: Database) -> None:
    pod_id, _ = _pod(db)
    batch = _run(pod_id, [0, 5, 10])
    assert _ingest(db, batch) == [metering.Ack(3, False)]
    assert _ingest(db, batch, batch) == [metering.Ack(3, False), metering.Ack(3, False)]
    with db.transaction(readonly=True) as s:
        run = s.get(PodRun, (pod_id, 1))
        assert run is not None
        assert (run.billable_ms, run.next_seq) == (10_000, 4)
        assert s.scalar(select(func.count()).select_from(MeterEventRow)) == 3


def test_early_events_wait_for_the_gap_to_fill(db: Database) -> None:
    pod_id, _ = _pod(db)
    _ingest(db, _run(pod_id, [0, 5]))
    assert _ingest(db, _run(pod_id, [15, 20], first_seq=4)) == [metering.Ack(2, False)]
    with db.transaction(readonly=True) as s:
        assert s.get(PodRun, (pod_id, 1)).billable_ms == 5_000  # type: ignore[union-attr]
    assert _ingest(db, _run(pod_id, [10], first_seq=3)) == [metering.Ack(5, False)]
    with db.transaction(readonly=True) as s:
        assert s.get(PodRun, (pod_id, 1)).billable_ms == 20_000  # type: ignore[union-attr]


@pytest.mark.parametrize("skew_s", [-45.0, 0.0, 38.5])
def test_a_skewed_node_clock_bills_the_same(db: Database, skew_s: float) -> None:
    pod_id, _ = _pod(db)
    _ingest(db, _run(pod_id, [skew_s + 5 * i for i in range(13)]))
    with db.transaction(readonly=True) as s:
        assert s.get(PodRun, (pod_id, 1)).billable_ms == 60_000  # type: ignore[union-attr]


def test_a_silent_gap_is_not_billed(db: Database) -> None:
    pod_id, _ = _pod(db)
    _ingest(db, _run(pod_id, [0, 5, 10, 100, 105]))  # 10 -> 100: nobody observed it
    with db.transaction(readonly=True) as s:
        run = s.get(PodRun, (pod_id, 1))
        assert run is not None
        assert run.billable_ms == 15_000
        assert run.intervals == [[T0, T0 + 10_000], [T0 + 100_000, T0 + 105_000]]


def test_the_nodes_exit_report_closes_the_run_within_the_grace(db: Database) -> None:
    pod_id, _ = _pod(db)
    _ingest(db, _run(pod_id, [0, 5, 10]))
    with db.transaction() as s:
        assert metering.close_run(s, (pod_id, 1), T0 + 12_500)
        assert not metering.close_run(s, (pod_id, 1), T0 + 99_000)  # once
    assert _settled(db, pod_id)[1] == 12
    assert _ingest(db, _run(pod_id, [15, 20], first_seq=4)) == [metering.Ack(5, True)]
    assert _settled(db, pod_id)[1] == 12  # late events of a closed run bill nothing


def test_cuts_are_periodic_and_never_twice(db: Database) -> None:
    pod_id, rate = _pod(db, gpu_count=1)
    _ingest(db, _run(pod_id, [0, 5, 10.7]))
    with db.transaction() as s:
        assert len(metering.cut(s)) == 1
    with db.transaction() as s:
        assert metering.cut(s) == []  # nothing new
    _ingest(db, _run(pod_id, [15.2, 20], first_seq=4))
    with db.transaction() as s:
        assert len(metering.cut(s)) == 1
    count, seconds, amount = _settled(db, pod_id)
    assert (count, seconds, amount) == (2, 20, 20 * rate)
    with db.transaction(readonly=True) as s:
        froms = sorted(s.scalars(select(Settlement.from_second)).all())
        assert froms == [0, 10]


def test_events_of_a_run_the_pod_moved_on_from_are_acked_not_billed(db: Database) -> None:
    pod_id, _ = _pod(db)
    stale = metering.Batch((pod_id, 7), [MeterEvent(1, EventKind.STARTED, T0)])
    assert _ingest(db, stale) == [metering.Ack(1, True)]
    with db.transaction(readonly=True) as s:
        assert s.get(PodRun, (pod_id, 7)) is None


def test_meter_tokens_name_their_run_and_cannot_be_forged() -> None:
    token = metering.meter_token(b"k" * 32, "abc123", 4)
    assert metering.verify_token(b"k" * 32, token) == ("abc123", 4)
    for bad in (
        token[:-1] + ("0" if token[-1] != "0" else "1"),
        token.replace(".4.", ".5."),
        metering.meter_token(b"x" * 32, "abc123", 4),
        "mt1.abc123.4",
        "",
    ):
        with pytest.raises(metering.InvalidMeterToken):
            metering.verify_token(b"k" * 32, bad)


def test_a_meter_claiming_more_time_than_passed_bills_only_what_we_saw(db: Database) -> None:
    pod_id, _ = _pod(db, gpu_count=1)
    hour = _run(pod_id, [5.0 * i for i in range(721)])  # an hour of heartbeats, sent at once
    with db.transaction() as s:
        metering.ingest(s, [hour], GRACE_MS, clock_check=True)
    with db.transaction(readonly=True) as s:
        run = s.get(PodRun, (pod_id, 1))
        assert run is not None
        assert run.intervals == [[T0, T0 + 3_600_000]]  # what it claimed is kept...
        assert run.billable_ms <= GRACE_MS + 1_000  # ...but not billed beyond what passed here
        first = run.first_event_at
        assert first is not None
    with db.transaction() as s:  # ten minutes later (the control plane's clock, injected)
        s.execute(update(PodRun).values(first_event_at=first - timedelta(minutes=10)))
        metering.ingest(s, [_run(pod_id, [3605.0], first_seq=722)], GRACE_MS, clock_check=True)
    with db.transaction(readonly=True) as s:
        run = s.get(PodRun, (pod_id, 1))
        assert run is not None
        assert 600_000 <= run.billable_ms <= 600_000 + GRACE_MS + 1_000
    with db.transaction() as s:
        metering.close_run(s, (pod_id, 1), T0 + 3_610_000)
    assert _settled(db, pod_id)[1] <= 600 + 2 * GRACE_MS // 1000 + 1  # a close adds <= grace
