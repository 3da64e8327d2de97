"""`python -m openpod.meter` / `openpod meter`: watch one pod run's workload and meter it.

The main thread watches: it waits on the workload's pidfd (and a wake-up pipe for signals)
for at most one heartbeat, journals what it saw and hands it to the link thread's connection.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from openpod.meter.gpus import GpuSampler
from openpod.meter.journal import Journal
from openpod.meter.link import Link
from openpod.meter.workload import Workload

log = logging.getLogger("openpod.meter")

TOKEN_ENV = "OPENPOD_METER_TOKEN"  # noqa: S105 (a variable name, not a secret)


@dataclass(frozen=True)
class Options:
    pod: str
    generation: int
    url: str
    journal: Path
    watch_pid: int
    watch_start_time: int
    heartbeat: float
    gpus: tuple[int, ...]
    linger: float


def _gpu_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of GPU indices: {text!r}") from None


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0: {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="openpod meter",
        description=f"Meter one pod run (docs/metering.md). The token comes from ${TOKEN_ENV}.",
    )
    parser.add_argument("--pod", required=True, help="pod id")
    parser.add_argument("--generation", required=True, type=int, help="the run")
    parser.add_argument("--url", required=True, help="ws://HOST:PORT/meter/connect")
    parser.add_argument("--journal", required=True, type=Path, help="the run's journal dir")
    parser.add_argument("--watch-pid", required=True, type=int, help="the workload's leader")
    parser.add_argument(
        "--watch-start-time", required=True, type=int, help="its start time (/proc stat field 22)"
    )
    parser.add_argument("--heartbeat", type=_positive, default=5.0, help="seconds (default 5)")
    parser.add_argument("--gpus", type=_gpu_list, default=(), help="GPU indices, e.g. 0,1")
    parser.add_argument(
        "--linger", type=float, default=600.0, help="seconds to deliver after stopped"
    )
    args = parser.parse_args(argv)
    return Options(
        pod=args.pod,
        generation=args.generation,
        url=args.url,
        journal=args.journal,
        watch_pid=args.watch_pid,
        watch_start_time=args.watch_start_time,
        heartbeat=args.heartbeat,
        gpus=tuple(args.gpus),
        linger=args.linger,
    )


class Meter:
    """One run's meter: the watcher loop (main thread) over a journal and a link."""

    def __init__(self, options: Options, token: str) -> None:
        self.options = options
        self.journal = Journal(options.journal)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._signals = 0
        self.link = Link(options.url, token, self.journal, on_done=self._ring)
        self.gpus = GpuSampler(options.gpus)

    def _ring(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full of wake-ups already
            os.write(self._wake_w, b"\0")

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals += 1

    def _wait(self, timeout: float, workload: Workload | None) -> None:
        """Sleep until `timeout`, the workload's exit, a signal or the link's end."""
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        if workload is not None and workload.pidfd is not None:
            poller.register(workload.pidfd, select.POLLIN)
        if workload is not None and workload.poll_interval is not None:
            timeout = min(timeout, workload.poll_interval)
        poller.poll(max(timeout, 0.0) * 1000)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 64):
                pass

    def run(self) -> int:
        opts = self.options
        if self.journal.done:
            log.info("run %s/%d is done: nothing to do", opts.pod, opts.generation)
            return 0
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        workload = self._begin()
        self.link.start()
        self.link.flush()
        try:
            if workload is not None:
                self._watch(workload)
            self.link.flush()
            self._linger()
        finally:
            self.link.close()
            self.gpus.close()
            self.journal.close()
            if workload is not None:
                workload.close()
        return 0

    def _begin(self) -> Workload | None:
        """The first events of this meter process, after a fresh start or a restart."""
        opts = self.options
        workload = None
        if not self.journal.stopped:
            workload = Workload.find(opts.watch_pid, opts.watch_start_time)
            last = self.journal.last
            now = time.time()
            if workload is not None:
                self._journal("started" if last is None else "heartbeat", now)
            elif last is None:  # gone before it was ever seen: nothing to bill
                self._journal("started", now)
                self._journal("stopped", now)
            else:  # gone while no meter watched: bill up to the last time it was seen
                self._journal("stopped", float(last["at"]))
        return workload

    def _journal(self, kind: str, at: float) -> None:
        event = self.journal.append(kind, at, self.gpus.sample() if kind != "stopped" else None)
        log.debug("journalled %s", event)

    def _watch(self, workload: Workload) -> None:
        """Heartbeats while the workload lives; `stopped` when it exits or on a signal."""
        beat = self.options.heartbeat
        next_beat = time.monotonic() + beat
        while True:
            self._wait(next_beat - time.monotonic(), workload)
            if workload.exited() or self._signals:
                why = "a signal" if self._signals and not workload.exited() else "workload exit"
                self._journal("stopped", time.time())
                log.info("stopped (%s)", why)
                break
            if self.link.done.is_set():
                return  # the control plane closed the run
            now = time.monotonic()
            if now >= next_beat:
                self._journal("heartbeat", time.time())
                next_beat += beat
                if next_beat <= now:  # fell far behind (suspended): beat on from now
                    next_beat = now + beat
            self.link.flush()
        self._signals = 0

    def _linger(self) -> None:
        """Wait for `stopped` to be acked, at most --linger; a second signal ends it now."""
        deadline = time.monotonic() + self.options.linger
        while not self.link.done.is_set() and not self._signals:
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("gave up delivering after %.0f s", self.options.linger)
                return
            self._wait(left, None)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s meter {options.pod}/{options.generation}: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("websockets").setLevel(logging.WARNING)  # its debug lines show headers
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        log.error("no meter token: set %s", TOKEN_ENV)
        return 2
    return Meter(options, token).run()
