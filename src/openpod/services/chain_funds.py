"""The funds guard's answers from the chain: what the account's wallet can still be charged.

The contract takes a payment only if the user's token balance, their allowance to the
payments contract and their spending cap (less what was spent) all cover it, so a wallet can
pay min(balance, allowance, cap - spent). Settled payments are already out of those numbers;
what is owed and not yet paid is subtracted here: settlements PENDING or SUBMITTED, and what
running pods used since their last cut.

The chain is read asynchronously (`refresh`, before a create or a resume and before each
settlement round) and kept; `available` is asked inside a database transaction and only reads
what was kept. A wallet never read (the RPC was down) is `Unavailable`: a create answers 503,
and a settlement round stops nobody for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from openpod.adapters.chain import ChainError, Contract, Rpc
from openpod.adapters.store import Account
from openpod.domain.settlement import SettlementStatus
from openpod.services.errors import Unavailable
from openpod.services.funds import accrued, settled_amount

log = logging.getLogger(__name__)
UNPAID = (SettlementStatus.PENDING.value, SettlementStatus.SUBMITTED.value)


@dataclass(frozen=True)
class WalletFunds:
    """One wallet as the chain showed it at `read_at` (monotonic seconds)."""

    balance: int
    allowance: int
    cap: int
    spent: int
    read_at: float

    @property
    def spendable(self) -> int:
        return max(0, min(self.balance, self.allowance, self.cap - self.spent))


class ChainFunds:
    """`Funds` backed by the users' wallets on chain."""

    def __init__(self, rpc: Rpc, token: str, payments: str) -> None:
        self.rpc = rpc
        self.token = Contract(rpc, "DevToken", token)  # any ERC-20: balanceOf, allowance
        self.payments = Contract(rpc, "OpenPodPayments", payments)
        self._wallets: dict[str, WalletFunds] = {}

    def known(self, wallet: str) -> WalletFunds | None:
        return self._wallets.get(wallet.lower())

    async def refresh(self, wallets: Sequence[str]) -> None:
        """Read each wallet from the chain; one that cannot be read keeps what was known."""
        results = await asyncio.gather(
            *(self._read(w) for w in dict.fromkeys(wallets)), return_exceptions=True
        )
        for wallet, result in zip(dict.fromkeys(wallets), results, strict=True):
            if isinstance(result, WalletFunds):
                self._wallets[wallet.lower()] = result
            elif isinstance(result, ChainError):
                log.warning("cannot read wallet %s from the chain: %s", wallet, result)
            elif isinstance(result, BaseException):
                raise result

    async def _read(self, wallet: str) -> WalletFunds:
        balance, allowance, budget = await asyncio.gather(
            self.token.read_one("balanceOf", wallet),
            self.token.read_one("allowance", wallet, self.payments.address),
            self.payments.read("budgets", wallet),
        )
        cap, spent = budget
        return WalletFunds(int(balance), int(allowance), int(cap), int(spent), time.monotonic())

    def available(self, session: Session, account_id: str) -> int:
        account = session.get(Account, account_id)
        if account is None or not account.wallet_address:
            return 0  # no wallet, nothing to charge: link one (openpod wallet link)
        wallet = self.known(account.wallet_address)
        if wallet is None:
            raise Unavailable(
                f"the balance of wallet {account.wallet_address} cannot be read from the chain "
                "now; try again"
            )
        owed = settled_amount(session, account_id, UNPAID) + accrued(session, account_id)
        return wallet.spendable - owed
