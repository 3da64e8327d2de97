"""Ports and waiting, for tests that start real servers."""

from __future__ import annotations

import asyncio
import ctypes
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], bool], timeout: float, what: str, step: float = 0.02) -> None:
    """Poll `check` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


class NetnsSockets:
    """A thread that has entered the network namespace of process `pid` and makes TCP sockets
    there (setns is per thread; a socket keeps its namespace wherever it is used)."""

    def __init__(self, pid: int) -> None:
        self._jobs: queue.Queue[Future[socket.socket] | None] = queue.Queue()
        self._fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        self._thread = threading.Thread(target=self._run, name=f"netns-{pid}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        entered = _libc.setns(self._fd, CLONE_NEWNET) == 0
        error = ctypes.get_errno()
        while (job := self._jobs.get()) is not None:
            if not job.set_running_or_notify_cancel():
                continue  # its caller stopped waiting before we got to it: nothing to make
            if entered:
                job.set_result(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            else:
                job.set_exception(OSError(error, "setns into the network namespace of the process"))

    async def made(self) -> socket.socket:
        """A socket in the namespace, for a coroutine: if the coroutine is cancelled while the
        socket is being made, the socket is closed once made (unclosed, it warned as leaked)."""
        job = self.socket()
        try:
            return await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            job.add_done_callback(_close_unclaimed)
            raise

    def socket(self) -> Future[socket.socket]:
        job: Future[socket.socket] = Future()
        self._jobs.put(job)
        return job

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(5)
        os.close(self._fd)


def _close_unclaimed(job: Future[socket.socket]) -> None:
    if not job.cancelled() and job.exception() is None:
        job.result().close()
