"""Stopping a pod must never touch another pod's processes: the namespace whose members are
killed is pinned, so a namespace created meanwhile cannot pass for it (the kernel hands a dead
namespace's inode number to the next namespace made)."""

from __future__ import annotations

import contextlib
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
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    start = _procs.start_time(proc.pid)
    assert start is not None
    return proc, start


def _children_ns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid_for_children")


def _wait_unshared(proc: subprocess.Popen[bytes]) -> None:
    """Until unshare's namespace has its first member; an unshare that ended says why."""
    own = os.readlink("/proc/self/ns/pid")

    def made() -> bool:
        if proc.poll() is not None:
            why = proc.stderr.read() if proc.stderr else b""
            raise AssertionError(f"unshare ended with {proc.returncode}: {why!r}")
        try:
            ns = _children_ns(proc.pid)
        except FileNotFoundError:  # exiting this very moment: the next look says how
            return False
        return ns != own and bool(_procs.ns_members(ns))

    wait_until(made, 10, "unshare to make its namespace")


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


def test_a_namespace_made_while_one_is_pinned_never_takes_its_number() -> None:
    first, first_start = _namespace_leader()
    try:
        _wait_unshared(first)
        with _procs.pinned_pid_ns(first.pid, first_start) as pinned:
            assert pinned is not None
            _end(first)
            # Its init dies with unshare (--kill-child) unless unshare was killed before the
            # child armed that: end what is left of this namespace we made, then it is empty.
            for pid in _procs.ns_members(pinned):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            wait_until(lambda: _procs.ns_members(pinned) == [], 10, "the pinned one empty")
            second, _ = _namespace_leader()
            try:
                _wait_unshared(second)
                assert _children_ns(second.pid) != pinned  # its number was not passed on
            finally:
                _end(second)
    finally:
        _end(first)


def test_a_gone_leader_pins_nothing() -> None:
    proc, start = _namespace_leader()
    try:
        _wait_unshared(proc)
    finally:
        _end(proc)
    with _procs.pinned_pid_ns(proc.pid, start) as pinned:
        assert pinned is None
