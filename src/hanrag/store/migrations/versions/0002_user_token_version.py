"""users.token_version: access tokens end when the password changes

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 20:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _has_column(table: str, column: str) -> bool:
    context = op.get_context()
    if context.as_sql:  # offline (SQL script) mode cannot look
        return False
    return any(c["name"] == column for c in sa.inspect(op.get_bind()).get_columns(table))


def upgrade() -> None:
    # Every access token carries its user's token version; a password reset raises it,
    # which ends the tokens issued before (refresh tokens are revoked rows already).
    if not _has_column("users", "token_version"):
        with op.batch_alter_table("users") as batch:
            batch.add_column(sa.Column("token_version", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("token_version")
