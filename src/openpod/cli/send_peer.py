"""From a code to a key only the two sides hold, and the sealed records built on it.

Both sides meet in a signaling room named by the code's nameplate, run CPace with the whole
code as the password and confirm the key (:func:`key_exchange`); a :class:`Session` then
seals their negotiation, and a :class:`Link` seals the records of the channel they choose
(cli/send_connect.py) with per-transport keys, so neither signaling nor the relay can read
or change a byte unnoticed (docs/transfer.md). On WebRTC, when both sides say so, records go
in the clear inside DTLS, whose peer the sealed SDP pins ("Records on WebRTC").
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from openpod.adapters.transfer.channel import Channel
from openpod.adapters.transfer.signal import SignalClient
from openpod.domain.cpace import CPace, PakeError
from openpod.domain.transfer_code import TransferCode
from openpod.domain.transfer_keys import (
    ClearOpener,
    ClearSealer,
    IntegrityError,
    Opener,
    Sealer,
    SessionKeys,
)

Role = Literal["sender", "receiver"]
Transport = Literal["direct", "webrtc", "relay"]
TRANSPORTS: tuple[Transport, ...] = ("direct", "webrtc", "relay")
CI = b"openpod-transfer/1"
HELLO_SECONDS = 10.0
CONNECT_SECONDS = 10.0


class TransferFailed(Exception):
    """The transfer could not go on; the message is for the user."""


class WrongCode(TransferFailed):
    """The key confirmation failed: the code typed is not the code sent."""


@dataclass
class Link:
    """An open channel with its record keys: ``send``/``recv`` move plaintexts."""

    channel: Channel
    transport: str
    sealer: Sealer | ClearSealer
    opener: Opener | ClearOpener
    first: bytes | None = None  # a record read while choosing the transport

    @property
    def max_data(self) -> int:
        """The most file bytes one data record carries here (after the type byte and the
        sealer's tag)."""
        cap = 1 << 20 if self.transport == "direct" else 256 * 1024
        return min(cap, self.channel.max_record - 1 - self.sealer.overhead)

    async def send(self, plaintext: bytes) -> None:
        await self.channel.send(self.sealer.seal(plaintext))

    async def recv(self) -> bytes:
        if self.first is not None:
            record, self.first = self.first, None
        else:
            record = await self.channel.recv()
        return self.opener.open(record)

    async def close(self) -> None:
        await self.channel.close()


@dataclass
class Session:
    """One side's keys and sealed signaling for one PAKE run."""

    role: Role
    signal: Room
    room: bytes
    keys: SessionKeys
    sealer: Sealer = field(init=False)
    opener: Opener = field(init=False)

    def __post_init__(self) -> None:
        self.sealer = Sealer(self.keys.signal_key(self.role))
        self.opener = Opener(self.keys.signal_key(peer_of(self.role)))

    async def send(self, message: dict[str, Any]) -> None:
        sealed = self.sealer.seal(json.dumps(message).encode())
        await self.signal.send({"sealed": base64.b64encode(sealed).decode()})

    async def recv(self) -> dict[str, Any]:
        body = await self.signal.recv()
        sealed = body.get("sealed")
        if not isinstance(sealed, str):
            raise TransferFailed("the other side sent an unsealed message after the key exchange")
        try:
            message = json.loads(self.opener.open(base64.b64decode(sealed, validate=True)))
        except (ValueError, IntegrityError):
            raise TransferFailed("a signaling message was altered in transit") from None
        if not isinstance(message, dict) or not isinstance(message.get("t"), str):
            raise TransferFailed("the other side sent a malformed negotiation message")
        return message

    def link(self, channel: Channel, transport: Transport, *, clear: bool = False) -> Link:
        """The records of ``channel``: sealed with this transport's keys, or (``clear``, only
        on WebRTC once both sides said ``"dtls": true``) as they are, inside DTLS."""
        if clear:
            if transport != "webrtc":
                raise ValueError(f"records go in the clear only on webrtc, not {transport}")
            return Link(channel, transport, ClearSealer(), ClearOpener())
        return Link(
            channel,
            transport,
            Sealer(self.keys.data_key(self.role, transport)),
            Opener(self.keys.data_key(peer_of(self.role), transport)),
        )


def peer_of(role: Role) -> Role:
    return "receiver" if role == "sender" else "sender"


def _b64(body: dict[str, Any], name: str) -> bytes:
    value = body.get(name)
    try:
        if not isinstance(value, str):
            raise ValueError
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise TransferFailed(f"the other side sent no valid {name!r}") from None


class Room:
    """The signaling room seen through one handshake: bodies carry its session id ``s``.

    A receiver that left mid-handshake may leave messages queued for the next one; stamping
    every body with a session id the receiver picks lets each side drop stale ones.
    """

    def __init__(self, signal: SignalClient, session_id: str) -> None:
        self.signal, self.session_id = signal, session_id

    async def send(self, body: dict[str, Any]) -> None:
        await self.signal.send({**body, "s": self.session_id})

    async def recv(self) -> dict[str, Any]:
        while True:
            body = await self.signal.recv()
            if body.get("s") == self.session_id:
                return body


async def _open_room(signal: SignalClient, role: Role, share: bytes) -> tuple[Room, bytes]:
    """The receiver speaks first with a fresh session id; the sender answers in kind."""
    share_text = base64.b64encode(share).decode()
    if role == "receiver":
        room = Room(signal, secrets.token_hex(8))
        await room.send({"pake": share_text})
        return room, _b64(await room.recv(), "pake")
    while True:  # the sender: the first share that names a session starts it
        body = await signal.recv()
        if isinstance(body.get("s"), str) and "pake" in body:
            room = Room(signal, body["s"][:64])
            await room.send({"pake": share_text})
            return room, _b64(body, "pake")


async def key_exchange(
    signal: SignalClient, code: TransferCode, room_id: bytes, role: Role
) -> Session:
    """CPace with the code, then both confirmations; a mismatch raises :class:`WrongCode`."""
    sender = role == "sender"
    pake = CPace(prs=code.text.encode(), sid=room_id, ci=CI, initiator=sender, ad=role.encode())
    room, peer_share = await _open_room(signal, role, pake.share)
    try:
        isk = pake.finish(peer_share, peer_of(role).encode())
    except PakeError:
        raise WrongCode("the other side's key share is invalid") from None
    ya, yb = (pake.share, peer_share) if sender else (peer_share, pake.share)
    keys = SessionKeys.derive(isk, room_id, ya, yb)
    await room.send({"confirm": base64.b64encode(keys.confirm_tag(role)).decode()})
    try:
        keys.check_confirm(peer_of(role), _b64(await room.recv(), "confirm"))
    except IntegrityError:
        raise WrongCode("wrong code: the key confirmation failed") from None
    return Session(role, room, room_id, keys)
