"""A WebSocket man in the middle for transfer tests: it forwards signaling and the relay to the
real control plane and flips one bit of the relayed data, as a hostile relay would.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType

from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.support.net import free_port

DRAIN_SECONDS = 5.0


class TamperingProxy:
    """`with TamperingProxy(url, flip_after_bytes=N) as proxy:` — use `proxy.url` as the API."""

    def __init__(self, upstream: str, flip_after_bytes: int) -> None:
        self.upstream = upstream.replace("http://", "ws://", 1)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.flip_after = flip_after_bytes
        self.relayed = 0
        self.flipped = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TamperingProxy:
        self._thread.start()
        assert self._ready.wait(10), "the tampering proxy did not start"
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stop = self._stop
        if stop is not None:
            self._loop.call_soon_threadsafe(stop.set_result, None)
        self._thread.join(10)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = self._loop.create_future()
        server: Server
        async with serve(self._handle, "127.0.0.1", self.port, max_size=None) as server:
            self._ready.set()
            await self._stop
            server.close()

    async def _handle(self, client: ServerConnection) -> None:
        path = client.request.path if client.request else "/"
        tamper = path.startswith("/transfer/relay") and "side=sender" in path
        async with connect(self.upstream + path, max_size=None) as upstream:

            async def down() -> None:
                async for message in upstream:
                    await client.send(message)

            async def up() -> None:
                async for message in client:
                    if tamper and isinstance(message, bytes):
                        message = self._maybe_flip(message)
                    await upstream.send(message)

            tasks = [asyncio.ensure_future(down()), asyncio.ensure_future(up())]
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                # One way ended (say a close crossed data going the other way): the other way
                # still delivers what it has already read, as a real relay's TCP would (a
                # receiver's last `error` must not be lost here), then ends with its side.
                await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await task

    def _maybe_flip(self, frame: bytes) -> bytes:
        self.relayed += len(frame)
        if self.flipped or self.relayed < self.flip_after or len(frame) < 64:
            return frame
        self.flipped += 1
        changed = bytearray(frame)
        changed[len(changed) // 2] ^= 0x01
        return bytes(changed)
