"""The workload the meter watches: a pid named together with its start time.

Field 22 of /proc/PID/stat (start time in clock ticks since boot) tells the workload from a
later process that got its recycled pid. A pidfd (Linux >= 5.3) becomes readable the moment
the process exits, so the meter sees an exit at once while it waits for its next heartbeat.
"""

from __future__ import annotations

import os
import select
from pathlib import Path

FALLBACK_POLL_S = 0.25  # without pidfd_open: how often /proc is looked at


def start_time(pid: int) -> int | None:
    """The start time of a live (not zombie) process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()  # fields[0] is field 3 (state)
    if len(fields) <= 19 or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


class Workload:
    """A live workload process; `fileno()` for poll() where it has a pidfd."""

    def __init__(self, pid: int, started: int, pidfd: int | None) -> None:
        self.pid = pid
        self.started = started
        self._pidfd = pidfd

    @classmethod
    def find(cls, pid: int, started: int) -> Workload | None:
        """The workload when that very process still runs, else None."""
        if start_time(pid) != started:
            return None
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            return None
        except OSError:  # no pidfd_open here: poll /proc instead
            pidfd = None
        # The pid may have been recycled between the look and the open: look again.
        if start_time(pid) != started:
            if pidfd is not None:
                os.close(pidfd)
            return None
        return cls(pid, started, pidfd)

    @property
    def pidfd(self) -> int | None:
        return self._pidfd

    @property
    def poll_interval(self) -> float | None:
        """How often to look when there is no pidfd to wait on; None: the pidfd tells."""
        return None if self._pidfd is not None else FALLBACK_POLL_S

    def exited(self) -> bool:
        if self._pidfd is not None:
            return bool(select.select([self._pidfd], [], [], 0)[0])
        return start_time(self.pid) != self.started

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
