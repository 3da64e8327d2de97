"""wallet links: SIWE nonces issued to accounts and, once signed, the proofs

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "wallet_links",
        sa.Column("nonce", sa.String(32), primary_key=True),
        sa.Column(
            "account_id",
            sa.String(32),
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("linked_at", TZ, nullable=True),
        sa.Column("address", sa.String(42), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("signature", sa.String(132), nullable=True),
    )
    op.create_index("ix_wallet_links_account_id", "wallet_links", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_wallet_links_account_id", "wallet_links")
    op.drop_table("wallet_links")
