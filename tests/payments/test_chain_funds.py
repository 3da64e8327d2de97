"""The funds guard reading the user's wallet on a real anvil: min(balance, allowance, cap -
spent), less what is owed and not yet paid; unknown wallets are Unavailable, never zero."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from openpod.adapters.chain import Contract, Rpc
from openpod.adapters.store import Account, Database, Pod
from openpod.adapters.store.models import Settlement
from openpod.domain.money import cost
from openpod.services import funds
from openpod.services.chain_funds import ChainFunds
from openpod.services.errors import Unavailable
from tests.payments.test_gateway import gateway, settle_all, settled_run
from tests.support.chain import CATALOG_H100_RATE as H100_RATE
from tests.support.chain import TOKENS, Outage, make_user, sign_lease
from tests.support.chain import GatewayChain as Chain

MINUTE = cost(60, 1, H100_RATE)


def link(db: Database, pod_id: str, wallet: str) -> str:
    with db.transaction() as s:
        pod = s.get(Pod, pod_id)
        assert pod is not None
        account = s.get(Account, pod.account_id)
        assert account is not None
        account.wallet_address = wallet
        return account.id


def available(db: Database, guard: ChainFunds, account_id: str) -> int:
    with db.transaction(readonly=True) as s:
        return guard.available(s, account_id)


def guard_for(rpc: Rpc, chain: Chain) -> ChainFunds:
    return ChainFunds(rpc, chain.deployment.token, chain.deployment.payments)


async def test_a_wallet_can_pay_the_least_of_balance_allowance_and_cap(
    db: Database, rpc: Rpc, chain: Chain
) -> None:
    pod_id = settled_run(db)  # three PENDING settlements: 60 + 60 + 61 seconds
    owed = cost(181, 1, H100_RATE)
    user = await make_user(rpc, chain.deployment, cap=100 * MINUTE)
    account_id = link(db, pod_id, user.address)
    guard = guard_for(rpc, chain)
    await guard.refresh([user.address])
    assert available(db, guard, account_id) == 100 * MINUTE - owed  # the cap is the least

    token = Contract(rpc, "DevToken", chain.deployment.token)
    await token.send(user, token.calldata("approve", chain.deployment.payments, 50 * MINUTE))
    await guard.refresh([user.address])
    assert available(db, guard, account_id) == 50 * MINUTE - owed  # now the allowance

    await token.send(user, token.calldata("transfer", chain.treasury, TOKENS - 20 * MINUTE))
    await guard.refresh([user.address])
    assert available(db, guard, account_id) == 20 * MINUTE - owed  # now the balance


async def test_what_is_paid_is_counted_once(db: Database, rpc: Rpc, chain: Chain) -> None:
    pod_id = settled_run(db)
    user = await make_user(rpc, chain.deployment, cap=100 * MINUTE)
    account_id = link(db, pod_id, user.address)
    guard = guard_for(rpc, chain)
    await guard.refresh([user.address])
    before = available(db, guard, account_id)

    await sign_lease(db, rpc, chain, pod_id, user)
    await settle_all(gateway(db, rpc, chain), rpc)  # paid on-chain: spent and balance moved
    with db.transaction(readonly=True) as s:
        statuses = set(s.scalars(select(Settlement.status).where(Settlement.pod_id == pod_id)))
    assert statuses == {"CONFIRMED"}
    await guard.refresh([user.address])
    assert available(db, guard, account_id) == before  # no longer owed, now spent
    known = guard.known(user.address)
    assert known is not None and known.spent == cost(181, 1, H100_RATE)


async def test_an_account_without_a_wallet_can_pay_nothing(
    db: Database, rpc: Rpc, chain: Chain
) -> None:
    pod_id = settled_run(db)
    with db.transaction() as s:
        pod = s.get(Pod, pod_id)
        assert pod is not None
        account_id = pod.account_id
    assert available(db, guard_for(rpc, chain), account_id) == 0


async def test_a_wallet_never_read_is_unavailable_and_stops_nobody(
    db: Database, rpc: Rpc, chain: Chain
) -> None:
    pod_id = settled_run(db)
    user = await make_user(rpc, chain.deployment)
    account_id = link(db, pod_id, user.address)
    outage = Outage(int(chain.url.rsplit(":", 1)[1]))
    async with Rpc(outage.url, timeout_s=2) as down:  # nothing listens: the RPC is down
        guard = guard_for(down, chain)
        await guard.refresh([user.address])
        assert guard.known(user.address) is None
        with pytest.raises(Unavailable, match=user.address):
            available(db, guard, account_id)
        with db.transaction() as s:
            pod = s.get(Pod, pod_id)
            assert pod is not None
            pod.status = "RUNNING"
            assert funds.shortfalls(s, guard, 60) == []

        await outage.up()
        await guard.refresh([user.address])
        known = guard.known(user.address)
        assert known is not None and known.spendable == TOKENS
        await outage.down()
        await guard.refresh([user.address])  # down again: what was read is kept
        assert guard.known(user.address) == known
