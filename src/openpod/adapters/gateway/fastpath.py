"""The gateway's fast path: the pod's SSH session relayed as it is, after a signed handshake
(domain/relay.py has the protocol and why). Same rules as `ssh -J` through the gateway: the
key must be an account's, the pod that account's and running; refusals are the same words
and are logged with who asked.

After the handshake the two TCP connections are joined by a pair of protocols that hand each
chunk to the other side's transport (no queue, no copy in Python beyond the read), and pause
reading on one side while the other's write buffer is full, so a slow end holds the sender
back instead of growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import threading

import asyncssh

from openpod.adapters.gateway import rules
from openpod.adapters.gateway.connection import GatewayLimits
from openpod.adapters.gateway.directory import Caller, Directory, PodTarget, Refused
from openpod.adapters.gateway.errors import GatewayError
from openpod.domain import relay

log = logging.getLogger("openpod.gateway")
SPLICE = hasattr(os, "splice") and hasattr(fcntl, "F_SETPIPE_SZ")  # Linux
PIPE_BYTES = 1 << 20  # the default pipe-max-size: 16 pages of 64 KiB moved per call


class _Side(asyncio.Protocol):
    """One end of a joined pair: what it reads, its peer writes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.early: list[bytes] = []  # read before the pair was joined (the pod's banner)
        self.ended = False  # its EOF came

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def join(self, peer: _Side) -> None:
        self.peer = peer
        assert peer.transport is not None
        for data in self.early:
            peer.transport.write(data)
        self.early.clear()

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.early.append(data)

    def eof_received(self) -> bool:
        self.ended = True
        peer = self.peer.transport if self.peer is not None else None
        if peer is not None and peer.can_write_eof():
            peer.write_eof()
            # Half-closed: the other direction goes on, until it has ended too; then this
            # transport closes and connection_lost closes the peer's (else both stayed open,
            # and the client counted against the connection limit, for ever).
            return not (self.peer is not None and self.peer.ended)
        return False

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class _Client(_Side):
    """The client's connection: the handshake first, then one side of the relay."""

    def __init__(self, path: FastPath) -> None:
        super().__init__()
        self.path = path
        self.nonce = os.urandom(relay.NONCE_BYTES)
        self.buffer = b""
        self.tries = 0
        self.caller: Caller | None = None
        self.peer_name = "?"
        self.relaying = False
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.peer_name = rules.format_address(peer[0], peer[1]) if peer else "?"
        if len(self.path.clients) >= self.path.limits.max_connections:
            log.warning("fast path: refused %s: too many connections", self.peer_name)
            self._end(relay.refuse("the gateway is full, try again later"))
            return
        self.path.clients.add(self)
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.path.limits.login_timeout, self._timed_out)
        assert self.transport is not None
        self.transport.write(relay.greeting(self.nonce))

    def data_received(self, data: bytes) -> None:
        if self.relaying:
            super().data_received(data)
            return
        self.buffer += data
        if b"\n" in self.buffer:
            line, _, self.buffer = self.buffer.partition(b"\n")
            assert self.transport is not None
            self.transport.pause_reading()  # one hello at a time
            self.task = asyncio.create_task(self._hello(line))
        elif len(self.buffer) > relay.MAX_LINE:
            self._end(relay.refuse("the hello is too long"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.path.clients.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        super().connection_lost(exc)

    def _timed_out(self) -> None:
        if not self.relaying:
            log.info("fast path: %s did not finish the handshake in time", self.peer_name)
            self._end(relay.refuse("the handshake took too long"))

    def _end(self, message: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(message)
            self.transport.close()

    async def _hello(self, line: bytes) -> None:
        assert self.transport is not None
        self.tries += 1
        try:
            hello = relay.parse_hello(line)
        except relay.RelayProtocolError as error:
            self._end(relay.refuse(str(error)))
            return
        caller = await self._caller(hello)
        if caller is None:
            if self.tries >= relay.MAX_TRIES:
                self._end(relay.refuse("no key of an account after several tries"))
            else:
                self.transport.write(relay.no("that key is not an openpod account's"))
                self.transport.resume_reading()
                self.data_received(b"")  # a next hello may be buffered already
            return
        who = f"account {caller.account_id} key {caller.key_fingerprint} from {self.peer_name}"
        try:
            target = await self.path.directory.target_for(caller, hello.pod_id)
        except Refused as refusal:
            log.info("fast path: refused %s: %s", who, refusal)
            self._end(relay.refuse(str(refusal)))
            return
        await self._join(target, who)

    async def _caller(self, hello: relay.Hello) -> Caller | None:
        try:
            key = asyncssh.import_public_key(hello.key)
        except (asyncssh.KeyImportError, ValueError):
            return None
        if not key.verify(relay.signed_payload(self.nonce, hello.pod_id), hello.signature):
            log.info("fast path: a bad signature from %s", self.peer_name)
            return None
        line = key.export_public_key("openssh").decode("ascii").strip()
        return await self.path.directory.caller_for_key(line)

    async def _join(self, target: PodTarget, who: str) -> None:
        assert self.transport is not None
        if self.path.splice and self.transport.get_write_buffer_size() == 0:
            await self._splice(target, who)
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.path.limits.dial_timeout):
                _, pod = await loop.create_connection(_Side, target.host, target.port)
        except (TimeoutError, OSError):
            log.info("fast path: %s: pod %s did not answer", who, target.pod_id)
            self._end(relay.refuse(f"pod {target.pod_id} did not answer on SSH"))
            return
        assert self.transport is not None
        assert pod.transport is not None
        if self.transport.is_closing():
            pod.transport.close()
            return
        if self.timer is not None:
            self.timer.cancel()
        self.relaying = True
        self.transport.write(relay.OK)
        self.peer = pod
        pod.join(self)  # the pod's banner, if it came already, follows the OK
        if self.buffer:  # the client's first SSH bytes, sent behind its hello
            pod.transport.write(self.buffer)
            self.buffer = b""
        self.transport.resume_reading()
        log.info("fast path: %s -> pod %s", who, target.pod_id)

    async def _splice(self, target: PodTarget, who: str) -> None:
        """Linux: dial the pod, take the client's socket from asyncio and join the two in the
        kernel (splice through a pipe, one thread a direction): no byte is copied through
        Python."""
        try:
            pod = await asyncio.to_thread(
                socket.create_connection, (target.host, target.port), self.path.limits.dial_timeout
            )
        except OSError:
            log.info("fast path: %s: pod %s did not answer", who, target.pod_id)
            self._end(relay.refuse(f"pod {target.pod_id} did not answer on SSH"))
            return
        assert self.transport is not None
        raw = self.transport.get_extra_info("socket")
        if self.transport.is_closing() or raw is None:
            pod.close()
            return
        client = socket.socket(fileno=os.dup(raw.fileno()))
        self.relaying = True
        if self.timer is not None:
            self.timer.cancel()
        self.transport.abort()  # asyncio lets go of the socket; `client` holds it now
        try:
            client.setblocking(True)
            pod.settimeout(None)
            client.sendall(relay.OK)
            if self.buffer:  # the client's first SSH bytes, sent behind its hello
                pod.sendall(self.buffer)
        except OSError:
            client.close()
            pod.close()
            return
        self.path.spliced.add(_Spliced(client, pod, self.path.spliced))
        log.info("fast path: %s -> pod %s", who, target.pod_id)


class _Spliced:
    """One client joined to one pod in the kernel: a thread a direction, each splicing through
    a pipe of its own; an end's EOF is passed on (half-close), the pair closes when both end."""

    def __init__(self, client: socket.socket, pod: socket.socket, live: set[_Spliced]) -> None:
        self.sockets = (client, pod)
        for sock in self.sockets:
            # No Nagle on either end, as asyncio's transports have: the SSH session sends small
            # messages one way (SFTP read requests, window adjusts) while bulk data fills the
            # other, and Nagle holds each small one until the last segment is acknowledged.
            # With it on the pod's socket, scp down ran at 0.47x of straight with a third of
            # the CPU idle; without, 0.71x (bench/RESULTS.md).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._live = live
        self._left = 2
        self._lock = threading.Lock()
        for source, sink in ((client, pod), (pod, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        read_end, write_end = os.pipe()
        with contextlib.suppress(OSError):
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        try:
            while moved := os.splice(source.fileno(), write_end, PIPE_BYTES):
                while moved:
                    moved -= os.splice(read_end, sink.fileno(), moved)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            self.shut()  # a reset or a closed end: the other direction ends too
        finally:
            os.close(read_end)
            os.close(write_end)
            self._done()

    def shut(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _done(self) -> None:
        with self._lock:
            self._left -= 1
            if self._left:
                return
        for sock in self.sockets:
            sock.close()
        self._live.discard(self)


class FastPath:
    """The fast path's listener, beside the gateway's SSH port."""

    def __init__(
        self,
        directory: Directory,
        *,
        host: str = "127.0.0.1",
        port: int = 2223,
        limits: GatewayLimits | None = None,
        splice: bool = SPLICE,
    ) -> None:
        """`splice` False relays through asyncio (what other systems than Linux do)."""
        self.directory = directory
        self.splice = splice
        self.host = host
        self.limits = limits or GatewayLimits()
        self.clients: set[_Client] = set()
        self.spliced: set[_Spliced] = set()
        self._requested_port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise GatewayError("the fast path is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Client(self), self.host, self._requested_port
            )
        except OSError as exc:
            raise GatewayError(
                f"cannot listen on {self.host}:{self._requested_port}: {exc}"
            ) from exc
        log.info("SSH fast path listening on %s", rules.format_address(self.host, self.port))

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        clients = list(self.clients)
        for client in clients:
            if client.transport is not None:
                client.transport.close()
        for pair in list(self.spliced):
            pair.shut()
        await server.wait_closed()
