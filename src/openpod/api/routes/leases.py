"""Leases: the EIP-712 terms a user signs so that a pod's run can be billed on-chain."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field
from sqlalchemy.orm import Session

from openpod.adapters.store import Account
from openpod.api.deps import Key, State, as_account
from openpod.api.schemas import Wire
from openpod.services import leases
from openpod.services.errors import NotFound
from openpod.settings import ChainConfig

router = APIRouter(tags=["payments"])


class LeaseOut(Wire):
    pod_id: str
    generation: int
    lease_id: str
    status: str | None = Field(None, description="null until signed; then SIGNED, OPEN, ...")
    reason: str | None = None
    typed_data: dict[str, Any] = Field(description="what to sign with eth_signTypedData_v4")


class LeaseSignature(Wire):
    signature: str = Field(description="the wallet's 65-byte EIP-712 signature, hex")


def _chain(state: State) -> ChainConfig:
    chain = state.settings.chain()
    if chain is None:
        raise NotFound("on-chain payments are off on this control plane")
    return chain


def _out(offer: leases.LeaseOffer) -> LeaseOut:
    stored = offer.lease
    return LeaseOut(
        pod_id=offer.terms.pod_id,
        generation=offer.terms.generation,
        lease_id="0x" + offer.terms.lease_id.hex(),
        status=stored.status if stored else None,
        reason=stored.reason if stored else None,
        typed_data=offer.typed_data,
    )


@router.get("/pods/{pod_id}/lease")
async def get_lease(pod_id: str, state: State, key: Key) -> LeaseOut:
    """The lease to sign for the pod's current run (and its state once signed)."""
    chain = _chain(state)

    def read(session: Session, account: Account) -> LeaseOut:
        return _out(leases.offer(session, account, pod_id, chain.chain_id, chain.payments))

    return await as_account(state, key, read, readonly=True)


@router.put("/pods/{pod_id}/lease")
async def put_lease(pod_id: str, body: LeaseSignature, state: State, key: Key) -> LeaseOut:
    """Sign the current run's lease: checked against the account's linked wallet and stored;
    the payment gateway opens it on the contract."""
    chain = _chain(state)

    def store(session: Session, account: Account) -> LeaseOut:
        leases.sign(session, account, pod_id, body.signature, chain.chain_id, chain.payments)
        return _out(leases.offer(session, account, pod_id, chain.chain_id, chain.payments))

    return await as_account(state, key, store)
