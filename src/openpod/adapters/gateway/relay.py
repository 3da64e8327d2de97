"""The byte relay between one SSH channel and one pod's sshd.

asyncssh's `SSHForwarder` pair already does what a relay needs: each side hands chunks
straight to the other (no copies, no queue), and when one side's write buffer fills it pauses
reading on the other (the SSH channel then stops opening its window), so a slow pod or a slow
client holds the sender back instead of growing memory. This module adds only what the gateway
needs around it: a dial timeout, errors in the user's words, and one callback when the relay
ends, which the channel limit and the log rely on.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from asyncssh import SSHForwarder

from openpod.adapters.gateway.directory import PodTarget


class PodRelay(SSHForwarder):
    """The SSH channel's side of a relay; calls `on_close` exactly once when it ends."""

    def __init__(self, pod_side: SSHForwarder, on_close: Callable[[PodRelay], None]) -> None:
        super().__init__(pod_side)
        self._on_close: Callable[[PodRelay], None] | None = on_close

    def close(self) -> None:
        """Close both sides (asyncssh calls this from either one) and report the end once."""
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
            _, pod_side = await loop.create_connection(SSHForwarder, target.host, target.port)
    except TimeoutError:
        raise PodUnreachable(
            f"pod {target.pod_id} did not answer on SSH within {timeout:g} s"
        ) from None
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else "no route to it"
        raise PodUnreachable(f"pod {target.pod_id} refused the SSH connection ({reason})") from None
    return PodRelay(pod_side, on_close)
