"""The funds guard: no pod starts that cannot pay for an hour, none runs past its funds.

`Funds` is what the guard asks. `DatabaseFunds` answers from an account balance kept in the
database (what a user was credited, less every settlement not FAILED, less what running pods
have used and not yet been cut); `services.chain_funds.ChainFunds` answers from the account's
wallet on chain when payments are on. Either is refreshed (`refresh`, async) before the
synchronous questions are asked inside a database transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from openpod.adapters.store import Account, Pod
from openpod.adapters.store.models import PodRun, Settlement
from openpod.domain.lifecycle import DesiredStatus, PodStatus
from openpod.domain.metering import price
from openpod.domain.settlement import SettlementStatus
from openpod.services.errors import InvalidInput, PaymentRequired, Unavailable

HOUR_S = 3600
INSUFFICIENT_FUNDS = "insufficient_funds"
RUNNING_STATUSES = (PodStatus.STARTING.value, PodStatus.RUNNING.value)


class Funds(Protocol):
    def available(self, session: Session, account_id: str) -> int:
        """Base units the account can still be charged; raises `Unavailable` when it cannot
        be known now."""
        ...

    async def refresh(self, wallets: Sequence[str]) -> None:
        """Bring what `available` knows of these wallets up to date (before a round, a create)."""
        ...


def settled_amount(session: Session, account_id: str, statuses: Sequence[str]) -> int:
    """The sum of the account's settlements in `statuses`."""
    query = select(Settlement.amount).where(
        Settlement.account_id == account_id, Settlement.status.in_(statuses)
    )
    return sum(session.scalars(query))


def accrued(session: Session, account_id: str) -> int:
    """What the account's runs have used and not yet been cut into settlements."""
    total = 0
    runs = session.execute(
        select(
            PodRun.billable_ms, PodRun.billed_seconds, PodRun.gpu_count, PodRun.rate_per_second
        ).where(PodRun.account_id == account_id)
    )
    for run in runs:
        unsettled = max(0, run.billable_ms // 1000 - run.billed_seconds)
        total += price(unsettled, run.gpu_count, run.rate_per_second)
    return total


NOT_FAILED = tuple(s.value for s in SettlementStatus if s is not SettlementStatus.FAILED)


class DatabaseFunds:
    """Balance in the database, less settlements (but FAILED ones) and unsettled usage."""

    def available(self, session: Session, account_id: str) -> int:
        account = session.get(Account, account_id)
        if account is None:
            return 0
        charged = settled_amount(session, account_id, NOT_FAILED)
        return account.balance - charged - accrued(session, account_id)

    async def refresh(self, wallets: Sequence[str]) -> None:
        """Nothing to refresh: the database is the truth."""


def running_wallets(session: Session) -> list[str]:
    """The wallets of accounts with pods running (what a funds round must know)."""
    query = (
        select(Account.wallet_address)
        .join(Pod, Pod.account_id == Account.id)
        .where(Pod.status.in_(RUNNING_STATUSES), Account.wallet_address.is_not(None))
        .distinct()
    )
    return [w for w in session.scalars(query) if w]


def credit(session: Session, account_id: str, amount: int) -> Account:
    """Add `amount` base units to an account's balance (admin; the database-backed guard)."""
    if amount <= 0:
        raise InvalidInput("amount must be a positive integer of base units")
    account = session.get(Account, account_id, with_for_update=True)
    if account is None:
        raise InvalidInput(f"no such account {account_id!r}")
    account.balance += amount
    return account


def hourly_cost(rate_per_second: int, gpu_count: int) -> int:
    return price(HOUR_S, gpu_count, rate_per_second)


def require_an_hour(
    session: Session, funds: Funds, account_id: str, rate_per_second: int, gpu_count: int
) -> None:
    """Refuse to start (or resume) a pod its owner cannot pay an hour of."""
    need = hourly_cost(rate_per_second, gpu_count)
    have = funds.available(session, account_id)
    if have < need:
        raise PaymentRequired(
            f"insufficient funds: an hour of this pod costs {need} base units, "
            f"the account has {max(have, 0)} available"
        )


@dataclass(frozen=True)
class Shortfall:
    account_id: str
    stopped: list[Pod]


def shortfalls(session: Session, funds: Funds, period_s: float) -> list[Shortfall]:
    """For every account whose funds cannot cover the next period of all its running pods:
    the pods to stop, newest first, until the rest can be paid (the caller stops them with
    reason INSUFFICIENT_FUNDS and tells the nodes)."""
    query = select(Pod).where(
        Pod.status.in_(RUNNING_STATUSES), Pod.desired_status == DesiredStatus.RUNNING.value
    )
    by_account: dict[str, list[Pod]] = {}
    for pod in session.scalars(query):
        by_account.setdefault(pod.account_id, []).append(pod)
    shortfalls = []
    for account_id, running in sorted(by_account.items()):
        try:
            have = funds.available(session, account_id)
        except Unavailable:
            continue  # the chain cannot be read now: stop nobody for that

        running.sort(key=lambda p: (p.last_started_at or p.created_at, p.id))
        need = [price(max(1, round(period_s)), p.gpu_count, p.rate_per_second) for p in running]
        stopped = []
        while running and sum(need) > have:
            stopped.append(running.pop())
            need.pop()
        if stopped:
            shortfalls.append(Shortfall(account_id, stopped))
    return shortfalls
