"""Model providers' live state: ``GET /api/v1/models/status``.

The embedding model and the answer generator as before (``embedder``, ``generator``),
and every provider of the registry with its breaker state, latency, errors, tokens and
cost, and the providers of each role. Any authenticated caller may read it (it says
which models answer and whether they are up, as a status page would); it never shows an
API key nor a base URL's credentials. It is included before the native router, whose
older handler of the same path (embedder and generator only) it supersedes.

The providers' Prometheus metrics (``hanrag.llm.metrics``) live in their own registry,
because the services layer may not import the API; it is mounted here, once per process,
into the registry ``/metrics`` serves.

``POST /api/v1/admin/models/reload`` (administrators) reads the settings again and
reloads the providers, the prompts and the embedding model without a restart (see
:mod:`hanrag.ops.models`); the last reload, or why it failed, shows in the status.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from hanrag.api import metrics
from hanrag.api.auth import client_ip, require
from hanrag.api.deps import CallerDep, get_engine
from hanrag.auth.service import Identity
from hanrag.llm import metrics as llm_metrics
from hanrag.ops.models import last_reload, reload_models

metrics.REGISTRY.register(llm_metrics.REGISTRY)

# Tags per route: the reload is an administration route (and tagged so).
router = APIRouter()


@router.get(
    "/models/status",
    summary="Embedding model and model providers: breaker state, latency, errors, cost",
    tags=["models"],
)
async def model_providers_status(request: Request, caller: CallerDep) -> dict[str, Any]:
    engine = get_engine(request)
    status = await asyncio.to_thread(engine.model_status)
    status["reload"] = last_reload(engine)
    return status


class ReloadIn(BaseModel):
    providers: bool = True
    embedder: bool = True
    # Serve another embedding model although the index holds vectors of the old one.
    force: bool = False


@router.post(
    "/admin/models/reload",
    summary="Reload the model providers, prompts and embedding model from the settings, without a restart",
    tags=["admin"],
)
async def reload(
    request: Request, body: ReloadIn | None = None, actor: Identity = require("admin")
) -> dict[str, Any]:
    engine = get_engine(request)
    body = body or ReloadIn()
    try:
        result = await asyncio.to_thread(
            reload_models, engine, providers=body.providers, embedder=body.embedder, force=body.force
        )
    except Exception:
        metrics.MODEL_RELOADS.labels("failed").inc()
        raise
    metrics.MODEL_RELOADS.labels("ok").inc()
    await asyncio.to_thread(
        engine.audit.record,
        actor.username,
        "models_reload",
        target="models",
        detail={"reloaded": result["reloaded"]},
        ip=client_ip(request),
    )
    return result
