"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hanrag.api import metrics
from hanrag.api.deps import get_engine
from hanrag.api.problems import problem
from hanrag.api.storage import monitor_of

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Index and models are usable", responses={503: {"description": "not ready"}})
async def readyz(request: Request) -> Response:
    engine = get_engine(request)
    checks: dict[str, str] = {}

    def probe() -> None:
        engine.index.stats()
        checks["index"] = "ok"
        engine.catalog.count()
        checks["catalog"] = "ok"
        engine.shared_embedder.load()
        checks["embedder"] = "ok"

    monitor, settings = monitor_of(request.app), request.app.state.settings

    def storage() -> str | None:
        return monitor.problem(settings)

    try:
        await asyncio.to_thread(probe)
    except Exception as exc:
        return problem(
            503, "not_ready", f"not ready: {type(exc).__name__}", request=request, extra={"checks": checks}
        )
    low = await asyncio.to_thread(storage)
    if low is not None:
        checks["storage"] = low
        return problem(
            503, "not_ready", f"not ready: storage: {low}", request=request, extra={"checks": checks}
        )
    from fastapi.responses import JSONResponse

    return JSONResponse({"status": "ready", "checks": checks})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus_metrics(request: Request) -> Response:
    cache = get_engine(request).__dict__.get("embedding_cache")
    if cache is not None and cache.hit_rate() is not None:
        metrics.EMBEDDING_CACHE_HIT_RATIO.set(cache.hit_rate())
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
