"""One settlement round (every OPENPOD_SETTLEMENT_PERIOD): close the runs nobody meters any
more, cut every run's unsettled seconds, and stop the pods whose funds ran out — and, when
payments are on-chain, the pods whose run cannot be paid: its lease was refused by the
contract, or its user did not sign one within the deadline."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from openpod.adapters.store import Pod
from openpod.adapters.store.models import PodLease, utcnow
from openpod.domain.lifecycle import DesiredStatus, PodEvent
from openpod.services import funds, metering, pods
from openpod.services.hub import PodChange
from openpod.services.payments import LeaseStatus


def close_abandoned(session: Session, grace_ms: int) -> list[metering.RunKey]:
    """Close, at their last event, silent runs whose pod has moved on (stopped, terminated,
    resumed as a newer run, or on a node that went away with its meter): nothing after the
    last heartbeat is billed. A silent run of a pod still running stays open: its meter may
    come back and replay what it journalled."""
    closed = []
    older_than = utcnow() - timedelta(milliseconds=grace_ms)
    for key in metering.stale_runs(session, older_than):
        pod = session.get(Pod, key[0])
        moved_on = pod is None or pod.generation != key[1]
        if moved_on or pod.status not in funds.RUNNING_STATUSES:  # type: ignore[union-attr]
            closed += [key] if metering.close_run(session, key, None) else []
    return closed


LEASE_FAILED = "lease_refused"
NO_LEASE = "no_lease"


def unpayable(session: Session, deadline_s: float) -> list[tuple[Pod, str]]:
    """Running pods whose current run cannot be paid on-chain, with the reason: its lease
    FAILED, or none was signed `deadline_s` after the run was placed."""
    query = (
        select(Pod, PodLease.status)
        .outerjoin(
            PodLease,
            and_(PodLease.pod_id == Pod.id, PodLease.generation == Pod.generation),
        )
        .where(
            Pod.status.in_(funds.RUNNING_STATUSES),
            Pod.desired_status == DesiredStatus.RUNNING.value,
        )
    )
    late = utcnow() - timedelta(seconds=deadline_s)
    found = []
    for pod, lease_status in session.execute(query).all():
        if lease_status == LeaseStatus.FAILED:
            found.append((pod, LEASE_FAILED))
        elif lease_status is None and (pod.last_started_at or pod.created_at) < late:
            found.append((pod, NO_LEASE))
    return found


def run(
    session: Session,
    wallet: funds.Funds | None,
    period_s: float,
    grace_ms: int,
    lease_deadline_s: float | None = None,
) -> list[PodChange]:
    """Returns the changes the nodes must hear of (pods stopped). `lease_deadline_s` is set
    when payments are on-chain."""
    close_abandoned(session, grace_ms)
    metering.cut(session)
    stopping: list[tuple[Pod, str]] = []
    if lease_deadline_s is not None:
        stopping += unpayable(session, lease_deadline_s)
    if wallet is not None:
        for shortfall in funds.shortfalls(session, wallet, period_s):
            stopping += [(pod, funds.INSUFFICIENT_FUNDS) for pod in shortfall.stopped]
    changes, seen = [], set()
    for pod, reason in stopping:
        if pod.id in seen:
            continue
        seen.add(pod.id)
        pods.transition(pod, PodEvent.STOP, reason)
        pod.desired_status = DesiredStatus.STOPPED.value
        changes.append(PodChange.of(session, pod))
    return changes
