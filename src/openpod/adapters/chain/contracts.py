"""openpod's contracts as Python objects: artifacts, deployment, reads, call encoding, leases."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from openpod.adapters.chain.codec import Codec, Event, abi_encode
from openpod.adapters.chain.errors import ChainError, Reverted
from openpod.adapters.chain.rpc import Rpc, hex_int
from openpod.domain.lease import DOMAIN_NAME, DOMAIN_VERSION, LEASE_TYPES, name_bytes32

ARTIFACTS = Path(__file__).parent / "artifacts"
ZERO_ADDRESS = "0x" + "00" * 20
# Whose custom errors a contract's reverts may carry besides its own: OpenPodPayments moves
# tokens with SafeERC20, which bubbles the token's revert up as it is, and DevToken's ABI has
# OpenZeppelin's ERC-20 errors (ERC-6093: ERC20InsufficientAllowance, ...Balance), which any
# OpenZeppelin token reverts with.
ERROR_FALLBACKS: dict[str, tuple[str, ...]] = {"OpenPodPayments": ("DevToken",)}


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes
    compiler: dict[str, Any]


@cache
def artifact(name: str) -> Artifact:
    """A compiled contract committed under the package (`make solidity` checks it is fresh)."""
    data = json.loads((ARTIFACTS / f"{name}.json").read_text())
    return Artifact(name, data["abi"], bytes.fromhex(data["bytecode"][2:]), data["compiler"])


def codec(name: str, fallbacks: Sequence[str] | None = None) -> Codec:
    """The codec of a contract (one per name and fallbacks); its reverts also decode with the
    errors of `fallbacks` (contract names; by default `ERROR_FALLBACKS[name]`)."""
    return _codec(name, tuple(ERROR_FALLBACKS.get(name, ()) if fallbacks is None else fallbacks))


@cache
def _codec(name: str, fallbacks: tuple[str, ...]) -> Codec:
    return Codec(artifact(name).abi, fallbacks=[codec(n) for n in fallbacks])


def checksum(address: Any, what: str = "address") -> str:
    """`address` EIP-55 checksummed; `ChainError` naming `what` if it is not an address."""
    try:
        return to_checksum_address(address)
    except (ValueError, TypeError):
        raise ChainError(f"{what} {address!r} is not an address") from None


def role(name: str) -> bytes:
    """`OPERATOR_ROLE` → keccak256 of it; the admin role is all zeros."""
    return bytes(32) if name == "DEFAULT_ADMIN_ROLE" else keccak(text=name)


def short_bytes32(text: str) -> bytes:
    """A pod id or GPU type as bytes32 (domain.lease.name_bytes32); an empty one: ChainError."""
    try:
        return name_bytes32(text)
    except ValueError as error:
        raise ChainError(str(error)) from None


def lease_id(user: str, pod_id: str, generation: int) -> bytes:
    """The lease id the contract derives: keccak256(abi.encode(user, pod, generation))."""
    return keccak(
        abi_encode(
            ("address", "bytes32", "uint32"),
            (checksum(user, "lease user"), short_bytes32(pod_id), generation),
            "a lease id",
        )
    )


class TxSigner(Protocol):
    """What signs the transactions of deployment and administration (a keystore or an HSM)."""

    @property
    def address(self) -> str: ...

    def sign_transaction(self, tx: dict[str, Any]) -> bytes:
        """The raw signed transaction."""
        ...


@dataclass(frozen=True)
class LeaseTerms:
    """What a user signs for one run of a pod (the contract's `LeaseTerms`)."""

    pod_id: str
    generation: int
    user: str
    provider: str
    gpu_type: str
    gpu_count: int
    max_rate: int
    start: int

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            short_bytes32(self.pod_id),
            self.generation,
            checksum(self.user, "lease user"),
            checksum(self.provider, "lease provider"),
            short_bytes32(self.gpu_type),
            self.gpu_count,
            self.max_rate,
            self.start,
        )

    def typed_data(self, chain_id: int, payments: str) -> dict[str, Any]:
        """EIP-712 typed data (eth_signTypedData_v4) a wallet signs for this lease."""
        pod, generation, user, provider, gpu_type, count, max_rate, start = self.as_tuple()
        return {
            "types": {name: list(fields) for name, fields in LEASE_TYPES.items()},
            "primaryType": "Lease",
            "domain": {
                "name": DOMAIN_NAME,
                "version": DOMAIN_VERSION,
                "chainId": chain_id,
                "verifyingContract": checksum(payments, "payments contract"),
            },
            "message": {
                "pod": "0x" + pod.hex(),
                "generation": generation,
                "user": user,
                "provider": provider,
                "gpuType": "0x" + gpu_type.hex(),
                "gpuCount": count,
                "maxRate": max_rate,
                "start": start,
            },
        }

    @property
    def lease_id(self) -> bytes:
        return lease_id(self.user, self.pod_id, self.generation)


@dataclass(frozen=True)
class Charge:
    """One settlement to pay (the contract's `Charge`)."""

    settlement_id: int
    lease: bytes
    user: str
    provider: str
    seconds: int
    gpu_type: str
    gpu_count: int

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.settlement_id,
            self.lease,
            checksum(self.user, f"settlement {self.settlement_id} user"),
            checksum(self.provider, f"settlement {self.settlement_id} provider"),
            self.seconds,
            short_bytes32(self.gpu_type),
            self.gpu_count,
        )


class Contract:
    """A deployed contract: encode calls, read views, decode its reverts and logs.

    Reverts decode with this contract's errors, then with those of `fallbacks` (contract names
    whose errors its calls bubble up; by default `ERROR_FALLBACKS[name]`, `()` for none)."""

    def __init__(
        self, rpc: Rpc, name: str, address: str, *, fallbacks: Sequence[str] | None = None
    ) -> None:
        self.rpc = rpc
        self.name = name
        self.address = checksum(address, f"{name} address")
        self.codec = codec(name, fallbacks)

    def calldata(self, function: str, *args: Any) -> bytes:
        return self.codec.encode_call(function, *args)

    async def read(self, function: str, *args: Any) -> tuple[Any, ...]:
        try:
            data = await self.rpc.call(self.address, self.calldata(function, *args))
        except Reverted as exc:
            raise Reverted(exc.data, self.codec.decode_error(exc.data)) from None
        try:
            return self.codec.decode_result(function, data)
        except ChainError as exc:
            raise ChainError(f"{self.name} at {self.address}: {exc}") from None

    async def read_one(self, function: str, *args: Any) -> Any:
        return (await self.read(function, *args))[0]

    async def simulate(self, sender: str, data: bytes) -> bytes:
        """eth_call as `sender`; a revert comes back decoded."""
        try:
            return await self.rpc.call(self.address, data, sender=sender)
        except Reverted as exc:
            raise Reverted(exc.data, self.codec.decode_error(exc.data)) from None

    def events(self, receipt: dict[str, Any]) -> list[Event]:
        """This contract's events in a receipt, in log order."""
        found = []
        for log in receipt.get("logs") or []:
            if checksum(log.get("address"), "a log's address") != self.address:
                continue
            event = self.codec.decode_log(log)
            if event is not None:
                found.append(event)
        return found

    async def send(
        self, signer: TxSigner, data: bytes, *, gas: int | None = None
    ) -> dict[str, Any]:
        """Sign, send and wait for one transaction (deployment and administration; the payment
        gateway manages its own nonces). Raises `Reverted`, decoded, if it fails."""
        return await send_and_wait(self.rpc, signer, self.address, data, codec=self.codec, gas=gas)


async def send_and_wait(
    rpc: Rpc,
    signer: TxSigner,
    to: str | None,
    data: bytes,
    *,
    codec: Codec | None = None,
    gas: int | None = None,
    value: int = 0,
) -> dict[str, Any]:
    """One EIP-1559 transaction from `signer`, its receipt awaited (on a chain that mines it).
    Reverts, at estimation or in the block, raise `Reverted` decoded by `codec`."""
    call: dict[str, Any] = {"from": signer.address, "data": "0x" + data.hex(), "value": hex(value)}
    if to:
        call["to"] = to
    try:
        limit = gas or (await rpc.estimate_gas(call)) * 6 // 5 + 10_000
    except Reverted as exc:
        raise Reverted(exc.data, codec.decode_error(exc.data) if codec else None) from None
    base = hex_int((await rpc.block("latest") or {}).get("baseFeePerGas", "0x0"))
    tip = await rpc.priority_fee()
    tx = {
        "type": 2,
        "chainId": await rpc.chain_id(),
        "nonce": await rpc.nonce(signer.address),
        "to": to or b"",
        "value": value,
        "data": data,
        "gas": limit,
        "maxPriorityFeePerGas": tip,
        "maxFeePerGas": 2 * base + tip,
    }
    if not to:
        del tx["to"]
    tx_hash = await rpc.send_raw(signer.sign_transaction(tx))
    receipt = await wait_receipt(rpc, tx_hash)
    try:
        status = hex_int(receipt["status"])
    except (KeyError, ValueError):
        raise ChainError(f"the receipt of {tx_hash} has no status: {receipt!r}") from None
    if status != 1:
        raise Reverted(b"", None)
    return receipt


async def wait_receipt(rpc: Rpc, tx_hash: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """The receipt of a transaction, waiting for it to be mined."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = 0.005
    while True:
        receipt = await rpc.receipt(tx_hash)
        if receipt is not None:
            return receipt
        if loop.time() > deadline:
            raise ChainError(f"transaction {tx_hash} not mined within {timeout_s:.0f} s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


@dataclass(frozen=True)
class Deployment:
    """Where openpod's contracts live on one chain."""

    rpc_url: str
    chain_id: int
    token: str
    payments: str


async def deploy_contract(rpc: Rpc, signer: TxSigner, name: str, *args: Any) -> str:
    art = artifact(name)
    data = art.bytecode + codec(name).encode_constructor(*args)
    receipt = await send_and_wait(rpc, signer, None, data, codec=codec(name))
    address = receipt.get("contractAddress")
    if not address:
        raise ChainError(f"deploying {name} gave no contract address")
    return checksum(address, f"the {name} deployed at")


async def deploy(
    rpc: Rpc,
    signer: TxSigner,
    *,
    rates: dict[str, int],
    treasury: str,
    fee_bps: int,
    operator: str | None = None,
    token: str | None = None,
) -> Deployment:
    """Deploy the payments contract (and the dev token unless `token` names an ERC-20), set the
    rate table, and grant the operator role to the hot wallet. `signer` becomes the admin."""
    if token is None:
        token = await deploy_contract(rpc, signer, "DevToken")
    payments = await deploy_contract(
        rpc, signer, "OpenPodPayments", token, signer.address, treasury, fee_bps
    )
    contract = Contract(rpc, "OpenPodPayments", payments)
    if rates:
        names = sorted(rates)
        await contract.send(
            signer,
            contract.calldata(
                "setRates", [short_bytes32(n) for n in names], [rates[n] for n in names]
            ),
        )
    if operator:
        await contract.send(signer, contract.calldata("grantRole", role("OPERATOR_ROLE"), operator))
    return Deployment(rpc.url, await rpc.chain_id(), token, payments)
