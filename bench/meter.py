"""Benchmark: the memory of one pod meter (`python -m openpod.meter`), set beside the
interpreter it runs on.

Run `python -m bench.meter` (about 25 s); it replaces its own section of bench/RESULTS.md.
One meter runs for 10 s with a 0.2 s heartbeat (25x the default rate) against the fake
control plane of the tests (tests/meter/plane.py: a real WebSocket server on 127.0.0.1 that
stores and acks every batch), watching a real `sleep` process. Its VmRSS is sampled from
/proc every 0.1 s, VmHWM (peak RSS) read at the end, and its CPU time (user + system) taken
from /proc/PID/stat. Then the workload is killed and the time until the plane holds `stopped`
is measured (the meter waits on a pidfd, so that is the exit-to-delivery latency).

Twice: without GPUs, and with `--gpus 0` (pynvml imported; where no NVML library is found,
as on a CPU-only host, the meter goes on without samples). References measured in the same
run: a bare `python3 -c` interpreter, and one that has imported websockets' sync client.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import stop_cleanly_on_sigterm
from bench.results import write_section
from openpod.adapters.gpus import nvml
from tests.meter.plane import TOKEN, FakePlane

HEADING = "## Pod meter: memory of one `openpod meter`"
RUN_S = 10.0
HEARTBEAT_S = 0.2
SAMPLE_S = 0.1
TARGET_MB = 40.0
TICKS = os.sysconf("SC_CLK_TCK")


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


def _start_time(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


@dataclass(frozen=True)
class Measure:
    rss_mb: float  # median of the samples
    hwm_mb: float  # peak
    cpu_pct: float = 0.0
    events: int = 0
    stop_ms: float = 0.0  # workload killed → the plane holds `stopped`


def meter_run(gpus: bool) -> Measure:
    plane = FakePlane()
    workload = subprocess.Popen(["sleep", "600"])
    journal = Path(tempfile.mkdtemp(prefix="openpod-bench-meter-"))
    argv = [
        sys.executable, "-m", "openpod.meter", "--pod", "pod1", "--generation", "1",
        "--url", plane.url, "--journal", str(journal / "j"),
        "--watch-pid", str(workload.pid), "--watch-start-time", str(_start_time(workload.pid)),
        "--heartbeat", str(HEARTBEAT_S), *(["--gpus", "0"] if gpus else []),
    ]  # fmt: skip
    env = {"PATH": os.environ["PATH"], "OPENPOD_METER_TOKEN": TOKEN}
    meter = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        plane.wait(lambda p: len(p.stored) >= 1, 10, "the meter's first event")
        begin, cpu0 = time.monotonic(), _cpu_s(meter.pid)
        samples = []
        while time.monotonic() - begin < RUN_S:
            samples.append(_status_kb(meter.pid, "VmRSS"))
            time.sleep(SAMPLE_S)
        cpu = (_cpu_s(meter.pid) - cpu0) / (time.monotonic() - begin) * 100
        hwm = _status_kb(meter.pid, "VmHWM")
        events = len(plane.stored)
        killed = time.monotonic()
        workload.kill()
        plane.wait(lambda p: p.closed, 10, "stopped")
        stop_ms = (time.monotonic() - killed) * 1000
        meter.wait(10)
        return Measure(statistics.median(samples) / 1024, hwm / 1024, cpu, events, stop_ms)
    finally:
        for proc in (meter, workload):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        plane.close()
        shutil.rmtree(journal, ignore_errors=True)


def reference(code: str) -> Measure:
    """An interpreter that ran `code` and then waits on stdin: its RSS then."""
    proc = subprocess.Popen(
        [sys.executable, "-c", f"{code}\nimport sys; print('ok', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ok\n"
        rss, hwm = _status_kb(proc.pid, "VmRSS"), _status_kb(proc.pid, "VmHWM")
    finally:
        proc.communicate(b"")
    return Measure(rss / 1024, hwm / 1024)


def main() -> None:
    stop_cleanly_on_sigterm()
    bare = reference("pass")
    ws = reference("import websockets.sync.client")
    plain = meter_run(gpus=False)
    with_gpus = meter_run(gpus=True)
    nvml_note = (
        "NVML found: samples taken"
        if nvml.discover() is not None
        else "no NVML library on this host: pynvml imported, no samples"
    )
    rows = [
        ("meter, no GPUs", plain),
        (f"meter, `--gpus 0` ({nvml_note})", with_gpus),
        ("reference: `python3 -c pass`", bare),
        ("reference: python3 + `import websockets.sync.client`", ws),
    ]
    lines = [
        f"{HEADING} ({time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()})",
        "",
        f"`python -m bench.meter`. One meter, {RUN_S:.0f} s at a {HEARTBEAT_S} s heartbeat "
        "(25x the default rate) against a real WebSocket server on 127.0.0.1 that acks every "
        "batch, watching a real process. RSS sampled from /proc every 0.1 s (median), peak = "
        "VmHWM; CPU = the meter's user + system time over the run. `stopped` = the watched "
        "process killed → the server holds `stopped` (journalled and fsynced first).",
        "",
        "| process | RSS | peak RSS | CPU | events | `stopped` after exit |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in rows:
        extra = f"{m.cpu_pct:.2f}% | {m.events} | {m.stop_ms:.1f} ms" if m.events else " |  | "
        lines.append(f"| {name} | {m.rss_mb:.1f} MB | {m.hwm_mb:.1f} MB | {extra} |")
    worst = max(plain.hwm_mb, with_gpus.hwm_mb)
    lines += [
        "",
        f"Peak RSS of one meter: **{worst:.1f} MB** (target ≤ {TARGET_MB:.0f} MB); "
        f"{worst - bare.hwm_mb:.1f} MB above a bare interpreter, of which websockets' import "
        f"is {ws.hwm_mb - bare.hwm_mb:.1f} MB. MB = 2^20 bytes.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_section(HEADING, text)


if __name__ == "__main__":
    main()
