"""The GPU catalog: types users can rent, with their memory and rate, and what is free now."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from openpod.adapters.store import Account, GpuType, Node
from openpod.services import capacity
from openpod.services.errors import Conflict, Forbidden, InvalidInput, NotFound


@dataclass(frozen=True)
class GpuAvailability:
    gpu_type: GpuType
    free: int
    total: int


def list_gpu_types(session: Session) -> list[GpuAvailability]:
    # Rates are stored as decimal text (exact at any size), so they are ordered here, as integers.
    types = sorted(session.scalars(select(GpuType)), key=lambda t: (t.rate_per_second, t.id))
    counts = capacity.counts_by_type(session, list(session.scalars(select(Node))))
    return [GpuAvailability(t, *counts.get(t.id, (0, 0))) for t in types]


def get_gpu_type(session: Session, gpu_type_id: str) -> GpuType:
    row = session.get(GpuType, gpu_type_id)
    if row is None:
        raise NotFound(f"unknown GPU type {gpu_type_id!r}")
    return row


def _require_admin(account: Account) -> None:
    if not account.is_admin:
        raise Forbidden("only an admin can change the GPU catalog")


def _check(display_name: str | None, memory_gb: int | None, rate: int | None) -> None:
    if display_name is not None and not display_name.strip():
        raise InvalidInput("displayName must not be empty")
    if memory_gb is not None and memory_gb <= 0:
        raise InvalidInput("memoryInGb must be a positive integer")
    if rate is not None and rate < 0:
        raise InvalidInput("ratePerSecond must be a non-negative integer")


def create_gpu_type(
    session: Session,
    account: Account,
    gpu_type_id: str,
    display_name: str,
    memory_gb: int,
    rate: int,
) -> GpuType:
    _require_admin(account)
    if not gpu_type_id.strip():
        raise InvalidInput("GPU type id must not be empty")
    _check(display_name, memory_gb, rate)
    if session.get(GpuType, gpu_type_id) is not None:
        raise Conflict(f"GPU type {gpu_type_id!r} already exists")
    row = GpuType(
        id=gpu_type_id, display_name=display_name, memory_gb=memory_gb, rate_per_second=rate
    )
    session.add(row)
    session.flush()
    return row


def update_gpu_type(
    session: Session,
    account: Account,
    gpu_type_id: str,
    *,
    display_name: str | None = None,
    memory_gb: int | None = None,
    rate: int | None = None,
) -> GpuType:
    """Change a GPU type; pods already running keep the rate they started with."""
    _require_admin(account)
    row = get_gpu_type(session, gpu_type_id)
    _check(display_name, memory_gb, rate)
    if display_name is not None:
        row.display_name = display_name
    if memory_gb is not None:
        row.memory_gb = memory_gb
    if rate is not None:
        row.rate_per_second = rate
    return row
