"""Documents: multipart upload, paged listing and search, details, original download, delete, re-index."""

from __future__ import annotations

import asyncio
import json
import unicodedata
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile

from hanrag.api import metrics
from hanrag.api.auth import require
from hanrag.api.deps import CallerDep, get_engine, with_timeout
from hanrag.api.schemas import DocumentOut, DocumentPage, IngestOutcomeOut
from hanrag.auth.service import Identity
from hanrag.errors import InvalidInputError

# Larger offsets overflow the database's 64-bit integers (that was a 500); no listing is that long.
MAX_OFFSET = 1_000_000_000

router = APIRouter(tags=["documents"])


@router.post(
    "/documents",
    response_model=IngestOutcomeOut,
    status_code=201,
    summary="Upload and ingest one file (multipart/form-data)",
)
async def upload_document(
    request: Request,
    caller: CallerDep,
    _editor: Annotated[Identity, require("editor")],
    file: Annotated[
        UploadFile, File(description="The document (PDF, DOCX, XLSX, HWP/HWPX, HTML, MD, TXT, CSV, JSON).")
    ],
    acl: Annotated[list[str] | None, Form(description="public, user:NAME or group:NAME; repeatable.")] = None,
    metadata: Annotated[
        str | None, Form(description='A JSON object of string values, e.g. {"dept": "법무"}.')
    ] = None,
) -> Any:
    engine = get_engine(request)
    meta: dict[str, str] = {}
    if metadata:
        try:
            parsed = json.loads(metadata)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(
                "metadata is not valid JSON", code="invalid_metadata", field="metadata"
            ) from exc
        if not isinstance(parsed, dict) or not all(isinstance(v, str | int | float) for v in parsed.values()):
            raise InvalidInputError(
                "metadata must be a JSON object of strings", code="invalid_metadata", field="metadata"
            )
        meta = {str(k): str(v) for k, v in parsed.items()}
    data = await file.read()
    outcome = await with_timeout(
        request,
        asyncio.to_thread(
            engine.ingest_upload,
            data,
            file.filename or "upload",
            acl=acl or None,
            metadata=meta,
            caller=caller,
        ),
    )
    metrics.INGESTED_DOCUMENTS.labels(outcome.status).inc()
    if outcome.status == "failed":
        from hanrag.errors import ForbiddenError, ParseError

        if outcome.error_code == "not_permitted":
            raise ForbiddenError(outcome.error or "not permitted", code="not_permitted", field="file")
        raise ParseError(
            outcome.error or "the file could not be ingested", code=outcome.error_code or "parse_error"
        )
    return outcome.as_dict()


@router.get("/documents", response_model=DocumentPage, summary="List documents (paged)")
async def list_documents(
    request: Request,
    caller: CallerDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    status: Annotated[str | None, Query(pattern="^(indexed|failed|indexing)$")] = None,
    q: Annotated[
        str | None, Query(max_length=200, description="Only titles or file names holding this (any case).")
    ] = None,
) -> Any:
    rows, total = await asyncio.to_thread(
        get_engine(request).document_page,
        caller=caller,
        offset=offset,
        limit=limit,
        status=status,
        q=(q or "").strip(),
    )
    return {"items": [r.as_dict() for r in rows], "total": total, "offset": offset, "limit": limit}


@router.get("/documents/{document_id}", response_model=DocumentOut, summary="One document's catalog entry")
async def get_document(document_id: str, request: Request, caller: CallerDep) -> Any:
    row = await asyncio.to_thread(get_engine(request).get_document, document_id, caller=caller)
    return row.as_dict()


def content_disposition(filename: str) -> str:
    """``attachment`` with the name twice: an ASCII stand-in, and the real (Korean) name
    percent-encoded as UTF-8 (RFC 6266 / RFC 5987 ``filename*``)."""
    name = unicodedata.normalize("NFC", filename) or "download"
    fallback = "".join(ch if " " <= ch <= "~" and ch not in '"\\%;' else "_" for ch in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


@router.get(
    "/documents/{document_id}/original",
    summary="Download a document's original file",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download_original(document_id: str, request: Request, caller: CallerDep) -> Response:
    """Always an attachment, never shown inline: HTML, SVG and other types a browser would
    render come as ``application/octet-stream`` (see :mod:`hanrag.ingest.originals`)."""
    original = await with_timeout(
        request, asyncio.to_thread(get_engine(request).document_original, document_id, caller=caller)
    )
    return Response(
        content=original.data,
        headers={
            # Set here, not as media_type: Starlette would add a charset the file may not have.
            "Content-Type": original.media_type,
            "Content-Disposition": content_disposition(original.filename),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, no-store",
        },
    )


@router.delete("/documents/{document_id}", summary="Delete a document and its chunks")
async def delete_document(
    document_id: str, request: Request, caller: CallerDep, _editor: Annotated[Identity, require("editor")]
) -> dict[str, Any]:
    row, removed = await asyncio.to_thread(get_engine(request).delete_document, document_id, caller=caller)
    return {"document_id": row.id, "deleted": True, "chunks_removed": removed}


@router.post(
    "/documents/{document_id}/reindex", response_model=IngestOutcomeOut, summary="Re-index from the source"
)
async def reindex_document(
    document_id: str, request: Request, caller: CallerDep, _editor: Annotated[Identity, require("editor")]
) -> Any:
    outcome = await with_timeout(
        request, asyncio.to_thread(get_engine(request).reindex, document_id, caller=caller)
    )
    return outcome.as_dict()
