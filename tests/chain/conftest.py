"""Fixtures for tests against a real anvil (the dev chain), meant to be reused by any test of
code that talks to the chain. The helpers they hold (`Chain`, `deploy_openpod`, `make_user`,
`fund`, `new_signer`, `err`...) are in tests/support/chain.py: import them from there.

- `anvil` (session): one anvil on 127.0.0.1 for the whole run, stopped by its PID.
- `deployment` (module): openpod's contracts deployed once per test module; every role is held
  by a fresh key (`Deployed.admin`, `.operator` (the hot wallet), `.guardian`, `.treasury`),
  funded with ETH by `anvil_setBalance`; two GPU types with rates (`RATES`), fee 500 bps.
- `rpc` (function): an `Rpc` to the session anvil in the test's own event loop; `make_rpc` makes
  more (or ones to another anvil), all closed after the test.
- `chain` (function): a `Chain` (the rpc, both contracts, the keys, helpers for time, balances,
  payments and decoding). The chain's state is snapshotted before the test and reverted after
  it, so tests are independent and the time a test sets never leaks into the next.
- `make_user` (function): `Chain.make_user`: a user with ETH, tokens from the faucet, the
  payments contract approved, a spending cap set, and (by default) a lease they signed, opened
  by the operator.

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
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from openpod.adapters.chain import Anvil, Rpc
from tests.support.chain import (
    Chain,
    Deployed,
    MakeUser,
    deploy_openpod,
)


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
