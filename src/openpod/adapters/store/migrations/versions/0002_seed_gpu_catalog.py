"""seed the GPU catalog

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

Rates are base units per GPU-second of an 18-decimal token (the dev token), from public on-demand
prices per hour: rate = round(price_per_hour * 10**18 / 3600). An admin edits them over the API.
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (id as users know it, short name, memory in GB, price per hour in tokens)
CATALOG = [
    ("NVIDIA GeForce RTX 3090", "RTX 3090", 24, "0.43"),
    ("NVIDIA GeForce RTX 4090", "RTX 4090", 24, "0.69"),
    ("NVIDIA GeForce RTX 5090", "RTX 5090", 32, "0.94"),
    ("NVIDIA RTX A6000", "RTX A6000", 48, "0.49"),
    ("NVIDIA L40S", "L40S", 48, "0.86"),
    ("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, "1.64"),
    ("NVIDIA A100-SXM4-80GB", "A100 SXM", 80, "1.74"),
    ("NVIDIA H100 PCIe", "H100 PCIe", 80, "2.39"),
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 80, "2.99"),
    ("NVIDIA H200", "H200 SXM", 141, "3.99"),
    ("NVIDIA B200", "B200", 180, "5.99"),
]

gpu_types = sa.table(
    "gpu_types",
    sa.column("id", sa.String),
    sa.column("display_name", sa.String),
    sa.column("memory_gb", sa.Integer),
    sa.column("rate_per_second", sa.String),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)


def rate(price_per_hour: str) -> int:
    return int((Decimal(price_per_hour) * 10**18 / 3600).to_integral_value())


def upgrade() -> None:
    now = datetime.now(UTC)
    op.bulk_insert(
        gpu_types,
        [
            {
                "id": gpu_id,
                "display_name": name,
                "memory_gb": memory,
                "rate_per_second": str(rate(price)),
                "updated_at": now,
            }
            for gpu_id, name, memory, price in CATALOG
        ],
    )


def downgrade() -> None:
    op.execute(gpu_types.delete().where(gpu_types.c.id.in_([row[0] for row in CATALOG])))
