"""A run's usage from its meter's events: intervals in the node's clock, billable seconds.

Pure and deterministic: the same events in seq order always give the same usage, whatever
order they arrived in, however often, and whatever the node's clock is off by (only
differences of the node's own timestamps are used). See docs/metering.md.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

from openpod.domain.errors import DomainError

MAX_BATCH = 1000  # events in one message from a meter
MAX_GPU_SAMPLES = 64


class MeterEventError(DomainError):
    """A meter sent something that is not a valid event."""


class EventKind(enum.StrEnum):
    STARTED = "started"
    HEARTBEAT = "heartbeat"
    STOPPED = "stopped"


_KINDS = {kind.value: kind for kind in EventKind}


@dataclass(frozen=True)
class GpuSample:
    index: int
    util: int | None = None  # percent
    mem_used: int | None = None  # bytes
    power_mw: int | None = None


@dataclass(frozen=True)
class MeterEvent:
    seq: int
    kind: EventKind
    at_ms: int  # node wall clock, milliseconds since the epoch
    gpus: tuple[GpuSample, ...] = ()


def _int(value: Any, name: str, low: int = 0, high: int = 2**62) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MeterEventError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _opt_int(sample: dict[str, Any], key: str, where: str) -> int | None:
    value = sample.get(key)
    return None if value is None else _int(value, f"{where}.{key}")


def parse_event(raw: Any) -> MeterEvent:
    """One event as a meter sends it (JSON already decoded), or MeterEventError naming the
    field that is wrong."""
    if not isinstance(raw, dict):
        raise MeterEventError(f"an event must be an object, got {type(raw).__name__}")
    seq = _int(raw.get("seq"), "seq", low=1)
    where = f"event {seq}"
    kind_raw = raw.get("kind")
    kind = _KINDS.get(kind_raw) if isinstance(kind_raw, str) else None
    if kind is None:
        raise MeterEventError(
            f"{where}: kind must be one of started, heartbeat, stopped; got {kind_raw!r}"
        )
    at = raw.get("at")
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise MeterEventError(f"{where}: at must be a number of seconds, got {at!r}")
    if not 0 < at < 2**40:
        raise MeterEventError(f"{where}: at {at!r} is not a time")
    gpus_raw = raw.get("gpus") or []
    if not isinstance(gpus_raw, list) or len(gpus_raw) > MAX_GPU_SAMPLES:
        raise MeterEventError(f"{where}: gpus must be a list of at most {MAX_GPU_SAMPLES}")
    gpus = []
    for sample in gpus_raw:
        if not isinstance(sample, dict):
            raise MeterEventError(f"{where}: each gpus entry must be an object")
        gpus.append(
            GpuSample(
                index=_int(sample.get("index"), f"{where}: gpus.index", high=1024),
                util=_opt_int(sample, "util", f"{where}: gpus"),
                mem_used=_opt_int(sample, "mem_used", f"{where}: gpus"),
                power_mw=_opt_int(sample, "power_mw", f"{where}: gpus"),
            )
        )
    return MeterEvent(seq=seq, kind=kind, at_ms=round(at * 1000), gpus=tuple(gpus))


def parse_batch(raw: Any) -> list[MeterEvent]:
    """The `events` of one message: 1..MAX_BATCH valid events, each seq once."""
    if not isinstance(raw, list) or not raw:
        raise MeterEventError("events must be a non-empty list")
    if len(raw) > MAX_BATCH:
        raise MeterEventError(f"at most {MAX_BATCH} events per message, got {len(raw)}")
    events = [parse_event(item) for item in raw]
    seqs = [event.seq for event in events]
    if len(set(seqs)) != len(seqs):
        raise MeterEventError("a message names the same seq twice")
    return sorted(events, key=lambda event: event.seq)


@dataclass
class Usage:
    """What a run's applied events add up to. `intervals` are [start_ms, end_ms] pairs in the
    node's clock; the last one is open while `open_` and the run is not closed."""

    grace_ms: int
    next_seq: int = 1
    intervals: list[list[int]] = field(default_factory=list)
    open_: bool = False
    closed: bool = False

    @property
    def last_ms(self) -> int | None:
        return self.intervals[-1][1] if self.intervals else None

    @property
    def billable_ms(self) -> int:
        return sum(end - start for start, end in self.intervals)

    @property
    def billable_seconds(self) -> int:
        return self.billable_ms // 1000

    @property
    def acked(self) -> int:
        return self.next_seq - 1

    def apply(self, event: MeterEvent) -> None:
        """Apply the run's next event (seq must be next_seq)."""
        if event.seq != self.next_seq:
            raise ValueError(f"event {event.seq} applied out of order (next is {self.next_seq})")
        self.next_seq += 1
        if self.closed:
            return  # acknowledged, never billed: the run is over
        self._observe(event.at_ms)
        if event.kind is EventKind.STOPPED:
            self.close()

    def _observe(self, at_ms: int) -> None:
        last = self.last_ms
        if not self.open_ or last is None:
            self.intervals.append([at_ms, at_ms])
            self.open_ = True
        elif at_ms < last:
            return  # the node's clock stepped back: nothing is added until it passes `last`
        elif at_ms - last <= self.grace_ms:
            self.intervals[-1][1] = at_ms
        else:  # nobody observed the gap
            self.intervals.append([at_ms, at_ms])

    def close(self, at_ms: int | None = None) -> None:
        """End the run. `at_ms` (the node's report of the workload's exit) extends the open
        interval when it comes within the grace of its last event; nothing else does."""
        if self.closed:
            return
        last = self.last_ms
        in_grace = last is not None and at_ms is not None and last <= at_ms <= last + self.grace_ms
        if self.open_ and in_grace and at_ms is not None:
            self.intervals[-1][1] = at_ms
        self.open_ = False
        self.closed = True


def price(seconds: int, gpu_count: int, rate_per_second: int) -> int:
    """Token base units for `seconds` of `gpu_count` GPUs at `rate_per_second` per GPU."""
    if seconds < 0 or gpu_count < 0 or rate_per_second < 0:
        raise ValueError("seconds, GPU count and rate are never negative")
    return seconds * gpu_count * rate_per_second
