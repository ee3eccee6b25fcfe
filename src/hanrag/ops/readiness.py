"""The doctor's report for ``/readyz``: cached, refreshed in the background.

``/readyz`` decides ready or not on its own quick checks, run on every call (the catalog
answers, the index opens, the embedding model is loaded, there is free space): they are
fresh and cost milliseconds. The doctor's checks include slow ones — a request to every
model provider, one embedding, Redis, Milvus, each SQL source — so ``/readyz?verbose=1``
reports them from a cache: a call that finds the report older than ``api.ready_check_s``
starts one refresh in a background thread and answers at once with what it has (the
first call: nothing yet, ``refreshing: true``). The cached verdicts are reported with
their reasons and age but never turn the answer into a 503: they may be a minute old,
and a provider or a SQL source that is down leaves this process able to serve (answers
fall back, other providers take over), which is what a load balancer asks.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from hanrag.ops.doctor import DoctorReport, run_doctor

if TYPE_CHECKING:
    from hanrag.engine import Engine

log = logging.getLogger("hanrag.ops")


class ReadinessCache:
    def __init__(self, engine: Engine, interval_s: float) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._report: DoctorReport | None = None
        self._finished_at: float | None = None
        self._refreshing: threading.Thread | None = None
        self._error: str | None = None

    def _refresh(self) -> None:
        try:
            report = run_doctor(self.engine)
            with self._lock:
                self._report, self._finished_at, self._error = report, time.monotonic(), None
            if report.failed:
                log.warning(
                    "doctor: checks failed",
                    extra={"checks": [f"{r.name}: {r.detail}" for r in report.failed]},
                )
        except Exception as exc:  # the checks catch their own errors; this is a bug guard
            with self._lock:
                self._error, self._finished_at = type(exc).__name__, time.monotonic()
            log.error("doctor: the background checks failed", exc_info=exc)
        finally:
            with self._lock:
                self._refreshing = None

    def snapshot(self, *, refresh: bool = True) -> dict[str, Any]:
        """The cached report with its age; a refresh is started when it is stale."""
        with self._lock:
            age = None if self._finished_at is None else time.monotonic() - self._finished_at
            stale = age is None or age >= self.interval_s
            if refresh and stale and self._refreshing is None:
                thread = threading.Thread(target=self._refresh, name="hanrag-readiness", daemon=True)
                self._refreshing = thread
                thread.start()
            report, error, refreshing = self._report, self._error, self._refreshing is not None
        body: dict[str, Any] = {
            "age_s": None if age is None else round(age, 1),
            "interval_s": self.interval_s,
            "refreshing": refreshing,
        }
        if error is not None:
            body["error"] = error
        if report is None:
            body["checks"] = []
            return body
        body.update(report.as_dict())
        body["problems"] = [
            f"{r.name}: {r.detail}" + (f" — {r.remedy}" if r.remedy else "")
            for r in report.results
            if r.verdict in ("fail", "warn")
        ]
        return body
