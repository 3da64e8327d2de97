"""The HAProxy process: started in the foreground (`-db`) as our child, stopped by its PID.

Foreground rather than `-D`: the PID we hold is the process that serves (no master, no
daemon fork to race), its exit is ours to reap, and a config it rejects shows up as an exit
with HAProxy's message in the log. It runs in its own session so a Ctrl-C at the terminal
does not take the edge down with the CLI; the PID file lets the next start find a proxy a
crashed parent left behind. A PID from that file is only trusted while /proc says it is a
live (not zombie) process whose command line names this edge's config file, so a recycled
PID is never signalled; our own child's PID cannot be recycled before we reap it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from openpod.adapters.edge.files import EdgePaths, write_atomic
from openpod.adapters.edge.model import EdgeError


def find_haproxy(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise EdgeError(f"HAProxy is not installed (no {name!r} on PATH or in /usr/sbin)")
    return found


def _running(pid: int) -> bool:
    """/proc knows `pid` and it is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _serves(pid: int, config: Path) -> bool:
    """PID `pid` is a live HAProxy started with `config` (for a PID we did not start)."""
    for _ in range(10):
        if not _running(pid):
            return False
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        if argv:  # reads empty for a moment while HAProxy starts: look again
            return str(config).encode() in argv.split(b"\0")
        time.sleep(0.005)
    return False


class HaproxyProcess:
    def __init__(self, binary: str, paths: EdgePaths) -> None:
        self.binary, self.paths = binary, paths
        self._child: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        return self._pid if self.alive() else None

    @property
    def owned(self) -> bool:
        """We started it (rather than found it through the PID file)."""
        return self._child is not None

    def alive(self) -> bool:
        """Serving now: the one we hold, or else one the PID file names (which we then hold:
        an EdgeProxy that never started the edge still drives the one that runs)."""
        if self._pid is None:
            return self.adopt()
        if self._child is None:
            if _serves(self._pid, self.paths.config):
                return True
        elif self._child.poll() is None and _running(self._pid):
            return True
        else:
            # Our child, dead: reap it (a zombie's wait returns at once). Its PID may be
            # recycled from here on, so it is forgotten.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._child.wait(5)
        self._child, self._pid = None, None
        return self.adopt()

    def adopt(self) -> bool:
        """Hold the proxy this state dir's PID file names, if it is still serving."""
        try:
            pid = int(self.paths.pid_file.read_text().strip())
        except (OSError, ValueError):
            return False
        if not _serves(pid, self.paths.config):
            return False
        self._child, self._pid = None, pid
        return True

    def spawn(self) -> int:
        binary = find_haproxy(self.binary)
        argv = [binary, "-db", "-f", str(self.paths.config)]
        try:
            with self.paths.log.open("ab") as log:
                self._log_offset = log.tell()
                self._child = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.paths.state_dir,
                    start_new_session=True,
                )
        except OSError as error:
            raise EdgeError(f"cannot start HAProxy ({binary}): {error}") from error
        self._pid = self._child.pid
        write_atomic(self.paths.pid_file, f"{self._pid}\n")
        return self._pid

    def log_tail(self, limit: int = 4000) -> str:
        """What HAProxy wrote since it was last started (its alerts say why it stopped)."""
        try:
            with self.paths.log.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode(errors="replace").strip()
        except OSError:
            return ""
        return text[-limit:]

    def stop(self, timeout: float) -> None:
        """SIGTERM (HAProxy's hard stop: open streams are cut), SIGKILL if it lingers."""
        if not self.alive():
            self._forget()
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            self._signal(sig)
            if self._wait_gone(timeout):
                break
        else:
            raise EdgeError(f"HAProxy (pid {self._pid}) survived SIGKILL")
        self._forget()

    def _signal(self, sig: int) -> None:
        assert self._pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, sig)

    def _wait_gone(self, timeout: float) -> bool:
        if self._child is not None:
            try:
                self._child.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _forget(self) -> None:
        self._child, self._pid = None, None
        with contextlib.suppress(FileNotFoundError):
            self.paths.pid_file.unlink()
