"""An Ethereum JSON-RPC client over HTTP (asyncio): what the platform asks any EVM node."""

from __future__ import annotations

import itertools
from typing import Any

import httpx

from openpod.adapters.chain.errors import ChainError, Reverted, RpcError, RpcUnavailable

# What nodes answer when a transaction is sent again (anvil, geth, reth say it differently).
_KNOWN = ("already known", "already imported", "known transaction", "already in")
_NONCE_LOW = ("nonce too low", "nonce has already been used", "oldnonce")
_UNDERPRICED = (
    "underpriced",
    "fee too low",
    "replacement transaction",
    "less than block base fee",
)


def is_already_known(error: RpcError) -> bool:
    return any(s in error.message.lower() for s in _KNOWN)


def is_nonce_too_low(error: RpcError) -> bool:
    return any(s in error.message.lower() for s in _NONCE_LOW)


def is_underpriced(error: RpcError) -> bool:
    return any(s in error.message.lower() for s in _UNDERPRICED)


def hex_int(value: Any) -> int:
    """A node's hex quantity; anything else is the node's fault (`ChainError`)."""
    try:
        return int(str(value), 16)
    except ValueError:
        raise ChainError(f"the node answered {str(value)[:40]!r} where a hex number goes") from None


def _data(value: Any) -> bytes:
    text = str(value)
    try:
        return bytes.fromhex(text[2:] if text.startswith("0x") else text)
    except ValueError:
        raise ChainError(f"the node answered {text[:40]!r} where hex data goes") from None


class Rpc:
    """One RPC endpoint. Connection failures, timeouts and 5xx answers raise `RpcUnavailable`
    (retry later); JSON-RPC errors raise `RpcError`; reverts raise `Reverted`."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self.url = url
        self._client = httpx.AsyncClient(timeout=timeout_s)
        self._ids = itertools.count(1)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Rpc:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(self, method: str, params: list[Any] | None = None) -> Any:
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params or []}
        try:
            response = await self._client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            raise RpcUnavailable(f"{method}: {type(exc).__name__} talking to the RPC") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise RpcUnavailable(f"{method}: the RPC answered HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError as exc:
            raise RpcUnavailable(f"{method}: the RPC answered something not JSON") from exc
        error = answer.get("error") if isinstance(answer, dict) else None
        if error:
            message = str(error.get("message", ""))
            data = error.get("data")
            if isinstance(data, dict):  # some nodes nest it
                data = data.get("data")
            if "revert" in message.lower() or error.get("code") == 3:
                raise Reverted(_data(data) if isinstance(data, str) else b"", None)
            raise RpcError(method, int(error.get("code", 0)), message)
        if not isinstance(answer, dict) or "result" not in answer:
            raise RpcUnavailable(f"{method}: the RPC answered without a result")
        return answer["result"]

    async def chain_id(self) -> int:
        return hex_int(await self.request("eth_chainId"))

    async def block_number(self) -> int:
        return hex_int(await self.request("eth_blockNumber"))

    async def block(
        self, number: int | str = "latest", *, transactions: bool = False
    ) -> dict[str, Any] | None:
        """A block header (with its transactions' hashes, or the transactions themselves)."""
        tag = hex(number) if isinstance(number, int) else number
        result = await self.request("eth_getBlockByNumber", [tag, transactions])
        return result if isinstance(result, dict) else None

    async def nonce(self, address: str, block: str = "pending") -> int:
        return hex_int(await self.request("eth_getTransactionCount", [address, block]))

    async def balance(self, address: str) -> int:
        return hex_int(await self.request("eth_getBalance", [address, "latest"]))

    async def code(self, address: str) -> bytes:
        return _data(await self.request("eth_getCode", [address, "latest"]))

    async def call(self, to: str, data: bytes, *, sender: str | None = None) -> bytes:
        tx: dict[str, str] = {"to": to, "data": "0x" + data.hex()}
        if sender:
            tx["from"] = sender
        return _data(await self.request("eth_call", [tx, "latest"]))

    async def estimate_gas(self, tx: dict[str, Any]) -> int:
        return hex_int(await self.request("eth_estimateGas", [tx]))

    async def priority_fee(self) -> int:
        return hex_int(await self.request("eth_maxPriorityFeePerGas"))

    async def send_raw(self, raw: bytes) -> str:
        return str(await self.request("eth_sendRawTransaction", ["0x" + raw.hex()]))

    async def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        result = await self.request("eth_getTransactionReceipt", [tx_hash])
        return result if isinstance(result, dict) else None

    async def transaction(self, tx_hash: str) -> dict[str, Any] | None:
        result = await self.request("eth_getTransactionByHash", [tx_hash])
        return result if isinstance(result, dict) else None

    async def logs(
        self,
        address: str | None,
        topics: list[Any],
        from_block: int = 0,
        to_block: int | str = "latest",
    ) -> list[dict[str, Any]]:
        """Logs matching `topics`, of one contract or (address None) of any."""
        query: dict[str, Any] = {"topics": topics, "fromBlock": hex(from_block)}
        query["toBlock"] = hex(to_block) if isinstance(to_block, int) else to_block
        if address is not None:
            query["address"] = address
        return list(await self.request("eth_getLogs", [query]))
