"""feedback, and chat_messages.meta: ratings of answers, an answer's model and timings (P12)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _missing(table: str) -> bool:
    context = op.get_context()
    if context.as_sql:
        return True
    return not sa.inspect(op.get_bind()).has_table(table)


def _has_column(table: str, column: str) -> bool:
    context = op.get_context()
    if context.as_sql:  # offline (SQL script) mode cannot look
        return False
    return any(c["name"] == column for c in sa.inspect(op.get_bind()).get_columns(table))


def upgrade() -> None:
    # The generator and timings of an answer, kept with its message (the admin dashboard's
    # latency percentiles and each feedback's model come from them).
    if not _has_column("chat_messages", "meta"):
        with op.batch_alter_table("chat_messages") as batch:
            batch.add_column(sa.Column("meta", sa.JSON(), nullable=True))
    if _missing("feedback"):
        op.create_table(
            "feedback",
            sa.Column("id", sa.String(length=64), nullable=False),
            sa.Column("principal", sa.String(length=200), nullable=False),
            sa.Column("session_id", sa.String(length=64), nullable=False),
            sa.Column("message_id", sa.Integer(), nullable=False),
            sa.Column("message_index", sa.Integer(), nullable=False),
            sa.Column("rating", sa.String(length=8), nullable=False),
            sa.Column("reason", sa.String(length=32), nullable=True),
            sa.Column("comment", sa.Text(), nullable=True),
            sa.Column("question", sa.Text(), nullable=False),
            sa.Column("answer", sa.Text(), nullable=False),
            sa.Column("citations", sa.JSON(), nullable=False),
            sa.Column("model", sa.String(length=200), nullable=True),
            sa.Column("timings", sa.JSON(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("principal", "session_id", "message_id", name="uq_feedback_answer"),
        )
        with op.batch_alter_table("feedback", schema=None) as batch_op:
            batch_op.create_index("ix_feedback_created", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.drop_index("ix_feedback_created")
    op.drop_table("feedback")
    with op.batch_alter_table("chat_messages") as batch:
        batch.drop_column("meta")
