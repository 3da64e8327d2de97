"""Bodies of the wallet routes: SIWE nonces, links, and what the chain says of a wallet."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from openpod.api.schemas import Wire
from openpod.services.wallets import MAX_MESSAGE


class NonceCreate(Wire):
    purpose: Literal["account", "payout"] = "account"


class NonceOut(Wire):
    """What to put in the EIP-4361 message: this nonce, on this chain, before `expiresAt`."""

    nonce: str
    purpose: str
    chain_id: int
    domains: list[str]  # the `domain` values this server accepts
    statement: str  # a suggested statement
    issued_at: datetime
    expires_at: datetime


class LinkCreate(Wire):
    message: str = Field(max_length=MAX_MESSAGE)
    signature: str = Field(max_length=200)


class LinkOut(Wire):
    purpose: str
    address: str
    linked_at: datetime


class WalletOut(Wire):
    """Amounts are integer strings in token base units; null where nothing is linked or no
    chain is configured."""

    address: str | None
    address_proven: bool
    payout_wallet: str | None
    payout_proven: bool
    chain_id: int | None
    token_decimals: int
    balance: str | None
    allowance: str | None
    cap: str | None
    spent: str | None
