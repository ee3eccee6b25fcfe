"""Job port: a queue that runs ask, ingest and SQL-sync jobs at least once, and a store of their state.

Both adapters (in-process asyncio, Redis via arq) share the same semantics:
at-least-once execution with idempotent effects, retries with backoff for
transient failures, a ``dead`` state after the last attempt, cancellation,
pause/resume (ingest), a per-job timeout, and a graceful shutdown that
finishes or requeues running jobs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

STATES = ("queued", "running", "paused", "succeeded", "failed", "dead", "cancelled")
FINAL_STATES = ("succeeded", "failed", "dead", "cancelled")
# sql_sync: one SQL source synced (payload {"source", "full"}), see hanrag.jobs.sql_sync.
KINDS = ("ask", "ingest", "sql_sync")


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(slots=True)
class JobRecord:
    kind: str
    payload: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = "queued"
    principal: str | None = None
    principals: list[str] | None = None
    callback_url: str | None = None
    # Kept to sign and send the callback; never returned by the API or logged.
    callback_headers: dict[str, str] = field(default_factory=dict)
    # The caller's own correlation data, echoed in the callback: its "client_data" object,
    # and the flat body fields named by jobs.correlation_fields (e.g. {"memberId": 7}).
    client_data: dict[str, Any] | None = None
    correlation: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    max_attempts: int = 3
    progress: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    callback: dict[str, Any] | None = None
    # "pause" | "cancel" | None: asked by a client, honoured by the running job.
    control: str | None = None
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    started_at: str | None = None
    finished_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        known = {f for f in cls.__dataclass_fields__}  # tolerate records written by newer versions
        return cls(**{k: v for k, v in data.items() if k in known})

    def public(self) -> dict[str, Any]:
        """What clients see (no callback headers, no principals list)."""
        data = self.to_dict()
        data.pop("callback_headers")
        data.pop("principals")
        data["job_id"] = data.pop("id")
        return data


# A condition on a stored job record (its dict form), checked inside the store's update.
Condition = Callable[[dict[str, Any]], bool]


class JobStore(Protocol):
    def create(self, record: JobRecord) -> None: ...

    def get(self, job_id: str) -> JobRecord | None: ...

    def update(self, job_id: str, **fields: Any) -> JobRecord | None: ...

    def update_if(self, job_id: str, when: Condition, **fields: Any) -> tuple[bool, JobRecord | None]:
        """Change the job only if ``when`` holds for it at that moment (atomically against
        other writers); returns whether it changed, and the record as it is now."""
        ...

    def list_jobs(self, *, limit: int = 50, state: str | None = None) -> list[JobRecord]: ...


class JobQueue(Protocol):
    @property
    def store(self) -> JobStore: ...

    async def enqueue(self, record: JobRecord) -> JobRecord: ...

    async def requeue(self, job_id: str) -> None:
        """Queue a stored job again (a resumed ingestion: a paused job holds no worker)."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ping(self) -> bool: ...
