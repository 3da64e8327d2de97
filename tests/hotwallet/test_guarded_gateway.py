"""The payment gateway signing through the policy with an HSM key on a real anvil: it keeps its
fees under the cap and still pays; when the hourly budget is spent it signs and stores
nothing (no nonce used, the settlements still PENDING) until the budget frees up."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import func, select

from openpod.adapters.chain import Rpc, hex_int
from openpod.adapters.store import Database
from openpod.adapters.store.models import ChainTx, ChainTxAttempt, Settlement
from openpod.domain.alerts import Severity
from openpod.services.hot_wallet import SigningRefused
from tests.hotwallet.stack import hot_wallet
from tests.payments.test_gateway import leased_run, open_lease, settle_all
from tests.support.chain import GatewayChain
from tests.support.hsm import SoftHsmToken


async def test_fees_stay_under_the_cap_and_settlements_are_paid(
    db: Database, rpc: Rpc, chain: GatewayChain, token: SoftHsmToken
) -> None:
    block = await rpc.block("latest") or {}
    base = hex_int(block["baseFeePerGas"])
    tip = await rpc.priority_fee()
    cap = base + tip + 1  # under the gateway's usual 2 x base + tip, over what a block asks
    assert cap < 2 * base + tip
    hot = await hot_wallet(db, rpc, chain, token, max_fee=cap, max_fee_per_gas=cap)
    await leased_run(db, rpc, chain)
    await open_lease(hot.gateway, rpc)
    total = await settle_all(hot.gateway, rpc)
    assert total.confirmed == 3
    with db.transaction(readonly=True) as session:
        fees = list(session.scalars(select(ChainTxAttempt.max_fee)))
    assert fees and max(fees) <= cap
    assert hot.alerts == []


async def test_a_spent_budget_signs_nothing_and_loses_nothing(
    db: Database, rpc: Rpc, chain: GatewayChain, token: SoftHsmToken
) -> None:
    hot = await hot_wallet(db, rpc, chain, token)
    pod_id, _, _ = await leased_run(db, rpc, chain)
    await open_lease(hot.gateway, rpc)
    # The hour's budget is now exactly what the lease took: the payment batch finds no room.
    spent = hot.signer.ledger.spent()
    assert spent > 0
    hot.signer.policy = replace(hot.signer.policy, gas_spend_per_hour=spent)
    with pytest.raises(SigningRefused) as refused:
        await hot.gateway.round()
    assert refused.value.code == "spend"
    with db.transaction(readonly=True) as session:
        txs = session.scalar(select(func.count(ChainTx.id)))
        pending = list(
            session.scalars(select(Settlement.status).where(Settlement.pod_id == pod_id))
        )
    assert txs == hex_int(hex(await rpc.nonce(hot.key.address, "latest")))  # none unsent
    assert pending == ["PENDING"] * 3
    [alert] = [a for a in hot.alerts if a.key.endswith(":refused:spend")]
    assert alert.severity == Severity.CRITICAL and "hourly gas spend cap" in alert.text
    # With room in the budget again, the same settlements are paid, once.
    hot.signer.policy = replace(hot.signer.policy, gas_spend_per_hour=100 * spent)
    assert (await settle_all(hot.gateway, rpc)).confirmed == 3
