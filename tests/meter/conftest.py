"""Fixtures for the meter tests: a fake control plane, a real workload process, and meters
run as `python -m openpod.meter` (each killed by its own PID at teardown)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from openpod.meter.workload import start_time
from tests.meter.plane import TOKEN, FakePlane

HEARTBEAT = 0.2


@dataclass
class Workload:
    proc: subprocess.Popen[bytes]
    start_time: int

    def end(self) -> None:
        self.proc.kill()
        self.proc.wait()


@dataclass
class MeterRun:
    proc: subprocess.Popen[bytes]
    journal: Path
    log: Path

    def events(self) -> list[dict[str, object]]:
        import json

        path = self.journal / "events.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def acked(self) -> int:
        path = self.journal / "acked"
        return int(path.read_text()) if path.exists() else 0

    def wait(self, timeout: float = 10) -> int:
        return self.proc.wait(timeout)

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@pytest.fixture
def plane() -> Iterator[FakePlane]:
    with FakePlane() as fake:
        yield fake


@pytest.fixture
def workload() -> Iterator[Workload]:
    proc = subprocess.Popen(["sleep", "60"])
    started = start_time(proc.pid)
    assert started is not None
    try:
        yield Workload(proc, started)
    finally:
        proc.kill()
        proc.wait()


StartMeter = Callable[..., MeterRun]


@pytest.fixture
def start_meter(tmp_path: Path, plane: FakePlane, workload: Workload) -> Iterator[StartMeter]:
    """Start a meter of pod1/1 watching `workload` (same journal each call: a restart)."""
    procs: list[subprocess.Popen[bytes]] = []
    journal = tmp_path / "journal"
    log = tmp_path / "meter.log"

    def start(
        *extra: str, token: str = TOKEN, url: str | None = None, linger: float = 5.0
    ) -> MeterRun:
        argv = [
            sys.executable, "-m", "openpod.meter", "--pod", "pod1", "--generation", "1",
            "--url", url or plane.url, "--journal", str(journal),
            "--watch-pid", str(workload.proc.pid), "--watch-start-time", str(workload.start_time),
            "--heartbeat", str(HEARTBEAT), "--linger", str(linger), *extra,
        ]  # fmt: skip
        env = {"PATH": os.environ["PATH"], "OPENPOD_METER_TOKEN": token}
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out)
        procs.append(proc)
        return MeterRun(proc, journal, log)

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
