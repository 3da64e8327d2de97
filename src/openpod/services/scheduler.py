"""Placing pods: a node with enough free GPUs of the asked type, best fit first."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from openpod.adapters.store import Node
from openpod.services import capacity
from openpod.services.errors import NoCapacity


@dataclass(frozen=True)
class Placement:
    node: Node
    gpu_indices: list[int]


def _lock_nodes(session: Session, node_ids: list[str] | None = None) -> list[Node]:
    """Online nodes, row-locked (PostgreSQL) so two creates cannot take the same GPU.

    SQLite needs no row lock: every transaction already holds the write lock (BEGIN IMMEDIATE).
    """
    query = select(Node).where(Node.online.is_(True)).order_by(Node.id)
    if node_ids is not None:
        query = query.where(Node.id.in_(node_ids))
    return list(session.scalars(query.with_for_update()))


def place(session: Session, gpu_type_id: str, gpu_count: int) -> Placement:
    """Best fit: the node whose free GPUs of this type are fewest while still enough."""
    candidates: list[tuple[int, Node, list[int]]] = []
    free_total = total = 0
    nodes = _lock_nodes(session)
    used = capacity.used_by_node(session, (node.id for node in nodes))
    for node in nodes:
        free = capacity.free_indices(node, gpu_type_id, used.get(node.id, set()))
        free_total += len(free)
        total += sum(1 for g in node.gpus if g["type"] == gpu_type_id)
        if len(free) >= gpu_count:
            candidates.append((len(free), node, free))
    if not candidates:
        if free_total >= gpu_count:
            raise NoCapacity(
                f"no node has {gpu_count} free {gpu_type_id} together "
                f"({free_total} of {total} free across nodes)"
            )
        if free_total == 0:
            raise NoCapacity(f"no free {gpu_type_id}: 0 of {total} free")
        raise NoCapacity(
            f"not enough free {gpu_type_id}: {gpu_count} asked, {free_total} of {total} free"
        )
    _, node, free = min(candidates, key=lambda c: (c[0], c[1].id))
    return Placement(node, free[:gpu_count])


def place_on(
    session: Session, node_id: str, gpu_type_id: str, gpu_count: int, prefer: list[int]
) -> Placement:
    """Place again on one given node (resume: the pod's /workspace lives there)."""
    nodes = _lock_nodes(session, [node_id])
    if not nodes:
        raise NoCapacity("its node is offline (the pod's /workspace lives on that node)")
    node = nodes[0]
    free = capacity.free_indices(node, gpu_type_id, capacity.used_indices(session, node.id))
    if len(free) < gpu_count:
        total = sum(1 for g in node.gpus if g["type"] == gpu_type_id)
        raise NoCapacity(
            f"its node has {len(free)} of {total} {gpu_type_id} free and the pod needs "
            f"{gpu_count} (the pod's /workspace lives on that node)"
        )
    ordered = [i for i in prefer if i in free] + [i for i in free if i not in prefer]
    return Placement(node, ordered[:gpu_count])
