"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21 21:03:32.288139
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _missing(table: str) -> bool:
    context = op.get_context()
    if context.as_sql:  # offline (SQL script) mode cannot look: create everything
        return True
    return not sa.inspect(op.get_bind()).has_table(table)


def upgrade() -> None:
    # Catalogs made before migrations existed (``create_all`` of an earlier release) already
    # hold some of these tables: only the missing ones are created (with their indexes).
    if _missing("audit_log"):
        op.create_table(
            "audit_log",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("actor", sa.String(length=200), nullable=False),
            sa.Column("action", sa.String(length=64), nullable=False),
            sa.Column("target", sa.String(length=300), nullable=True),
            sa.Column("detail", sa.JSON(), nullable=False),
            sa.Column("ip", sa.String(length=64), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("audit_log", schema=None) as batch_op:
            batch_op.create_index("ix_audit_action", ["action"], unique=False)
            batch_op.create_index("ix_audit_actor", ["actor"], unique=False)
            batch_op.create_index("ix_audit_at", ["at"], unique=False)

    if _missing("chat_sessions"):
        op.create_table(
            "chat_sessions",
            sa.Column("id", sa.String(length=64), nullable=False),
            sa.Column("principal", sa.String(length=200), nullable=True),
            sa.Column("title", sa.Text(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
    if _missing("documents"):
        op.create_table(
            "documents",
            sa.Column("id", sa.String(length=64), nullable=False),
            sa.Column("source", sa.Text(), nullable=False),
            sa.Column("source_type", sa.String(length=16), nullable=False),
            sa.Column("title", sa.Text(), nullable=False),
            sa.Column("format", sa.String(length=16), nullable=True),
            sa.Column("content_hash", sa.String(length=64), nullable=True),
            sa.Column("size", sa.BigInteger(), nullable=True),
            sa.Column("mtime_ns", sa.BigInteger(), nullable=True),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("chunk_count", sa.Integer(), nullable=False),
            sa.Column("acl", sa.JSON(), nullable=False),
            sa.Column("metadata", sa.JSON(), nullable=False),
            sa.Column("doc_date", sa.DateTime(timezone=True), nullable=True),
            sa.Column("last_error", sa.Text(), nullable=True),
            sa.Column("error_code", sa.String(length=32), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("documents", schema=None) as batch_op:
            batch_op.create_index("ix_documents_source", ["source"], unique=False)
            batch_op.create_index("ix_documents_status", ["status"], unique=False)

    if _missing("groups"):
        op.create_table(
            "groups",
            sa.Column("id", sa.String(length=64), nullable=False),
            sa.Column("name", sa.String(length=100), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("name"),
        )
    if _missing("jobs"):
        op.create_table(
            "jobs",
            sa.Column("id", sa.String(length=64), nullable=False),
            sa.Column("record", sa.JSON(), nullable=False),
            sa.Column("state", sa.String(length=16), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("jobs", schema=None) as batch_op:
            batch_op.create_index("ix_jobs_created", ["created_at"], unique=False)
            batch_op.create_index("ix_jobs_state", ["state"], unique=False)

    if _missing("revoked_access_tokens"):
        op.create_table(
            "revoked_access_tokens",
            sa.Column("jti", sa.String(length=64), nullable=False),
            sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("jti"),
        )
    if _missing("users"):
        op.create_table(
            "users",
            sa.Column("id", sa.String(length=64), nullable=False),
            sa.Column("username", sa.String(length=100), nullable=False),
            sa.Column("password_hash", sa.Text(), nullable=False),
            sa.Column("role", sa.String(length=16), nullable=False),
            sa.Column("disabled", sa.Boolean(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("username"),
        )
    if _missing("api_keys"):
        op.create_table(
            "api_keys",
            sa.Column("id", sa.String(length=64), nullable=False),
            sa.Column("name", sa.String(length=100), nullable=False),
            sa.Column("prefix", sa.String(length=16), nullable=False),
            sa.Column("key_hash", sa.String(length=64), nullable=False),
            sa.Column("user_id", sa.String(length=64), nullable=False),
            sa.Column("role", sa.String(length=16), nullable=False),
            sa.Column("can_delegate", sa.Boolean(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
            sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("key_hash"),
        )
    if _missing("chat_messages"):
        op.create_table(
            "chat_messages",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("session_id", sa.String(length=64), nullable=False),
            sa.Column("role", sa.String(length=16), nullable=False),
            sa.Column("content", sa.Text(), nullable=False),
            sa.Column("cited_chunk_ids", sa.JSON(), nullable=False),
            sa.Column("references", sa.JSON(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.ForeignKeyConstraint(["session_id"], ["chat_sessions.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("chat_messages", schema=None) as batch_op:
            batch_op.create_index("ix_chat_messages_session", ["session_id", "id"], unique=False)

    if _missing("group_members"):
        op.create_table(
            "group_members",
            sa.Column("user_id", sa.String(length=64), nullable=False),
            sa.Column("group_id", sa.String(length=64), nullable=False),
            sa.ForeignKeyConstraint(["group_id"], ["groups.id"], ondelete="CASCADE"),
            sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("user_id", "group_id"),
        )
    if _missing("refresh_tokens"):
        op.create_table(
            "refresh_tokens",
            sa.Column("jti", sa.String(length=64), nullable=False),
            sa.Column("user_id", sa.String(length=64), nullable=False),
            sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("jti"),
        )


def downgrade() -> None:
    # ### commands auto generated by Alembic - please adjust! ###
    op.drop_table("refresh_tokens")
    op.drop_table("group_members")
    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_chat_messages_session")

    op.drop_table("chat_messages")
    op.drop_table("api_keys")
    op.drop_table("users")
    op.drop_table("revoked_access_tokens")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_state")
        batch_op.drop_index("ix_jobs_created")

    op.drop_table("jobs")
    op.drop_table("groups")
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index("ix_documents_status")
        batch_op.drop_index("ix_documents_source")

    op.drop_table("documents")
    op.drop_table("chat_sessions")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_at")
        batch_op.drop_index("ix_audit_actor")
        batch_op.drop_index("ix_audit_action")

    op.drop_table("audit_log")
    # ### end Alembic commands ###
