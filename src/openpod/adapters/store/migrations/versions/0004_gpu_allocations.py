"""gpu_allocations: one row per GPU a pod holds; (node, index) is unique

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HOLDING = ("PENDING", "STARTING", "RUNNING", "STOPPING", "TERMINATING")


def upgrade() -> None:
    allocations = op.create_table(
        "gpu_allocations",
        sa.Column("node_id", sa.String(length=32), nullable=False),
        sa.Column("gpu_index", sa.Integer(), nullable=False),
        sa.Column("pod_id", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"]),
        sa.ForeignKeyConstraint(["pod_id"], ["pods.id"]),
        sa.PrimaryKeyConstraint("node_id", "gpu_index"),
    )
    with op.batch_alter_table("gpu_allocations") as batch:
        batch.create_index(batch.f("ix_gpu_allocations_pod_id"), ["pod_id"], unique=False)
    pods = sa.table(
        "pods",
        sa.column("id", sa.String),
        sa.column("node_id", sa.String),
        sa.column("gpu_indices", sa.JSON),
        sa.column("status", sa.String),
    )
    rows = op.get_bind().execute(
        sa.select(pods.c.id, pods.c.node_id, pods.c.gpu_indices).where(
            pods.c.status.in_(HOLDING), pods.c.node_id.is_not(None)
        )
    )
    backfill = []
    for pod_id, node_id, indices in rows:
        for index in json.loads(indices) if isinstance(indices, str) else indices:
            backfill.append({"node_id": node_id, "gpu_index": int(index), "pod_id": pod_id})
    if backfill:
        op.bulk_insert(allocations, backfill)


def downgrade() -> None:
    op.drop_table("gpu_allocations")
