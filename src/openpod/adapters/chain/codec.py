"""ABI encoding and decoding for one contract: calls, results, custom errors and events.

What eth-abi raises never leaves: values that cannot be encoded and answers that cannot be
decoded (no contract at the address, a node's malformed log) raise `ChainError` naming the
function or event; revert data that cannot be decoded is simply not a known error (None)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode, encode
from eth_abi.exceptions import DecodingError, EncodingError
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from openpod.adapters.chain.errors import ChainError, DecodedError

_ERROR_STRING = bytes.fromhex("08c379a0")
_PANIC = bytes.fromhex("4e487b71")
# What eth-abi's decode raises on bytes it cannot read: besides its own DecodingError, a string
# that is not UTF-8 and a length too large for an index escape as Python's own errors.
_UNDECODABLE = (DecodingError, UnicodeDecodeError, OverflowError)


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


def _is_reference(kind: str) -> bool:
    """An indexed event field of this type is logged as the keccak256 of its value."""
    return kind in ("string", "bytes") or kind.endswith("]") or kind.startswith("(")


def _hex(value: Any, what: str) -> bytes:
    text = str(value)
    try:
        return bytes.fromhex(text[2:] if text.startswith("0x") else text)
    except ValueError:
        raise ChainError(f"{what} is not hex: {text[:80]!r}") from None


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
    """Encodes calls to and decodes answers from a contract, given its ABI.

    `fallbacks` are codecs whose custom errors a call to this contract may revert with too: a
    contract that calls another bubbles its errors up (OpenPodPayments moving tokens through
    SafeERC20 reverts with the token's `ERC20InsufficientAllowance`). `decode_error` tries this
    ABI's errors first, then each fallback's in order."""

    def __init__(self, abi: list[dict[str, Any]], *, fallbacks: Sequence[Codec] = ()) -> None:
        self.fallbacks = tuple(fallbacks)
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
        """The calldata of `function(*args)`; `ChainError` if the arguments do not fit its
        types (an unknown function is a `KeyError`: a mistake in the caller's code)."""
        entry = self._functions[function]
        return self.selector(function) + abi_encode(entry.types, args, entry.signature)

    def encode_constructor(self, *args: Any) -> bytes:
        return abi_encode(self.constructor, args, f"constructor({','.join(self.constructor)})")

    def decode_result(self, function: str, data: bytes) -> tuple[Any, ...]:
        """What `function` returned; `ChainError` naming it if `data` is not its outputs (empty
        data: the address holds no contract, or not this one)."""
        entry = self._functions[function]
        outputs = entry.outputs
        if not data and outputs:
            raise ChainError(
                f"{entry.signature} returned no data: no contract at that address, or not this one"
            )
        try:
            values = decode(list(outputs), data)
        except _UNDECODABLE as exc:
            raise ChainError(
                f"{entry.signature} returned {len(data)} bytes that are not "
                f"({','.join(outputs)}): {exc}"
            ) from None
        return tuple(_normal(v, t) for v, t in zip(values, outputs, strict=True))

    def decode_error(self, data: bytes) -> DecodedError | None:
        """The custom error (or `Error(string)`, `Panic(uint256)`) in revert data, if known:
        this ABI's errors first, then the fallbacks'. Unknown or malformed data is None."""
        if len(data) < 4:
            return None
        head, body = data[:4], data[4:]
        if head == _ERROR_STRING:
            try:
                raw = decode(["bytes"], body)[0]  # a string's encoding, read leniently
            except _UNDECODABLE:
                return None
            return DecodedError("Error", {"message": raw.decode("utf-8", "replace")})
        if head == _PANIC:
            try:
                return DecodedError("Panic", {"code": decode(["uint256"], body)[0]})
            except _UNDECODABLE:
                return None
        entry = self._errors.get(head)
        if entry is None:
            return next(
                (e for f in self.fallbacks if (e := f.decode_error(data)) is not None), None
            )
        try:
            values = decode(list(entry.types), body)
        except _UNDECODABLE:
            return None
        return DecodedError(
            entry.name,
            {n: _normal(v, t) for n, v, t in zip(entry.names, values, entry.types, strict=True)},
        )

    def decode_log(self, log: dict[str, Any]) -> Event | None:
        """A receipt's or `eth_getLogs`' log as an event of this contract, or None if it is not
        one (another topic, or another layout of indexed fields under the same signature).
        `ChainError` if it claims to be one but the node's log is malformed."""
        try:
            topics = [_hex(t, "a log topic") for t in log.get("topics", [])]
        except TypeError:
            raise ChainError(f"a log's topics are not a list: {log.get('topics')!r}") from None
        entry = self._events.get(topics[0]) if topics else None
        if entry is None or len(topics) - 1 != sum(entry.indexed):
            return None
        try:
            data = _hex(log["data"], f"the data of a {entry.name} log")
            plain = [t for t, ix in zip(entry.types, entry.indexed, strict=True) if not ix]
            values = iter(decode(plain, data))
            indexed = iter(topics[1:])
            args: dict[str, Any] = {}
            for name, kind, is_indexed in zip(entry.names, entry.types, entry.indexed, strict=True):
                if not is_indexed:
                    value = next(values)
                elif _is_reference(kind):
                    value = next(indexed)  # the keccak256 of the value, not the value
                else:
                    value = decode([kind], next(indexed))[0]
                args[name] = _normal(value, kind)
            return Event(
                name=entry.name,
                args=args,
                address=to_checksum_address(str(log["address"])),
                block_number=int(str(log["blockNumber"]), 16),
                tx_hash=str(log["transactionHash"]),
                log_index=int(str(log["logIndex"]), 16),
            )
        except KeyError as exc:
            raise ChainError(f"a {entry.name} log without {exc}") from None
        except (*_UNDECODABLE, ValueError) as exc:
            raise ChainError(f"a malformed {entry.name} log: {exc}") from None


def abi_encode(types: Sequence[str], args: Sequence[Any], what: str) -> bytes:
    """`args` ABI-encoded as `types`; `ChainError` naming `what` if they do not fit."""
    try:
        return encode(list(types), list(args))
    except EncodingError as exc:
        raise ChainError(f"cannot encode {what}: {exc}") from None
