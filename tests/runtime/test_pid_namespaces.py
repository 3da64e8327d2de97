"""Stopping a pod must never touch another pod's processes: the namespace whose members are
killed is pinned, so a namespace created meanwhile cannot pass for it (the kernel hands a dead
namespace's inode number to the next namespace made)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

from openpod.adapters.runtimes import _procs
from tests.support.net import wait_until

UNSHARE = shutil.which("unshare") or "unshare"  # util-linux: on every Debian; the runtime needs it


def _namespace_leader() -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [UNSHARE, "--pid", "--fork", "--kill-child", "--mount-proc", "sleep", "60"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    start = _procs.start_time(proc.pid)
    assert start is not None
    return proc, start


def _children_ns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid_for_children")


def _wait_unshared(pid: int) -> None:
    own = os.readlink("/proc/self/ns/pid")
    wait_until(
        lambda: _children_ns(pid) != own and bool(_procs.ns_members(_children_ns(pid))),
        10,
        "unshare to make its namespace",
    )


def test_a_namespace_made_while_one_is_pinned_never_takes_its_number() -> None:
    first, first_start = _namespace_leader()
    _wait_unshared(first.pid)
    with _procs.pinned_pid_ns(first.pid, first_start) as pinned:
        assert pinned is not None
        first.send_signal(signal.SIGKILL)
        first.wait()
        second, _ = _namespace_leader()
        try:
            _wait_unshared(second.pid)
            assert _children_ns(second.pid) != pinned
            assert _procs.ns_members(pinned) == []  # the pinned one is empty, not reused
        finally:
            second.send_signal(signal.SIGKILL)
            second.wait()
            assert second.stdout is not None
            second.stdout.close()
    assert first.stdout is not None
    first.stdout.close()


def test_a_gone_leader_pins_nothing() -> None:
    proc, start = _namespace_leader()
    _wait_unshared(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()
    with _procs.pinned_pid_ns(proc.pid, start) as pinned:
        assert pinned is None
