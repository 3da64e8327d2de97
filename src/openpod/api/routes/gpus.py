"""The GPU catalog."""

from __future__ import annotations

from fastapi import APIRouter, status

from openpod.adapters.store import GpuType
from openpod.api import schemas
from openpod.api.deps import Key, State, as_account
from openpod.domain import money
from openpod.services import catalog

router = APIRouter(tags=["gpu-types"])


def _out(gpu: GpuType, free: int, total: int, decimals: int) -> schemas.GpuTypeOut:
    return schemas.GpuTypeOut(
        id=gpu.id,
        display_name=gpu.display_name,
        memory_in_gb=gpu.memory_gb,
        rate_per_second=str(gpu.rate_per_second),
        price_per_hour=money.per_hour(gpu.rate_per_second, decimals),
        free=free,
        total=total,
    )


@router.get("/gpu-types")
async def list_gpu_types(state: State, key: Key) -> list[schemas.GpuTypeOut]:
    """Every GPU type with its rate per GPU-second and how many are free on online nodes."""
    rows = await as_account(state, key, lambda s, _a: catalog.list_gpu_types(s), readonly=True)
    decimals = state.settings.token_decimals
    return [_out(r.gpu_type, r.free, r.total, decimals) for r in rows]


@router.post("/gpu-types", status_code=status.HTTP_201_CREATED)
async def create_gpu_type(
    body: schemas.GpuTypeCreate, state: State, key: Key
) -> schemas.GpuTypeOut:
    row = await as_account(
        state,
        key,
        lambda s, a: catalog.create_gpu_type(
            s, a, body.id, body.display_name, body.memory_in_gb, body.rate_per_second
        ),
    )
    return _out(row, 0, 0, state.settings.token_decimals)


@router.patch("/gpu-types/{gpu_type_id:path}")
async def update_gpu_type(
    gpu_type_id: str, body: schemas.GpuTypeUpdate, state: State, key: Key
) -> schemas.GpuTypeOut:
    """Change a type's name, memory or rate (admin). Running pods keep the rate they started at."""
    row = await as_account(
        state,
        key,
        lambda s, a: catalog.update_gpu_type(
            s,
            a,
            gpu_type_id,
            display_name=body.display_name,
            memory_gb=body.memory_in_gb,
            rate=body.rate_per_second,
        ),
    )
    return _out(row, 0, 0, state.settings.token_decimals)
