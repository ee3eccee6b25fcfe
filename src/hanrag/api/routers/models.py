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
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from hanrag.api import metrics
from hanrag.api.deps import CallerDep, get_engine
from hanrag.llm import metrics as llm_metrics

metrics.REGISTRY.register(llm_metrics.REGISTRY)

router = APIRouter(tags=["models"])


@router.get(
    "/models/status", summary="Embedding model and model providers: breaker state, latency, errors, cost"
)
async def model_providers_status(request: Request, caller: CallerDep) -> dict[str, Any]:
    return await asyncio.to_thread(get_engine(request).model_status)
