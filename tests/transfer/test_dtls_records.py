"""Records on WebRTC go in the clear inside DTLS only when both sides say `"dtls": true`
(docs/transfer.md, "Records on WebRTC"), and that rests on one property of the WebRTC stack:
it refuses a DTLS peer whose certificate is not the one the SDP's fingerprint names.

The two sides here are whole `sender_connect`/`receiver_connect` runs in one process, with a
real aiortc connection on 127.0.0.1 and sealed signaling over an in-memory room.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import pytest

from openpod.adapters.transfer.channel import Channel
from openpod.adapters.transfer.webrtc import WebRtcAnswer, WebRtcFailed, WebRtcOffer
from openpod.cli.send_connect import Common, Options, receiver_connect, sender_connect
from openpod.cli.send_peer import Link, Session
from openpod.domain import transfer_protocol as proto
from openpod.domain.transfer_keys import (
    ClearOpener,
    ClearSealer,
    Opener,
    Sealer,
    SessionKeys,
)
from tests.transfer.test_webrtc import loopback_only


class MemoryRoom:
    """One side of a signaling room: what one side sends, the other receives."""

    def __init__(self, inbox: asyncio.Queue[dict[str, Any]], outbox: asyncio.Queue[dict[str, Any]]):
        self.inbox, self.outbox = inbox, outbox

    async def send(self, body: dict[str, Any]) -> None:
        await self.outbox.put(body)

    async def recv(self) -> dict[str, Any]:
        return await self.inbox.get()


class Spy:
    """A channel that keeps what is sent through it."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.max_record = channel.max_record
        self.sent: list[bytes] = []

    async def send(self, record: bytes) -> None:
        self.sent.append(record)
        await self.channel.send(record)

    async def recv(self) -> bytes:
        return await self.channel.recv()

    async def close(self) -> None:
        await self.channel.close()


def sessions() -> tuple[Session, Session]:
    """A sender's and a receiver's session holding the same keys (as after a PAKE)."""
    room_id, ya, yb = os.urandom(16), os.urandom(32), os.urandom(32)
    keys = SessionKeys.derive(os.urandom(64), room_id, ya, yb)
    to_sender: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    to_receiver: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sender = Session("sender", MemoryRoom(to_sender, to_receiver), room_id, keys)  # type: ignore[arg-type]
    receiver = Session("receiver", MemoryRoom(to_receiver, to_sender), room_id, keys)  # type: ignore[arg-type]
    return sender, receiver


def options(dtls: bool) -> Options:
    return Options("http://127.0.0.1:9", ("webrtc",), loopback_only=True, dtls_records=dtls)


@pytest.mark.parametrize(
    ("sender_says", "receiver_says", "clear"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
)
async def test_webrtc_records_go_clear_only_when_both_sides_say_dtls(
    sender_says: bool, receiver_says: bool, clear: bool
) -> None:
    sender, receiver = sessions()
    receiving = asyncio.ensure_future(receiver_connect(receiver, options(receiver_says)))
    sent = await sender_connect(sender, options(sender_says))
    # the receiver keeps the channel once the sender's first record arrives on it
    first = {"t": "manifest", "files": [], "dirs": []}
    await sent.send(proto.control(first))
    got = await asyncio.wait_for(receiving, 10)
    try:
        assert (sent.transport, got.transport) == ("webrtc", "webrtc")
        kinds = (type(sent.sealer), type(sent.opener), type(got.sealer), type(got.opener))
        assert kinds == ((ClearSealer, ClearOpener) * 2 if clear else (Sealer, Opener) * 2)
        # a whole data record: 256 KiB on the wire either way, one byte of type and the tag
        assert sent.max_data == 256 * 1024 - 1 - (0 if clear else 16)
        assert proto.parse_control(await got.recv()) == first
        record = proto.data(os.urandom(sent.max_data))
        wire = Spy(sent.channel)
        sent.channel = wire
        await sent.send(record)
        assert await got.recv() == record
        assert len(wire.sent[0]) == 256 * 1024
        assert (wire.sent[0] == record) is clear
    finally:
        await sent.close()
        await got.close()


def test_what_both_said_decides_for_webrtc_only() -> None:
    assert Common(["direct", "webrtc", "relay"], True, dtls=True).clear("webrtc")
    both = Common(["direct", "webrtc", "relay"], True, dtls=True)
    assert not both.clear("direct") and not both.clear("relay")
    assert not Common(["webrtc"], True, dtls=False).clear("webrtc")


def test_a_clear_link_is_refused_on_any_other_transport() -> None:
    sender, _receiver = sessions()
    with pytest.raises(ValueError, match="only on webrtc, not relay"):
        sender.link(None, "relay", clear=True)  # type: ignore[arg-type]
    assert isinstance(sender.link(None, "relay"), Link)  # type: ignore[arg-type]


async def test_a_dtls_peer_that_is_not_the_one_the_sdp_names_is_refused() -> None:
    """What the clear records rest on: aiortc checks the DTLS certificate against the SDP's
    fingerprint. An answer whose fingerprint was changed (as a signaling server that swapped
    it for its own would) fails the connection instead of opening the channel."""
    offer, answer = WebRtcOffer(), WebRtcAnswer()
    answer_sdp = await answer.answer(loopback_only(await offer.create([])), [])
    fingerprint = re.search(r"a=fingerprint:sha-256 ([0-9A-F:]+)", answer_sdp, re.IGNORECASE)
    assert fingerprint is not None, answer_sdp
    value = fingerprint.group(1)
    changed = ("0" if value[0] != "0" else "1") + value[1:]
    await offer.accept(loopback_only(answer_sdp.replace(value, changed)))
    try:
        with pytest.raises(WebRtcFailed, match="failed"):
            await offer.channel(10)
    finally:
        await offer.close()
        await answer.close()
