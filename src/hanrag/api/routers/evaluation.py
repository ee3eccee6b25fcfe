"""Evaluation runs for the web app's administration (admins only, issue P13).

``GET /admin/eval/runs`` lists the stored runs (``<data_dir>/eval/runs/<run_id>/``) with
their summary means, ``GET /admin/eval/runs/{run_id}`` gives a run's manifest and summary,
``GET /admin/eval/runs/{run_id}/report`` renders its self-contained HTML report on demand.

The report is served with ``Content-Security-Policy: sandbox allow-scripts; ...``: the
sandbox (without ``allow-same-origin``) gives the page an opaque origin, so even if it were
opened straight from this URL its own filter script runs without the app's origin (no
storage, no tokens, no same-origin requests), and the policy allows only that one inline
script (by its sha256, as the report's own CSP meta does), inline styles and ``data:``
images — nothing can be fetched. ``?download=true`` sends it as an attachment instead.

Run ids are checked (letters, digits, ``.``, ``_``, ``-``; first a letter or digit) and the
run's directory must resolve directly under the runs root (no traversal, no symlink out).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from hanrag.api.auth import require
from hanrag.api.deps import get_engine
from hanrag.auth.service import Identity
from hanrag.errors import NotFoundError
from hanrag.eval.report import SCRIPT, render_html, report_data
from hanrag.eval.runs import RunStore, check_run_id, list_runs, runs_root, summarise

router = APIRouter(tags=["evaluation"])

_DIGEST = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
REPORT_CSP = (
    "sandbox allow-scripts; default-src 'none'; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{_DIGEST}'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def _data_dir(request: Request) -> Path:
    return Path(get_engine(request).settings.data_dir)


def run_store(data_dir: Path, run_id: str) -> RunStore:
    """The run ``run_id`` under ``data_dir``'s runs root, or 400 (bad id) / 404."""
    check_run_id(run_id)
    root = runs_root(data_dir).resolve()
    directory = (root / run_id).resolve()
    store = RunStore(directory)
    if directory.parent != root or directory.name != run_id or not store.exists:
        raise NotFoundError(f"no evaluation run {run_id!r}", code="run_not_found", field="run_id")
    return store


@router.get("/admin/eval/runs", summary="Stored evaluation runs, newest first, with their summary means")
async def runs(request: Request, _: Identity = require("admin")) -> list[dict[str, Any]]:
    return await asyncio.to_thread(list_runs, _data_dir(request))


def _show(data_dir: Path, run_id: str) -> dict[str, Any]:
    store = run_store(data_dir, run_id)
    manifest = store.manifest()
    summary = store.summary() or summarise(manifest, store.rows())
    return {"run_id": store.run_id, "manifest": manifest, "summary": summary}


@router.get("/admin/eval/runs/{run_id}", summary="One run's manifest and summary")
async def show(run_id: str, request: Request, _: Identity = require("admin")) -> dict[str, Any]:
    return await asyncio.to_thread(_show, _data_dir(request), run_id)


def _render(data_dir: Path, run_id: str) -> str:
    return render_html(report_data(run_store(data_dir, run_id)))


@router.get(
    "/admin/eval/runs/{run_id}/report",
    summary="One run's self-contained HTML report (sandboxed)",
    response_class=Response,
    responses={200: {"content": {"text/html": {}}}},
)
async def report(
    run_id: str, request: Request, download: bool = False, _: Identity = require("admin")
) -> Response:
    html = await asyncio.to_thread(_render, _data_dir(request), run_id)
    headers = {
        "Content-Security-Policy": REPORT_CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "private, no-store",
    }
    if download:  # the id is checked: only [A-Za-z0-9._-]
        headers["Content-Disposition"] = f'attachment; filename="hanrag-eval-{run_id}.html"'
    return Response(content=html, media_type="text/html; charset=utf-8", headers=headers)
