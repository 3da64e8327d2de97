"""Meter events in, usage out: idempotent ingestion, runs' usage, settlement cuts.

A run (pod, generation) gets its `pod_runs` row at its first event, priced from the pod as
it was placed (the rate is fixed at placement). Events are stored once by their primary key
and applied to the run's usage strictly in seq order (domain.metering.Usage); whatever order
or however often they arrive, the result is the same. The ack is the highest contiguous seq.

The hot path (`ingest`) uses SQLAlchemy Core and executemany: one transaction takes the
events of many meters at once (the API batches them: a group commit).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, insert, or_, select, tuple_, update
from sqlalchemy.orm import Session

from openpod.adapters.store import Node, Pod
from openpod.adapters.store.models import MeterEventRow, PodRun, Provider, Settlement, utcnow
from openpod.domain import ids
from openpod.domain.metering import EventKind, MeterEvent, Usage, price
from openpod.domain.settlement import SettlementStatus

TOKEN_PREFIX = "mt1"  # noqa: S105 - a format marker, not a secret
GRACE_HEARTBEATS = 3

RunKey = tuple[str, int]  # (pod id, generation)
# Core tables for executemany (an ORM update with a list of rows means "by primary key").
RUNS = cast(Table, PodRun.__table__)
EVENTS = cast(Table, MeterEventRow.__table__)


class InvalidMeterToken(Exception):
    """The bearer token is not a meter token this control plane issued."""


@dataclass(frozen=True)
class MeterConfig:
    secret: bytes  # derives every meter token; stored nowhere else
    heartbeat_s: float = 5.0
    clock_check: bool = True  # see ingest()

    @property
    def grace_ms(self) -> int:
        return round(GRACE_HEARTBEATS * self.heartbeat_s * 1000)


def _mac(secret: bytes, pod_id: str, generation: int) -> str:
    key = hmac.new(secret, b"openpod meter token v1", hashlib.sha256).digest()
    return hmac.new(key, f"{pod_id}.{generation}".encode(), hashlib.sha256).hexdigest()


def meter_token(secret: bytes, pod_id: str, generation: int) -> str:
    """The token a run's meter authenticates with: it names the run and proves we made it."""
    return f"{TOKEN_PREFIX}.{pod_id}.{generation}.{_mac(secret, pod_id, generation)}"


def verify_token(secret: bytes, token: str) -> RunKey:
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != TOKEN_PREFIX or not parts[2].isdigit():
        raise InvalidMeterToken("invalid meter token")
    pod_id, generation = parts[1], int(parts[2])
    if not hmac.compare_digest(parts[3], _mac(secret, pod_id, generation)):
        raise InvalidMeterToken("invalid meter token")
    return pod_id, generation


@dataclass
class Batch:
    """Events of one run as one message brought them (already parsed and sorted)."""

    run: RunKey
    events: list[MeterEvent]


@dataclass(frozen=True)
class Ack:
    acked: int
    closed: bool


@dataclass(frozen=True)
class IngestResult:
    acks: list[Ack]  # one per batch, in order
    stored: int  # events new to the store
    duplicates: int  # events already applied (replays, retries)


@dataclass
class _Run:
    usage: Usage
    max_seq: int
    was_closed: bool
    first_event_at: datetime | None = None
    new_events: list[MeterEvent] = field(default_factory=list)


_SELECT_RUNS = (
    'SELECT pod_id, generation, grace_ms, next_seq, max_seq, intervals, "open", closed, '
    "first_event_at FROM pod_runs WHERE pod_id IN ({marks})"
)


def _load_runs(session: Session, keys: Sequence[RunKey]) -> dict[RunKey, _Run]:
    """The usage so far of these runs (driver-level: this runs for every meter message)."""
    runs: dict[RunKey, _Run] = {}
    wanted = set(keys)
    pod_ids = sorted({pod_id for pod_id, _ in keys})
    connection = session.connection()
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    for chunk_start in range(0, len(pod_ids), 500):
        # By pod id alone (a simpler statement than pairs); other runs of a pod are skipped.
        chunk = pod_ids[chunk_start : chunk_start + 500]
        sql = _SELECT_RUNS.format(marks=", ".join([mark] * len(chunk)))
        rows = connection.exec_driver_sql(sql, tuple(chunk))
        for pod_id, generation, grace, next_seq, max_seq, intervals, open_, closed, first in rows:
            if (pod_id, generation) not in wanted:
                continue
            if isinstance(intervals, str):  # SQLite hands JSON and datetimes back as text
                intervals = json.loads(intervals)
            if isinstance(first, str):
                first = datetime.fromisoformat(first).replace(tzinfo=UTC)
            usage = Usage(grace, next_seq, intervals, bool(open_), bool(closed))
            runs[(pod_id, generation)] = _Run(usage, max_seq, bool(closed), first)
    return runs


def _open_runs(session: Session, keys: Iterable[RunKey], grace_ms: int) -> dict[RunKey, _Run]:
    """Rows for runs meeting their first event: priced from the pod as placed. A run the pod
    has moved on from (or never had) gets none: its events are acknowledged, never billed."""
    wanted = {pod_id: generation for pod_id, generation in keys}
    if not wanted:
        return {}
    query = (
        select(Pod, Node.provider_id, Provider.payout_wallet)
        .join(Node, Node.id == Pod.node_id)
        .join(Provider, Provider.id == Node.provider_id)
        .where(Pod.id.in_(list(wanted)))
    )
    rows = []
    created: dict[RunKey, _Run] = {}
    for pod, provider_id, wallet in session.execute(query):
        generation = wanted[pod.id]
        if pod.generation != generation or pod.node_id is None:
            continue
        row = {
            "pod_id": pod.id,
            "generation": generation,
            "account_id": pod.account_id,
            "provider_id": provider_id,
            "payout_wallet": wallet,
            "node_id": pod.node_id,
            "gpu_type_id": pod.gpu_type_id,
            "gpu_count": pod.gpu_count,
            "rate_per_second": pod.rate_per_second,
            "grace_ms": grace_ms,
            "next_seq": 1,
            "max_seq": 0,
            "intervals": [],
            "billable_ms": 0,
            "open_": False,
            "closed": False,
            "billed_seconds": 0,
            "created_at": utcnow(),
        }
        rows.append(row)
        created[(pod.id, generation)] = _Run(Usage(grace_ms=grace_ms), 0, False)
    if rows:
        session.execute(insert(PodRun), rows)
    return created


# The two statements every meter message runs, at the driver level (executemany of tuples):
# SQLAlchemy's per-row parameter processing cost more than the database did (bench/metering.py).
_INSERT_EVENTS = (
    "INSERT INTO meter_events (pod_id, generation, seq, kind, at_ms, gpus, received_at) "
    "VALUES ({p}, {p}, {p}, {p}, {p}, {json}, {p}) ON CONFLICT DO NOTHING"
)
_UPDATE_RUN = (
    "UPDATE pod_runs SET next_seq = {p}, max_seq = {p}, intervals = {json}, billable_ms = {p}, "
    '"open" = {p}, closed = {p}, first_event_at = COALESCE(first_event_at, {p}), '
    "last_event_at = {p}, closed_at = {p} "
    "WHERE pod_id = {p} AND generation = {p}"
)


def _driver_sql(session: Session, template: str) -> str:
    """The statement in the driver's paramstyle (JSON cast where PostgreSQL needs it)."""
    dialect = session.get_bind().dialect
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    json_mark = mark if dialect.name == "sqlite" else f"CAST({mark} AS JSON)"
    return template.format(p=mark, json=json_mark)


def _when(value: datetime | None, sqlite_text: bool) -> datetime | str | None:
    """A datetime as the UTCDateTime column stores it (SQLite keeps naive UTC text)."""
    if value is None or not sqlite_text:
        return value
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _insert_ignoring_duplicates(session: Session, rows: list[tuple[Any, ...]]) -> None:
    if rows:
        sql = _driver_sql(session, _INSERT_EVENTS)
        session.connection().exec_driver_sql(sql, rows)


def _stored_after(session: Session, key: RunKey, after_seq: int) -> list[MeterEvent]:
    query = (
        select(MeterEventRow.seq, MeterEventRow.kind, MeterEventRow.at_ms)
        .where(
            MeterEventRow.pod_id == key[0],
            MeterEventRow.generation == key[1],
            MeterEventRow.seq > after_seq,
        )
        .order_by(MeterEventRow.seq)
    )
    return [MeterEvent(r.seq, EventKind(r.kind), r.at_ms) for r in session.execute(query)]


def ingest(
    session: Session, batches: Sequence[Batch], grace_ms: int, *, clock_check: bool = False
) -> IngestResult:
    """Store and apply the events of many runs in this transaction; one Ack per batch.

    With `clock_check` a run is never billed more than the time since its first event reached
    us, plus the grace: a node whose clock runs fast (or a meter that lies about its times)
    cannot bill hours in minutes. Off for tests that play hours of events in a second."""
    now = utcnow()
    keys = list(dict.fromkeys(batch.run for batch in batches))
    runs = _load_runs(session, keys)
    runs.update(_open_runs(session, (k for k in keys if k not in runs), grace_ms))
    event_rows: list[tuple[Any, ...]] = []
    received = _when(now, session.get_bind().dialect.name == "sqlite")
    for batch in batches:
        run = runs.get(batch.run)
        if run is None:
            continue
        for event in batch.events:
            if event.seq < run.usage.next_seq:
                continue  # stored and applied already
            run.new_events.append(event)
            gpus = json.dumps([s.__dict__ for s in event.gpus]) if event.gpus else "[]"
            event_rows.append(
                (batch.run[0], batch.run[1], event.seq, event.kind.value, event.at_ms, gpus,
                 received)
            )  # fmt: skip
    _insert_ignoring_duplicates(session, event_rows)
    changed: list[tuple[RunKey, _Run]] = []
    for key, run in runs.items():
        if not run.new_events:
            continue
        usage = run.usage
        pending = {event.seq: event for event in run.new_events}
        run.max_seq = max(run.max_seq, *pending)
        while usage.next_seq in pending:
            usage.apply(pending.pop(usage.next_seq))
        if run.max_seq >= usage.next_seq:  # events that came early wait in the store
            for event in _stored_after(session, key, usage.next_seq - 1):
                if event.seq != usage.next_seq:
                    break
                usage.apply(event)
        changed.append((key, run))
    if changed:
        sql = _driver_sql(session, _UPDATE_RUN)
        rows = [
            (run.usage.next_seq, run.max_seq, json.dumps(run.usage.intervals),
             _billable(run, now, clock_check), run.usage.open_, run.usage.closed, received,
             received, received if run.usage.closed else None, key[0], key[1])
            for key, run in changed
        ]  # fmt: skip
        session.connection().exec_driver_sql(sql, rows)
        just_closed = [key for key, run in changed if run.usage.closed and not run.was_closed]
        if just_closed:
            cut(session, only=just_closed)
    acks = []
    for batch in batches:
        run = runs.get(batch.run)
        if run is None:
            acks.append(Ack(max((e.seq for e in batch.events), default=0), True))
        else:
            acks.append(Ack(run.usage.acked, run.usage.closed))
    total = sum(len(batch.events) for batch in batches)
    return IngestResult(acks, len(event_rows), total - len(event_rows))


def _billable(run: _Run, now: datetime, clock_check: bool) -> int:
    if not clock_check:
        return run.usage.billable_ms
    elapsed = (
        0 if run.first_event_at is None else (now - run.first_event_at) / timedelta(milliseconds=1)
    )
    return min(run.usage.billable_ms, int(elapsed) + run.usage.grace_ms)


def welcome(session: Session, key: RunKey) -> Ack:
    """Where a (re)connecting meter resumes: the run's ack, or 0 for a run not seen yet."""
    row = session.execute(
        select(PodRun.next_seq, PodRun.closed).where(
            PodRun.pod_id == key[0], PodRun.generation == key[1]
        )
    ).first()
    if row is None:
        pod = session.get(Pod, key[0])
        return Ack(0, pod is None or pod.generation != key[1])
    return Ack(row.next_seq - 1, row.closed)


def close_run(session: Session, key: RunKey, at_ms: int | None) -> bool:
    """The node reports the run's workload gone (at `at_ms`, node clock, when known): close
    its usage there and cut what is left. False when there is no open run to close."""
    run = session.get(PodRun, key, with_for_update=True)
    if run is None or run.closed:
        return False
    usage = Usage(
        grace_ms=run.grace_ms,
        next_seq=run.next_seq,
        intervals=[list(pair) for pair in run.intervals],
        open_=run.open_,
        closed=run.closed,
    )
    usage.close(at_ms)
    run.intervals = usage.intervals
    # Closing extends the last interval by at most the grace; what was capped stays capped.
    run.billable_ms = min(usage.billable_ms, run.billable_ms + run.grace_ms)
    run.open_ = False
    run.closed = True
    run.closed_at = utcnow()
    session.flush()
    cut(session, only=[key])
    return True


def cut(session: Session, *, only: Sequence[RunKey] | None = None) -> list[str]:
    """Turn every run's unsettled whole seconds into one PENDING settlement each, moving its
    watermark in the same transaction. A concurrent cut of the same run fails the unique
    (pod, generation, from_second) constraint or the watermark check, never cuts twice."""
    query = select(
        PodRun.pod_id,
        PodRun.generation,
        PodRun.account_id,
        PodRun.provider_id,
        PodRun.payout_wallet,
        PodRun.gpu_type_id,
        PodRun.gpu_count,
        PodRun.rate_per_second,
        PodRun.billable_ms,
        PodRun.billed_seconds,
    ).where(PodRun.billable_ms / 1000 > PodRun.billed_seconds)
    if only is not None:
        if not only:
            return []
        query = query.where(tuple_(PodRun.pod_id, PodRun.generation).in_(list(only)))
    now = utcnow()
    settlements, watermarks = [], []
    for row in session.execute(query):
        total = row.billable_ms // 1000
        seconds = total - row.billed_seconds
        if seconds <= 0:
            continue
        settlements.append(
            {
                "id": ids.new_id("st"),
                "pod_id": row.pod_id,
                "generation": row.generation,
                "account_id": row.account_id,
                "provider_id": row.provider_id,
                "payout_wallet": row.payout_wallet,
                "gpu_type_id": row.gpu_type_id,
                "gpu_count": row.gpu_count,
                "rate_per_second": row.rate_per_second,
                "from_second": row.billed_seconds,
                "seconds": seconds,
                "amount": price(seconds, row.gpu_count, row.rate_per_second),
                "status": SettlementStatus.PENDING.value,
                "created_at": now,
                "updated_at": now,
            }
        )
        watermarks.append(
            {
                "k_pod": row.pod_id,
                "k_gen": row.generation,
                "k_old": row.billed_seconds,
                "v_new": total,
            }
        )
    if not settlements:
        return []
    session.execute(insert(Settlement), settlements)
    result = session.execute(
        update(RUNS)
        .where(
            and_(
                RUNS.c.pod_id == bindparam("k_pod"),
                RUNS.c.generation == bindparam("k_gen"),
                RUNS.c.billed_seconds == bindparam("k_old"),
            )
        )
        .values(billed_seconds=bindparam("v_new")),
        watermarks,
    )
    moved = getattr(result, "rowcount", -1)
    if moved not in (-1, len(watermarks)):
        raise RuntimeError("a run's watermark moved under the cut: retry it")
    return [s["id"] for s in settlements]


def stale_runs(session: Session, older_than: datetime) -> list[RunKey]:
    """Open runs whose meter has been silent since `older_than` (control plane clock)."""
    query = select(PodRun.pod_id, PodRun.generation).where(
        PodRun.closed.is_(False),
        PodRun.open_.is_(True),
        or_(PodRun.last_event_at.is_(None), PodRun.last_event_at < older_than),
    )
    return [(r.pod_id, r.generation) for r in session.execute(query)]
