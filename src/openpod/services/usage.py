"""What each of an account's pods has used and cost, settled or not (GET /usage)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from openpod.adapters.store import Account, Pod
from openpod.adapters.store.models import PodRun
from openpod.domain.metering import price
from openpod.services.errors import NotFound
from openpod.services.funds import RUNNING_STATUSES


@dataclass(frozen=True)
class PodUsage:
    pod_id: str
    gpu_type_id: str
    gpu_count: int
    rate_per_second: int  # per GPU, of the latest run
    seconds: int
    amount: int
    settled_seconds: int
    settled_amount: int
    running: bool
    runs: int

    @property
    def pending_seconds(self) -> int:
        return self.seconds - self.settled_seconds

    @property
    def pending_amount(self) -> int:
        return self.amount - self.settled_amount


def usage(session: Session, account: Account, pod_id: str | None = None) -> list[PodUsage]:
    """Per pod of the account (one pod with `pod_id`), oldest first; runs summed."""
    query = select(Pod).where(Pod.account_id == account.id)
    if pod_id is not None:
        query = query.where(Pod.id == pod_id)
    pods = list(session.scalars(query.order_by(Pod.created_at, Pod.id)))
    if pod_id is not None and not pods:
        raise NotFound(f"no such pod {pod_id!r}")
    runs: dict[str, list[PodRun]] = {}
    run_query = select(PodRun).where(PodRun.account_id == account.id)
    if pod_id is not None:
        run_query = run_query.where(PodRun.pod_id == pod_id)
    for run in session.scalars(run_query.order_by(PodRun.generation)):
        runs.setdefault(run.pod_id, []).append(run)
    out = []
    for pod in pods:
        mine = runs.get(pod.id, [])
        if not mine and pod_id is None and pod.status not in RUNNING_STATUSES:
            continue  # never metered and not running: nothing to show
        seconds = sum(r.billable_ms // 1000 for r in mine)
        settled = sum(r.billed_seconds for r in mine)
        out.append(
            PodUsage(
                pod_id=pod.id,
                gpu_type_id=pod.gpu_type_id,
                gpu_count=pod.gpu_count,
                rate_per_second=mine[-1].rate_per_second if mine else pod.rate_per_second,
                seconds=seconds,
                amount=sum(
                    price(r.billable_ms // 1000, r.gpu_count, r.rate_per_second) for r in mine
                ),
                settled_seconds=settled,
                settled_amount=sum(
                    price(r.billed_seconds, r.gpu_count, r.rate_per_second) for r in mine
                ),
                running=pod.status in RUNNING_STATUSES,
                runs=len(mine),
            )
        )
    return out
