"""A real anvil with openpod's contracts (`GatewayChain`: H100 at the catalog's rate, the hot
wallet as operator), a migrated SQLite store: what the payment gateway's tests run against.
Chain state is reverted after each test. Helpers are in tests/support/chain.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from openpod.adapters.chain import Anvil, Rpc
from openpod.adapters.store import Database, migrate
from tests.support.chain import GatewayChain


@pytest.fixture(scope="module")
def chain() -> Iterator[GatewayChain]:
    with Anvil() as anvil:
        yield GatewayChain.deploy(anvil.url)


@pytest.fixture
async def rpc(chain: GatewayChain) -> AsyncIterator[Rpc]:
    """An RPC client; whatever the test does to the chain is undone after it, the next block's
    base fee included (anvil 1.7.1's evm_revert leaves it as the test left it)."""
    async with Rpc(chain.url) as client:
        snapshot = await client.request("evm_snapshot")
        pending = await client.block("pending") or {}
        await client.request("evm_setAutomine", [True])
        try:
            yield client
        finally:
            await client.request("evm_revert", [snapshot])
            await client.request("anvil_setNextBlockBaseFeePerGas", [pending["baseFeePerGas"]])
            await client.request("evm_setAutomine", [True])


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'openpod.db'}"
    migrate(url)
    database = Database(url)
    yield database
    database.dispose()
