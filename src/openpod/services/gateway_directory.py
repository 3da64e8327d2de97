"""The SSH gateway's questions, answered from the store: whose key, and may it reach the pod?"""

from __future__ import annotations

import asyncio

from sqlalchemy import select
from sqlalchemy.orm import Session

from openpod.adapters.gateway.directory import Caller, PodTarget, Refused
from openpod.adapters.store import Account, Database, Pod, SSHKey
from openpod.domain.errors import InvalidSSHKey
from openpod.domain.lifecycle import PodStatus
from openpod.domain.sshkeys import parse_public_key
from openpod.services import connect


class StoreDirectory:
    """`adapters.gateway.Directory` over the database (read-only transactions)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def caller_for_key(self, public_key_openssh: str) -> Caller | None:
        try:
            fingerprint = parse_public_key(public_key_openssh).fingerprint
        except InvalidSSHKey:
            return None
        return await asyncio.to_thread(self._caller, fingerprint)

    def _caller(self, fingerprint: str) -> Caller | None:
        with self.db.transaction(readonly=True) as session:
            query = (
                select(Account.id, Account.name)
                .join(SSHKey, SSHKey.account_id == Account.id)
                .where(SSHKey.fingerprint == fingerprint)
                .order_by(SSHKey.created_at)
            )
            row = session.execute(query).first()
            return Caller(row[0], row[1], fingerprint) if row else None

    async def target_for(self, caller: Caller, pod_id: str) -> PodTarget:
        return await asyncio.to_thread(self._target, caller, pod_id)

    def _target(self, caller: Caller, pod_id: str) -> PodTarget:
        with self.db.transaction(readonly=True) as session:
            return target(session, caller, pod_id)


def target(session: Session, caller: Caller, pod_id: str) -> PodTarget:
    pod = session.get(Pod, pod_id)
    if pod is None or pod.account_id != caller.account_id:
        raise Refused(f"no such pod {pod_id}")
    if pod.status != PodStatus.RUNNING.value:
        raise Refused(f"pod {pod_id} is not running ({pod.status})")
    if not pod.ssh_available:
        raise Refused(f"pod {pod_id} has no SSH (its image has no sshd)")
    port = pod.port_mappings.get("22")
    target = connect.target_host(pod)
    if not (pod.ssh_ready and port and target):
        raise Refused(f"pod {pod_id} is starting: SSH is not ready yet")
    return PodTarget(pod_id=pod.id, host=target, port=int(port))
