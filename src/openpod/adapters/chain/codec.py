"""ABI encoding and decoding for one contract: calls, results, custom errors and events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode, encode
from eth_abi.exceptions import DecodingError
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from openpod.adapters.chain.errors import DecodedError

_ERROR_STRING = bytes.fromhex("08c379a0")
_PANIC = bytes.fromhex("4e487b71")


def abi_type(item: dict[str, Any]) -> str:
    """The canonical type of an ABI input: `(uint256,bytes32)[]` for a tuple array."""
    kind = str(item["type"])
    if kind.startswith("tuple"):
        inner = ",".join(abi_type(c) for c in item["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


def _normal(value: Any, kind: str) -> Any:
    if kind == "address" and isinstance(value, str):
        return to_checksum_address(value)
    return value


@dataclass(frozen=True)
class _Entry:
    name: str
    names: tuple[str, ...]
    types: tuple[str, ...]
    outputs: tuple[str, ...] = ()
    indexed: tuple[bool, ...] = ()

    @property
    def signature(self) -> str:
        return f"{self.name}({','.join(self.types)})"


@dataclass(frozen=True)
class Event:
    """A decoded log: its event's name, its fields by name, and where it was emitted."""

    name: str
    args: dict[str, Any]
    address: str
    block_number: int
    tx_hash: str
    log_index: int


class Codec:
    """Encodes calls to and decodes answers from a contract, given its ABI."""

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self._functions: dict[str, _Entry] = {}
        self._errors: dict[bytes, _Entry] = {}
        self._events: dict[bytes, _Entry] = {}
        self.constructor: tuple[str, ...] = ()
        for item in abi:
            inputs = item.get("inputs", [])
            entry = _Entry(
                name=str(item.get("name", "")),
                names=tuple(str(i["name"]) for i in inputs),
                types=tuple(abi_type(i) for i in inputs),
                outputs=tuple(abi_type(o) for o in item.get("outputs", [])),
                indexed=tuple(bool(i.get("indexed")) for i in inputs),
            )
            if item["type"] == "function":
                self._functions[entry.name] = entry
            elif item["type"] == "error":
                self._errors[keccak(text=entry.signature)[:4]] = entry
            elif item["type"] == "event":
                self._events[keccak(text=entry.signature)] = entry
            elif item["type"] == "constructor":
                self.constructor = entry.types

    def selector(self, function: str) -> bytes:
        return keccak(text=self._functions[function].signature)[:4]

    def event_topic(self, event: str) -> bytes:
        for topic, entry in self._events.items():
            if entry.name == event:
                return topic
        raise KeyError(event)

    def encode_call(self, function: str, *args: Any) -> bytes:
        entry = self._functions[function]
        return self.selector(function) + encode(list(entry.types), list(args))

    def encode_constructor(self, *args: Any) -> bytes:
        return encode(list(self.constructor), list(args))

    def decode_result(self, function: str, data: bytes) -> tuple[Any, ...]:
        outputs = self._functions[function].outputs
        return tuple(
            _normal(v, t) for v, t in zip(decode(list(outputs), data), outputs, strict=True)
        )

    def decode_error(self, data: bytes) -> DecodedError | None:
        """The custom error (or `Error(string)`, `Panic(uint256)`) in revert data, if known."""
        if len(data) < 4:
            return None
        head, body = data[:4], data[4:]
        try:
            if head == _ERROR_STRING:
                return DecodedError("Error", {"message": decode(["string"], body)[0]})
            if head == _PANIC:
                return DecodedError("Panic", {"code": decode(["uint256"], body)[0]})
            entry = self._errors.get(head)
            if entry is None:
                return None
            values = decode(list(entry.types), body)
        except DecodingError:
            return None
        return DecodedError(
            entry.name,
            {n: _normal(v, t) for n, v, t in zip(entry.names, values, entry.types, strict=True)},
        )

    def decode_log(self, log: dict[str, Any]) -> Event | None:
        """A receipt's or `eth_getLogs`' log as an event of this contract, or None."""
        topics = [bytes.fromhex(str(t)[2:]) for t in log.get("topics", [])]
        if not topics or topics[0] not in self._events:
            return None
        entry = self._events[topics[0]]
        data = bytes.fromhex(str(log["data"])[2:])
        plain = [t for t, ix in zip(entry.types, entry.indexed, strict=True) if not ix]
        values = iter(decode(plain, data))
        indexed = iter(topics[1:])
        args: dict[str, Any] = {}
        for name, kind, is_indexed in zip(entry.names, entry.types, entry.indexed, strict=True):
            value = decode([kind], next(indexed))[0] if is_indexed else next(values)
            args[name] = _normal(value, kind)
        return Event(
            name=entry.name,
            args=args,
            address=to_checksum_address(str(log["address"])),
            block_number=int(str(log["blockNumber"]), 16),
            tx_hash=str(log["transactionHash"]),
            log_index=int(str(log["logIndex"]), 16),
        )
