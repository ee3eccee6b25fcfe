"""Job state in Redis (shared by the API processes and every arq worker)."""

from __future__ import annotations

import json
from typing import Any, cast

from hanrag.errors import BackendError
from hanrag.jobs.base import Condition, JobRecord, now_iso


class QueueUnavailableError(BackendError):
    code = "queue_unavailable"
    http_status = 503


class RedisJobStore:
    """Records at ``<prefix>:job:<id>``, newest-first index at ``<prefix>:index``.

    The prefix is the queue's name (``jobs.redis_queue_name``), so each queue has its own
    records; the index key must never be the arq queue itself (a sorted set at exactly
    ``<queue name>`` that the workers consume).
    """

    def __init__(self, redis_url: str, *, prefix: str = "hanrag:jobs", ttl_seconds: int = 7 * 86400) -> None:
        import redis

        self._redis = redis.Redis.from_url(redis_url, socket_timeout=3.0, socket_connect_timeout=2.0)
        self._prefix = prefix
        self._ttl = ttl_seconds

    @property
    def index_key(self) -> str:
        return f"{self._prefix}:index"

    def _key(self, job_id: str) -> str:
        return f"{self._prefix}:job:{job_id}"

    def _call(self, action: Any) -> Any:
        import redis

        try:
            return action()
        except redis.RedisError as exc:
            raise QueueUnavailableError(f"Redis is unavailable: {type(exc).__name__}") from exc

    def ping(self) -> bool:
        try:
            return bool(self._call(self._redis.ping))
        except QueueUnavailableError:
            return False

    def create(self, record: JobRecord) -> None:
        def action() -> None:
            pipe = self._redis.pipeline()
            pipe.set(self._key(record.id), json.dumps(record.to_dict(), ensure_ascii=False), ex=self._ttl)
            pipe.zadd(self.index_key, {record.id: _score(record.created_at)})
            pipe.execute()

        self._call(action)

    def get(self, job_id: str) -> JobRecord | None:
        raw = self._call(lambda: self._redis.get(self._key(job_id)))
        return JobRecord.from_dict(json.loads(raw)) if raw else None

    def update(self, job_id: str, **fields: Any) -> JobRecord | None:
        return self.update_if(job_id, lambda _data: True, **fields)[1]

    def update_if(self, job_id: str, when: Condition, **fields: Any) -> tuple[bool, JobRecord | None]:
        import redis

        key = self._key(job_id)
        result: list[JobRecord | None] = [None]
        changed = [False]

        def change(pipe: redis.client.Pipeline) -> None:
            changed[0] = False
            raw = cast(bytes | None, pipe.get(key))
            if not raw:
                result[0] = None
                return
            data = json.loads(raw)
            if not when(data):
                result[0] = JobRecord.from_dict(data)
                return
            data.update(fields, updated_at=now_iso())
            pipe.multi()
            pipe.set(key, json.dumps(data, ensure_ascii=False), ex=self._ttl)
            result[0] = JobRecord.from_dict(data)
            changed[0] = True

        # Optimistic transaction: retried (condition included) when another process changed
        # the job meanwhile.
        self._call(lambda: self._redis.transaction(change, key))
        return changed[0], result[0]

    def list_jobs(self, *, limit: int = 50, state: str | None = None) -> list[JobRecord]:
        ids = self._call(lambda: self._redis.zrevrange(self.index_key, 0, max(limit * 4, limit) - 1))
        records: list[JobRecord] = []
        for raw_id in ids:
            record = self.get(raw_id.decode())
            if record is not None and (state is None or record.state == state):
                records.append(record)
            if len(records) >= limit:
                break
        return records


def _score(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()
