"""The hot wallet's watch on a real anvil, the key in a real SoftHSM2 token: what the gateway
does raises nothing; a transaction from the key outside the gateway, a permit the key signed,
a nonce that moved are CRITICAL within the block they land in, the breaker opens, the gateway
signs nothing more, and the guardian pauses the contract. The balance floor alerts once and
resolves once."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from eth_account import Account

from openpod.adapters.chain import Contract, Rpc, hex_int, send_and_wait
from openpod.adapters.signers import KeystoreSigner
from openpod.adapters.store import Database
from openpod.adapters.store.models import ChainTx, Counter, utcnow
from openpod.domain.alerts import Alert, Severity
from openpod.services.hot_wallet import SigningRefused
from openpod.services.wallet_watch import HotWalletWatch
from tests.chain.test_dev_token import permit_data
from tests.hotwallet.stack import GWEI, hot_wallet
from tests.payments.test_gateway import leased_run, open_lease, settle_all
from tests.support.chain import ETH, GatewayChain, Outage, fund
from tests.support.hsm import SoftHsmToken


async def test_what_the_gateway_does_raises_nothing(
    db: Database, rpc: Rpc, chain: GatewayChain, token: SoftHsmToken
) -> None:
    hot = await hot_wallet(db, rpc, chain, token)
    await hot.watch.step()
    await leased_run(db, rpc, chain)
    await open_lease(hot.gateway, rpc)
    total = await settle_all(hot.gateway, rpc)
    assert total.confirmed == 3
    report = await hot.watch.step()
    assert len(report.blocks) >= 3  # the lease, the payments and the blocks mined after them
    assert report.findings == []
    assert hot.alerts == []
    assert not hot.breaker.state().open
    assert hot.watch.metrics.nonce == await rpc.nonce(hot.key.address, "latest") >= 2


async def test_a_transaction_from_the_key_outside_the_gateway_stops_everything(
    db: Database, rpc: Rpc, chain: GatewayChain, token: SoftHsmToken
) -> None:
    hot = await hot_wallet(db, rpc, chain, token)
    await hot.watch.step()
    thief = Account.create().address
    # The token signs a transfer nobody asked the gateway for (a stolen PIN, say).
    receipt = await send_and_wait(rpc, hot.key, thief, b"", value=ETH)
    block = hex_int(receipt["blockNumber"])

    report = await hot.watch.step()
    assert await rpc.block_number() == block  # caught before the next block
    assert block in report.blocks
    [alert] = [a for a in report.alerts if a.severity == Severity.CRITICAL]
    assert receipt["transactionHash"] in alert.text
    assert (
        "did not sign" in alert.text and "value sent to an address off the allowlist" in alert.text
    )
    assert "the nonce moved" in alert.text
    state = hot.breaker.state()
    assert state.open and state.actor == "watch" and state.reason is not None
    assert receipt["transactionHash"] in state.reason
    assert hot.watch.metrics.breaker_open and hot.watch.metrics.incidents == 1

    # The gateway stops signing at once.
    call = hot.payments.calldata("closeLease", b"\1" * 32, 1)
    with pytest.raises(SigningRefused) as refused:
        hot.signer.sign_transaction(
            {"type": 2, "chainId": chain.deployment.chain_id, "nonce": 1}
            | {"to": chain.deployment.payments, "value": 0, "data": call, "gas": 100_000}
            | {"maxFeePerGas": GWEI, "maxPriorityFeePerGas": GWEI}
        )
    assert refused.value.code == "breaker"
    round_report = await hot.gateway.round()
    assert round_report.halted is not None and round_report.sent == 0

    # The guardian paused the payments contract.
    assert hot.watch.pausing is not None
    await hot.watch.pausing
    assert await hot.payments.read_one("paused") is True
    assert any("paused by the guardian" in a.title for a in hot.alerts)

    # Once the state holds, later blocks raise nothing new.
    await rpc.request("anvil_mine", ["0x2"])
    again = await hot.watch.step()
    assert again.findings == []


async def test_a_permit_signed_with_the_key_is_caught_though_the_wallet_sent_nothing(
    db: Database, rpc: Rpc, chain: GatewayChain, token: SoftHsmToken
) -> None:
    hot = await hot_wallet(db, rpc, chain, token, guardian=False)
    await hot.watch.step()
    thief = KeystoreSigner(bytes(Account.create().key))
    await fund(rpc, thief.address, ETH)
    deployment = chain.deployment
    erc20 = Contract(rpc, "DevToken", deployment.token)
    nonce = await erc20.read_one("nonces", hot.key.address)
    data = permit_data(
        deployment.chain_id, deployment.token, hot.key.address, thief.address, 10**30, nonce, 2**40
    )
    sig = hot.key.sign_typed_data(data)
    call = erc20.calldata(
        "permit", hot.key.address, thief.address, 10**30, 2**40, sig[64], sig[:32], sig[32:64]
    )
    await send_and_wait(rpc, thief, erc20.address, call)  # the thief sends it, not the wallet
    report = await hot.watch.step()
    assert len(report.findings) == 1
    assert f"token approval by the hot wallet to {thief.address.lower()}" in report.findings[0]
    assert hot.breaker.state().open
    assert hot.watch.pausing is None  # no guardian configured: nothing to pause with


async def test_a_nonce_that_moved_while_the_watch_looked_away_is_caught(
    db: Database, rpc: Rpc, chain: GatewayChain, token: SoftHsmToken
) -> None:
    hot = await hot_wallet(db, rpc, chain, token, guardian=False)
    await hot.watch.step()
    await send_and_wait(rpc, hot.key, hot.key.address, b"")  # to itself, no value
    # The watch restarts past that block (its cursor lost, say): the nonce still tells.
    with db.transaction() as session:
        name = f"watch-block:{chain.deployment.chain_id}:{hot.key.address.lower()}"
        row = session.get(Counter, name)
        assert row is not None
        row.value = await rpc.block_number() + 1
    await rpc.request("anvil_mine", ["0x1"])
    report = await hot.watch.step()
    assert len(report.findings) == 1
    assert "the nonce moved to 1 by block" in report.findings[0]
    assert "the gateway issued none" in report.findings[0]
    assert hot.breaker.state().open
    assert (await hot.watch.step()).findings == []  # reported once


async def test_the_balance_floor_alerts_once_and_resolves_once(
    db: Database, rpc: Rpc, chain: GatewayChain, token: SoftHsmToken
) -> None:
    hot = await hot_wallet(db, rpc, chain, token, floor=ETH, balance=2 * ETH)
    await hot.watch.step()
    assert hot.alerts == []
    await fund(rpc, hot.key.address, ETH // 2)
    for _ in range(3):
        await rpc.request("anvil_mine", ["0x1"])
        await hot.watch.step()
    [low] = hot.alerts
    assert (low.severity, low.resolved) == (Severity.CRITICAL, False)
    assert "under the floor" in low.title and "0.500000 ETH" in low.title
    # A restart remembers the state: no second alert.
    restarted = HotWalletWatch(
        db, rpc, hot.watch.config, hot.breaker, hot.alerts.append, guardian=None
    )
    await restarted.step()
    assert len(hot.alerts) == 1
    await fund(rpc, hot.key.address, 3 * ETH)
    for _ in range(3):
        await rpc.request("anvil_mine", ["0x1"])
        await restarted.step()
    assert len(hot.alerts) == 2
    assert hot.alerts[1].resolved and "back over the floor" in hot.alerts[1].title
    assert not hot.breaker.state().open  # a low balance is not an incident


async def test_a_short_runway_warns_once(
    db: Database, rpc: Rpc, chain: GatewayChain, token: SoftHsmToken
) -> None:
    hot = await hot_wallet(db, rpc, chain, token, floor=0, balance=ETH)
    # The last 6 hours' transactions paid 9 ETH of gas: 1.5 ETH an hour, so 1 ETH lasts 40 min.
    with db.transaction() as session:
        session.add(
            ChainTx(
                id="ctx_burn",
                chain_id=chain.deployment.chain_id,
                sender=hot.key.address,
                nonce=0,
                kind="payments",
                to=chain.deployment.payments,
                data="0x",
                gas=1,
                status="CONFIRMED",
                fee_paid=9 * ETH,
                updated_at=utcnow(),
            )
        )
    await hot.watch.step()
    await hot.watch.step()
    [warning] = hot.alerts
    assert warning.severity == Severity.WARNING
    assert "runway 0.7 h is under 1 h" in warning.title
    assert hot.watch.metrics.runway_hours == pytest.approx(2 / 3)
    text = hot.watch.metrics.prometheus()
    assert f"openpod_hot_wallet_balance_wei {ETH}" in text
    assert "openpod_hot_wallet_breaker_open 0" in text


async def test_a_blind_watch_warns_once_and_says_when_it_sees_again(
    db: Database, rpc: Rpc, chain: GatewayChain, token: SoftHsmToken
) -> None:
    hot = await hot_wallet(db, rpc, chain, token, guardian=False)
    outage = Outage(int(chain.url.rsplit(":", 1)[1]))
    await outage.up()
    seen: list[Alert] = []
    changed = asyncio.Event()

    def alert(a: Alert) -> None:
        seen.append(a)
        changed.set()

    config = replace(hot.watch.config, blind_after_s=0.3)
    async with Rpc(outage.url) as through:
        watch = HotWalletWatch(db, through, config, hot.breaker, alert)
        stop = asyncio.Event()
        running = asyncio.create_task(watch.run(0.05, stop))
        try:
            await outage.down()
            await asyncio.wait_for(changed.wait(), 10)
            changed.clear()
            [blind] = seen
            assert (blind.severity, blind.resolved) == (Severity.WARNING, False)
            assert "cannot read the chain" in blind.title
            await outage.up()
            await asyncio.wait_for(changed.wait(), 10)
            assert len(seen) == 2 and seen[1].resolved and "again" in seen[1].title
            assert seen[1].key == blind.key
        finally:
            stop.set()
            await running
            await outage.down()


async def test_an_incident_pauses_the_contract_even_with_the_breaker_open_already(
    db: Database, rpc: Rpc, chain: GatewayChain, token: SoftHsmToken
) -> None:
    hot = await hot_wallet(db, rpc, chain, token)
    await hot.watch.step()
    assert hot.breaker.open("operator: a planned migration", "cli:ops")
    await send_and_wait(rpc, hot.key, Account.create().address, b"", value=1)
    report = await hot.watch.step()
    assert len(report.findings) == 3  # not ours, value off the allowlist, the nonce moved
    assert hot.watch.pausing is not None
    await hot.watch.pausing
    assert await hot.payments.read_one("paused") is True
    assert hot.breaker.state().reason == "operator: a planned migration"  # the first reason
