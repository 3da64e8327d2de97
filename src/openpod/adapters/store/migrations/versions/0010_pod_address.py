"""pods.address: where the platform reaches a pod's ports when not at its node (Pod IPs)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("pods", sa.Column("address", sa.String(255), nullable=True))


def downgrade() -> None:
    op.drop_column("pods", "address")
