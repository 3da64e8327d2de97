"""Transports of `openpod send`/`receive`.

Rule: only this package opens connections for send/receive: direct TCP, WebRTC, relay,
signaling. Each transport hands back a `Channel` of records; aiortc is imported only by the
WebRTC module, so the CLI pays for it only when WebRTC is tried.
"""

from openpod.adapters.transfer.channel import Channel, ChannelClosed

__all__ = ["Channel", "ChannelClosed"]
