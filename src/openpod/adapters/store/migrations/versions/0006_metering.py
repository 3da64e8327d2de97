"""metering: pod runs, meter events, settlements; account balance

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("balance", sa.String(78), nullable=False, server_default="0"))
    op.create_table(
        "pod_runs",
        sa.Column("pod_id", sa.String(16), sa.ForeignKey("pods.id"), primary_key=True),
        sa.Column("generation", sa.Integer(), primary_key=True),
        sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("provider_id", sa.String(32), sa.ForeignKey("providers.id"), nullable=False),
        sa.Column("payout_wallet", sa.String(42), nullable=False),
        sa.Column("node_id", sa.String(32), sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("gpu_type_id", sa.String(100), sa.ForeignKey("gpu_types.id"), nullable=False),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("rate_per_second", sa.String(78), nullable=False),
        sa.Column("grace_ms", sa.BigInteger(), nullable=False),
        sa.Column("next_seq", sa.BigInteger(), nullable=False),
        sa.Column("max_seq", sa.BigInteger(), nullable=False),
        sa.Column("intervals", sa.JSON(), nullable=False),
        sa.Column("billable_ms", sa.BigInteger(), nullable=False),
        sa.Column("open", sa.Boolean(), nullable=False),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("billed_seconds", sa.BigInteger(), nullable=False),
        sa.Column("first_event_at", TZ, nullable=True),
        sa.Column("last_event_at", TZ, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("closed_at", TZ, nullable=True),
    )
    op.create_index("ix_pod_runs_account_id", "pod_runs", ["account_id"])
    op.create_index("ix_pod_runs_closed", "pod_runs", ["closed"])
    op.create_table(
        "meter_events",
        sa.Column("pod_id", sa.String(16), primary_key=True),
        sa.Column("generation", sa.Integer(), primary_key=True),
        sa.Column("seq", sa.BigInteger(), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("gpus", sa.JSON(), nullable=False),
        sa.Column("received_at", TZ, nullable=False),
    )
    op.create_table(
        "settlements",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("pod_id", sa.String(16), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("provider_id", sa.String(32), sa.ForeignKey("providers.id"), nullable=False),
        sa.Column("payout_wallet", sa.String(42), nullable=False),
        sa.Column("gpu_type_id", sa.String(100), nullable=False),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("rate_per_second", sa.String(78), nullable=False),
        sa.Column("from_second", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.String(78), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("tx_hash", sa.String(66), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.UniqueConstraint("pod_id", "generation", "from_second"),
    )
    op.create_index("ix_settlements_pod_id", "settlements", ["pod_id"])
    op.create_index("ix_settlements_account_id", "settlements", ["account_id"])
    op.create_index("ix_settlements_status", "settlements", ["status"])


def downgrade() -> None:
    op.drop_table("settlements")
    op.drop_table("meter_events")
    op.drop_table("pod_runs")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("balance")
