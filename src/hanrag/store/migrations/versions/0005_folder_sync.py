"""folder_syncs: the schedule and last run of each folder of sources.folders (P14)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _missing(table: str) -> bool:
    context = op.get_context()
    if context.as_sql:
        return True
    return not sa.inspect(op.get_bind()).has_table(table)


def upgrade() -> None:
    if _missing("folder_syncs"):
        op.create_table(
            "folder_syncs",
            sa.Column("path", sa.String(length=1024), nullable=False),
            sa.Column("interval_minutes", sa.Integer(), nullable=False),
            sa.Column("next_sync_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("last_job_id", sa.String(length=64), nullable=True),
            sa.Column("last_sync_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("last_sync", sa.JSON(), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("path"),
        )


def downgrade() -> None:
    op.drop_table("folder_syncs")
