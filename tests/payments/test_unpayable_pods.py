"""With payments on-chain, a settlement round stops the pods whose run cannot be paid: the
contract refused its lease, or its user signed none within the deadline."""

from __future__ import annotations

from datetime import timedelta

import pytest

from openpod.adapters.store import Database, Pod
from openpod.adapters.store.models import PodLease, utcnow
from openpod.services import billing_round
from openpod.services.payments import LeaseStatus
from tests.store.test_metering import _pod

DEADLINE = 600.0


def running_pod(db: Database, *, placed_ago_s: float, lease: str | None) -> str:
    pod_id, rate = _pod(db, gpu_count=1)
    with db.transaction() as s:
        pod = s.get(Pod, pod_id)
        assert pod is not None
        pod.status, pod.desired_status = "RUNNING", "RUNNING"
        pod.generation = 1
        pod.last_started_at = utcnow() - timedelta(seconds=placed_ago_s)
        if lease is not None:
            s.add(
                PodLease(
                    pod_id=pod_id, generation=1, account_id=pod.account_id,
                    lease_id="0x" + pod_id.encode().hex().ljust(64, "0"),
                    user_wallet="0x" + "12" * 20, provider_wallet="0x" + "ab" * 20,
                    gpu_type_id=pod.gpu_type_id, gpu_count=1, max_rate=rate, start=1,
                    signature="0x" + "00" * 65, status=lease, reason="BadLeaseSignature(...)",
                )
            )  # fmt: skip
    return pod_id


def stopped(db: Database) -> dict[str, str | None]:
    with db.transaction() as s:
        changes = billing_round.run(s, None, 60, 15_000, DEADLINE)
        return {c.pod.id: c.pod.status_reason for c in changes}


@pytest.mark.parametrize(
    ("placed_ago_s", "lease", "reason"),
    [
        (DEADLINE + 1, None, billing_round.NO_LEASE),
        (DEADLINE - 30, None, None),  # still time to sign
        (5, LeaseStatus.FAILED, billing_round.LEASE_FAILED),
        (DEADLINE + 1, LeaseStatus.SIGNED, None),
        (DEADLINE + 1, LeaseStatus.OPEN, None),
    ],
)
def test_a_run_that_cannot_be_paid_is_stopped(
    db: Database, placed_ago_s: float, lease: str | None, reason: str | None
) -> None:
    pod_id = running_pod(db, placed_ago_s=placed_ago_s, lease=lease)
    assert stopped(db).get(pod_id) == reason
    with db.transaction(readonly=True) as s:
        pod = s.get(Pod, pod_id)
        assert pod is not None
        assert pod.desired_status == ("STOPPED" if reason else "RUNNING")


def test_without_on_chain_payments_no_lease_is_needed(db: Database) -> None:
    pod_id = running_pod(db, placed_ago_s=DEADLINE * 10, lease=None)
    with db.transaction() as s:
        assert billing_round.run(s, None, 60, 15_000, None) == []
    with db.transaction(readonly=True) as s:
        pod = s.get(Pod, pod_id)
        assert pod is not None and pod.desired_status == "RUNNING"
