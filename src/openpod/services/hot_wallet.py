"""What the hot wallet may sign, and the circuit breaker that stops it signing anything.

`GuardedSigner` stands between the payment gateway and the key (HSM or keystore) and checks
every transaction before the key sees it:
- the breaker is closed (read from the database each time, so an operator's CLI or a watch in
  another process takes effect at once);
- the chain id is ours, `to` is the payments contract, no value, the selector is one of the
  contract's payment functions;
- the max fee per gas is under the cap;
- the worst-case gas spend (gas x max fee) of the last hour stays under the hourly cap.
A refusal raises `SigningRefused` naming the reason, and raises an alert.

The hourly spend counts each nonce once, at its dearest attempt (only one attempt of a nonce
can be mined), and is seeded from the stored attempts at start so a restart forgets nothing.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openpod.adapters.chain import codec
from openpod.adapters.store import Database
from openpod.adapters.store.models import (
    BreakerEvent,
    ChainTx,
    ChainTxAttempt,
    HotWalletBreaker,
    utcnow,
)
from openpod.domain.alerts import Alert, Severity
from openpod.services.chain_txs import OPEN_STATUSES, Signer

log = logging.getLogger(__name__)

SPEND_WINDOW = timedelta(hours=1)
# What the payment gateway calls on the payments contract (see services/payments.py).
PAYMENT_FUNCTIONS = ("payment", "paymentBatch", "openLease", "closeLease")


def payment_selectors() -> frozenset[bytes]:
    payments = codec("OpenPodPayments")
    return frozenset(payments.selector(name) for name in PAYMENT_FUNCTIONS)


class SigningRefused(Exception):
    """The signing policy (or the open breaker) refused a transaction; `reason` says why."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code  # breaker | chain | to | value | selector | fee | spend
        self.reason = reason


@dataclass(frozen=True)
class SigningPolicy:
    chain_id: int
    payments: str  # the only `to`
    selectors: frozenset[bytes]  # the payment functions' 4-byte selectors
    max_fee_per_gas: int  # wei
    gas_spend_per_hour: int  # wei, worst case (gas limit x max fee)


@dataclass(frozen=True)
class BreakerState:
    open: bool
    reason: str | None = None
    actor: str | None = None
    changed_at: datetime | None = None


class Breaker:
    """The circuit breaker of one hot wallet, kept in the database (shared by the gateway,
    the watch and the operator's CLI, in one process or several)."""

    def __init__(self, db: Database, chain_id: int, address: str) -> None:
        self.db = db
        self.chain_id = chain_id
        self.address = address

    def state(self, session: Session | None = None) -> BreakerState:
        if session is None:
            with self.db.transaction(readonly=True) as own:
                return self.state(own)
        row = session.get(HotWalletBreaker, (self.chain_id, self.address))
        if row is None:
            return BreakerState(open=False)
        return BreakerState(row.open, row.reason, row.actor, row.changed_at)

    def open(self, reason: str, actor: str) -> bool:
        """Open it (recorded); False when it was open already (the first reason is kept)."""
        return self._set(True, reason, actor)

    def close(self, reason: str, actor: str) -> bool:
        """Close it after review (recorded); False when it was closed already."""
        if not reason.strip():
            raise ValueError("closing the breaker needs a reason (what was reviewed)")
        return self._set(False, reason, actor)

    def _set(self, is_open: bool, reason: str, actor: str) -> bool:
        with self.db.transaction() as session:
            key = (self.chain_id, self.address)
            row = session.get(HotWalletBreaker, key, with_for_update=True)
            if row is None:
                row = HotWalletBreaker(chain_id=self.chain_id, address=self.address, open=False)
                session.add(row)
            if row.open == is_open:
                return False
            now = utcnow()
            row.open, row.reason, row.actor, row.changed_at = is_open, reason, actor, now
            session.add(
                BreakerEvent(
                    chain_id=self.chain_id,
                    address=self.address,
                    action="open" if is_open else "close",
                    reason=reason,
                    actor=actor,
                    at=now,
                )
            )
        log.log(
            logging.CRITICAL if is_open else logging.WARNING,
            "hot wallet %s breaker %s by %s: %s",
            self.address,
            "OPENED" if is_open else "closed",
            actor,
            reason,
        )
        return True

    def history(self, limit: int = 20) -> list[BreakerEvent]:
        with self.db.transaction(readonly=True) as session:
            query = (
                select(BreakerEvent)
                .where(BreakerEvent.chain_id == self.chain_id)
                .where(BreakerEvent.address == self.address)
                .order_by(BreakerEvent.id.desc())
                .limit(limit)
            )
            return list(session.scalars(query))


class SpendLedger:
    """Worst-case gas spend per nonce over the last hour, kept as a running total: each
    signature costs O(1) however many transactions the hour holds."""

    def __init__(self, now: Callable[[], datetime] = utcnow) -> None:
        self._now = now
        self._by_nonce: dict[int, tuple[datetime, int]] = {}  # nonce -> (when, dearest cost)
        self._order: deque[tuple[datetime, int]] = deque()  # (when, nonce), oldest first
        self._total = 0
        self._lock = threading.Lock()

    def seed(self, db: Database, chain_id: int, sender: str) -> None:
        since = self._now() - SPEND_WINDOW
        with db.transaction(readonly=True) as session:
            query = (
                select(
                    ChainTx.nonce, ChainTx.gas, ChainTxAttempt.max_fee, ChainTxAttempt.created_at
                )
                .join(ChainTxAttempt, ChainTxAttempt.tx_id == ChainTx.id)
                .where(ChainTx.chain_id == chain_id, ChainTx.sender == sender)
                .where(ChainTxAttempt.created_at >= since)
                .order_by(ChainTxAttempt.created_at)
            )
            for nonce, gas, max_fee, at in session.execute(query).all():
                self.record(int(nonce), int(gas) * int(max_fee), at)

    def _prune(self) -> None:
        since = self._now() - SPEND_WINDOW
        while self._order and self._order[0][0] < since:
            at, nonce = self._order.popleft()
            held = self._by_nonce.get(nonce)
            if held is not None and held[0] == at:  # else a dearer attempt replaced it later
                del self._by_nonce[nonce]
                self._total -= held[1]

    def spent(self) -> int:
        with self._lock:
            self._prune()
            return self._total

    def added(self, nonce: int, cost: int) -> int:
        """What signing `cost` for `nonce` adds to the hour's spend."""
        with self._lock:
            self._prune()
            held = self._by_nonce.get(nonce)
            return max(0, cost - (held[1] if held else 0))

    def record(self, nonce: int, cost: int, at: datetime | None = None) -> None:
        with self._lock:
            held = self._by_nonce.get(nonce)
            if held is None or cost > held[1]:
                when = at or self._now()
                self._total += cost - (held[1] if held else 0)
                self._by_nonce[nonce] = (when, cost)
                self._order.append((when, nonce))


def open_tx_count(session: Session, chain_id: int, sender: str) -> int:
    query = select(func.count(ChainTx.id)).where(
        ChainTx.chain_id == chain_id,
        ChainTx.sender == sender,
        ChainTx.status.in_(OPEN_STATUSES),
    )
    return int(session.scalar(query) or 0)


class GuardedSigner:
    """The payment gateway's signer: the key behind the policy and the breaker."""

    def __init__(
        self,
        signer: Signer,
        policy: SigningPolicy,
        breaker: Breaker,
        *,
        ledger: SpendLedger | None = None,
        alert: Callable[[Alert], None] | None = None,
    ) -> None:
        self.signer = signer
        self.policy = policy
        self.breaker = breaker
        self.ledger = ledger or SpendLedger()
        self._alert = alert
        self.refused = 0

    def __repr__(self) -> str:
        return f"GuardedSigner({self.signer!r})"

    @property
    def address(self) -> str:
        return self.signer.address

    def check(self, tx: dict[str, Any]) -> int:
        """The reason a transaction is refused (raised), else its worst-case cost in wei."""
        state = self.breaker.state()
        if state.open:
            raise SigningRefused(
                "breaker",
                f"the circuit breaker is open since {state.changed_at:%Y-%m-%d %H:%M:%S} UTC "
                f"({state.reason}); close it with `openpod wallet breaker close --reason ...` "
                "after review",
            )
        policy = self.policy
        if int(tx.get("chainId", -1)) != policy.chain_id:
            raise SigningRefused("chain", f"chain id {tx.get('chainId')} is not {policy.chain_id}")
        to = str(tx.get("to") or "")
        if to.lower() != policy.payments.lower():
            raise SigningRefused(
                "to", f"`to` {to or '(contract creation)'} is not the payments contract"
            )
        if int(tx.get("value", 0)) != 0:
            raise SigningRefused("value", f"the transaction moves value ({tx.get('value')} wei)")
        data = bytes(tx.get("data") or b"")
        if data[:4] not in policy.selectors:
            raise SigningRefused(
                "selector", f"selector 0x{data[:4].hex()} is not a payment function"
            )
        max_fee = int(tx.get("maxFeePerGas", tx.get("gasPrice", 0)))
        if max_fee > policy.max_fee_per_gas:
            raise SigningRefused(
                "fee", f"max fee per gas {max_fee} wei is above the cap {policy.max_fee_per_gas}"
            )
        cost = int(tx["gas"]) * max_fee
        spent = self.ledger.spent()
        extra = self.ledger.added(int(tx["nonce"]), cost)
        if spent + extra > policy.gas_spend_per_hour:
            raise SigningRefused(
                "spend",
                f"the hourly gas spend cap is reached: {spent} wei signed in the last hour, "
                f"this one adds {extra}, the cap is {policy.gas_spend_per_hour}",
            )
        return cost

    def sign_transaction(self, tx: dict[str, Any]) -> bytes:
        try:
            cost = self.check(tx)
        except SigningRefused as refusal:
            self.refused += 1
            log.error("refused to sign for %s: %s", self.address, refusal.reason)
            if self._alert is not None:
                self._alert(refusal_alert(self.address, refusal, tx))
            raise
        raw = self.signer.sign_transaction(tx)
        self.ledger.record(int(tx["nonce"]), cost)
        return raw


def refusal_alert(address: str, refusal: SigningRefused, tx: dict[str, Any]) -> Alert:
    """A refusal while the breaker is open is expected (a warning); any other means something
    asked the hot wallet to sign what it never should (critical)."""
    return Alert(
        key=f"hot-wallet:{address}:refused:{refusal.code}",
        severity=Severity.WARNING if refusal.code == "breaker" else Severity.CRITICAL,
        title=f"hot wallet {address} refused to sign",
        text=refusal.reason,
        fields=(
            ("to", str(tx.get("to"))),
            ("nonce", str(tx.get("nonce"))),
            ("selector", "0x" + bytes(tx.get("data") or b"")[:4].hex()),
        ),
    )
