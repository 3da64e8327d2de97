"""hot wallet: circuit breaker and its history, alert states, the fee each transaction paid

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "hot_wallet_breakers",
        sa.Column("chain_id", sa.BigInteger(), primary_key=True),
        sa.Column("address", sa.String(42), primary_key=True),
        sa.Column("open", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(120), nullable=True),
        sa.Column("changed_at", TZ, nullable=False),
    )
    op.create_table(
        "hot_wallet_breaker_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("address", sa.String(42), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(120), nullable=False),
        sa.Column("at", TZ, nullable=False),
    )
    op.create_index(
        "ix_hot_wallet_breaker_events_address", "hot_wallet_breaker_events", ["address"]
    )
    op.create_table(
        "alert_states",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("firing", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("since", TZ, nullable=False),
    )
    with op.batch_alter_table("chain_txs") as batch:
        batch.add_column(sa.Column("fee_paid", sa.String(78), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chain_txs") as batch:
        batch.drop_column("fee_paid")
    op.drop_table("alert_states")
    op.drop_index("ix_hot_wallet_breaker_events_address", "hot_wallet_breaker_events")
    op.drop_table("hot_wallet_breaker_events")
    op.drop_table("hot_wallet_breakers")
