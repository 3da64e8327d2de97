"""The payment gateway: settlements become contract calls, signed by the hot wallet, sent,
followed to N confirmations, and marked CONFIRMED (with what the `Paid` event said) or FAILED
(with the contract's decoded custom error).

Each round:
1. follows every open transaction: a receipt with N confirmations on the canonical chain
   settles what it carries; a receipt that vanished (a reorg) sends the transaction again;
   one sent longer than `bump_after_s` ago without a receipt is replaced by a fee bump (same
   nonce, same calldata); one never sent (a crash between signing and sending) is sent.
2. opens the leases users signed (`openLease`), one transaction each;
3. pays PENDING settlements whose lease is open, up to `batch_size` per `paymentBatch`;
4. closes the leases of runs that ended and are fully settled (`closeLease`).

Nothing is paid twice: a settlement is carried by one nonce only (bumps replace the nonce's
transaction, never add one), the contract pays each settlement number once, and what the
chain says is read back from events before anything is marked. The RPC being down raises
`RpcUnavailable` out of the round; nothing is lost, the next round picks up where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from openpod.adapters.chain import (
    ChainError,
    Charge,
    Contract,
    Event,
    LeaseTerms,
    Reverted,
    Rpc,
    RpcError,
    RpcUnavailable,
    codec,
    hex_int,
    is_already_known,
    is_nonce_too_low,
    is_underpriced,
)
from openpod.adapters.store import Database, StoreError
from openpod.adapters.store.models import (
    ChainTx,
    ChainTxAttempt,
    PodLease,
    PodRun,
    Settlement,
    utcnow,
)
from openpod.domain.errors import DomainError
from openpod.domain.settlement import SettlementStatus, advance
from openpod.services import chain_txs
from openpod.services.chain_txs import Fees, Signer, TxStatus
from openpod.services.hot_wallet import Breaker, SigningRefused

log = logging.getLogger(__name__)
T = TypeVar("T")

SETTLEMENT_NUMBERS = "settlement-number"
PAYMENTS, LEASE, CLOSE = "payments", "lease", "close"


class LeaseStatus:
    SIGNED = "SIGNED"
    OPENING = "OPENING"
    OPEN = "OPEN"
    CLOSING = "CLOSING"
    CLOSED = "CLOSED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class GatewayConfig:
    chain_id: int
    payments: str
    batch_size: int = 100
    confirmations: int = 2
    bump_after_s: float = 30.0
    gas_margin_percent: int = 20
    max_fee_per_gas: int | None = None  # the signing policy's cap: fees are kept under it


@dataclass
class RoundReport:
    submitted: int = 0  # settlements put into new transactions
    confirmed: int = 0
    failed: int = 0
    returned: int = 0  # settlements back to PENDING (their transaction did not land)
    leases_opened: int = 0
    leases_closed: int = 0
    sent: int = 0  # transactions (re)broadcast
    bumped: int = 0
    reorged: int = 0
    transactions: list[str] = field(default_factory=list)
    halted: str | None = None  # why nothing was done: the hot wallet's breaker is open


class PaymentGateway:
    """One hot wallet paying on one deployment. Run one gateway per hot wallet."""

    def __init__(
        self,
        db: Database,
        rpc: Rpc,
        signer: Signer,
        config: GatewayConfig,
        *,
        now: Callable[[], datetime] = utcnow,
        breaker: Breaker | None = None,
    ) -> None:
        self.db = db
        self.rpc = rpc
        self.signer = signer
        self.config = config
        self.breaker = breaker
        self.contract = Contract(rpc, "OpenPodPayments", config.payments)
        self._now = now

    async def _db(self, work: Callable[[Session], T]) -> T:
        return await self.db.run(work)

    # ---- the round -----------------------------------------------------------------

    async def round(self) -> RoundReport:
        report = RoundReport()
        if self.breaker is not None:
            state = await asyncio.to_thread(self.breaker.state)
            if state.open:  # nothing is signed or sent until an operator closes it
                report.halted = f"the hot wallet's breaker is open: {state.reason}"
                return report
        await self.follow(report)
        await self.open_leases(report)
        while await self.submit_payments(report):
            pass
        await self.close_leases(report)
        return report

    async def run(self, period_s: float, stop: asyncio.Event) -> None:
        """Rounds every `period_s` until `stop`; RPC trouble backs off up to a minute."""
        delay = period_s
        while not stop.is_set():
            try:
                await self.round()
                delay = period_s
            except (RpcUnavailable, RpcError) as error:
                delay = min(max(delay * 2, period_s), 60.0)
                log.warning("payment round: %s; retrying in %.0f s", error, delay)
            except SigningRefused as refusal:  # alerted by the signer; the next round retries
                delay = min(max(delay * 2, period_s), 60.0)
                log.warning("payment round: signing refused: %s", refusal.reason)
            except (ChainError, StoreError, DomainError) as error:
                log.warning("payment round: %s", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    # ---- following transactions ----------------------------------------------------

    async def follow(self, report: RoundReport) -> None:
        txs = await self._db(
            lambda s: chain_txs.open_txs(s, self.config.chain_id, self.signer.address)
        )
        if not txs:
            return
        head = await self.rpc.block_number()
        for tx in txs:
            await self._follow_one(tx, head, report)

    async def _follow_one(self, tx: ChainTx, head: int, report: RoundReport) -> None:
        tries = await self._db(lambda s: chain_txs.attempts(s, tx.id))
        receipt = None
        for attempt in tries:
            receipt = await self.rpc.receipt(attempt.hash)
            if receipt is not None:
                break
        if receipt is None:
            await self._not_mined(tx, tries, report)
            return
        number, block_hash = hex_int(receipt["blockNumber"]), str(receipt["blockHash"])
        if tx.status != TxStatus.MINED.value or tx.block_hash != block_hash:
            await self._db(lambda s: _mark_mined(s, tx.id, receipt))
        if head - number + 1 < self.config.confirmations:
            return
        block = await self.rpc.block(number)
        if block is None or str(block.get("hash")) != block_hash:
            return  # a reorg is under way: the next round sees where it landed
        await self._settle(tx, receipt, report)

    async def _not_mined(
        self, tx: ChainTx, tries: list[ChainTxAttempt], report: RoundReport
    ) -> None:
        if tx.status == TxStatus.MINED.value:
            report.reorged += 1
            log.warning(
                "transaction %s (nonce %d) left the chain: sending it again", tx.id, tx.nonce
            )
            await self._db(lambda s: _unmine(s, tx.id))
        if await self.rpc.nonce(self.signer.address, "latest") > tx.nonce:
            # Our nonce is used and none of our attempts holds it: someone else's transaction.
            await self._dropped(tx, report)
            return
        latest = tries[0]
        due = latest.sent_at is not None and self._now() - latest.sent_at >= timedelta(
            seconds=self.config.bump_after_s
        )
        if due and tx.status != TxStatus.SIGNED.value:
            latest = await self._bump(tx, latest, report)
        refused = await self._broadcast(latest, report)
        if refused is not None and is_underpriced(refused):
            # Its fees are under what the chain asks now (the base fee rose, maybe while we
            # were down): it is in no pool, so a bump replaces nothing and goes out at once.
            bumped = await self._bump(tx, latest, report)
            if bumped is not latest:
                await self._broadcast(bumped, report)

    async def _broadcast(self, attempt: ChainTxAttempt, report: RoundReport) -> RpcError | None:
        """Send an attempt; the node's refusal, if it refused it (known already is no refusal)."""
        try:
            await self.rpc.send_raw(bytes.fromhex(attempt.raw[2:]))
        except RpcError as error:
            if not (is_already_known(error) or is_nonce_too_low(error)):
                log.warning("sending %s: %s", attempt.hash, error)
                return error
        report.sent += 1
        sent_at = self._now()
        await self._db(lambda s: chain_txs.mark_sent(s, attempt.hash, sent_at))
        return None

    async def _bump(
        self, tx: ChainTx, latest: ChainTxAttempt, report: RoundReport
    ) -> ChainTxAttempt:
        """A new attempt with higher fees; `latest` itself when the fee cap leaves no room
        (it waits for the base fee to fall) or the signer refuses."""
        floor = await self._fees()
        fees = Fees(latest.max_fee, latest.tip).bumped(floor)
        cap = self.config.max_fee_per_gas
        if cap is not None and fees.max_fee > cap:
            if latest.max_fee * 9 // 8 + 1 > cap:  # no room for a replacement nodes accept
                log.warning(
                    "not bumping %s (nonce %d): the fee cap %d is reached", tx.id, tx.nonce, cap
                )
                return latest
            fees = Fees(cap, min(fees.tip, cap))
        log.info(
            "bumping %s (nonce %d) to max fee %d, tip %d", tx.id, tx.nonce, fees.max_fee, fees.tip
        )
        try:
            attempt = await self._db(lambda s: chain_txs.add_attempt(s, self.signer, tx, fees))
        except SigningRefused as refusal:
            log.warning("not bumping %s (nonce %d): %s", tx.id, tx.nonce, refusal.reason)
            return latest
        report.bumped += 1
        return attempt

    async def _dropped(self, tx: ChainTx, report: RoundReport) -> None:
        log.error(
            "nonce %d of %s was used by a transaction the gateway did not make: %s is dropped",
            tx.nonce,
            tx.sender,
            tx.id,
        )

        def drop(session: Session) -> None:
            row = session.get(ChainTx, tx.id)
            if row is None:
                return
            row.status = TxStatus.DROPPED.value
            row.reason = "nonce used by another transaction"
            report.returned += _return_settlements(session, tx.id)
            _return_leases(session, tx.id)

        await self._db(drop)

    async def _settle(self, tx: ChainTx, receipt: dict[str, Any], report: RoundReport) -> None:
        events = self.contract.events(receipt)
        succeeded = hex_int(receipt["status"]) == 1
        reason = None if succeeded else await self._why_reverted(tx)
        earlier = {}
        if tx.kind == PAYMENTS and succeeded:
            earlier = await self._earlier_payments(events)

        def settle(session: Session) -> None:
            row = session.get(ChainTx, tx.id)
            if row is None or row.status not in chain_txs.OPEN_STATUSES:
                return
            row.status = (TxStatus.CONFIRMED if succeeded else TxStatus.REVERTED).value
            row.reason = reason
            if tx.kind == PAYMENTS:
                if succeeded:
                    _apply_payments(session, tx.id, events, earlier, report)
                else:
                    report.returned += _return_settlements(session, tx.id)
            elif tx.kind == LEASE:
                _apply_lease_opened(session, tx.id, succeeded, reason, report)
            elif tx.kind == CLOSE:
                _apply_lease_closed(session, tx.id, succeeded, reason, report)

        await self._db(settle)
        report.transactions.append(tx.id)

    async def _why_reverted(self, tx: ChainTx) -> str:
        try:
            await self.contract.simulate(self.signer.address, bytes.fromhex(tx.data[2:]))
        except Reverted as error:
            return f"reverted: {error.error or 'no reason'}"
        return "reverted (out of gas or a state that has changed since)"

    async def _earlier_payments(self, events: list[Event]) -> dict[int, Event]:
        """Settlements a batch found already paid: the `Paid` event that paid them."""
        found: dict[int, Event] = {}
        for event in events:
            if event.name != "PaymentRejected":
                continue
            error = self.contract.codec.decode_error(bytes(event.args["reason"]))
            if error is None or error.name != "AlreadyPaid":
                continue
            number = int(event.args["settlementId"])
            topic = "0x" + number.to_bytes(32, "big").hex()
            paid = "0x" + self.contract.codec.event_topic("Paid").hex()
            for log_entry in await self.rpc.logs(self.contract.address, [paid, topic]):
                decoded = self.contract.codec.decode_log(log_entry)
                if decoded is not None:
                    found[number] = decoded
        return found

    # ---- sending new transactions --------------------------------------------------

    async def _fees(self) -> Fees:
        block = await self.rpc.block("latest") or {}
        base = hex_int(block.get("baseFeePerGas", "0x0"))
        tip = await self.rpc.priority_fee()
        max_fee = 2 * base + tip
        cap = self.config.max_fee_per_gas
        if cap is not None and max_fee > cap:  # signable; it waits for the base fee to fall
            max_fee, tip = cap, min(tip, cap)
        return Fees(max_fee=max_fee, tip=tip)

    async def _gas(self, data: bytes) -> int:
        call = {
            "from": self.signer.address,
            "to": self.contract.address,
            "data": "0x" + data.hex(),
        }
        estimate = await self.rpc.estimate_gas(call)
        return estimate * (100 + self.config.gas_margin_percent) // 100 + 20_000

    async def _send_new(
        self, kind: str, data: bytes, link: Callable[[Session, ChainTx], None], report: RoundReport
    ) -> ChainTx:
        gas = await self._gas(data)
        fees = await self._fees()
        chain_nonce = await self.rpc.nonce(self.signer.address, "pending")

        def store(session: Session) -> tuple[ChainTx, ChainTxAttempt]:
            return chain_txs.sign_and_store(
                session,
                self.signer,
                chain_id=self.config.chain_id,
                to=self.contract.address,
                data=data,
                gas=gas,
                fees=fees,
                kind=kind,
                chain_nonce=chain_nonce,
                link=lambda tx: link(session, tx),
            )

        tx, attempt = await self._db(store)
        await self._broadcast(attempt, report)
        return tx

    async def open_leases(self, report: RoundReport) -> None:
        leases = await self._db(
            lambda s: list(
                s.scalars(
                    select(PodLease)
                    .where(PodLease.status == LeaseStatus.SIGNED)
                    .order_by(PodLease.created_at)
                    .limit(self.config.batch_size)
                )
            )
        )
        for lease in leases:
            data = self.contract.calldata(
                "openLease", lease_terms(lease).as_tuple(), bytes.fromhex(lease.signature[2:])
            )
            try:
                await self.contract.simulate(self.signer.address, data)
            except Reverted as error:
                reason = f"openLease reverted: {error.error or 'no reason'}"
                await self._db(
                    functools.partial(
                        _fail_lease, key=(lease.pod_id, lease.generation), reason=reason
                    )
                )
                report.failed += 1
                continue

            def link(
                session: Session,
                tx: ChainTx,
                key: tuple[str, int] = (lease.pod_id, lease.generation),
            ) -> None:
                row = session.get(PodLease, key)
                if row is not None:
                    row.status = LeaseStatus.OPENING
                    row.open_tx_id = tx.id

            await self._send_new(LEASE, data, link, report)

    async def submit_payments(self, report: RoundReport) -> bool:
        """One batch of PENDING settlements whose lease is open; False when none is left."""
        batch = await self._db(lambda s: _number_batch(s, self.config.batch_size))
        if not batch:
            return False
        charges = [charge for _, charge in batch]
        data = self.contract.calldata("paymentBatch", [c.as_tuple() for c in charges])
        try:
            await self.contract.simulate(self.signer.address, data)
        except Reverted as error:
            # The whole batch would revert (paused, out of gas...): send nothing, retry later.
            log.warning("payment batch not sent: %s", error)
            return False
        ids = [settlement_id for settlement_id, _ in batch]

        def link(session: Session, tx: ChainTx) -> None:
            for row in session.scalars(select(Settlement).where(Settlement.id.in_(ids))):
                advance(SettlementStatus(row.status), SettlementStatus.SUBMITTED)
                row.status = SettlementStatus.SUBMITTED.value
                row.chain_tx_id = tx.id

        await self._send_new(PAYMENTS, data, link, report)
        report.submitted += len(batch)
        return len(batch) == self.config.batch_size

    async def close_leases(self, report: RoundReport) -> None:
        closable = await self._db(_closable_leases)
        for key, lease_hex, end in closable:
            data = self.contract.calldata("closeLease", bytes.fromhex(lease_hex[2:]), end)
            try:
                await self.contract.simulate(self.signer.address, data)
            except Reverted as error:
                reason = f"closeLease reverted: {error.error or 'no reason'}"
                await self._db(
                    functools.partial(_fail_lease, key=key, reason=reason, settlements=False)
                )
                continue

            def link(
                session: Session, tx: ChainTx, k: tuple[str, int] = key, at: int = end
            ) -> None:
                row = session.get(PodLease, k)
                if row is not None:
                    row.status = LeaseStatus.CLOSING
                    row.close_tx_id = tx.id
                    row.end = at

            await self._send_new(CLOSE, data, link, report)


# ---- database steps (each runs inside one transaction) ---------------------------------


def lease_terms(lease: PodLease) -> LeaseTerms:
    return LeaseTerms(
        pod_id=lease.pod_id,
        generation=lease.generation,
        user=lease.user_wallet,
        provider=lease.provider_wallet,
        gpu_type=lease.gpu_type_id,
        gpu_count=lease.gpu_count,
        max_rate=lease.max_rate,
        start=lease.start,
    )


def _number_batch(session: Session, size: int) -> list[tuple[str, Charge]]:
    """Up to `size` PENDING settlements whose lease is open, numbered (once, for good)."""
    query = (
        select(Settlement, PodLease)
        .join(
            PodLease,
            and_(
                PodLease.pod_id == Settlement.pod_id,
                PodLease.generation == Settlement.generation,
            ),
        )
        .where(
            Settlement.status == SettlementStatus.PENDING.value,
            PodLease.status == LeaseStatus.OPEN,
        )
        .order_by(Settlement.created_at, Settlement.id)
        .limit(size)
    )
    rows = [(s, lease) for s, lease in session.execute(query).all()]
    fresh = [s for s, _ in rows if s.number is None]
    if fresh:
        first = chain_txs.counter_next(session, SETTLEMENT_NUMBERS, 1, len(fresh))
        for offset, settlement in enumerate(fresh):
            settlement.number = first + offset
    batch = []
    for settlement, lease in rows:
        assert settlement.number is not None
        batch.append(
            (
                settlement.id,
                Charge(
                    settlement_id=settlement.number,
                    lease=bytes.fromhex(lease.lease_id[2:]),
                    user=lease.user_wallet,
                    provider=lease.provider_wallet,
                    seconds=settlement.seconds,
                    gpu_type=settlement.gpu_type_id,
                    gpu_count=settlement.gpu_count,
                ),
            )
        )
    return batch


def _mark_mined(session: Session, tx_id: str, receipt: dict[str, Any]) -> None:
    row = session.get(ChainTx, tx_id)
    if row is None:
        return
    row.status = TxStatus.MINED.value
    row.mined_hash = str(receipt["transactionHash"])
    row.block_number = hex_int(receipt["blockNumber"])
    row.block_hash = str(receipt["blockHash"])
    row.gas_used = hex_int(receipt["gasUsed"])
    row.fee_paid = row.gas_used * hex_int(receipt.get("effectiveGasPrice", "0x0"))


def _unmine(session: Session, tx_id: str) -> None:
    row = session.get(ChainTx, tx_id)
    if row is None:
        return
    row.status = TxStatus.SENT.value
    row.mined_hash = row.block_hash = None
    row.block_number = row.gas_used = row.fee_paid = None


def _apply_payments(
    session: Session,
    tx_id: str,
    events: list[Event],
    earlier: dict[int, Event],
    report: RoundReport,
) -> None:
    errors = codec("OpenPodPayments")
    by_number = {
        row.number: row
        for row in session.scalars(select(Settlement).where(Settlement.chain_tx_id == tx_id))
    }
    for event in events:
        number = int(event.args.get("settlementId", -1))
        row = by_number.pop(number, None)
        if row is None:
            continue
        if event.name == "Paid":
            _confirm(row, event)
            report.confirmed += 1
        elif event.name == "PaymentRejected":
            error = errors.decode_error(bytes(event.args["reason"]))
            if error is not None and error.name == "AlreadyPaid" and number in earlier:
                _confirm(row, earlier[number])
                report.confirmed += 1
                continue
            advance(SettlementStatus(row.status), SettlementStatus.FAILED, "rejected")
            row.status = SettlementStatus.FAILED.value
            row.reason = str(error) if error else "rejected without a reason"
            row.tx_hash = event.tx_hash
            report.failed += 1
    for row in by_number.values():  # not in the events: cannot happen with this contract
        log.error("settlement %s is in %s but in none of its events", row.id, tx_id)
        row.status = SettlementStatus.PENDING.value
        row.chain_tx_id = None
        report.returned += 1


def _confirm(row: Settlement, event: Event) -> None:
    advance(SettlementStatus(row.status), SettlementStatus.CONFIRMED)
    row.status = SettlementStatus.CONFIRMED.value
    row.tx_hash = event.tx_hash
    row.paid_amount = int(event.args["amount"])
    row.fee = int(event.args["fee"])
    if row.paid_amount != row.amount:
        log.error(
            "settlement %s: the contract charged %d, the meter priced %d (rate changed?)",
            row.id,
            row.paid_amount,
            row.amount,
        )


def _return_settlements(session: Session, tx_id: str) -> int:
    rows = list(session.scalars(select(Settlement).where(Settlement.chain_tx_id == tx_id)))
    for row in rows:
        if row.status == SettlementStatus.SUBMITTED.value:
            advance(SettlementStatus.SUBMITTED, SettlementStatus.PENDING)
            row.status = SettlementStatus.PENDING.value
            row.chain_tx_id = None
    return len(rows)


def _return_leases(session: Session, tx_id: str) -> None:
    for row in session.scalars(select(PodLease).where(PodLease.open_tx_id == tx_id)):
        if row.status == LeaseStatus.OPENING:
            row.status, row.open_tx_id = LeaseStatus.SIGNED, None
    for row in session.scalars(select(PodLease).where(PodLease.close_tx_id == tx_id)):
        if row.status == LeaseStatus.CLOSING:
            row.status, row.close_tx_id = LeaseStatus.OPEN, None


def _apply_lease_opened(
    session: Session, tx_id: str, ok: bool, reason: str | None, report: RoundReport
) -> None:
    for row in session.scalars(select(PodLease).where(PodLease.open_tx_id == tx_id)):
        if ok:
            row.status = LeaseStatus.OPEN
            report.leases_opened += 1
        else:
            _fail_lease(session, (row.pod_id, row.generation), reason or "openLease reverted")
            report.failed += 1


def _apply_lease_closed(
    session: Session, tx_id: str, ok: bool, reason: str | None, report: RoundReport
) -> None:
    for row in session.scalars(select(PodLease).where(PodLease.close_tx_id == tx_id)):
        if ok:
            row.status = LeaseStatus.CLOSED
            report.leases_closed += 1
        else:
            row.status, row.reason = LeaseStatus.OPEN, reason
            row.close_tx_id = None


def _fail_lease(
    session: Session, key: tuple[str, int], reason: str, *, settlements: bool = True
) -> None:
    """A lease the chain refuses: its run's settlements can never be paid on-chain."""
    lease = session.get(PodLease, key)
    if lease is None:
        return
    if not settlements:  # a close that failed: the lease stays open, the reason is kept
        lease.reason = reason
        return
    lease.status, lease.reason = LeaseStatus.FAILED, reason
    query = select(Settlement).where(
        Settlement.pod_id == key[0],
        Settlement.generation == key[1],
        Settlement.status == SettlementStatus.PENDING.value,
    )
    for row in session.scalars(query):
        advance(SettlementStatus.PENDING, SettlementStatus.FAILED, reason)
        row.status, row.reason = SettlementStatus.FAILED.value, f"lease: {reason}"


def _closable_leases(session: Session) -> list[tuple[tuple[str, int], str, int]]:
    """Open leases whose run is closed and has nothing left to pay: (key, lease id, end)."""
    query = (
        select(PodLease, PodRun)
        .join(
            PodRun,
            and_(PodRun.pod_id == PodLease.pod_id, PodRun.generation == PodLease.generation),
        )
        .where(PodLease.status == LeaseStatus.OPEN, PodRun.closed.is_(True))
    )
    found = []
    for lease, run in session.execute(query).all():
        unsettled = session.scalar(
            select(Settlement.id)
            .where(
                Settlement.pod_id == lease.pod_id,
                Settlement.generation == lease.generation,
                Settlement.status.in_(
                    (SettlementStatus.PENDING.value, SettlementStatus.SUBMITTED.value)
                ),
            )
            .limit(1)
        )
        if unsettled is None and run.billable_ms // 1000 <= run.billed_seconds:
            end = lease.start + run.billed_seconds
            found.append(((lease.pod_id, lease.generation), lease.lease_id, end))
    return found
