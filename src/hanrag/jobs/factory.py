"""Builds the job queue named in settings (``jobs.queue``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hanrag.jobs.base import JobQueue

if TYPE_CHECKING:
    from hanrag.engine import Engine


def build_queue(engine: Engine) -> JobQueue:
    if engine.settings.jobs.queue == "redis":
        from hanrag.jobs.redis_queue import RedisQueue

        return RedisQueue(engine)
    from hanrag.jobs.inprocess import InProcessQueue

    return InProcessQueue(engine)
