"""Liveness, readiness and Prometheus metrics.

``/readyz`` decides on quick checks run on every call (the index opens, the catalog
answers, the embedding model is loaded, there is free space), naming the one that
failed and why; ``/readyz?verbose=1`` adds the report of ``hanrag doctor`` from a cache
refreshed in the background (see :mod:`hanrag.ops.readiness`), never waiting for it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hanrag.api import metrics
from hanrag.api.deps import get_engine
from hanrag.api.problems import problem
from hanrag.api.storage import monitor_of

router = APIRouter(tags=["health"])
_readiness_lock = threading.Lock()


def readiness_of(request: Request) -> Any:
    """This app's cache of the doctor's report (None with ``api.ready_check_s`` 0)."""
    from hanrag.ops.readiness import ReadinessCache

    state = request.app.state
    with _readiness_lock:
        cache = getattr(state, "readiness", None)
        interval = state.settings.api.ready_check_s
        if cache is None and interval > 0:
            cache = state.readiness = ReadinessCache(get_engine(request), interval)
        return cache


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Index and models are usable", responses={503: {"description": "not ready"}})
async def readyz(
    request: Request,
    verbose: bool = Query(
        False, description="Add the doctor's checks (cached, refreshed in the background)."
    ),
) -> Response:
    from hanrag.ops.checks import reason

    engine = get_engine(request)
    checks: dict[str, str] = {}
    extra: dict[str, Any] = {"checks": checks}
    if verbose:
        cache = readiness_of(request)
        extra["doctor"] = cache.snapshot() if cache is not None else None

    def probe() -> None:
        for name, check in (
            ("index", lambda: engine.index.stats()),
            ("catalog", lambda: engine.catalog.count()),
            ("embedder", lambda: engine.shared_embedder.load()),
        ):
            try:
                check()
            except Exception as exc:
                checks[name] = reason(exc)
                raise
            checks[name] = "ok"

    monitor, settings = monitor_of(request.app), request.app.state.settings

    def storage() -> str | None:
        return monitor.problem(settings)

    try:
        await asyncio.to_thread(probe)
    except Exception as exc:
        failed = next(name for name, verdict in checks.items() if verdict != "ok")
        return problem(503, "not_ready", f"not ready: {failed}: {reason(exc)}", request=request, extra=extra)
    low = await asyncio.to_thread(storage)
    if low is not None:
        checks["storage"] = low
        return problem(503, "not_ready", f"not ready: storage: {low}", request=request, extra=extra)
    from fastapi.responses import JSONResponse

    return JSONResponse({"status": "ready", **extra})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus_metrics(request: Request) -> Response:
    engine = get_engine(request)
    cache = engine.__dict__.get("embedding_cache")
    if cache is not None and cache.hit_rate() is not None:
        metrics.EMBEDDING_CACHE_HIT_RATIO.set(cache.hit_rate())
    shared = engine.__dict__.get("shared_embedder")  # never loads a model to report it
    if shared is not None:
        model = shared.status()
        for gauge in (metrics.MODEL_LOADED, metrics.MODEL_LOAD_SECONDS, metrics.MODEL_MEMORY_BYTES):
            gauge.clear()  # a reload may have changed the model's name
        metrics.MODEL_LOADED.labels("embedding", model.name).set(1 if model.loaded else 0)
        if model.load_seconds is not None:
            metrics.MODEL_LOAD_SECONDS.labels("embedding", model.name).set(model.load_seconds)
        if model.memory_mb is not None:
            metrics.MODEL_MEMORY_BYTES.labels("embedding", model.name).set(model.memory_mb * 2**20)
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
