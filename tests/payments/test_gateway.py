"""The payment gateway against a real anvil: settlements paid exactly once through restarts,
RPC outages, stuck transactions and reorgs; reverts decoded into FAILED settlements."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from openpod.adapters.chain import Contract, Event, Rpc, RpcUnavailable, hex_int
from openpod.adapters.signers import KeystoreSigner
from openpod.adapters.store import Database
from openpod.adapters.store.models import ChainTx, ChainTxAttempt, Counter, PodLease, Settlement
from openpod.domain.metering import EventKind, MeterEvent
from openpod.domain.money import cost
from openpod.services import chain_txs, metering
from openpod.services.payments import GatewayConfig, LeaseStatus, PaymentGateway, RoundReport
from tests.store.test_metering import T0, _ingest, _pod, _run
from tests.support.chain import (
    CATALOG_H100_RATE,
    FEE_BPS,
    PAYOUT_WALLET,
    Clock,
    GatewayChain,
    Outage,
    balance,
    make_user,
    sign_lease,
)

SECONDS = (60, 60, 61)  # three cuts of one run: 60 s, 60 s, then 61 s at the close


def fee_of(amount: int) -> int:
    return amount * FEE_BPS // 10_000


def settled_run(db: Database) -> str:
    """A pod whose run was cut three times (60, 60 and 61 seconds): three PENDING settlements."""
    pod_id, _ = _pod(db, gpu_count=1)
    _ingest(db, _run(pod_id, [5.0 * i for i in range(13)]))
    with db.transaction() as s:
        metering.cut(s)
    _ingest(db, _run(pod_id, [65.0 + 5 * i for i in range(12)], first_seq=14))
    with db.transaction() as s:
        metering.cut(s)
    beats: list[float] = [125, 130, 135, 140, 145, 150, 155, 160, 165, 170, 175, 180]
    _ingest(db, _run(pod_id, beats, first_seq=26))
    stop = metering.Batch((pod_id, 1), [MeterEvent(38, EventKind.STOPPED, T0 + 181_000)])
    _ingest(db, stop)
    return pod_id


def gateway(db: Database, rpc: Rpc, chain: GatewayChain, **kw: Any) -> PaymentGateway:
    clock = kw.pop("now", None)
    config = GatewayConfig(
        chain_id=chain.deployment.chain_id,
        payments=chain.deployment.payments,
        confirmations=kw.pop("confirmations", 2),
        bump_after_s=30,
        **kw,
    )
    return PaymentGateway(db, rpc, chain.hot, config, **({"now": clock} if clock else {}))


async def mine(rpc: Rpc, blocks: int = 1) -> None:
    await rpc.request("anvil_mine", [hex(blocks)])


async def leased_run(
    db: Database, rpc: Rpc, chain: GatewayChain
) -> tuple[str, KeystoreSigner, int]:
    """A settled run (three PENDING settlements) whose user signed its lease: the pod, the
    user, and the user's token balance before anything is paid."""
    pod_id = settled_run(db)
    user = await make_user(rpc, chain.deployment)
    await sign_lease(db, rpc, chain, pod_id, user)
    return pod_id, user, await balance(rpc, chain.deployment, user.address)


async def open_lease(gw: PaymentGateway, rpc: Rpc) -> None:
    """One round sends the lease, two blocks confirm it, and the gateway sees it open."""
    await gw.round()
    await mine(rpc, 2)
    await gw.follow(RoundReport())


async def settle_all(gw: PaymentGateway, rpc: Rpc, rounds: int = 6) -> RoundReport:
    """Rounds with a block mined after each, until nothing is left open."""
    total = RoundReport()
    for _ in range(rounds):
        report = await gw.round()
        for name in ("submitted", "confirmed", "failed", "returned", "bumped", "reorged"):
            setattr(total, name, getattr(total, name) + getattr(report, name))
        await mine(rpc)
    return total


async def paid_events(rpc: Rpc, chain: GatewayChain, user: str) -> list[Event]:
    """Every `Paid` event that charged `user`, from the chain's logs."""
    payments = Contract(rpc, "OpenPodPayments", chain.deployment.payments)
    topics = [
        "0x" + payments.codec.event_topic("Paid").hex(),
        None,
        "0x" + user[2:].lower().rjust(64, "0"),
    ]
    found = [payments.codec.decode_log(entry) for entry in await rpc.logs(payments.address, topics)]
    return [e for e in found if e is not None]


def settlements(db: Database, pod_id: str) -> list[Settlement]:
    with db.transaction(readonly=True) as s:
        query = select(Settlement).where(Settlement.pod_id == pod_id)
        return list(s.scalars(query.order_by(Settlement.from_second)))


async def test_a_run_is_paid_on_chain_exactly_as_metered(
    db: Database, rpc: Rpc, chain: GatewayChain
) -> None:
    pod_id, user, before = await leased_run(db, rpc, chain)
    provider_before = await balance(rpc, chain.deployment, PAYOUT_WALLET)
    treasury_before = await balance(rpc, chain.deployment, chain.treasury)

    report = await settle_all(gateway(db, rpc, chain), rpc)

    rows = settlements(db, pod_id)
    assert [r.seconds for r in rows] == list(SECONDS)
    assert {r.status for r in rows} == {"CONFIRMED"}
    assert report.confirmed == 3 and report.failed == 0
    for row in rows:
        assert row.amount == cost(row.seconds, 1, CATALOG_H100_RATE)
        assert row.paid_amount == row.amount
        assert row.fee == fee_of(row.amount)
        assert row.tx_hash is not None and row.number is not None
    total = sum(r.amount for r in rows)
    fees = sum(fee_of(r.amount) for r in rows)
    assert await balance(rpc, chain.deployment, user.address) == before - total
    assert await balance(rpc, chain.deployment, PAYOUT_WALLET) == provider_before + total - fees
    assert await balance(rpc, chain.deployment, chain.treasury) == treasury_before + fees
    # The lease was opened, then closed at its start + the seconds billed.
    with db.transaction(readonly=True) as s:
        lease = s.get(PodLease, (pod_id, 1))
        assert lease is not None and lease.status == LeaseStatus.CLOSED
        payments = Contract(rpc, "OpenPodPayments", chain.deployment.payments)
        stored = await payments.read_one("leaseOf", bytes.fromhex(lease.lease_id[2:]))
        assert stored[5] == sum(SECONDS)  # billedSeconds
        assert stored[2] == lease.start + sum(SECONDS)  # end


async def test_nonces_come_from_the_database_without_gap_or_reuse(
    db: Database, rpc: Rpc, chain: GatewayChain
) -> None:
    start = await rpc.nonce(chain.hot.address, "latest")
    user = await make_user(rpc, chain.deployment)
    for _ in range(2):
        await sign_lease(db, rpc, chain, settled_run(db), user)
        await settle_all(gateway(db, rpc, chain, batch_size=2), rpc)  # a new gateway each time
    with db.transaction(readonly=True) as s:
        nonces = sorted(s.scalars(select(ChainTx.nonce)))
        counter = s.get(Counter, chain_txs.nonce_counter(31337, chain.hot.address))
        assert counter is not None
    end = await rpc.nonce(chain.hot.address, "latest")
    assert nonces == list(range(start, end))  # leases, batches of 2 and 1, closes
    assert counter.value == end


async def test_a_settlement_sent_again_is_charged_once(
    db: Database, rpc: Rpc, chain: GatewayChain
) -> None:
    pod_id = settled_run(db)
    user = await make_user(rpc, chain.deployment)
    await sign_lease(db, rpc, chain, pod_id, user)
    await settle_all(gateway(db, rpc, chain), rpc)
    after_first = await balance(rpc, chain.deployment, user.address)
    first = settlements(db, pod_id)
    # A database restored from a backup taken before the confirmations: all PENDING again.
    with db.transaction() as s:
        for row in s.scalars(select(Settlement).where(Settlement.pod_id == pod_id)):
            row.status, row.chain_tx_id, row.tx_hash = "PENDING", None, None
        lease = s.get(PodLease, (pod_id, 1))
        assert lease is not None
        lease.status, lease.close_tx_id = LeaseStatus.OPEN, None
    report = await settle_all(gateway(db, rpc, chain), rpc)

    assert report.submitted == 3 and report.confirmed == 3
    assert await balance(rpc, chain.deployment, user.address) == after_first
    again = settlements(db, pod_id)
    assert [r.status for r in again] == ["CONFIRMED"] * 3
    assert [r.tx_hash for r in again] == [r.tx_hash for r in first]  # the payment that paid


class Crash(Exception):
    """The gateway process dying at a chosen point."""


async def test_killed_between_sign_and_send_pays_once(
    db: Database, rpc: Rpc, chain: GatewayChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod_id, user, before = await leased_run(db, rpc, chain)
    first = gateway(db, rpc, chain)
    await open_lease(first, rpc)
    nonce = await rpc.nonce(chain.hot.address, "latest")

    async def die(*_: object) -> None:
        raise Crash

    monkeypatch.setattr(first, "_broadcast", die)
    with pytest.raises(Crash):
        await first.submit_payments(RoundReport())
    assert await rpc.nonce(chain.hot.address, "pending") == nonce  # nothing reached the chain
    with db.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).where(ChainTx.status == "SIGNED")) == 1

    report = await settle_all(gateway(db, rpc, chain), rpc)  # the restarted gateway

    assert report.submitted == 0 and report.confirmed == 3
    total = sum(r.amount for r in settlements(db, pod_id))
    assert await balance(rpc, chain.deployment, user.address) == before - total
    assert {r.status for r in settlements(db, pod_id)} == {"CONFIRMED"}


async def test_killed_between_send_and_receipt_pays_once(
    db: Database, rpc: Rpc, chain: GatewayChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod_id, user, before = await leased_run(db, rpc, chain)
    first = gateway(db, rpc, chain)
    await open_lease(first, rpc)

    def die(*_: object, **__: object) -> None:
        raise Crash

    monkeypatch.setattr(chain_txs, "mark_sent", die)  # sent, then dead before noting it
    with pytest.raises(Crash):
        await first.submit_payments(RoundReport())
    monkeypatch.undo()
    assert await balance(rpc, chain.deployment, user.address) < before  # it did reach the chain

    report = await settle_all(gateway(db, rpc, chain), rpc)

    assert report.submitted == 0 and report.confirmed == 3
    total = sum(r.amount for r in settlements(db, pod_id))
    assert await balance(rpc, chain.deployment, user.address) == before - total


async def test_rpc_outage_loses_nothing(db: Database, rpc: Rpc, chain: GatewayChain) -> None:
    pod_id, user, before = await leased_run(db, rpc, chain)
    outage = Outage(int(chain.url.rsplit(":", 1)[1]))
    await outage.up()
    async with Rpc(outage.url, timeout_s=2) as flaky:
        gw = gateway(db, flaky, chain)
        await gw.round()  # the lease goes out
        await outage.down()
        for _ in range(2):
            with pytest.raises(RpcUnavailable):
                await gw.round()
        assert {r.status for r in settlements(db, pod_id)} == {"PENDING"}
        await outage.up()
        report = await settle_all(gw, rpc=flaky)
        await outage.down()
    assert report.confirmed == 3
    total = sum(r.amount for r in settlements(db, pod_id))
    assert await balance(rpc, chain.deployment, user.address) == before - total


async def test_a_stuck_transaction_is_bumped_and_lands_once(
    db: Database, rpc: Rpc, chain: GatewayChain
) -> None:
    pod_id, user, before = await leased_run(db, rpc, chain)
    clock = Clock()
    gw = gateway(db, rpc, chain, now=clock)
    await open_lease(gw, rpc)
    await rpc.request("evm_setAutomine", [False])  # mining stops: the batch waits in the pool
    report = await gw.round()
    assert report.submitted == 3
    clock.advance(10)
    assert (await gw.round()).bumped == 0  # not yet
    clock.advance(30)
    assert (await gw.round()).bumped == 1
    with db.transaction(readonly=True) as s:
        tx = s.scalars(select(ChainTx).where(ChainTx.kind == "payments")).one()
        tries = chain_txs.attempts(s, tx.id)
    assert len(tries) == 2 and tries[0].max_fee > tries[1].max_fee and tries[0].tip > tries[1].tip
    await rpc.request("evm_setAutomine", [True])
    await mine(rpc)
    await settle_all(gw, rpc)
    with db.transaction(readonly=True) as s:
        tx = s.scalars(select(ChainTx).where(ChainTx.kind == "payments")).one()
        assert tx.status == "CONFIRMED" and tx.mined_hash == tries[0].hash  # the bump landed
    total = sum(r.amount for r in settlements(db, pod_id))
    assert await balance(rpc, chain.deployment, user.address) == before - total


async def test_a_batch_priced_under_a_risen_base_fee_is_bumped_over_it_and_lands_once(
    db: Database, rpc: Rpc, chain: GatewayChain
) -> None:
    """The base fee jumps past the batch's max fee before a block takes it. What anvil 1.7.1
    does then (a geth node would keep it queued instead): the next block leaves it out and the
    pool drops it, and sending it again is refused ("max fee per gas less than block base
    fee") for as long as the base fee stays above it. The gateway bumps a refused attempt at
    once, priced from the latest block's base fee: it clears it and lands; the user pays once."""
    pod_id, user, before = await leased_run(db, rpc, chain)
    clock = Clock()
    gw = gateway(db, rpc, chain, now=clock)
    await open_lease(gw, rpc)
    await rpc.request("evm_setAutomine", [False])
    assert (await gw.round()).submitted == 3  # the batch waits in the pool
    with db.transaction(readonly=True) as s:
        tx_id = s.scalars(select(ChainTx.id).where(ChainTx.kind == "payments")).one()
        [first] = chain_txs.attempts(s, tx_id)
    pool = await rpc.request("txpool_content")
    assert [t["hash"] for t in pool["pending"][chain.hot.address.lower()].values()] == [first.hash]

    high = 10 * first.max_fee
    await rpc.request("anvil_setNextBlockBaseFeePerGas", [hex(high)])
    await rpc.request("evm_mine")
    head = await rpc.block("latest") or {}
    assert hex_int(head["baseFeePerGas"]) == high and head["transactions"] == []
    assert await rpc.receipt(first.hash) is None
    assert await rpc.request("txpool_content") == {"pending": {}, "queued": {}}  # dropped

    clock.advance(10)  # not due for a bump by the clock, but refused as under the base fee:
    report = await gw.round()  # in no pool, so it is bumped and sent at once
    assert report.bumped == 1 and report.sent == 1
    with db.transaction(readonly=True) as s:
        bump, again = chain_txs.attempts(s, tx_id)
    assert again.hash == first.hash
    assert bump.max_fee >= 2 * high > first.max_fee and bump.tip > first.tip

    await rpc.request("evm_mine")  # 7/8 of `high` after an empty block: the bump clears it
    receipt = await rpc.receipt(bump.hash)
    assert receipt is not None and hex_int(receipt["status"]) == 1
    mined_in = await rpc.block(hex_int(receipt["blockNumber"])) or {}
    assert first.max_fee < hex_int(mined_in["baseFeePerGas"]) <= bump.max_fee
    await rpc.request("evm_setAutomine", [True])
    await settle_all(gw, rpc)

    with db.transaction(readonly=True) as s:
        tx = s.get(ChainTx, tx_id)
        assert tx is not None and tx.status == "CONFIRMED" and tx.mined_hash == bump.hash
    rows = settlements(db, pod_id)
    assert {r.status for r in rows} == {"CONFIRMED"} and {r.tx_hash for r in rows} == {bump.hash}
    total = sum(r.amount for r in rows)
    assert await balance(rpc, chain.deployment, user.address) == before - total
    paid = await paid_events(rpc, chain, user.address)
    assert len(paid) == 3 and {e.args["settlementId"] for e in paid} == {r.number for r in rows}


async def test_a_signed_batch_the_base_fee_passed_while_down_is_bumped_and_lands_once(
    db: Database, rpc: Rpc, chain: GatewayChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod_id, user, before = await leased_run(db, rpc, chain)
    clock = Clock()
    first = gateway(db, rpc, chain, now=clock)
    await open_lease(first, rpc)

    async def die(*_: object) -> None:
        raise Crash

    monkeypatch.setattr(first, "_broadcast", die)
    with pytest.raises(Crash):  # signed and stored, then the gateway dies before sending it
        await first.submit_payments(RoundReport())
    monkeypatch.undo()
    with db.transaction(readonly=True) as s:
        signed = s.scalars(select(ChainTx).where(ChainTx.kind == "payments")).one()
        [attempt] = chain_txs.attempts(s, signed.id)
    await rpc.request("anvil_setNextBlockBaseFeePerGas", [hex(10 * attempt.max_fee)])
    await rpc.request("evm_mine")  # while it is down, the base fee passes the batch's max fee

    gw = gateway(db, rpc, chain, now=clock)  # the restarted gateway
    for _ in range(2):
        clock.advance(40)
        await gw.round()
    await settle_all(gw, rpc)

    assert {r.status for r in settlements(db, pod_id)} == {"CONFIRMED"}
    total = sum(r.amount for r in settlements(db, pod_id))
    assert await balance(rpc, chain.deployment, user.address) == before - total


async def test_a_dropped_block_is_recovered(db: Database, rpc: Rpc, chain: GatewayChain) -> None:
    pod_id, user, before = await leased_run(db, rpc, chain)
    gw = gateway(db, rpc, chain, confirmations=3)
    await gw.round()
    await mine(rpc, 3)
    await gw.follow(RoundReport())
    snapshot = await rpc.request("evm_snapshot")
    await gw.round()  # the batch is mined at once (automine)...
    await gw.follow(RoundReport())
    with db.transaction(readonly=True) as s:
        assert s.scalars(select(ChainTx.status).where(ChainTx.kind == "payments")).one() == "MINED"
    await rpc.request("evm_revert", [snapshot])  # ...and its block leaves the chain
    assert await balance(rpc, chain.deployment, user.address) == before

    report = await settle_all(gw, rpc)

    assert report.reorged == 1 and report.confirmed == 3
    total = sum(r.amount for r in settlements(db, pod_id))
    assert await balance(rpc, chain.deployment, user.address) == before - total


async def test_a_rejected_payment_fails_with_the_decoded_error(
    db: Database, rpc: Rpc, chain: GatewayChain
) -> None:
    pod_id = settled_run(db)
    user = await make_user(
        rpc, chain.deployment, cap=cost(100, 1, CATALOG_H100_RATE)
    )  # less than 181 s
    await sign_lease(db, rpc, chain, pod_id, user)

    report = await settle_all(gateway(db, rpc, chain), rpc)

    rows = settlements(db, pod_id)
    assert [r.status for r in rows] == ["CONFIRMED", "FAILED", "FAILED"]
    assert report.failed == 2
    assert rows[1].reason is not None and rows[1].reason.startswith("CapExceeded(")
    assert user.address in rows[1].reason
    with db.transaction(readonly=True) as s:
        lease = s.get(PodLease, (pod_id, 1))
        assert lease is not None and lease.status == LeaseStatus.CLOSED


async def test_a_batch_the_token_refuses_fails_with_the_tokens_decoded_error(
    db: Database, rpc: Rpc, chain: GatewayChain
) -> None:
    pod_id, user, before = await leased_run(db, rpc, chain)
    gw = gateway(db, rpc, chain)
    await gw.round()  # the lease is opened...
    await mine(rpc, 2)
    token = Contract(rpc, "DevToken", chain.deployment.token)
    await token.send(user, token.calldata("approve", chain.deployment.payments, 0))  # ...revoked

    report = await settle_all(gw, rpc)

    rows = settlements(db, pod_id)
    assert [r.status for r in rows] == ["FAILED"] * 3 and report.failed == 3
    for row in rows:  # the first transfer, to the provider, is refused by the token
        needed = row.amount - fee_of(row.amount)
        assert row.reason == (
            f"ERC20InsufficientAllowance(spender={chain.deployment.payments}, allowance=0, "
            f"needed={needed})"
        )
        assert row.tx_hash is not None
    assert await balance(rpc, chain.deployment, user.address) == before
    assert await paid_events(rpc, chain, user.address) == []


async def test_a_lease_the_user_did_not_sign_fails_its_settlements(
    db: Database, rpc: Rpc, chain: GatewayChain
) -> None:
    pod_id = settled_run(db)
    user = await make_user(rpc, chain.deployment)
    await sign_lease(db, rpc, chain, pod_id, user, signer=chain.admin)
    before = await balance(rpc, chain.deployment, user.address)

    await settle_all(gateway(db, rpc, chain), rpc)

    rows = settlements(db, pod_id)
    assert {r.status for r in rows} == {"FAILED"}
    assert all("BadLeaseSignature" in (r.reason or "") for r in rows)
    assert await balance(rpc, chain.deployment, user.address) == before
    with db.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(ChainTx)) == 0  # nothing was sent


async def test_paused_payments_are_held_then_sent(
    db: Database, rpc: Rpc, chain: GatewayChain
) -> None:
    pod_id = settled_run(db)
    user = await make_user(rpc, chain.deployment)
    await sign_lease(db, rpc, chain, pod_id, user)
    gw = gateway(db, rpc, chain)
    await gw.round()
    await mine(rpc, 2)
    payments = Contract(rpc, "OpenPodPayments", chain.deployment.payments)
    await payments.send(chain.admin, payments.calldata("pause"))

    for _ in range(2):
        assert (await gw.round()).submitted == 0
    assert {r.status for r in settlements(db, pod_id)} == {"PENDING"}
    with db.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(ChainTxAttempt)) == 1  # the lease only

    await payments.send(chain.admin, payments.calldata("unpause"))
    await settle_all(gw, rpc)
    assert {r.status for r in settlements(db, pod_id)} == {"CONFIRMED"}
