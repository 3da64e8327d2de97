"""The chain adapter's errors: the services layer sees these, never httpx's or eth-abi's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ChainError(Exception):
    """Anything that went wrong talking to the chain."""


class RpcUnavailable(ChainError):
    """The RPC endpoint could not be reached or answered with a server error: retry later."""


class RpcError(ChainError):
    """The node answered a JSON-RPC error (bad params, nonce too low, underpriced...)."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"{method}: {message} (code {code})")
        self.method = method
        self.code = code
        self.message = message


@dataclass(frozen=True)
class DecodedError:
    """A revert decoded by the contract's ABI: `CapExceeded(user=0x.., wouldSpend=.., cap=..)`."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        inner = ", ".join(f"{k}={_show(v)}" for k, v in self.args.items())
        return f"{self.name}({inner})"


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


class Reverted(ChainError):
    """A call or transaction reverted; `error` is the decoded custom error when known."""

    def __init__(self, data: bytes, error: DecodedError | None) -> None:
        shown = str(error) if error else ("0x" + data.hex() if data else "no reason")
        super().__init__(f"reverted: {shown}")
        self.data = data
        self.error = error
