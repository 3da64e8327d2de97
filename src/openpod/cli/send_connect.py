"""Choosing a transport once the key is agreed: direct TCP, then WebRTC, then the relay.

The sender offers each transport both sides can use, in that order, over sealed signaling;
the receiver tries it and sends ``hello`` as the first record on the new channel. The first
channel that carries ``hello`` to the sender (and the sender's first record back) is kept;
the others are abandoned and closed (docs/transfer.md, "Negotiation").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from openpod.adapters.transfer.channel import Channel, ChannelClosed
from openpod.cli.send_peer import (
    CONNECT_SECONDS,
    HELLO_SECONDS,
    TRANSPORTS,
    Link,
    Session,
    TransferFailed,
    Transport,
)
from openpod.domain import transfer_protocol as proto
from openpod.domain.transfer_keys import IntegrityError


@dataclass
class Options:
    """How this side may connect."""

    api_url: str
    transports: Sequence[str] = TRANSPORTS
    listen_host: str = "0.0.0.0"
    listen_port: int = 0
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    loopback_only: bool = False  # offer only 127.0.0.1: both ends on one machine
    # Say that our WebRTC data channel can be pre-negotiated (peers before it do not say so)
    negotiated_channel: bool = True
    # Say that our WebRTC records may go in the clear inside DTLS (peers before it do not)
    dtls_records: bool = True


def only_loopback(sdp: str) -> str:
    """``sdp`` without ICE candidates other than 127.0.0.1, so the peer dials nothing else."""
    kept = []
    for line in sdp.split("\r\n"):
        fields = line.split()
        if line.startswith("a=candidate:") and len(fields) > 4 and fields[4] != "127.0.0.1":
            continue
        kept.append(line)
    return "\r\n".join(kept)


def _offered(sdp: str, options: Options) -> str:
    return only_loopback(sdp) if options.loopback_only else sdp


@dataclass(frozen=True)
class Common:
    """What both sides said they can: transports in the order to try, whether the WebRTC
    data channel is pre-negotiated (both sides said `"negotiated": true`) and whether its
    records go in the clear inside DTLS (both said `"dtls": true`)."""

    transports: list[Transport]
    negotiated: bool
    dtls: bool

    def clear(self, transport: Transport) -> bool:
        """Whether the records of ``transport`` go unsealed (docs/transfer.md, "Records on
        WebRTC"): only WebRTC's, and only when both sides said so."""
        return transport == "webrtc" and self.dtls


async def _transports(session: Session, options: Options) -> Common:
    mine: dict[str, Any] = {"t": "transports", "can": list(options.transports)}
    if options.negotiated_channel:
        mine["negotiated"] = True
    if options.dtls_records:
        mine["dtls"] = True
    await session.send(mine)
    theirs = await session.recv()
    if theirs["t"] != "transports" or not isinstance(theirs.get("can"), list):
        raise TransferFailed("the other side did not say how it can connect")
    return Common(
        [t for t in TRANSPORTS if t in options.transports and t in theirs["can"]],
        options.negotiated_channel and theirs.get("negotiated") is True,
        options.dtls_records and theirs.get("dtls") is True,
    )


async def _await_hello(
    session: Session, channel: Channel, transport: Transport, clear: bool = False
) -> Link:
    link = session.link(channel, transport, clear=clear)
    hello = proto.parse_control(await asyncio.wait_for(link.recv(), HELLO_SECONDS))
    proto.expect(hello, "hello")
    return link


async def _direct_hello(session: Session, listener: Any) -> Link:
    """The first connection whose first record opens as ``hello``; strangers are dropped."""
    while True:
        channel = await listener.accept()
        try:
            return await _await_hello(session, channel, "direct")
        except (IntegrityError, proto.ProtocolError, ChannelClosed, TimeoutError):
            await channel.close()


async def sender_connect(session: Session, options: Options) -> Link:
    """Try each transport both sides can until the receiver's ``hello`` arrives on one."""
    tried = []
    common = await _transports(session, options)
    for transport in common.transports:
        tried.append(transport)
        closers: list[Callable[[], Awaitable[None]]] = []
        channel: Channel
        try:
            if transport == "direct":
                from openpod.adapters.transfer import direct

                listener = await direct.listen(options.listen_host, options.listen_port)
                closers.append(_async(listener.close))
                await session.send(
                    {"t": "try", "transport": "direct", "addrs": [list(a) for a in listener.addrs]}
                )
                if await _tried(session, transport):
                    link = await asyncio.wait_for(_direct_hello(session, listener), HELLO_SECONDS)
                    listener.close()
                    return link
            elif transport == "webrtc":
                from openpod.adapters.transfer import webrtc  # aiortc: ~0.5 s to import

                offer = webrtc.WebRtcOffer()
                closers.append(offer.close)
                sdp = await offer.create(options.ice_servers, negotiated=common.negotiated)
                sdp = _offered(sdp, options)
                await session.send({"t": "try", "transport": "webrtc", "sdp": sdp})
                answer = await _tried(session, transport)
                if answer:
                    await offer.accept(str(answer.get("sdp", "")))
                    channel = await offer.channel(CONNECT_SECONDS)
                    return await _await_hello(
                        session, channel, transport, clear=common.clear(transport)
                    )
            else:
                from openpod.adapters.transfer import relay

                await session.send({"t": "try", "transport": "relay"})
                if await _tried(session, transport):
                    channel = await asyncio.wait_for(
                        relay.relay_connect(options.api_url, session.room, "sender"),
                        CONNECT_SECONDS,
                    )
                    closers.append(channel.close)
                    return await _await_hello(session, channel, transport)
        except (OSError, TimeoutError, ChannelClosed, IntegrityError, proto.ProtocolError):
            pass  # the next transport, after telling the receiver
        for close in closers:
            with contextlib.suppress(OSError, ChannelClosed):
                await close()
        await session.send({"t": "abandon", "transport": transport})
    raise TransferFailed(f"no way to connect: tried {', '.join(tried) or 'nothing in common'}")


def _async(close: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def closing() -> None:
        close()

    return closing


async def _tried(session: Session, transport: str) -> dict[str, Any] | None:
    reply = await session.recv()
    if reply["t"] != "tried" or reply.get("transport") != transport:
        raise TransferFailed(f"the other side answered {reply['t']!r} to a {transport} attempt")
    return reply if reply.get("ok") is True else None


async def receiver_connect(session: Session, options: Options) -> Link:
    """Answer the sender's attempts until one carries our ``hello`` and its first record."""
    common = await _transports(session, options)
    while True:
        attempt = await session.recv()
        if attempt["t"] != "try":
            raise TransferFailed(f"expected a connection attempt, got {attempt['t']!r}")
        transport = attempt.get("transport")
        kind = next((t for t in common.transports if t == transport), None)
        channel: Channel | None = None
        try:
            if kind is None:
                raise TransferFailed(f"{transport!r} was not offered")
            if transport == "direct":
                from openpod.adapters.transfer import direct

                channel = await direct.connect_any(_addrs(attempt.get("addrs")), 2.0)
                await session.send({"t": "tried", "transport": transport, "ok": True})
            elif transport == "webrtc":
                from openpod.adapters.transfer import webrtc

                answerer = webrtc.WebRtcAnswer()
                offer_sdp = str(attempt.get("sdp", ""))
                sdp = await answerer.answer(
                    offer_sdp, options.ice_servers, negotiated=common.negotiated
                )
                sdp = _offered(sdp, options)
                await session.send({"t": "tried", "transport": transport, "ok": True, "sdp": sdp})
                channel = await answerer.channel(CONNECT_SECONDS)
            else:
                from openpod.adapters.transfer import relay

                await session.send({"t": "tried", "transport": transport, "ok": True})
                channel = await asyncio.wait_for(
                    relay.relay_connect(options.api_url, session.room, "receiver"),
                    CONNECT_SECONDS,
                )
        except (OSError, TimeoutError, ChannelClosed, TransferFailed) as error:
            if kind in ("direct", None):
                await session.send(
                    {"t": "tried", "transport": transport, "ok": False, "message": str(error)}
                )
            else:
                await _expect_abandon(session, transport)
            continue
        assert channel is not None
        assert kind is not None
        link = session.link(channel, kind, clear=common.clear(kind))
        await link.send(proto.control({"t": "hello", "v": 1}))
        if await _kept(session, link, kind):
            return link


def _addrs(value: object) -> list[tuple[str, int]]:
    if not isinstance(value, list) or not value:
        raise TransferFailed("the direct attempt lists no addresses")
    addrs = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], int)):
            raise TransferFailed("the direct attempt lists a malformed address")
        addrs.append((str(item[0]), item[1]))
    return addrs


async def _expect_abandon(session: Session, transport: object) -> None:
    message = await session.recv()
    if message["t"] != "abandon" or message.get("transport") != transport:
        raise TransferFailed(f"expected the sender to abandon {transport}, got {message['t']!r}")


async def _kept(session: Session, link: Link, transport: str) -> bool:
    """True once the sender's first record arrives here; False if it abandons the transport."""
    first = asyncio.ensure_future(link.channel.recv())
    note = asyncio.ensure_future(session.recv())
    await asyncio.wait({first, note}, return_when=asyncio.FIRST_COMPLETED)
    if first.done() and first.exception() is None:
        note.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await note
        link.first = first.result()
        return True
    if not note.done():  # the channel broke: the sender will abandon it
        first.exception()
        await link.close()
        await _expect_abandon(session, transport)
        return False
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError, ChannelClosed):
        await first
    await link.close()
    message = note.result()
    if message["t"] != "abandon" or message.get("transport") != transport:
        raise TransferFailed(f"expected the sender's data or an abandon, got {message['t']!r}")
    return False
