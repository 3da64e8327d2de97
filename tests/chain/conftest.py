"""Fixtures for tests against a real anvil (the dev chain), meant to be reused by any test of
code that talks to the chain (the payment gateway's included).

- `anvil` (session): one anvil on 127.0.0.1 for the whole run, stopped by its PID.
- `deployment` (module): openpod's contracts deployed once per test module; every role is held
  by a fresh key (`Deployed.admin`, `.operator` (the hot wallet), `.guardian`, `.treasury`),
  funded with ETH by `anvil_setBalance`; two GPU types with rates (`RATES`), fee 500 bps.
- `rpc` (function): an `Rpc` to the session anvil in the test's own event loop; `make_rpc` makes
  more (or ones to another anvil), all closed after the test.
- `chain` (function): a `Chain` (the rpc, both contracts, the keys, helpers for time, balances,
  payments and decoding). The chain's state is snapshotted before the test and reverted after
  it, so tests are independent and the time a test sets never leaks into the next.
- `make_user` (function): a user with ETH, tokens from the faucet, the payments contract
  approved, a spending cap set, and (by default) a lease they signed, opened by the operator.

Plain helpers for code outside fixtures (bench/payments_gas.py uses them): `deploy_openpod`,
`send_many` (fast setup transactions), `fund`, `new_signer`, `err` (an expected custom error).

Time is controlled, never waited for: within a `chain` test each block's timestamp is the
previous one's plus exactly 1 s (anvil_setBlockTimestampInterval), whatever the wall clock
does, and `Chain.at` sets the next block's. So take times from `Chain.now()`, never from
`time.time()`: the chain's clock is not the wall clock.

Async fixtures live in each test's function-scoped event loop (the repo's pytest-asyncio
default); what spans tests (`anvil`, `deployment`) is plain data made by sync fixtures, so no
client is ever used from two loops.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
from eth_account import Account
from eth_utils.address import to_checksum_address

from openpod.adapters.chain import (
    Anvil,
    ChainError,
    Charge,
    Contract,
    DecodedError,
    Deployment,
    Event,
    LeaseTerms,
    Reverted,
    Rpc,
    TxSigner,
    deploy,
    hex_int,
    role,
    wait_receipt,
)
from openpod.adapters.signers import KeystoreSigner

H100 = "NVIDIA H100 80GB HBM3"
H200 = "NVIDIA H200"
# Base units (18 decimals) per GPU per second: 2.49 and 3.45 tokens an hour.
RATES: Mapping[str, int] = {H100: 691_666_666_666_666, H200: 958_333_333_333_333}
FEE_BPS = 500
ETH = 10**18
MAX_UINT = 2**256 - 1
TOKENS = 10**24  # what make_user takes from the faucet by default: a million tokens

_pods = itertools.count(1)


def err(name: str, **args: Any) -> DecodedError:
    """A decoded custom error to compare with: `err("AlreadyPaid", settlementId=7)`."""
    return DecodedError(name, args)


def new_signer() -> KeystoreSigner:
    return KeystoreSigner(bytes(Account.create().key))


async def fund(rpc: Rpc, address: str, wei: int = 1_000 * ETH) -> None:
    """Give `address` ETH for gas (anvil_setBalance: no transaction, no block)."""
    await rpc.request("anvil_setBalance", [address, hex(wei)])


async def send_many(
    rpc: Rpc, signer: TxSigner, calls: Sequence[tuple[str, bytes]], *, gas: int = 1_000_000
) -> list[dict[str, Any]]:
    """Send `calls` ((to, calldata) pairs) from `signer` back to back with consecutive nonces
    and a fixed gas limit (no estimation), then wait for every receipt. For setting up state
    fast; raises `ChainError` naming the first call that reverted. To test that something
    reverts, use `Contract.send`, which decodes the revert."""
    nonce = await rpc.nonce(signer.address)
    chain_id = await rpc.chain_id()
    base = hex_int((await rpc.block("latest") or {}).get("baseFeePerGas", "0x0"))
    tip = await rpc.priority_fee()
    hashes = []
    for offset, (to, data) in enumerate(calls):
        tx = {
            "type": 2,
            "chainId": chain_id,
            "nonce": nonce + offset,
            "to": to,
            "value": 0,
            "data": data,
            "gas": gas,
            "maxPriorityFeePerGas": tip,
            "maxFeePerGas": 4 * base + tip,
        }
        hashes.append(await rpc.send_raw(signer.sign_transaction(tx)))
    receipts = [await wait_receipt(rpc, tx_hash) for tx_hash in hashes]
    for (to, data), receipt in zip(calls, receipts, strict=True):
        if hex_int(receipt["status"]) != 1:
            raise ChainError(f"setup call 0x{data[:4].hex()} to {to} reverted")
    return receipts


@dataclass(frozen=True)
class Deployed:
    """openpod's contracts on a chain and the keys that hold their roles.

    `admin` holds DEFAULT_ADMIN, RATE_ADMIN and (from the constructor) GUARDIAN; `operator` is
    the hot wallet (OPERATOR); `guardian` holds GUARDIAN only; `treasury` receives fees."""

    deployment: Deployment
    admin: KeystoreSigner
    operator: KeystoreSigner
    guardian: KeystoreSigner
    treasury: KeystoreSigner
    rates: Mapping[str, int]
    fee_bps: int


async def deploy_openpod(
    rpc: Rpc, *, rates: Mapping[str, int] = RATES, fee_bps: int = FEE_BPS
) -> Deployed:
    """Deploy DevToken and OpenPodPayments with fresh, funded keys in every role."""
    admin, operator, guardian, treasury = (new_signer() for _ in range(4))
    for signer in (admin, operator, guardian, treasury):
        await fund(rpc, signer.address)
    deployment = await deploy(
        rpc,
        admin,
        rates=dict(rates),
        treasury=treasury.address,
        fee_bps=fee_bps,
        operator=operator.address,
    )
    payments = Contract(rpc, "OpenPodPayments", deployment.payments)
    await payments.send(
        admin, payments.calldata("grantRole", role("GUARDIAN_ROLE"), guardian.address)
    )
    return Deployed(deployment, admin, operator, guardian, treasury, dict(rates), fee_bps)


@dataclass(frozen=True)
class User:
    """A user with tokens, an approval and a cap; `lease` is the lease they signed (if any),
    `provider` the provider it names."""

    signer: KeystoreSigner
    provider: str
    lease: LeaseTerms | None

    @property
    def address(self) -> str:
        return self.signer.address

    @property
    def lease_id(self) -> bytes:
        assert self.lease is not None, "this user has no lease"
        return self.lease.lease_id

    def charge(self, settlement_id: int, seconds: int, **changes: Any) -> Charge:
        """A charge under this user's lease; `changes` override its fields (`user=...`)."""
        assert self.lease is not None, "this user has no lease"
        fields: dict[str, Any] = {
            "settlement_id": settlement_id,
            "lease": self.lease.lease_id,
            "user": self.address,
            "provider": self.lease.provider,
            "seconds": seconds,
            "gpu_type": self.lease.gpu_type,
            "gpu_count": self.lease.gpu_count,
        }
        fields.update(changes)
        return Charge(**fields)


class Chain:
    """The session anvil as one test sees it: contracts, keys and helpers."""

    def __init__(self, rpc: Rpc, deployed: Deployed) -> None:
        self.rpc = rpc
        self.deployed = deployed
        self.deployment = deployed.deployment
        self.payments = Contract(rpc, "OpenPodPayments", deployed.deployment.payments)
        self.token = Contract(rpc, "DevToken", deployed.deployment.token)
        self.admin = deployed.admin
        self.operator = deployed.operator
        self.guardian = deployed.guardian
        self.treasury = deployed.treasury

    # ---- time --------------------------------------------------------------------------

    async def now(self) -> int:
        """The latest block's timestamp."""
        block = await self.rpc.block("latest")
        assert block is not None
        return hex_int(block["timestamp"])

    async def at(self, timestamp: int) -> None:
        """The next block (the next transaction's, with automine) gets `timestamp`."""
        await self.rpc.request("evm_setNextBlockTimestamp", [timestamp])

    async def mine(self, timestamp: int | None = None) -> None:
        if timestamp is not None:
            await self.at(timestamp)
        await self.rpc.request("evm_mine")

    # ---- reads -------------------------------------------------------------------------

    async def balance(self, address: str) -> int:
        return int(await self.token.read_one("balanceOf", address))

    async def balances(self, *addresses: str) -> list[int]:
        return [await self.balance(a) for a in addresses]

    async def lease_of(self, lease: bytes) -> dict[str, Any]:
        """The stored lease by field name (`user` is the zero address when there is none)."""
        (stored,) = await self.payments.read("leaseOf", lease)
        names = ("user", "start", "end", "gpuCount", "provider", "billedSeconds", "gpuType")
        fields = dict(zip((*names, "maxRate"), stored, strict=True))
        fields["user"] = to_checksum_address(fields["user"])
        fields["provider"] = to_checksum_address(fields["provider"])
        return fields

    async def budget(self, user: str) -> tuple[int, int]:
        """(cap, spent) of a user."""
        cap, spent = await self.payments.read("budgets", user)
        return int(cap), int(spent)

    # ---- transactions ------------------------------------------------------------------

    async def send(self, signer: TxSigner, function: str, *args: Any) -> dict[str, Any]:
        """A payments-contract transaction; raises `Reverted` with the decoded error."""
        return await self.payments.send(signer, self.payments.calldata(function, *args))

    async def pay(self, charge: Charge, *, by: TxSigner | None = None) -> dict[str, Any]:
        """`payment(...)` of one charge, sent by the operator unless `by` says otherwise."""
        return await self.send(by or self.operator, "payment", *charge.as_tuple())

    async def pay_batch(
        self, charges: Sequence[Charge], *, by: TxSigner | None = None
    ) -> dict[str, Any]:
        return await self.send(by or self.operator, "paymentBatch", [c.as_tuple() for c in charges])

    async def open_lease(
        self,
        user: KeystoreSigner,
        provider: str,
        *,
        gpu_type: str = H100,
        gpu_count: int = 1,
        max_rate: int | None = None,
        start: int | None = None,
        pod_id: str | None = None,
        generation: int = 1,
        signed_by: KeystoreSigner | None = None,
        submitter: TxSigner | None = None,
    ) -> LeaseTerms:
        """`user`'s lease (signed by `signed_by`, the user by default), opened by `submitter`
        (the operator by default). `max_rate` defaults to the GPU type's rate, `start` to an
        hour before the latest block."""
        terms = LeaseTerms(
            pod_id=pod_id or f"pod-{next(_pods):06d}",
            generation=generation,
            user=user.address,
            provider=provider,
            gpu_type=gpu_type,
            gpu_count=gpu_count,
            max_rate=self.deployed.rates[gpu_type] if max_rate is None else max_rate,
            start=(await self.now()) - 3600 if start is None else start,
        )
        signature = (signed_by or user).sign_typed_data(
            terms.typed_data(self.deployment.chain_id, self.deployment.payments)
        )
        await self.send(submitter or self.operator, "openLease", terms.as_tuple(), signature)
        return terms

    async def stranger(self) -> KeystoreSigner:
        """A key with ETH for gas and no role, tokens or lease."""
        signer = new_signer()
        await fund(self.rpc, signer.address)
        return signer

    async def make_user(
        self,
        *,
        tokens: int = TOKENS,
        allowance: int = MAX_UINT,
        cap: int = TOKENS,
        lease: bool = True,
        provider: str | None = None,
        **lease_terms: Any,
    ) -> User:
        """A funded user: ETH, `tokens` from the faucet, `allowance` for the payments contract,
        spending cap `cap`; with `lease`, a lease to `provider` (a new address by default)
        opened with `lease_terms` (see `open_lease`)."""
        signer = new_signer()
        await fund(self.rpc, signer.address)
        calls: list[tuple[str, bytes]] = []
        if tokens:
            calls.append(
                (self.token.address, self.token.calldata("faucet", signer.address, tokens))
            )
        if allowance:
            calls.append(
                (
                    self.token.address,
                    self.token.calldata("approve", self.payments.address, allowance),
                )
            )
        if cap:
            calls.append((self.payments.address, self.payments.calldata("setSpendingCap", cap)))
        await send_many(self.rpc, signer, calls)
        provider = provider or new_signer().address
        terms = await self.open_lease(signer, provider, **lease_terms) if lease else None
        return User(signer, provider, terms)

    # ---- receipts ----------------------------------------------------------------------

    def events(self, receipt: dict[str, Any], name: str | None = None) -> list[Event]:
        """The payments contract's events in a receipt (only those called `name`)."""
        return [e for e in self.payments.events(receipt) if name is None or e.name == name]

    def decode(self, data: bytes) -> DecodedError | None:
        """Revert data as the payments contract's error, else the token's (a failed transfer
        bubbles the token's own error up through SafeERC20)."""
        return self.payments.codec.decode_error(data) or self.token.codec.decode_error(data)

    async def reverts(self, pending: Awaitable[object]) -> DecodedError:
        """Await `pending`, which must revert; its error, decoded by either contract's ABI."""
        with pytest.raises(Reverted) as caught:
            await pending
        decoded = self.decode(caught.value.data)
        assert decoded is not None, f"undecodable revert data 0x{caught.value.data.hex()}"
        return decoded

    def rejections(self, receipt: dict[str, Any]) -> dict[int, DecodedError | None]:
        """`PaymentRejected` events of a batch: settlement id → decoded reason."""
        return {
            e.args["settlementId"]: self.decode(e.args["reason"])
            for e in self.events(receipt, "PaymentRejected")
        }


class MakeUser(Protocol):
    def __call__(
        self,
        *,
        tokens: int = ...,
        allowance: int = ...,
        cap: int = ...,
        lease: bool = ...,
        provider: str | None = ...,
        **lease_terms: Any,
    ) -> Awaitable[User]: ...


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    with Anvil() as node:
        yield node


@pytest.fixture(scope="module")
def deployment(anvil: Anvil) -> Deployed:
    async def run() -> Deployed:
        async with Rpc(anvil.url) as rpc:
            return await deploy_openpod(rpc)

    return asyncio.run(run())


@pytest.fixture
async def make_rpc(anvil: Anvil) -> AsyncIterator[Callable[..., Rpc]]:
    """`make_rpc(url=None)`: a new `Rpc` (to the session anvil by default), closed after."""
    made: list[Rpc] = []

    def factory(url: str | None = None) -> Rpc:
        client = Rpc(url or anvil.url)
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.aclose()


@pytest.fixture
async def rpc(make_rpc: Callable[..., Rpc]) -> Rpc:
    return make_rpc()


@pytest.fixture
async def chain(rpc: Rpc, deployment: Deployed) -> AsyncIterator[Chain]:
    snapshot = await rpc.request("evm_snapshot")
    await rpc.request("anvil_setBlockTimestampInterval", [1])
    yield Chain(rpc, deployment)
    await rpc.request("anvil_removeBlockTimestampInterval")
    assert await rpc.request("evm_revert", [snapshot]) is True


@pytest.fixture
def make_user(chain: Chain) -> MakeUser:
    return chain.make_user
