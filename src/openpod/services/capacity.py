"""Which GPUs of which nodes are taken, and by which pod.

A pod holds its GPUs, as rows of `gpu_allocations`, from the moment it is placed until it
leaves the statuses that hold GPUs (stopped, failed, terminated): `allocate` and `release` are
called only from the pod use cases' placement and status transitions. The table's primary key
(node, GPU index) makes double-booking impossible whatever the locking.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from openpod.adapters.store import GpuAllocation, Node, Pod


def allocate(session: Session, pod: Pod, node_id: str, indices: Iterable[int]) -> None:
    for index in indices:
        session.add(GpuAllocation(node_id=node_id, gpu_index=index, pod=pod))


def release(session: Session, pod: Pod) -> None:
    session.execute(delete(GpuAllocation).where(GpuAllocation.pod_id == pod.id))


def used_indices(session: Session, node_id: str) -> set[int]:
    return used_by_node(session, [node_id]).get(node_id, set())


def used_by_node(session: Session, node_ids: Iterable[str]) -> dict[str, set[int]]:
    """node id → GPU indices held there, for many nodes in one query."""
    ids = list(node_ids)
    used: dict[str, set[int]] = {}
    if ids:
        query = select(GpuAllocation.node_id, GpuAllocation.gpu_index).where(
            GpuAllocation.node_id.in_(ids)
        )
        for node_id, index in session.execute(query):
            used.setdefault(node_id, set()).add(index)
    return used


def free_indices(node: Node, gpu_type_id: str, used: set[int]) -> list[int]:
    return [
        int(g["index"])
        for g in node.gpus
        if g["type"] == gpu_type_id and int(g["index"]) not in used
    ]


def counts_by_type(session: Session, nodes: Iterable[Node]) -> dict[str, tuple[int, int]]:
    """GPU type → (free, total) over online nodes, in one query for all of them."""
    online = [node for node in nodes if node.online]
    used = used_by_node(session, (node.id for node in online))
    counts: dict[str, tuple[int, int]] = {}
    for node in online:
        held = used.get(node.id, set())
        for gpu in node.gpus:
            free, total = counts.get(gpu["type"], (0, 0))
            counts[gpu["type"]] = (free + (int(gpu["index"]) not in held), total + 1)
    return counts
