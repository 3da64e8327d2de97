"""The two shell scripts a Kubernetes pod runs besides boot.sh, run for real under sh.

meter.sh runs with a stand-in for python that records how it was started and its SIGTERM.
The readiness probe runs in a mount and network namespace of its own, so /run/openpod and
port 22 are its own (that needs root, like the local runtime's tests).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from openpod.adapters.runtimes._kube_manifests import READINESS_SH
from openpod.adapters.runtimes._kube_meter import METER_SH
from tests.support.net import wait_until


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(part) for part in text.split()]


def _start_time(host_pid: int) -> int:
    raw = Path(f"/proc/{host_pid}/stat").read_text()
    return int(raw[raw.rfind(")") + 2 :].split()[19])


_FAKE_METER = """#!/bin/sh
printf '%s\\n' "$@" >"$OUT/argv"
echo started >>"$OUT/events"
trap 'echo stopped >>"$OUT/events"; kill "$sleeper" 2>/dev/null; exit 0' TERM
while :; do
    sleep 30 &
    sleeper=$!
    wait "$sleeper"
done
"""


@pytest.fixture
def meter_sh(tmp_path: Path) -> tuple[list[str], Path, Path, dict[str, str]]:
    """meter.sh with a stand-in for python (it records its argv and SIGTERM): the command,
    the status file, the journal dir, and the env."""
    script = tmp_path / "meter.sh"
    script.write_text(METER_SH)
    fake = tmp_path / "python"
    fake.write_text(_FAKE_METER)
    fake.chmod(0o755)
    journal = tmp_path / "journal"
    journal.mkdir()
    status = tmp_path / "run" / "boot-status"
    status.parent.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    argv = ["sh", str(script), str(fake), str(status), str(journal), "--pod", "p1"]
    env = {"PATH": os.environ["PATH"], "OUT": str(out)}
    return argv, status, journal, env


def _events(out: Path) -> list[str]:
    path = out / "events"
    return path.read_text().split() if path.exists() else []


def test_meter_sh_waits_for_the_boot_script_then_passes_sigterm_on(
    meter_sh: tuple[list[str], Path, Path, dict[str, str]],
) -> None:
    argv, status, journal, env = meter_sh
    out = Path(env["OUT"])
    proc = subprocess.Popen(argv, env=env)
    try:
        # Waiting: its only child is the sleep of its polling loop, no meter yet.
        wait_until(lambda: bool(_children(proc.pid)), 10, "meter.sh to poll")
        assert not (out / "argv").exists()
        status.write_text("ssh=started\n")
        wait_until(lambda: _events(out) == ["started"], 10, "the meter to start")
        assert (out / "argv").read_text().split() == [
            "-m", "openpod.meter", "--pod", "p1", "--journal", str(journal),
            "--watch-pid", str(proc.pid), "--watch-start-time", str(_start_time(proc.pid)),
        ]  # fmt: skip
        proc.send_signal(signal.SIGTERM)  # what the kubelet does once the workload exited
        assert proc.wait(10) == 0
        assert _events(out) == ["started", "stopped"]
    finally:
        proc.kill()
        proc.wait(10)


def test_a_restarted_meter_does_not_wait(
    meter_sh: tuple[list[str], Path, Path, dict[str, str]],
) -> None:
    argv, _status, journal, env = meter_sh
    (journal / "0000000001.json").write_text("{}")
    proc = subprocess.Popen(argv, env=env)
    try:
        wait_until(lambda: _events(Path(env["OUT"])) == ["started"], 10, "the meter to start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait(10)


def test_a_pod_deleted_before_its_workload_started_bills_nothing(
    meter_sh: tuple[list[str], Path, Path, dict[str, str]],
) -> None:
    argv, _status, _journal, env = meter_sh
    proc = subprocess.Popen(argv, env=env)
    try:
        wait_until(lambda: bool(_children(proc.pid)), 10, "meter.sh to poll")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert _events(Path(env["OUT"])) == []
    finally:
        proc.kill()
        proc.wait(10)


_PROBE_RUNNER = r"""
import json, os, socket, subprocess, sys
script = sys.argv[1]
def probe():
    return subprocess.run(["sh", "-c", script], timeout=10).returncode
def status(text):
    with open("/run/openpod/boot-status", "w") as f:
        f.write(text + "\n")
results = {"no status yet": probe()}
status("ssh=unavailable: no sshd binary in the image")
results["ssh unavailable"] = probe()
status("ssh=started")
results["started, not listening"] = probe()
other = socket.create_server(("127.0.0.1", 2222))
results["listening elsewhere"] = probe()
six = socket.create_server(("::1", 22), family=socket.AF_INET6)
results["listening on ipv6"] = probe()
six.close()
four = socket.create_server(("127.0.0.1", 22))
results["listening on ipv4"] = probe()
print(json.dumps(results))
"""


def test_readiness_probe_waits_for_sshd_or_a_known_absence(tmp_path: Path) -> None:
    runner = tmp_path / "runner.py"
    runner.write_text(_PROBE_RUNNER)
    setup = 'set -e; mount -t tmpfs tmpfs /run; mkdir -p /run/openpod; ip link set lo up; exec "$@"'
    done = subprocess.run(
        ["unshare", "--mount", "--net", "--", "sh", "-c", setup, "setup",
         sys.executable, str(runner), READINESS_SH],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    results = json.loads(done.stdout)
    assert results == {
        "no status yet": 1,
        "ssh unavailable": 0,
        "started, not listening": 1,
        "listening elsewhere": 1,
        "listening on ipv6": 0,
        "listening on ipv4": 0,
    }
