"""tests/support/net.NetnsSockets, behind the fake kubelet's port forwards: a connection
dropped while its socket in the Pod's namespace is being made must not leak that socket
(pytest turns the ResourceWarning of a leaked socket into a failure of whichever test runs)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from concurrent.futures import Future

import pytest

from tests.support.net import NetnsSockets


@pytest.fixture
def sockets() -> Iterator[NetnsSockets]:
    made = NetnsSockets(os.getpid())  # our own namespace: setns works as in a Pod's
    yield made
    made.close()


def test_a_socket_made_for_a_cancelled_waiter_is_closed(sockets: NetnsSockets) -> None:
    jobs: list[Future[socket.socket]] = []
    make = sockets.socket

    def watched() -> Future[socket.socket]:
        jobs.append(make())
        return jobs[-1]

    sockets.socket = watched  # type: ignore[method-assign]

    async def go() -> None:
        waiter = asyncio.ensure_future(sockets.made())
        await asyncio.sleep(0)  # it has asked for the socket
        made = jobs[0].result(10)  # made, and the waiter not yet told (the loop is here)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert waiter.cancelled()
        assert made.fileno() == -1  # closed

    asyncio.run(go())


def test_a_request_given_up_before_it_is_made_is_skipped(sockets: NetnsSockets) -> None:
    given_up: Future[socket.socket] = Future()
    given_up.cancel()
    sockets._jobs.put(given_up)  # as wrap_future cancels a job its waiter no longer wants
    with sockets.socket().result(10) as after:  # the thread goes on
        assert after.family == socket.AF_INET
