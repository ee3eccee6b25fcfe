"""sql_sources and sql_watermarks: SQL sources kept in sync (P10)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 22:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _missing(table: str) -> bool:
    context = op.get_context()
    if context.as_sql:
        return True
    return not sa.inspect(op.get_bind()).has_table(table)


def upgrade() -> None:
    if _missing("sql_sources"):
        op.create_table(
            "sql_sources",
            sa.Column("name", sa.String(length=64), nullable=False),
            sa.Column("url", sa.Text(), nullable=False),
            sa.Column("config", sa.JSON(), nullable=False),
            sa.Column("owner", sa.String(length=200), nullable=True),
            sa.Column("sync_interval_minutes", sa.Integer(), nullable=True),
            sa.Column("next_sync_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("last_sync_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("last_sync", sa.JSON(), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("name"),
        )
    if _missing("sql_watermarks"):
        op.create_table(
            "sql_watermarks",
            sa.Column("source", sa.String(length=64), nullable=False),
            sa.Column("table_name", sa.String(length=200), nullable=False),
            sa.Column("mode", sa.String(length=16), nullable=False),
            sa.Column("value", sa.JSON(), nullable=True),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("source", "table_name"),
        )


def downgrade() -> None:
    op.drop_table("sql_watermarks")
    op.drop_table("sql_sources")
