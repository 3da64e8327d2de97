"""Benchmarks: `python -m bench.NAME`, all of them by `make bench` (bench/RESULTS.md)."""

from __future__ import annotations

import signal
import sys


def stop_cleanly_on_sigterm() -> None:
    """SIGTERM (a `timeout`, a CI runner's stop) ends the benchmark as Ctrl-C does: through
    its `finally` blocks, which stop the servers and pods it started by their PIDs. Python's
    default would die at once and leave them running."""
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(128 + signal.SIGTERM))
