"""Linux process helpers over /proc: liveness that survives PID reuse, PID namespaces, killing.

A pod of the local runtime is an `unshare` process (the *leader*, on the host) whose
child is PID 1 of a fresh PID namespace. Everything the pod ever runs, sshd sessions
included (they call setsid, so process groups do not hold them), lives in that
namespace, so the namespace is the unit we signal and wait on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces or ')')."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rfind(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The process start time in clock ticks since boot (field 22), or None if gone.

    A pid plus its start time names one process for good: a recycled pid has a later
    start time, so a stale state file can never make us signal a stranger.
    """
    fields = _stat_fields(pid)
    # fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
    return int(fields[19]) if fields is not None and len(fields) > 19 else None


def is_alive(pid: int, started: int) -> bool:
    """True while that very process exists and is not a zombie."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) <= 19:
        return False
    return fields[0] not in ("Z", "X") and int(fields[19]) == started


def _pids() -> Iterator[int]:
    for entry in os.scandir(_PROC):
        if entry.name.isdigit():
            yield int(entry.name)


def ns_members(ns: str) -> list[int]:
    """Host pids of the live (non-zombie) processes of PID namespace `ns`."""
    found = []
    for pid in _pids():
        try:
            if os.readlink(_PROC / str(pid) / "ns" / "pid") != ns:
                continue
        except OSError:
            continue  # gone, or a zombie (its ns link is no longer readable)
        fields = _stat_fields(pid)
        if fields is not None and fields[0] not in ("Z", "X"):
            found.append(pid)
    return found


def _status_field(pid: int, name: str) -> str | None:
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == name:
                return value.strip()
    except OSError:
        return None
    return None


def is_ns_init(pid: int) -> bool:
    """True when `pid` is PID 1 of its own namespace (last NSpid column is 1)."""
    nspid = _status_field(pid, "NSpid")
    return nspid is not None and nspid.split()[-1] == "1"


def catches(pid: int, sig: int) -> bool:
    """True when the process installed a handler for `sig` (SigCgt mask).

    A namespace's init only receives signals it handles (SIGKILL aside), so an init
    without a SIGTERM handler will never stop on SIGTERM: no point in waiting for it.
    """
    mask = _status_field(pid, "SigCgt")
    return mask is not None and bool(int(mask, 16) & (1 << (sig - 1)))


def _send(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _only_deaf_init_left(members: list[int]) -> bool:
    return len(members) == 1 and is_ns_init(members[0]) and not catches(members[0], signal.SIGTERM)


@contextlib.contextmanager
def pinned_pid_ns(leader: int, leader_start: int) -> Iterator[str | None]:
    """The PID namespace the leader made for its children, held open while in use.

    Members are found by the namespace's inode number, and the kernel gives a dead
    namespace's number to the next one created: without the open reference, a pod started
    while another is being stopped could have its processes taken for the stopped pod's and
    killed. None when the leader is gone (or has not unshared yet)."""
    try:
        fd = os.open(_PROC / str(leader) / "ns" / "pid_for_children", os.O_RDONLY)
    except OSError:
        yield None
        return
    try:
        ns = os.readlink(f"/proc/self/fd/{fd}")
        own = os.readlink(_PROC / "self" / "ns" / "pid")
        # Alive after the open: the fd is that leader's namespace, not a reused pid's.
        yield ns if ns != own and is_alive(leader, leader_start) else None
    finally:
        os.close(fd)


def terminate_namespace(leader: int, leader_start: int, grace: float, settle: float = 5.0) -> bool:
    """SIGTERM every process of the leader's namespace, SIGKILL after `grace`, wait for the end.

    Returns True when the leader and every process of its namespace are gone.
    """
    with pinned_pid_ns(leader, leader_start) as ns:
        deadline = time.monotonic() + max(grace, 0.0)
        if ns is not None and grace > 0:
            for pid in ns_members(ns):
                _send(pid, signal.SIGTERM)
            while time.monotonic() < deadline:
                members = ns_members(ns)
                if not members or _only_deaf_init_left(members):
                    break
                time.sleep(0.02)
        # SIGKILL of the leader fires unshare's --kill-child (PDEATHSIG) on the namespace
        # init; killing init makes the kernel kill every other process of the namespace.
        if is_alive(leader, leader_start):
            _send(leader, signal.SIGKILL)
        if ns is not None:
            for pid in sorted(ns_members(ns), key=lambda p: not is_ns_init(p)):
                _send(pid, signal.SIGKILL)
        end = time.monotonic() + settle
        while time.monotonic() < end:
            if not is_alive(leader, leader_start) and (ns is None or not ns_members(ns)):
                return True
            time.sleep(0.01)
        return False
