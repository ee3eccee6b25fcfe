"""Per-principal rate limits: fixed one-minute windows, in Redis when configured.

With several server processes the counters must be shared, so ``redis_url``
moves them to Redis (INCR + EXPIRE, atomic in a pipeline); one process alone
keeps them in memory.
"""

from __future__ import annotations

import threading
import time
from typing import Any


class RateLimiter:
    def __init__(self, per_minute: int, redis_url: str = "") -> None:
        self.per_minute = per_minute
        self._redis: Any = None
        if per_minute and redis_url:
            import redis

            self._redis = redis.Redis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], int] = {}

    def hit(self, principal: str) -> int | None:
        """Count one request; returns seconds to wait when over the limit, else None."""
        if not self.per_minute:
            return None
        now = time.time()
        window = int(now // 60)
        retry_after = max(1, 60 - int(now % 60))
        if self._redis is not None:
            key = f"hanrag:rate:{principal}:{window}"
            pipe = self._redis.pipeline()
            pipe.incr(key)
            pipe.expire(key, 120)
            count = int(pipe.execute()[0])
        else:
            with self._lock:
                count = self._counts.get((principal, window), 0) + 1
                self._counts[(principal, window)] = count
                if len(self._counts) > 10_000:
                    self._counts = {k: v for k, v in self._counts.items() if k[1] >= window}
        return retry_after if count > self.per_minute else None
