"""Company vocabulary (admins only): the Kiwi user dictionary, synonyms, stop-words.

``GET /admin/vocab`` the vocabulary; ``POST /admin/vocab/{kind}`` adds terms and ``DELETE
/admin/vocab/{kind}?term=…`` removes them (``kind``: words, synonyms, stopwords; a POST to
synonyms makes its terms one group). A change of the words queues a ``vocab_reindex`` job
(lexical-only: nothing is embedded again) unless ``reindex`` is false; its id is in
``reindex_job_id``. ``POST /admin/vocab/reindex`` queues one on demand.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from hanrag.api.auth import client_ip, require
from hanrag.api.deps import current_caller, get_engine
from hanrag.api.routers.jobs import queue_of
from hanrag.auth.service import Identity
from hanrag.jobs.base import JobRecord
from hanrag.jobs.vocab_reindex import KIND
from hanrag.korean.vocabulary import VocabularyFile

router = APIRouter(tags=["admin"])

Kind = Literal["words", "synonyms", "stopwords"]
Admin = Annotated[Identity, require("admin")]


class TermsIn(BaseModel):
    terms: list[str] = Field(..., min_length=1, max_length=1000)
    tag: str = Field("NNP", max_length=8, description="Kiwi tag of added words (NNP, NNG, SL …)")
    reindex: bool = Field(True, description="Queue a lexical re-index when the words changed")


def _file(request: Request) -> VocabularyFile:
    return VocabularyFile(get_engine(request).settings.data_dir)


async def _queue_reindex(request: Request) -> str:
    caller = current_caller(request)
    record = JobRecord(kind=KIND, payload={}, principal=caller.name, principals=caller.principal_list)
    record = await queue_of(request).enqueue(record)
    return record.id


async def _change(
    request: Request, actor: Identity, kind: Kind, action: str, body: TermsIn
) -> dict[str, Any]:
    file = _file(request)

    def change() -> tuple[int, int]:
        with file.changing() as vocabulary:
            before = vocabulary.version
            if kind == "words":
                (
                    vocabulary.add_words(body.terms, body.tag)
                    if action == "add"
                    else vocabulary.remove_words(body.terms)
                )
            elif kind == "synonyms":
                (vocabulary.add_synonyms if action == "add" else vocabulary.remove_synonyms)(body.terms)
            else:
                (vocabulary.add_stopwords if action == "add" else vocabulary.remove_stopwords)(body.terms)
        return before, file.load().version

    before, after = await asyncio.to_thread(change)
    engine = get_engine(request)
    await asyncio.to_thread(
        engine.audit.record,
        actor.username,
        f"vocab_{action}",
        target=kind,
        detail={"terms": body.terms[:100]},
        ip=client_ip(request),
    )
    job_id = None
    if kind == "words" and after != before and body.reindex:
        job_id = await _queue_reindex(request)
    vocabulary = await asyncio.to_thread(file.load)
    return {**vocabulary.as_dict(), "changed": after != before, "reindex_job_id": job_id}


@router.get("/admin/vocab", summary="The company vocabulary")
async def get_vocab(request: Request, _: Admin) -> dict[str, Any]:
    vocabulary = await asyncio.to_thread(_file(request).load)
    return vocabulary.as_dict()


@router.post("/admin/vocab/reindex", status_code=202, summary="Queue a lexical-only re-index")
async def reindex_vocab(request: Request, _: Admin) -> dict[str, Any]:
    return {"job_id": await _queue_reindex(request), "state": "queued"}


@router.post("/admin/vocab/{kind}", summary="Add dictionary words, one synonym group, or stop-words")
async def add_vocab(kind: Kind, body: TermsIn, request: Request, actor: Admin) -> dict[str, Any]:
    return await _change(request, actor, kind, "add", body)


@router.delete("/admin/vocab/{kind}", summary="Remove dictionary words, synonyms, or stop-words")
async def remove_vocab(
    kind: Kind,
    request: Request,
    actor: Admin,
    term: Annotated[list[str], Query(min_length=1, max_length=1000)],
    reindex: bool = True,
) -> dict[str, Any]:
    return await _change(request, actor, kind, "remove", TermsIn(terms=term, reindex=reindex))
