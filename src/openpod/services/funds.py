"""The funds guard: no pod starts that cannot pay for an hour, none runs past its funds.

`Funds` is what the guard asks; `DatabaseFunds` answers from an account balance kept in the
database (what a user was credited, less every settlement not FAILED, less what running pods
have used and not yet been cut). The payments issue backs the same interface with the
wallet's on-chain balance and allowance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from openpod.adapters.store import Account, Pod
from openpod.adapters.store.models import PodRun, Settlement
from openpod.domain.lifecycle import DesiredStatus, PodStatus
from openpod.domain.metering import price
from openpod.domain.settlement import SettlementStatus
from openpod.services.errors import InvalidInput, PaymentRequired

HOUR_S = 3600
INSUFFICIENT_FUNDS = "insufficient_funds"
RUNNING_STATUSES = (PodStatus.STARTING.value, PodStatus.RUNNING.value)


class Funds(Protocol):
    def available(self, session: Session, account_id: str) -> int:
        """Base units the account can still be charged."""
        ...


class DatabaseFunds:
    """Balance in the database, less settlements (but FAILED ones) and unsettled usage."""

    def available(self, session: Session, account_id: str) -> int:
        account = session.get(Account, account_id)
        if account is None:
            return 0
        charged = sum(
            session.scalars(
                select(Settlement.amount).where(
                    Settlement.account_id == account_id,
                    Settlement.status != SettlementStatus.FAILED.value,
                )
            )
        )
        accrued = 0
        runs = session.execute(
            select(
                PodRun.billable_ms, PodRun.billed_seconds, PodRun.gpu_count, PodRun.rate_per_second
            ).where(PodRun.account_id == account_id)
        )
        for run in runs:
            unsettled = max(0, run.billable_ms // 1000 - run.billed_seconds)
            accrued += price(unsettled, run.gpu_count, run.rate_per_second)
        return account.balance - charged - accrued


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
        have = funds.available(session, account_id)
        running.sort(key=lambda p: (p.last_started_at or p.created_at, p.id))
        need = [price(max(1, round(period_s)), p.gpu_count, p.rate_per_second) for p in running]
        stopped = []
        while running and sum(need) > have:
            stopped.append(running.pop())
            need.pop()
        if stopped:
            shortfalls.append(Shortfall(account_id, stopped))
    return shortfalls
