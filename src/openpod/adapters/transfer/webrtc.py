"""WebRTC data channels for `openpod send`/`receive`: CLI to CLI and CLI to browser.

The sender makes the offer (one ordered, reliable data channel labelled "openpod"), the
receiver the answer; both wait for ICE gathering to finish so each SDP carries all its
candidates (no trickle: the SDPs travel in the sealed signaling). STUN/TURN servers come from
settings; with none, only host candidates are used.

Loopback: aioice never offers 127.0.0.1 as a host candidate, yet the sender and the receiver
may share a machine (or a test runs both). With `include_loopback` we add it, through one
contained hook: aioice's host-address discovery (`aioice.ice.get_host_addresses`) is wrapped
once so that it appends 127.0.0.1 only while a context variable, set by this module around
its own ICE gathering, says so. Other users of aioice in the process see no change.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import re
from collections.abc import Mapping, Sequence
from typing import Any

import aioice.ice
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.exceptions import InvalidAccessError, InvalidStateError
from aiortc.rtcsctptransport import RTCSctpTransport

from openpod.adapters.transfer.channel import ChannelClosed, RecordTooLarge

LABEL = "openpod"
CHANNEL_ID = 0  # the stream of a pre-negotiated channel (docs/transfer.md "Negotiation")
MAX_RECORD = 262144
"""A record is at most 256 KiB on WebRTC (the max-message-size aiortc and Chromium state), or
less when the remote's SDP says so. aiortc's SCTP is pure Python and pays per message as well
as per packet: 256 KiB records carried 10.3 MB/s where 64 KiB ones carried 6.9 (one process,
64 MiB, this 2-core VM)."""

_DEFAULT_REMOTE_MAX = 65536  # RFC 8841: a peer that states no a=max-message-size takes 64 KiB
_SEND_HIGH = 1024 * 1024
_SEND_LOW = 256 * 1024
_MAX_SIZE_LINE = re.compile(r"^a=max-message-size:(\d+)\s*$", re.MULTILINE)

_loopback: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "openpod_webrtc_loopback", default=False
)


class WebRtcFailed(ConnectionError):
    """The peer connection could not be set up, or its data channel never opened."""


def _install_loopback_hook() -> None:
    """Wrap aioice's host-address list once so it can include 127.0.0.1 (see module doc)."""
    original = aioice.ice.get_host_addresses
    if getattr(original, "openpod_loopback", False):
        return

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = original(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
        if use_ipv4 and _loopback.get() and "127.0.0.1" not in addresses:
            addresses = [*addresses, "127.0.0.1"]
        return addresses

    get_host_addresses.openpod_loopback = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = get_host_addresses


def _install_delayed_sack() -> None:
    """Make aiortc acknowledge DATA the way RFC 4960 (6.2) asks: a SACK for every second
    packet, at once on a gap or a duplicate. aiortc sends one for every packet, and its SCTP is
    pure Python: every SACK is a packet to seal and send, and one more for the sender to take
    in (its largest cost after the data itself). Here a SACK that would acknowledge a single
    packet waits two turns of the event loop, by which time the next datagram of a burst has
    been read: a burst is acknowledged two packets at a time, a lone packet two turns late.
    Measured in one process, 64 MiB: half the SACKs, 18% less CPU, 6.9 -> 8.5 MB/s with
    64 KiB records, 10.3 -> 11.6 with 256 KiB. Wrapped once, for every connection of the
    process (only the CLI imports this module); an aiortc without the method is left as is."""
    send_sack = getattr(RTCSctpTransport, "_send_sack", None)
    if send_sack is None or getattr(send_sack, "openpod_delayed", False):
        return

    async def flush(sctp: Any) -> None:
        if sctp._sack_needed and getattr(sctp, "_openpod_unacked", 0):
            sctp._openpod_unacked = 0
            with contextlib.suppress(ConnectionError):  # the association closed meanwhile
                await send_sack(sctp)

    async def delayed_send_sack(sctp: Any) -> None:
        if getattr(sctp, "_openpod_unacked", 0) or sctp._sack_misordered or sctp._sack_duplicates:
            sctp._openpod_unacked = 0
            await send_sack(sctp)
            return
        sctp._openpod_unacked = 1
        # Two turns, not one: aioice reads the next datagram of a burst on the next turn, and
        # a task made right here would flush before it (1.16 SACKs a packet, measured).
        loop = asyncio.get_running_loop()
        loop.call_soon(lambda: _keep(loop.create_task(flush(sctp))))

    delayed_send_sack.openpod_delayed = True  # type: ignore[attr-defined]
    RTCSctpTransport._send_sack = delayed_send_sack  # type: ignore[method-assign,assignment]


_flushing: set[asyncio.Task[None]] = set()


def _data_channel(pc: RTCPeerConnection, negotiated: bool) -> RTCDataChannel:
    """The transfer's one ordered, reliable channel; pre-negotiated on stream CHANNEL_ID when
    both sides said they can, which skips the in-band open handshake (DCEP): Chromium now and
    then drops the first message sent on a channel it was just told of that way."""
    if negotiated:
        return pc.createDataChannel(LABEL, ordered=True, negotiated=True, id=CHANNEL_ID)
    return pc.createDataChannel(LABEL, ordered=True)


def _keep(task: asyncio.Task[None]) -> None:
    """Hold a fire-and-forget task until it ends (the loop keeps only weak references)."""
    _flushing.add(task)
    task.add_done_callback(_flushing.discard)


def remote_max_record(remote_sdp: str) -> int:
    """The largest record we may send: the remote's max-message-size, at most 256 KiB."""
    match = _MAX_SIZE_LINE.search(remote_sdp)
    stated = int(match.group(1)) if match else _DEFAULT_REMOTE_MAX
    return MAX_RECORD if stated == 0 else min(stated, MAX_RECORD)  # 0: no limit stated


def _ice_servers(servers: Sequence[Mapping[str, Any]]) -> list[RTCIceServer]:
    return [
        RTCIceServer(
            urls=server["urls"],
            username=server.get("username"),
            credential=server.get("credential"),
        )
        for server in servers
    ]


class WebRtcChannel:
    """An open data channel seen as a channel of records (see `Channel`)."""

    def __init__(self, pc: RTCPeerConnection, dc: RTCDataChannel, max_record: int) -> None:
        self.max_record = max_record
        self._pc = pc
        self._dc = dc
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._closed: ChannelClosed | None = None
        self._writable: asyncio.Future[None] | None = None
        dc.bufferedAmountLowThreshold = _SEND_LOW
        dc.on("message", self._on_message)
        dc.on("close", lambda: self._on_gone("the peer closed the data channel"))
        dc.on("bufferedamountlow", self._wake_writer)
        pc.on("connectionstatechange", self._on_state)

    def _on_message(self, message: bytes | str) -> None:
        if isinstance(message, str):
            self._on_gone("peer sent a text message on the data channel")
            return
        self._inbox.put_nowait(message)

    def _on_state(self) -> None:
        if self._pc.connectionState in ("failed", "closed"):
            self._on_gone(f"WebRTC connection {self._pc.connectionState}")

    def _on_gone(self, reason: str) -> None:
        if self._closed is None:
            self._closed = ChannelClosed(reason)
            self._inbox.put_nowait(None)
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    @property
    def negotiated(self) -> bool:
        """Whether the channel was pre-negotiated (no in-band open handshake)."""
        return bool(self._dc.negotiated)

    @property
    def buffered_amount(self) -> int:
        """Bytes handed to the data channel and not yet passed to SCTP."""
        return int(self._dc.bufferedAmount)

    async def send(self, record: bytes) -> None:
        """Send one record; waits while over 1 MiB is buffered, so memory stays bounded."""
        if len(record) > self.max_record:
            raise RecordTooLarge(f"record of {len(record)} bytes, over {self.max_record}")
        while self._closed is None and self._dc.bufferedAmount > _SEND_HIGH:
            self._writable = asyncio.get_running_loop().create_future()
            await self._writable
        if self._closed is not None:
            raise self._closed
        if self._dc.readyState != "open":
            raise ChannelClosed(f"data channel is {self._dc.readyState}")
        self._dc.send(record)

    async def recv(self) -> bytes:
        """The next record; `ChannelClosed` once the channel is gone and all are read."""
        if self._inbox.empty() and self._closed is not None:
            raise self._closed
        record = await self._inbox.get()
        if record is None:
            self._inbox.put_nowait(None)  # later calls fail the same way
            assert self._closed is not None
            raise self._closed
        return record

    async def close(self) -> None:
        """Tear down the peer connection (records not yet delivered are dropped)."""
        self._on_gone("data channel closed")
        await self._pc.close()


class _Peer:
    """What the offering and the answering side share: the peer connection and its opening."""

    def __init__(self, *, include_loopback: bool = True) -> None:
        self._include_loopback = include_loopback
        self._pc: RTCPeerConnection | None = None
        self._opened: asyncio.Future[WebRtcChannel] | None = None
        self._remote_sdp = ""

    def _start(self, ice_servers: Sequence[Mapping[str, Any]]) -> RTCPeerConnection:
        if self._pc is not None:
            raise WebRtcFailed("this WebRTC peer is already started")
        _install_delayed_sack()
        config = RTCConfiguration(iceServers=_ice_servers(ice_servers))
        pc = RTCPeerConnection(configuration=config)
        self._pc = pc
        self._opened = asyncio.get_running_loop().create_future()

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._fail(f"WebRTC connection {pc.connectionState}")

        return pc

    def _fail(self, reason: str) -> None:
        if self._opened is not None and not self._opened.done():
            self._opened.set_exception(WebRtcFailed(reason))
            self._opened.exception()  # marked as seen: nobody may be waiting for it

    def _watch(self, dc: RTCDataChannel) -> None:
        # the channel listens for records from now on: the peer may send before we ask
        assert self._pc is not None
        channel = WebRtcChannel(self._pc, dc, MAX_RECORD)

        def on_open() -> None:
            if self._opened is not None and not self._opened.done():
                self._opened.set_result(channel)

        if dc.readyState == "open":
            on_open()
        else:
            dc.on("open", on_open)

    async def _set_remote(self, sdp: str, kind: str) -> None:
        """Take the peer's SDP; one that aiortc cannot use is a `WebRtcFailed`."""
        assert self._pc is not None
        self._remote_sdp = sdp
        if "m=application" not in sdp:
            await self.close()
            raise WebRtcFailed(f"the WebRTC {kind} has no data channel")
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp, kind))
        except (ValueError, InvalidAccessError, InvalidStateError) as error:
            await self.close()
            raise WebRtcFailed(f"unusable WebRTC {kind}: {error}") from error

    async def _gather(self, description: RTCSessionDescription) -> str:
        """Set our description (aiortc gathers every candidate here) and return the SDP."""
        assert self._pc is not None
        if self._include_loopback:
            _install_loopback_hook()
        token = _loopback.set(self._include_loopback)
        try:
            await self._pc.setLocalDescription(description)
        finally:
            _loopback.reset(token)
        return str(self._pc.localDescription.sdp)

    async def channel(self, timeout: float) -> WebRtcChannel:
        """Wait for the data channel to open; on failure or timeout the connection is closed."""
        if self._pc is None or self._opened is None:
            raise WebRtcFailed("no WebRTC offer or answer was made")
        try:
            channel = await asyncio.wait_for(asyncio.shield(self._opened), timeout)
        except TimeoutError:
            await self.close()
            raise WebRtcFailed(f"the WebRTC data channel did not open in {timeout:g}s") from None
        except WebRtcFailed:
            await self.close()
            raise
        channel.max_record = remote_max_record(self._remote_sdp)
        return channel

    async def close(self) -> None:
        """Tear down the peer connection (also when no channel was ever opened)."""
        self._fail("the WebRTC connection was closed")
        if self._pc is not None:
            await self._pc.close()


class WebRtcOffer(_Peer):
    """The sender's side: makes the data channel and the offer."""

    async def create(
        self, ice_servers: Sequence[Mapping[str, Any]] = (), *, negotiated: bool = False
    ) -> str:
        """Start the peer connection; the offer SDP, with all candidates. `negotiated`: the
        channel is pre-negotiated (both sides make it, no in-band open handshake)."""
        pc = self._start(ice_servers)
        self._watch(_data_channel(pc, negotiated))
        return await self._gather(await pc.createOffer())

    async def accept(self, answer_sdp: str) -> None:
        """Take the receiver's answer; the connection then sets itself up."""
        if self._pc is None:
            raise WebRtcFailed("create the offer before accepting an answer")
        await self._set_remote(answer_sdp, "answer")


class WebRtcAnswer(_Peer):
    """The receiver's side: answers the sender's offer and takes its data channel."""

    async def answer(
        self,
        offer_sdp: str,
        ice_servers: Sequence[Mapping[str, Any]] = (),
        *,
        negotiated: bool = False,
    ) -> str:
        """Answer the offer; the answer SDP, with all candidates. `negotiated` as the offer's
        side agreed: we make the channel too, else the offer's side opens it in band."""
        pc = self._start(ice_servers)
        if negotiated:
            self._watch(_data_channel(pc, negotiated))
        else:

            @pc.on("datachannel")
            def on_datachannel(dc: RTCDataChannel) -> None:
                if dc.label == LABEL:
                    self._watch(dc)

        await self._set_remote(offer_sdp, "offer")
        return await self._gather(await pc.createAnswer())
