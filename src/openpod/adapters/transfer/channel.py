"""The channel every transfer transport offers: whole records in order, both ways.

`openpod send`/`receive` speak in records (sealed by the session keys) and do not care
whether a record crossed a direct TCP connection, a WebRTC data channel or the relay; each
transport wraps itself in this one interface.
"""

from __future__ import annotations

from typing import Protocol


class ChannelClosed(Exception):
    """The channel is gone: the peer closed it, the connection failed, or we closed it."""


class RecordTooLarge(ValueError):
    """A record handed to `send` is over what the channel carries (its `max_record`)."""


class Channel(Protocol):
    """A reliable, ordered pipe of records between the sender and the receiver.

    `max_record` is the largest record (in bytes) that `send` accepts on this transport.
    `recv` returns the next whole record and raises `ChannelClosed` once the channel is
    closed or broken; `send` raises `ChannelClosed` likewise. `close` is idempotent.
    """

    max_record: int

    async def send(self, record: bytes) -> None: ...

    async def recv(self) -> bytes: ...

    async def close(self) -> None: ...
