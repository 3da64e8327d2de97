"""A real anvil with openpod's contracts, a migrated SQLite store, and a funded user: what the
payment gateway's tests run against. Chain state is reverted after each test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from eth_account import Account as EthAccount

from openpod.adapters.chain import Anvil, Contract, Deployment, Rpc, deploy
from openpod.adapters.signers import KeystoreSigner
from openpod.adapters.store import Database, migrate
from openpod.adapters.store.models import utcnow
from tests.support.net import free_port

H100 = "NVIDIA H100 80GB HBM3"
H100_RATE = 830555555555556  # the seeded catalog's rate
FEE_BPS = 500
PROVIDER = "0x" + "ab" * 20  # the payout wallet tests.store.test_store._setup gives
TOKENS = 10**24


@dataclass(frozen=True)
class Chain:
    url: str
    deployment: Deployment
    admin: KeystoreSigner
    hot: KeystoreSigner
    treasury: str


async def fund(rpc: Rpc, address: str, wei: int = 10**21) -> None:
    await rpc.request("anvil_setBalance", [address, hex(wei)])


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    with Anvil() as anvil:
        admin = KeystoreSigner(bytes(EthAccount.create().key))
        hot = KeystoreSigner(bytes(EthAccount.create().key))
        treasury = str(EthAccount.create().address)

        async def setup() -> Deployment:
            async with Rpc(anvil.url) as rpc:
                await fund(rpc, admin.address)
                await fund(rpc, hot.address)
                return await deploy(
                    rpc,
                    admin,
                    rates={H100: H100_RATE},
                    treasury=treasury,
                    fee_bps=FEE_BPS,
                    operator=hot.address,
                )

        yield Chain(anvil.url, asyncio.run(setup()), admin, hot, treasury)


@pytest.fixture
async def rpc(chain: Chain) -> AsyncIterator[Rpc]:
    """An RPC client; whatever the test does to the chain is undone after it."""
    async with Rpc(chain.url) as client:
        snapshot = await client.request("evm_snapshot")
        await client.request("evm_setAutomine", [True])
        try:
            yield client
        finally:
            await client.request("evm_revert", [snapshot])
            await client.request("evm_setAutomine", [True])


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'openpod.db'}"
    migrate(url)
    database = Database(url)
    yield database
    database.dispose()


async def make_user(rpc: Rpc, deployment: Deployment, *, cap: int = TOKENS) -> KeystoreSigner:
    """A wallet with ETH and tokens that approved the payments contract and set a cap."""
    user = KeystoreSigner(bytes(EthAccount.create().key))
    await fund(rpc, user.address)
    token = Contract(rpc, "DevToken", deployment.token)
    payments = Contract(rpc, "OpenPodPayments", deployment.payments)
    await token.send(user, token.calldata("faucet", user.address, TOKENS))
    await token.send(user, token.calldata("approve", deployment.payments, 2**256 - 1))
    await payments.send(user, payments.calldata("setSpendingCap", cap))
    return user


async def balance(rpc: Rpc, chain: Chain, address: str) -> int:
    token = Contract(rpc, "DevToken", chain.deployment.token)
    return int(await token.read_one("balanceOf", address))


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
