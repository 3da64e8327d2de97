"""One settlement round (every OPENPOD_SETTLEMENT_PERIOD): close the runs nobody meters any
more, cut every run's unsettled seconds, and stop the pods whose funds ran out."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from openpod.adapters.store import Pod
from openpod.adapters.store.models import utcnow
from openpod.domain.lifecycle import DesiredStatus, PodEvent
from openpod.services import funds, metering, pods
from openpod.services.hub import PodChange


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


def run(
    session: Session, wallet: funds.Funds | None, period_s: float, grace_ms: int
) -> list[PodChange]:
    """Returns the changes the nodes must hear of (pods stopped for funds)."""
    close_abandoned(session, grace_ms)
    metering.cut(session)
    if wallet is None:
        return []
    changes = []
    for shortfall in funds.shortfalls(session, wallet, period_s):
        for pod in shortfall.stopped:
            pods.transition(pod, PodEvent.STOP, funds.INSUFFICIENT_FUNDS)
            pod.desired_status = DesiredStatus.STOPPED.value
            changes.append(PodChange.of(session, pod))
    return changes
