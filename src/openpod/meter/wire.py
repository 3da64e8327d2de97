"""The meter's wire protocol, as values: no sockets here (docs/metering.md, "Wire protocol").

Control plane → meter: `welcome` on connect, `ack` after each batch, `error` for a malformed
batch. Meter → control plane: `events`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

REFUSED = 4401  # close code of a wrong meter token


class ProtocolError(Exception):
    """The control plane sent something that is not a message of this protocol."""


@dataclass(frozen=True)
class Welcome:
    acked: int
    closed: bool


@dataclass(frozen=True)
class Ack:
    acked: int
    closed: bool


@dataclass(frozen=True)
class Error:
    error: str


@dataclass(frozen=True)
class Unknown:
    """A message type this meter does not know (a newer control plane): ignored."""

    type: str


Reply = Welcome | Ack | Error | Unknown


def events_message(events: Sequence[dict[str, Any]]) -> str:
    return json.dumps({"type": "events", "events": list(events)}, separators=(",", ":"))


def _acked(message: dict[str, Any]) -> tuple[int, bool]:
    acked, closed = message.get("acked"), message.get("closed", False)
    if type(acked) is not int or acked < 0 or type(closed) is not bool:
        raise ProtocolError(f"bad {message.get('type')} message: {message!r:.200}")
    return acked, closed


def parse_reply(raw: str | bytes) -> Reply:
    """One message from the control plane; ProtocolError when it is not one."""
    try:
        message = json.loads(raw)
    except ValueError:
        raise ProtocolError(f"not JSON: {raw!r:.200}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError(f"not a message: {raw!r:.200}")
    kind = message["type"]
    if kind == "welcome":
        return Welcome(*_acked(message))
    if kind == "ack":
        return Ack(*_acked(message))
    if kind == "error":
        return Error(str(message.get("error", "")))
    return Unknown(kind)
