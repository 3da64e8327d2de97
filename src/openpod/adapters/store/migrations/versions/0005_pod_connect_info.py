"""pods: private flag and connect info (ssh command, HTTP URLs, when each port became ready)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pods") as batch:
        batch.add_column(sa.Column("private", sa.Boolean(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("ssh_command", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("http_urls", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
        batch.add_column(
            sa.Column("ready_at", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )


def downgrade() -> None:
    with op.batch_alter_table("pods") as batch:
        for column in ("ready_at", "http_urls", "ssh_command", "private"):
            batch.drop_column(column)
