"""A network namespace with nothing in it but loopback, for WebRTC peers in tests.

On the host, Chromium gathers a host candidate on every interface (here also eth0's
192.0.2.2 and fd00::2), and its connectivity checks from those sockets to the peer's
127.0.0.1 succeed: the peer then answers to 192.0.2.2, an address outside 127.0.0.0/8, and
several candidate pairs get nominated, the selected one switching just after the channel
opens. In a namespace of its own there is only `lo`: one candidate pair, 127.0.0.1 only.

The namespace lives as long as a holder process (`unshare --net`, which brings `lo` up and
then waits for its stdin to close: it ends with us, even if we are killed). `forward(port)`
makes 127.0.0.1:port inside lead to 127.0.0.1:port on the host (the control plane), and
`command(argv)` runs a program inside (`nsenter --net`): Chromium and the `openpod` CLI.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.support.net import NetnsSockets

HOLDER = "import sys; print('ready', flush=True); sys.stdin.read()"
CHUNK = 1 << 18


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Bytes from `source` to `sink` until EOF (passed on as a half-close) or an error."""
    try:
        while data := source.recv(CHUNK):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)
            source.shutdown(socket.SHUT_RDWR)


class LoopbackNamespace:
    """`with LoopbackNamespace() as ns:` a fresh network namespace holding only `lo` (up)."""

    def __init__(self) -> None:
        self.holder: subprocess.Popen[str] | None = None
        self._listeners: list[socket.socket] = []
        self._closed = threading.Event()

    def __enter__(self) -> LoopbackNamespace:
        self.holder = subprocess.Popen(
            [
                "unshare",
                "--net",
                "--",
                "sh",
                "-c",
                'ip link set lo up && exec "$0" -c "$1"',
                sys.executable,
                HOLDER,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError(
                f"could not make a network namespace (unshare exited {self.holder.returncode})"
            )
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def path(self) -> str:
        assert self.holder is not None
        return f"/proc/{self.holder.pid}/ns/net"

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside the namespace."""
        return ["nsenter", f"--net={self.path}", "--", *argv]

    def executable(self, directory: Path, program: str) -> Path:
        """A script in `directory` that runs `program` inside (for playwright's
        executable_path, which takes one file)."""
        script = directory / f"{Path(program).name}-in-netns"
        script.write_text(f'#!/bin/sh\nexec nsenter --net={self.path} -- {program} "$@"\n')
        script.chmod(0o755)
        return script

    def forward(self, port: int) -> None:
        """Connections to 127.0.0.1:`port` inside go to 127.0.0.1:`port` on the host."""
        assert self.holder is not None
        inside = NetnsSockets(self.holder.pid)
        try:
            listener = inside.socket().result()
        finally:
            inside.close()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        self._listeners.append(listener)
        self._start(self._accept, listener, port)

    @staticmethod
    def _start(target: Callable[..., None], *args: object) -> None:
        threading.Thread(target=target, args=args, daemon=True).start()

    def _accept(self, listener: socket.socket, port: int) -> None:
        while not self._closed.is_set():
            try:
                inside, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                outside = socket.create_connection(("127.0.0.1", port))
            except OSError:
                inside.close()
                continue
            for sock in (inside, outside):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._start(self._pair, inside, outside)

    def _pair(self, inside: socket.socket, outside: socket.socket) -> None:
        back = threading.Thread(target=_pump, args=(outside, inside), daemon=True)
        back.start()
        _pump(inside, outside)
        back.join()
        inside.close()
        outside.close()

    def close(self) -> None:
        self._closed.set()
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        if self.holder is not None:
            for pipe in (self.holder.stdin, self.holder.stdout):
                if pipe is not None:
                    pipe.close()  # the holder reads EOF and ends
            self.holder.wait(10)
