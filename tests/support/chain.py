"""openpod's contracts on a real anvil, for any test or benchmark that needs them: keys with ETH,
the contracts deployed with a fresh key in every role, users with tokens, an approval, a spending
cap and signed leases, balances, and the stacks the gateway and wallet tests run against.

Only plain helpers live here; the fixtures that hold them for a session, a module or a test are
in the conftest of each test package (tests/chain, tests/payments).

Time is controlled, never waited for: anvil's `evm_mine`, `evm_setNextBlockTimestamp` and
`anvil_setBlockTimestampInterval` move the chain's clock (`Chain.now()`, not `time.time()`), and
`Clock` moves the payment gateway's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import tempfile
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
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
from openpod.adapters.store import Database
from openpod.adapters.store.models import Pod, PodLease, utcnow
from openpod.services.payments import LeaseStatus
from openpod.settings import ChainConfig
from tests.support.net import free_port
from tests.support.platform import ControlPlane

H100 = "NVIDIA H100 80GB HBM3"
H200 = "NVIDIA H200"
# The contract tests' rates, base units (18 decimals) per GPU per second: 2.49 and 3.45 tokens/h.
RATES: Mapping[str, int] = {H100: 691_666_666_666_666, H200: 958_333_333_333_333}
# The store's seeded catalog rate of an H100 (2.99 tokens/h): what the gateway meters and bills,
# so the contract the gateway and wallet tests pay through is given it.
CATALOG_H100_RATE = 830_555_555_555_556
# The payout wallet tests.store.test_store._setup gives the provider.
PAYOUT_WALLET = "0x" + "ab" * 20
FEE_BPS = 500
ETH = 10**18
MAX_UINT = 2**256 - 1
TOKENS = 10**24  # what a user takes from the faucet by default: a million tokens

_pods = itertools.count(1)


def err(name: str, **args: Any) -> DecodedError:
    """A decoded custom error to compare with: `err("AlreadyPaid", settlementId=7)`."""
    return DecodedError(name, args)


# ---- keys, ETH, setup transactions -------------------------------------------------------


def new_signer() -> KeystoreSigner:
    return KeystoreSigner(bytes(Account.create().key))


def light_keystore(path: Path, password: str) -> KeystoreSigner:
    """A new key in a keystore with cheap scrypt parameters (~5 ms to open, not ~1 s): for
    tests only; any keystore reader opens it, as the parameters are in the file."""
    account = Account.create()
    path.write_text(json.dumps(Account.encrypt(account.key, password, iterations=2**10)))
    path.chmod(0o600)
    return KeystoreSigner(bytes(account.key))


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


# ---- the contracts, users, balances ------------------------------------------------------


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


async def make_user(
    rpc: Rpc,
    deployment: Deployment,
    *,
    tokens: int = TOKENS,
    allowance: int = MAX_UINT,
    cap: int = TOKENS,
) -> KeystoreSigner:
    """A new wallet with ETH for gas, `tokens` from the faucet, `allowance` of them approved to
    the payments contract and a spending cap of `cap` (each left out when zero)."""
    user = new_signer()
    await fund(rpc, user.address)
    token = Contract(rpc, "DevToken", deployment.token)
    payments = Contract(rpc, "OpenPodPayments", deployment.payments)
    calls: list[tuple[str, bytes]] = []
    if tokens:
        calls.append((token.address, token.calldata("faucet", user.address, tokens)))
    if allowance:
        calls.append((token.address, token.calldata("approve", payments.address, allowance)))
    if cap:
        calls.append((payments.address, payments.calldata("setSpendingCap", cap)))
    await send_many(rpc, user, calls)
    return user


async def balances(rpc: Rpc, deployment: Deployment, *addresses: str) -> list[int]:
    """Token balances, in base units."""
    token = Contract(rpc, "DevToken", deployment.token)
    return [int(await token.read_one("balanceOf", a)) for a in addresses]


async def balance(rpc: Rpc, deployment: Deployment, address: str) -> int:
    return (await balances(rpc, deployment, address))[0]


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


class MakeUser(Protocol):
    """The type of `Chain.make_user` (the `make_user` fixture of tests/chain)."""

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


class Chain:
    """A deployment as one test of the contracts sees it: contracts, keys and helpers."""

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
        return await balance(self.rpc, self.deployment, address)

    async def balances(self, *addresses: str) -> list[int]:
        return await balances(self.rpc, self.deployment, *addresses)

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
        """A funded user (see `make_user`); with `lease`, a lease to `provider` (a new address
        by default) opened with `lease_terms` (see `open_lease`)."""
        signer = await make_user(
            self.rpc, self.deployment, tokens=tokens, allowance=allowance, cap=cap
        )
        provider = provider or new_signer().address
        terms = await self.open_lease(signer, provider, **lease_terms) if lease else None
        return User(signer, provider, terms)

    # ---- receipts ----------------------------------------------------------------------

    def events(self, receipt: dict[str, Any], name: str | None = None) -> list[Event]:
        """The payments contract's events in a receipt (only those called `name`)."""
        return [e for e in self.payments.events(receipt) if name is None or e.name == name]

    def decode(self, data: bytes) -> DecodedError | None:
        """Revert data as the payments contract's error, else the token's (a failed transfer
        bubbles the token's own error up through SafeERC20: the codec's fallback)."""
        return self.payments.codec.decode_error(data)

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


# ---- the payment gateway's chain ---------------------------------------------------------


@dataclass(frozen=True)
class GatewayChain:
    """openpod on an anvil of its own, as the payment gateway's tests use it: H100 at the
    catalog's rate, `hot` (the hot wallet) holds the operator role, `treasury` is an address."""

    url: str
    deployment: Deployment
    admin: KeystoreSigner
    hot: KeystoreSigner
    treasury: str

    @classmethod
    def deploy(cls, url: str) -> GatewayChain:
        """Deploy on the anvil at `url` (from sync code: a fixture's)."""

        async def run() -> Deployed:
            async with Rpc(url) as rpc:
                return await deploy_openpod(rpc, rates={H100: CATALOG_H100_RATE})

        d = asyncio.run(run())
        return cls(url, d.deployment, d.admin, d.operator, d.treasury.address)


async def sign_lease(
    db: Database,
    rpc: Rpc,
    chain: GatewayChain,
    pod_id: str,
    user: KeystoreSigner,
    *,
    signer: KeystoreSigner | None = None,
) -> LeaseTerms:
    """The user's EIP-712 lease (signed by `signer`, the user by default) for the pod's first
    run on an H100 at the catalog's rate to `PAYOUT_WALLET`, stored as the API would store it."""
    now = hex_int((await rpc.block("latest") or {})["timestamp"])
    terms = LeaseTerms(
        pod_id=pod_id,
        generation=1,
        user=user.address,
        provider=PAYOUT_WALLET,
        gpu_type=H100,
        gpu_count=1,
        max_rate=CATALOG_H100_RATE,
        start=now - 3600,
    )
    signature = (signer or user).sign_typed_data(
        terms.typed_data(chain.deployment.chain_id, chain.deployment.payments)
    )
    with db.transaction() as s:
        pod = s.get(Pod, pod_id)
        assert pod is not None
        s.add(
            PodLease(
                pod_id=pod_id,
                generation=1,
                account_id=pod.account_id,
                lease_id="0x" + terms.lease_id.hex(),
                user_wallet=user.address,
                provider_wallet=PAYOUT_WALLET,
                gpu_type_id=terms.gpu_type,
                gpu_count=1,
                max_rate=CATALOG_H100_RATE,
                start=terms.start,
                signature="0x" + signature.hex(),
                status=LeaseStatus.SIGNED,
            )
        )
    return terms


class Clock:
    """The gateway's clock, moved by the test (fee bumps wait for it)."""

    def __init__(self) -> None:
        self.at = utcnow()

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


class Outage:
    """A TCP forwarder in front of the RPC that a test can take down and bring back."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self._target = target_port
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        self._links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._links -= {writer, up_writer}


# ---- a control plane with a chain (the wallet tests) -------------------------------------


@dataclass
class WalletStack:
    root: Path
    plane: ControlPlane
    anvil: Anvil
    deployment: Deployment
    admin: KeystoreSigner  # deployer, rate admin and operator

    @property
    def domain(self) -> str:
        return f"127.0.0.1:{self.plane.port}"

    @property
    def chain_file(self) -> Path:
        return self.root / "chain.json"

    @property
    def config(self) -> ChainConfig:
        d = self.deployment
        return ChainConfig(
            rpc_url=d.rpc_url, chain_id=d.chain_id, token=d.token, payments=d.payments
        )


@contextlib.contextmanager
def wallet_stack(chain_id: int = 1337) -> Iterator[WalletStack]:
    """anvil (chain 1337 by default: a dev chain, the token's faucet works, but not the 31337
    a control plane without a chain expects) with the contracts deployed (H100 at the catalog's
    rate), and a control plane configured for it."""
    root = Path(tempfile.mkdtemp(prefix="openpod-wallet-"))
    # The deployer is the operator too, and the control plane's hot wallet (its keystore and
    # password file where the plane looks for them).
    (root / "plane").mkdir()
    admin = light_keystore(root / "plane" / "hot-wallet.json", "hot")
    (root / "plane" / "hot-wallet.password").write_text("hot\n")

    async def setup(url: str) -> Deployment:
        async with Rpc(url) as rpc:
            await fund(rpc, admin.address)
            return await deploy(
                rpc, admin, rates={H100: CATALOG_H100_RATE}, treasury=new_signer().address,
                fee_bps=FEE_BPS, operator=admin.address,
            )  # fmt: skip

    try:
        with Anvil(chain_id=chain_id) as anvil:
            deployment = asyncio.run(setup(anvil.url))
            plane = ControlPlane(root / "plane")
            stack = WalletStack(root / "plane", plane, anvil, deployment, admin)
            stack.config.save(stack.chain_file)
            try:
                plane.start()
                yield stack
            finally:
                plane.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def paying_plane_env(files: Path, rpc_url: str, deployment: Deployment) -> dict[str, str]:
    """Write `files`/chain.json for `deployment` and return the environment of a control plane
    that pays on it as the hot wallet kept in `files` (hot-wallet.json, hot-wallet.password),
    with fast rounds for tests."""
    ChainConfig(rpc_url, deployment.chain_id, deployment.token, deployment.payments).save(
        files / "chain.json"
    )
    return {
        "OPENPOD_CHAIN_FILE": str(files / "chain.json"),
        "OPENPOD_HOT_WALLET_KEYSTORE": str(files / "hot-wallet.json"),
        "OPENPOD_HOT_WALLET_PASSWORD_FILE": str(files / "hot-wallet.password"),
        "OPENPOD_PAYMENTS_POLL": "0.2",
        "OPENPOD_PAYMENTS_CONFIRMATIONS": "1",
        "OPENPOD_METER_HEARTBEAT": "0.5",
    }
