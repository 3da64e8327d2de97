"""The meter beside each run (docs/metering.md), for runtimes that keep it on the host.

Every runtime whose pods are processes of this host (local, Docker) runs the meter as a
host process: `python -m openpod.meter` in a session of its own, outside the pod's
namespaces and cgroups, watching the pod's first process by pid + start time, its token in
its environment only. A meter that dies while its pod runs is started again (it replays its
journal) at most once per RESTART_SECONDS; one whose journal says the run is done is not.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from openpod.adapters.runtimes import _procs
from openpod.adapters.runtimes._launch import meter_argv, meter_env
from openpod.adapters.runtimes._podfiles import (
    MeterRecord,
    PodPaths,
    PodState,
    read_state,
    read_text,
    write_atomic,
    write_secret,
)
from openpod.adapters.runtimes.base import PodLaunch

log = logging.getLogger("openpod.runtime")

RESTART_SECONDS = 1.0  # least time between two starts of one pod's meter

_METERS: dict[int, subprocess.Popen[bytes]] = {}  # meters this process started, to reap

LockOf = Callable[[str], threading.Lock]  # the per-pod lock of a runtime
PodAlive = Callable[[PodPaths, PodState], bool]  # whether a run's first process lives


def reap() -> None:
    """Collect the exit of every meter this process started that has ended (no zombies)."""
    for pid, proc in list(_METERS.items()):
        if proc.poll() is not None:
            _METERS.pop(pid, None)


def alive(meter: MeterRecord) -> bool:
    reap()
    return meter.pid > 0 and _procs.is_alive(meter.pid, meter.start_time)


def kill(meter: MeterRecord) -> None:
    """SIGKILL that very meter (pid + start time), if it still runs; reap it if ours."""
    if not alive(meter):
        return
    proc = _METERS.pop(meter.pid, None)
    if proc is not None:
        proc.kill()
        proc.wait()
        return
    try:
        pidfd = os.pidfd_open(meter.pid)
    except OSError:
        return  # gone already
    try:
        if _procs.is_alive(meter.pid, meter.start_time):  # so the pidfd names that meter
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)


def drain(meter: MeterRecord, seconds: float) -> None:
    """Give a meter whose pod is gone `seconds` to send `stopped` and exit by itself."""
    deadline = time.monotonic() + seconds
    while alive(meter) and time.monotonic() < deadline:
        time.sleep(0.02)


class MeterKeeper:
    """Starts the meters of one runtime's pods and starts them again when they die."""

    def __init__(self, lock_of: LockOf) -> None:
        self._lock_of = lock_of
        self._started: dict[str, float] = {}  # pod id -> monotonic time of last start

    def begin(self, paths: PodPaths, state: PodState, launch: PodLaunch) -> None:
        """A new run's meter, if it has one: its token kept in a 0600 file (to start it
        again), its record in the run's state; `state` is written either way."""
        paths.meter_token.unlink(missing_ok=True)
        meter = launch.meter
        if meter is not None:
            write_secret(paths.meter_token, meter.token)
            state.meter = MeterRecord(meter.url, meter.heartbeat_s, launch.gpu_indices)
            self.start(paths, state, meter.token)
        write_atomic(paths.state, state.to_json())

    def start(self, paths: PodPaths, state: PodState, token: str) -> None:
        """Start the run's meter in a session of its own; record its pid in `state`."""
        meter = state.meter
        assert meter is not None
        self._started[state.pod_id] = time.monotonic()
        argv = meter_argv(sys.executable, paths, state, meter)
        with open(paths.meter_log, "ab") as out:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    env=meter_env(token),
                    cwd="/",
                    start_new_session=True,
                )
            except OSError as exc:  # the pod runs on; the next look tries again
                log.warning("pod %s: cannot start its meter: %s", state.pod_id, exc)
                return
        _METERS[proc.pid] = proc
        meter.pid, meter.start_time = proc.pid, _procs.start_time(proc.pid) or 0

    def keep(self, paths: PodPaths, state: PodState, pod_alive: PodAlive) -> None:
        """A running pod whose meter died gets a new one, unless its journal says done."""
        meter = state.meter
        if meter is None or alive(meter):
            return
        if (paths.meter_journal(state.generation) / "done").exists():
            return
        last = self._started.get(state.pod_id)
        if last is not None and time.monotonic() - last < RESTART_SECONDS:
            return
        lock = self._lock_of(state.pod_id)
        if not lock.acquire(blocking=False):
            return  # being started, stopped or removed: look again next time
        try:
            fresh = read_state(paths)
            token = read_text(paths.meter_token)
            if (
                fresh is None
                or fresh.stopped
                or fresh.meter is None
                or alive(fresh.meter)
                or not token
                or not pod_alive(paths, fresh)
            ):
                return
            log.info("pod %s: its meter is gone, starting it again", state.pod_id)
            self.start(paths, fresh, token)
            write_atomic(paths.state, fresh.to_json())
        finally:
            lock.release()
