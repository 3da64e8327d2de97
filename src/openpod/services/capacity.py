"""Which GPUs of which nodes are taken, and by whom: derived from pods, never stored twice."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from openpod.adapters.store import Node, Pod
from openpod.domain.lifecycle import HOLDS_GPUS


def used_indices(session: Session, node_id: str, *, except_pod: str | None = None) -> set[int]:
    """GPU indices held on a node by pods that hold GPUs (pending, starting, running, stopping)."""
    query = select(Pod.id, Pod.gpu_indices).where(
        Pod.node_id == node_id, Pod.status.in_([s.value for s in HOLDS_GPUS])
    )
    used: set[int] = set()
    for pod_id, indices in session.execute(query):
        if pod_id != except_pod:
            used.update(int(i) for i in indices)
    return used


def free_indices(session: Session, node: Node, gpu_type_id: str) -> list[int]:
    used = used_indices(session, node.id)
    return [
        int(g["index"])
        for g in node.gpus
        if g["type"] == gpu_type_id and int(g["index"]) not in used
    ]


def counts_by_type(session: Session, nodes: Iterable[Node]) -> dict[str, tuple[int, int]]:
    """GPU type → (free, total) over online nodes."""
    counts: dict[str, tuple[int, int]] = {}
    for node in nodes:
        if not node.online:
            continue
        used = used_indices(session, node.id)
        for gpu in node.gpus:
            free, total = counts.get(gpu["type"], (0, 0))
            counts[gpu["type"]] = (free + (int(gpu["index"]) not in used), total + 1)
    return counts
