"""Meters' connections in, one database transaction out: the group commit of meter events.

Every connected meter hands its parsed batch to `submit` and awaits its ack; one writer task
takes whatever has queued up (up to MAX_GROUP batches), ingests it all in one transaction on a
worker thread, and answers each. Under load this turns thousands of small writes per second
into a few large ones; with one meter it costs one transaction per message, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy.orm import Session

from openpod.adapters.store import Database
from openpod.services import metering

log = logging.getLogger("openpod.meter")
MAX_GROUP = 2000
T = TypeVar("T")


@dataclass
class MeterMetrics:
    """Counters exported at GET /metrics."""

    events_accepted: int = 0  # stored for the first time
    events_duplicate: int = 0  # seen before (replays, retries)
    batches: int = 0
    commits: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # by reason
    connected: int = 0
    settlement_rounds: int = 0  # rounds of services.billing_round completed

    def prometheus(self) -> str:
        lines = [
            "# HELP openpod_meter_events_total Meter events received, by outcome.",
            "# TYPE openpod_meter_events_total counter",
            f'openpod_meter_events_total{{outcome="accepted"}} {self.events_accepted}',
            f'openpod_meter_events_total{{outcome="duplicate"}} {self.events_duplicate}',
            "# HELP openpod_meter_refused_total Meter messages or connections refused, by reason.",
            "# TYPE openpod_meter_refused_total counter",
        ]
        for reason in sorted({"invalid_token", "malformed"} | set(self.refused)):
            lines.append(f'openpod_meter_refused_total{{reason="{reason}"}} {self.refused[reason]}')
        lines += [
            "# HELP openpod_meter_commits_total Transactions that stored meter events.",
            "# TYPE openpod_meter_commits_total counter",
            f"openpod_meter_commits_total {self.commits}",
            "# HELP openpod_settlement_rounds_total Settlement rounds completed.",
            "# TYPE openpod_settlement_rounds_total counter",
            f"openpod_settlement_rounds_total {self.settlement_rounds}",
            "# HELP openpod_meter_connections Meters connected now.",
            "# TYPE openpod_meter_connections gauge",
            f"openpod_meter_connections {self.connected}",
        ]
        return "\n".join(lines) + "\n"


@dataclass
class _Pending:
    batch: metering.Batch
    done: asyncio.Future[metering.Ack]


class MeterHub:
    def __init__(self, db: Database, config: metering.MeterConfig) -> None:
        self.db = db
        self.config = config
        self.metrics = MeterMetrics()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._writer: asyncio.Task[None] | None = None

    async def run_db(self, fn: Callable[[Session], T], *, readonly: bool = False) -> T:
        return await self.db.run(fn, readonly=readonly)

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._writer = asyncio.create_task(self._write_loop(), name="meter-writer")

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None

    def token_for(self, pod_id: str, generation: int) -> str:
        return metering.meter_token(self.config.secret, pod_id, generation)

    def authenticate(self, authorization: str | None) -> metering.RunKey:
        """The run a meter's `Authorization: Bearer` header names, or InvalidMeterToken."""
        scheme, _, token = (authorization or "").partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise metering.InvalidMeterToken("invalid meter token")
            return metering.verify_token(self.config.secret, token.strip())
        except metering.InvalidMeterToken:
            self.metrics.refused["invalid_token"] += 1
            raise

    async def welcome(self, run: metering.RunKey) -> metering.Ack:
        return await self.run_db(lambda s: metering.welcome(s, run), readonly=True)

    async def submit(self, batch: metering.Batch) -> metering.Ack:
        """Store and apply one message's events; returns once they are committed."""
        if self._queue is None:
            raise RuntimeError("MeterHub.start() was not called")
        done: asyncio.Future[metering.Ack] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(batch, done))
        return await done

    async def _write_loop(self) -> None:
        assert self._queue is not None
        while True:
            group = [await self._queue.get()]
            while len(group) < MAX_GROUP and not self._queue.empty():
                group.append(self._queue.get_nowait())
            try:
                acks = await asyncio.to_thread(self._commit, [p.batch for p in group])
            except Exception as error:  # noqa: BLE001 - each waiter gets the failure
                log.warning("storing %d meter messages failed: %s", len(group), error)
                for pending in group:
                    if not pending.done.done():
                        pending.done.set_exception(error)
                continue
            for pending, ack in zip(group, acks, strict=True):
                if not pending.done.done():
                    pending.done.set_result(ack)

    def _commit(self, batches: list[metering.Batch]) -> list[metering.Ack]:
        with self.db.transaction() as session:
            result = metering.ingest(
                session, batches, self.config.grace_ms, clock_check=self.config.clock_check
            )
        self.metrics.commits += 1
        self.metrics.batches += len(batches)
        self.metrics.events_accepted += result.stored
        self.metrics.events_duplicate += result.duplicates
        return result.acks
