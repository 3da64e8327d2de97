"""Leases: what a user signs (EIP-712) so that one run of a pod can be billed on-chain.

The terms come from the pod as it was placed: the user's linked wallet, the provider's payout
wallet, the GPU type and count, the rate as the most per GPU-second the user agrees to, and a
start a minute before the run was placed (clock skew between us, the node and the chain). The
user's signature is checked here before it is stored; the payment gateway opens the lease on
the contract before any settlement of the run is paid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account as EthAccount
from eth_account.messages import encode_typed_data
from sqlalchemy.orm import Session

from openpod.adapters.chain import LeaseTerms
from openpod.adapters.store import Account, Node, Pod, Provider
from openpod.adapters.store.models import PodLease
from openpod.services.errors import Conflict, InvalidInput, NotFound
from openpod.services.payments import LeaseStatus

START_SKEW_S = 60


@dataclass(frozen=True)
class LeaseOffer:
    terms: LeaseTerms
    typed_data: dict[str, Any]
    lease: PodLease | None  # the one stored for this run, if any


def _pod_of(session: Session, account: Account, pod_id: str) -> Pod:
    pod = session.get(Pod, pod_id)
    if pod is None or pod.account_id != account.id:
        raise NotFound(f"no pod {pod_id!r}")
    return pod


def terms_for(session: Session, account: Account, pod: Pod) -> LeaseTerms:
    if not account.wallet_address:
        raise Conflict("link a wallet to your account first (openpod wallet link)")
    node = session.get(Node, pod.node_id) if pod.node_id else None
    provider = session.get(Provider, node.provider_id) if node else None
    if provider is None or not provider.payout_wallet:
        raise Conflict(f"pod {pod.id} is not placed on a provider with a payout wallet")
    placed = pod.last_started_at or pod.created_at
    return LeaseTerms(
        pod_id=pod.id,
        generation=pod.generation,
        user=account.wallet_address,
        provider=provider.payout_wallet,
        gpu_type=pod.gpu_type_id,
        gpu_count=pod.gpu_count,
        max_rate=pod.rate_per_second,
        start=int(placed.timestamp()) - START_SKEW_S,
    )


def offer(
    session: Session, account: Account, pod_id: str, chain_id: int, payments: str
) -> LeaseOffer:
    """The lease to sign for the pod's current run, and the stored one if it was signed."""
    pod = _pod_of(session, account, pod_id)
    terms = terms_for(session, account, pod)
    stored = session.get(PodLease, (pod.id, pod.generation))
    return LeaseOffer(terms, terms.typed_data(chain_id, payments), stored)


def sign(
    session: Session,
    account: Account,
    pod_id: str,
    signature: str,
    chain_id: int,
    payments: str,
) -> PodLease:
    """Store the user's signature over the current run's lease, after checking it is theirs.
    Sending the same signature again changes nothing; another one for a stored lease is refused."""
    pod = _pod_of(session, account, pod_id)
    terms = terms_for(session, account, pod)
    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
    except ValueError:
        raise InvalidInput("signature must be hex") from None
    if len(raw) != 65:
        raise InvalidInput("signature must be 65 bytes (r, s, v)")
    message = encode_typed_data(full_message=terms.typed_data(chain_id, payments))
    try:
        signer = EthAccount.recover_message(message, signature=raw)
    except Exception:  # noqa: BLE001 - eth-keys raises several types for a malformed signature
        raise InvalidInput("signature does not recover to any address") from None
    if str(signer).lower() != terms.user.lower():
        raise InvalidInput(
            f"the lease is signed by {signer}, not by the account's wallet {terms.user}"
        )
    stored = session.get(PodLease, (pod.id, pod.generation))
    hex_signature = "0x" + raw.hex()
    if stored is not None:
        if stored.signature == hex_signature:
            return stored
        raise Conflict(f"run {pod.generation} of pod {pod.id} already has a signed lease")
    lease = PodLease(
        pod_id=pod.id,
        generation=pod.generation,
        account_id=account.id,
        lease_id="0x" + terms.lease_id.hex(),
        user_wallet=terms.user,
        provider_wallet=terms.provider,
        gpu_type_id=terms.gpu_type,
        gpu_count=terms.gpu_count,
        max_rate=terms.max_rate,
        start=terms.start,
        signature=hex_signature,
        status=LeaseStatus.SIGNED,
    )
    session.add(lease)
    session.flush()
    return lease
