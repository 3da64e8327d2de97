"""The hot wallet's transactions in the database: nonces without gaps or reuse, signed before
they are sent, every attempt (fee bump) kept so that a restart can rebroadcast it.

A transaction's nonce is allocated, the transaction signed and stored, and what it carries
(settlements, a lease) linked to it, all in one database transaction: a crash before the
commit leaves nothing (the nonce is not used), a crash after it leaves a signed transaction
the next round sends. Fee bumps are new attempts of the same nonce with the same calldata.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from eth_utils.crypto import keccak
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from openpod.adapters.store.models import ChainTx, ChainTxAttempt, Counter, utcnow
from openpod.domain import ids


class Signer(Protocol):
    """The hot wallet's key: signs, never sends (a keystore now, an HSM later)."""

    @property
    def address(self) -> str: ...

    def sign_transaction(self, tx: dict[str, Any]) -> bytes:
        """The raw signed transaction."""
        ...


class TxStatus(enum.StrEnum):
    SIGNED = "SIGNED"  # stored, maybe not yet sent
    SENT = "SENT"  # the node accepted it (or we think so)
    MINED = "MINED"  # in a block, fewer than N confirmations
    CONFIRMED = "CONFIRMED"  # N confirmations, succeeded: what it carries is settled
    REVERTED = "REVERTED"  # N confirmations, failed as a whole
    DROPPED = "DROPPED"  # its nonce was used by a transaction that is not ours


OPEN_STATUSES = (TxStatus.SIGNED.value, TxStatus.SENT.value, TxStatus.MINED.value)


@dataclass(frozen=True)
class Fees:
    max_fee: int
    tip: int

    def bumped(self, floor: Fees) -> Fees:
        """At least 12.5 % more on both (nodes want +10 % to replace), and no less than `floor`
        (what the chain asks now)."""
        tip = max(self.tip * 9 // 8 + 1, floor.tip)
        return Fees(max(self.max_fee * 9 // 8 + 1, floor.max_fee, tip), tip)


def counter_next(
    session: Session, name: str, start: int, count: int = 1, *, floor: int | None = None
) -> int:
    """Take `count` values of counter `name` (first use: from `start`; never under `floor`);
    returns the first. The row lock (SQLite: the write lock) makes concurrent takers wait, so
    no value repeats."""
    row = session.get(Counter, name, with_for_update=True)
    if row is None:
        row = Counter(name=name, value=start)
        session.add(row)
        session.flush()
    first = row.value if floor is None else max(row.value, floor)
    row.value = first + count
    return first


def nonce_counter(chain_id: int, sender: str) -> str:
    return f"nonce:{chain_id}:{sender.lower()}"


def tx_hash(raw: bytes) -> str:
    return "0x" + keccak(raw).hex()


def sign_and_store(
    session: Session,
    signer: Signer,
    *,
    chain_id: int,
    to: str,
    data: bytes,
    gas: int,
    fees: Fees,
    kind: str,
    chain_nonce: int,
    link: Callable[[ChainTx], None],
) -> tuple[ChainTx, ChainTxAttempt]:
    """Allocate the next nonce, sign, store the transaction and its first attempt, and let
    `link` attach what it carries — in the caller's database transaction."""
    # The chain's pending nonce is a floor: nonces another signer of this key used (the watch
    # raises those as incidents) are skipped rather than collided with, once work resumes.
    name = nonce_counter(chain_id, signer.address)
    nonce = counter_next(session, name, chain_nonce, floor=chain_nonce)
    tx = ChainTx(
        id=ids.new_id("ctx"),
        chain_id=chain_id,
        sender=signer.address,
        nonce=nonce,
        kind=kind,
        to=to,
        data="0x" + data.hex(),
        gas=gas,
        status=TxStatus.SIGNED.value,
    )
    session.add(tx)
    session.flush()
    attempt = _attempt(signer, tx, fees)
    session.add(attempt)
    link(tx)
    return tx, attempt


def add_attempt(session: Session, signer: Signer, tx: ChainTx, fees: Fees) -> ChainTxAttempt:
    """A fee bump: the same nonce and calldata, signed again with higher fees."""
    attempt = _attempt(signer, tx, fees)
    session.add(attempt)
    return attempt


def _attempt(signer: Signer, tx: ChainTx, fees: Fees) -> ChainTxAttempt:
    raw = signer.sign_transaction(
        {
            "type": 2,
            "chainId": tx.chain_id,
            "nonce": tx.nonce,
            "to": tx.to,
            "value": 0,
            "data": bytes.fromhex(tx.data[2:]),
            "gas": tx.gas,
            "maxFeePerGas": fees.max_fee,
            "maxPriorityFeePerGas": fees.tip,
        }
    )
    return ChainTxAttempt(
        hash=tx_hash(raw), tx_id=tx.id, raw="0x" + raw.hex(), max_fee=fees.max_fee, tip=fees.tip
    )


def open_txs(session: Session, chain_id: int, sender: str) -> list[ChainTx]:
    query = (
        select(ChainTx)
        .where(
            ChainTx.chain_id == chain_id,
            ChainTx.sender == sender,
            ChainTx.status.in_(OPEN_STATUSES),
        )
        .order_by(ChainTx.nonce)
    )
    return list(session.scalars(query))


def attempts(session: Session, tx_id: str) -> list[ChainTxAttempt]:
    """Newest first."""
    query = (
        select(ChainTxAttempt)
        .where(ChainTxAttempt.tx_id == tx_id)
        .order_by(ChainTxAttempt.created_at.desc(), ChainTxAttempt.hash)
    )
    return list(session.scalars(query))


def mark_sent(session: Session, attempt_hash: str, at: datetime | None = None) -> None:
    attempt = session.get(ChainTxAttempt, attempt_hash)
    if attempt is None:
        return
    if attempt.sent_at is None:
        attempt.sent_at = at or utcnow()
    session.execute(
        update(ChainTx)
        .where(ChainTx.id == attempt.tx_id, ChainTx.status == TxStatus.SIGNED.value)
        .values(status=TxStatus.SENT.value, updated_at=utcnow())
    )
