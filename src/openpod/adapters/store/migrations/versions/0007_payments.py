"""payments: hot-wallet transactions and their attempts, counters, pod leases; settlement ids

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "counters",
        sa.Column("name", sa.String(120), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "chain_txs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("sender", sa.String(42), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("to", sa.String(42), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("gas", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("mined_hash", sa.String(66), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("block_hash", sa.String(66), nullable=True),
        sa.Column("gas_used", sa.BigInteger(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.UniqueConstraint("chain_id", "sender", "nonce"),
    )
    op.create_index("ix_chain_txs_status", "chain_txs", ["status"])
    op.create_table(
        "chain_tx_attempts",
        sa.Column("hash", sa.String(66), primary_key=True),
        sa.Column("tx_id", sa.String(32), sa.ForeignKey("chain_txs.id"), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("max_fee", sa.String(78), nullable=False),
        sa.Column("tip", sa.String(78), nullable=False),
        sa.Column("sent_at", TZ, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_index("ix_chain_tx_attempts_tx_id", "chain_tx_attempts", ["tx_id"])
    op.create_table(
        "pod_leases",
        sa.Column("pod_id", sa.String(16), primary_key=True),
        sa.Column("generation", sa.Integer(), primary_key=True),
        sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("lease_id", sa.String(66), nullable=False, unique=True),
        sa.Column("user_wallet", sa.String(42), nullable=False),
        sa.Column("provider_wallet", sa.String(42), nullable=False),
        sa.Column("gpu_type_id", sa.String(100), nullable=False),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("max_rate", sa.String(78), nullable=False),
        sa.Column("start", sa.BigInteger(), nullable=False),
        sa.Column("signature", sa.String(300), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("open_tx_id", sa.String(32), sa.ForeignKey("chain_txs.id"), nullable=True),
        sa.Column("close_tx_id", sa.String(32), sa.ForeignKey("chain_txs.id"), nullable=True),
        sa.Column("end", sa.BigInteger(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_index("ix_pod_leases_account_id", "pod_leases", ["account_id"])
    op.create_index("ix_pod_leases_status", "pod_leases", ["status"])
    with op.batch_alter_table("settlements") as batch:
        batch.add_column(sa.Column("number", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("chain_tx_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("paid_amount", sa.String(78), nullable=True))
        batch.add_column(sa.Column("fee", sa.String(78), nullable=True))
        batch.create_unique_constraint("uq_settlements_number", ["number"])
        batch.create_foreign_key("fk_settlements_chain_tx_id", "chain_txs", ["chain_tx_id"], ["id"])
        batch.create_index("ix_settlements_chain_tx_id", ["chain_tx_id"])


def downgrade() -> None:
    with op.batch_alter_table("settlements") as batch:
        batch.drop_index("ix_settlements_chain_tx_id")
        batch.drop_constraint("fk_settlements_chain_tx_id", type_="foreignkey")
        batch.drop_constraint("uq_settlements_number", type_="unique")
        for column in ("fee", "paid_amount", "chain_tx_id", "number"):
            batch.drop_column(column)
    op.drop_table("pod_leases")
    op.drop_table("chain_tx_attempts")
    op.drop_table("chain_txs")
    op.drop_table("counters")
