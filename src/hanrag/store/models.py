"""SQLAlchemy 2 models of the catalog (SQLite by default, PostgreSQL when configured)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class DocumentRow(Base):
    """One ingested source (a file, an upload, later a SQL table)."""

    __tablename__ = "documents"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(Text, nullable=False)
    source_type: Mapped[str] = mapped_column(String(16), nullable=False, default="file")
    title: Mapped[str] = mapped_column(Text, nullable=False, default="")
    format: Mapped[str | None] = mapped_column(String(16))
    # Hash of the bytes that are indexed now (None until the first success).
    content_hash: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column(BigInteger)
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    # indexing | indexed | failed
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="indexing")
    chunk_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    acl: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, nullable=False, default=dict)
    doc_date: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, default=utcnow, onupdate=utcnow
    )
    indexed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_documents_source", "source"), Index("ix_documents_status", "status"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "document_id": self.id,
            "source": self.source,
            "source_type": self.source_type,
            "title": self.title,
            "format": self.format,
            "status": self.status,
            "chunk_count": self.chunk_count,
            "acl": list(self.acl or []),
            "metadata": dict(self.meta or {}),
            "date": self.doc_date.isoformat() if self.doc_date else None,
            "content_hash": self.content_hash,
            "size": self.size,
            "last_error": self.last_error,
            "error_code": self.error_code,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "indexed_at": self.indexed_at.isoformat() if self.indexed_at else None,
        }


class ChatSessionRow(Base):
    """A conversation (the legacy protocol's ``page_id``)."""

    __tablename__ = "chat_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal: Mapped[str | None] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    def as_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.id,
            "principal": self.principal,
            "title": self.title,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


class MessageRow(Base):
    """One message of a session; an assistant message keeps the chunk ids it cited."""

    __tablename__ = "chat_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("chat_sessions.id", ondelete="CASCADE"), nullable=False
    )
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    cited_chunk_ids: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    # The references shown with the answer (title, source, snippet, date) for /reference.
    references: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    # An answer's generator and timings ({"generator": ..., "timings": {...}}); None before P12.
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    __table_args__ = (Index("ix_chat_messages_session", "session_id", "id"),)

    def as_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "content": self.content,
            "cited_chunk_ids": list(self.cited_chunk_ids or []),
            "references": list(self.references or []),
            "created_at": self.created_at.isoformat(),
        }


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    password_hash: Mapped[str] = mapped_column(Text, nullable=False)
    # admin | editor | viewer
    role: Mapped[str] = mapped_column(String(16), nullable=False, default="viewer")
    disabled: Mapped[bool] = mapped_column(default=False, nullable=False)
    # Raised by a password reset: access tokens carrying an older version are refused.
    token_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class GroupRow(Base):
    __tablename__ = "groups"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class MembershipRow(Base):
    __tablename__ = "group_members"

    user_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    group_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )


class ApiKeyRow(Base):
    """A service key: only its SHA-256 is stored; the key itself is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    user_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    # The key acts with at most this role (never more than its owner's).
    role: Mapped[str] = mapped_column(String(16), nullable=False, default="viewer")
    # Trusted services (the legacy backend) may name the end user a request is for.
    can_delegate: Mapped[bool] = mapped_column(default=False, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RefreshTokenRow(Base):
    __tablename__ = "refresh_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class RevokedAccessTokenRow(Base):
    """Access tokens revoked before they expire (logout); pruned after expiry."""

    __tablename__ = "revoked_access_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class AuditRow(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    target: Mapped[str | None] = mapped_column(String(300))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    ip: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_at", "at"),
        Index("ix_audit_actor", "actor"),
        Index("ix_audit_action", "action"),
    )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "detail": dict(self.detail or {}),
            "ip": self.ip,
        }


class JobRow(Base):
    """A background job of the in-process queue (the Redis queue keeps jobs in Redis)."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    record: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    __table_args__ = (Index("ix_jobs_state", "state"), Index("ix_jobs_created", "created_at"))


class SqlSourceRow(Base):
    """A SQL source (issue P10): its URL (a secret: never returned or logged in full), its
    table configuration, who added it, and when the scheduler syncs it next."""

    __tablename__ = "sql_sources"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    owner: Mapped[str | None] = mapped_column(String(200))
    # Minutes between scheduled syncs (None: only on demand).
    sync_interval_minutes: Mapped[int | None] = mapped_column(Integer)
    next_sync_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_sync_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_sync: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, default=utcnow, onupdate=utcnow
    )


class SqlWatermarkRow(Base):
    """The incremental-sync watermark of one table of a SQL source."""

    __tablename__ = "sql_watermarks"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    table_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    mode: Mapped[str] = mapped_column(String(16), nullable=False)
    value: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, default=utcnow, onupdate=utcnow
    )


class FolderSyncRow(Base):
    """The schedule of a folder of ``sources.folders`` (the folders themselves are settings):
    when the scheduler syncs it next, the job of its last run and that run's report."""

    __tablename__ = "folder_syncs"

    # The folder's absolute path.
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    interval_minutes: Mapped[int] = mapped_column(Integer, nullable=False)
    next_sync_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_job_id: Mapped[str | None] = mapped_column(String(64))
    last_sync_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_sync: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, default=utcnow, onupdate=utcnow
    )


class FeedbackRow(Base):
    """A thumbs up or down on one answer (issue P12), with copies of what it is about (the
    question, the answer, its citations, the model and timings), so that it outlives the
    conversation and makes an evaluation dataset. One per caller and answer: a second
    rating replaces the first. ``principal`` is the caller's name ("" for the implicit user)."""

    __tablename__ = "feedback"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal: Mapped[str] = mapped_column(String(200), nullable=False)
    session_id: Mapped[str] = mapped_column(String(64), nullable=False)
    # The answer's message row, and its position in the conversation when it was rated.
    message_id: Mapped[int] = mapped_column(Integer, nullable=False)
    message_index: Mapped[int] = mapped_column(Integer, nullable=False)
    # up | down
    rating: Mapped[str] = mapped_column(String(8), nullable=False)
    # wrong_source | outdated | incomplete | other | None
    reason: Mapped[str | None] = mapped_column(String(32))
    comment: Mapped[str | None] = mapped_column(Text)
    question: Mapped[str] = mapped_column(Text, nullable=False, default="")
    answer: Mapped[str] = mapped_column(Text, nullable=False, default="")
    # [{"chunk_id", "document_id", "title"}] of the passages the answer cited.
    citations: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)
    model: Mapped[str | None] = mapped_column(String(200))
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    __table_args__ = (
        UniqueConstraint("principal", "session_id", "message_id", name="uq_feedback_answer"),
        Index("ix_feedback_created", "created_at"),
    )

    def as_dict(self) -> dict[str, Any]:
        return {
            "feedback_id": self.id,
            "principal": self.principal or None,
            "session_id": self.session_id,
            "message_index": self.message_index,
            "rating": self.rating,
            "reason": self.reason,
            "comment": self.comment,
            "question": self.question,
            "answer": self.answer,
            "citations": list(self.citations or []),
            "model": self.model,
            "timings": dict(self.timings or {}),
            # With its zone always (SQLite gives back the UTC wall time without one).
            "created_at": (
                self.created_at if self.created_at.tzinfo else self.created_at.replace(tzinfo=UTC)
            ).isoformat(),
        }
