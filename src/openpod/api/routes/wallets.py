"""Wallets linked by Sign-In with Ethereum, and their funds on the chain."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy.orm import Session

from openpod.adapters.store import Account
from openpod.adapters.store.models import utcnow
from openpod.api import schemas_wallet as schemas
from openpod.api.deps import Key, State, as_account
from openpod.services import wallets

router = APIRouter(tags=["wallet"])


@router.post("/wallet/nonce", status_code=status.HTTP_201_CREATED)
async def create_nonce(body: schemas.NonceCreate, state: State, key: Key) -> schemas.NonceOut:
    """A single-use nonce (10 minutes) to sign into an EIP-4361 message for `purpose`."""
    rules = wallets.link_rules(state.settings)  # ChainUnavailable: 503
    now = utcnow()
    row = await as_account(
        state, key, lambda s, a: wallets.issue_nonce(s, a, body.purpose, now=now)
    )
    return schemas.NonceOut(
        nonce=row.nonce,
        purpose=row.purpose,
        chain_id=rules.chain_id,
        domains=sorted(rules.domains),
        statement=wallets.STATEMENT,
        issued_at=row.created_at,
        expires_at=row.expires_at,
    )


@router.post("/wallet/link")
async def link_wallet(body: schemas.LinkCreate, state: State, key: Key) -> schemas.LinkOut:
    """Link the wallet that signed `message` (EIP-191) for the purpose of its nonce."""
    rules = wallets.link_rules(state.settings)  # ChainUnavailable: 503
    now = utcnow()

    def link(session: Session, account: Account) -> schemas.LinkOut:
        done = wallets.link(session, account, body.message, body.signature, rules=rules, now=now)
        return schemas.LinkOut(purpose=done.purpose, address=done.address, linked_at=done.linked_at)

    return await as_account(state, key, link)


@router.get("/wallet")
async def get_wallet(state: State, key: Key) -> schemas.WalletOut:
    """The linked wallets and, when a chain is configured, the account wallet's balance,
    allowance to the payments contract, and spending cap and spent (503 if the RPC is down)."""
    linked = await as_account(state, key, wallets.wallets_of, readonly=True)
    config = wallets.chain_config(state.settings)  # ChainUnavailable: 503
    funds = None
    if config is not None and linked.address is not None:
        funds = await wallets.read_funds(config, linked.address)
    return schemas.WalletOut(
        address=linked.address,
        address_proven=linked.address_proven,
        payout_wallet=linked.payout_wallet,
        payout_proven=linked.payout_proven,
        chain_id=config.chain_id if config else None,
        token_decimals=state.settings.token_decimals,
        balance=None if funds is None else str(funds.balance),
        allowance=None if funds is None else str(funds.allowance),
        cap=None if funds is None else str(funds.cap),
        spent=None if funds is None else str(funds.spent),
    )
