"""The ask flow: memory -> planner -> retrieval -> context -> generator -> events -> stored turn.

``AnswerEngine.ask`` is an async stream of the typed events of :mod:`hanrag.domain`
that the CLI, the HTTP API, the job worker and the evaluation harness all consume
(non-streaming consumers fold it with :func:`hanrag.domain.fold_answer`):

* ``references`` — the numbered sources (once, before any text),
* ``delta`` — answer text increments (never the whole text again),
* ``done`` — the :class:`~hanrag.domain.AnswerResult`: the full answer, the citations
  actually used, timings, usage,
* ``error`` — a stable code and a message; nothing is stored for that turn.

The engine is given exactly the parts it uses (``hanrag.engine`` assembles it); it
never sees the :class:`~hanrag.engine.Engine` itself.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from hanrag.answer.model import AskOptions, SearchFunction, cited_numbers, reference_of
from hanrag.answer.planner import Plan, Planner, retrieval_query
from hanrag.answer.prompts import (
    EXTRACTIVE_REPLIES,
    FALLBACK_NOTICE,
    TABLE_NEEDS_MODEL_NOTICE,
    PromptSet,
    answer_messages,
    table_answer_messages,
)
from hanrag.domain import (
    AnswerEvent,
    AnswerResult,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    Hit,
    ReferencesEvent,
    SearchFilters,
    fold_answer,
    to_epoch,
)
from hanrag.errors import HanragError, InvalidInputError
from hanrag.index.base import check_metadata_keys
from hanrag.korean.analyzer import require_text, sentences
from hanrag.llm.base import GenerationOptions, GenerationRequest, Generator, Source, Turn, Usage

if TYPE_CHECKING:
    from hanrag.answer.table_route import TableAnswer, TableRoute
    from hanrag.auth.audit import AuditLog
    from hanrag.settings import AnswerSettings
    from hanrag.store.sessions import SessionStore


class AnswerEngine:
    def __init__(
        self,
        *,
        search: SearchFunction,
        sessions: SessionStore,
        audit: AuditLog,
        count_tokens: Callable[[str], int],
        metadata_keys: Callable[[list[str] | None], set[str]],
        generator: Generator,
        planner: Planner,
        extractive: Generator,
        settings: AnswerSettings,
        generation_options: Callable[[], GenerationOptions],
        fallback_to_extractive: bool = True,
        writer_threads: int = 1,
        tables: TableRoute | None = None,
        prompts: PromptSet | None = None,
        sql_generator: Generator | None = None,
        vision: Generator | None = None,
        ensemble_members: Callable[[], list[tuple[str, Generator]]] | None = None,
        mode: str = "single",
        ensemble_timeout_s: float = 60.0,
        judge: Generator | None = None,
    ) -> None:
        """``search`` finds the passages, ``sessions`` and ``audit`` keep what an answer leaves
        behind, ``count_tokens`` measures the context budget, ``metadata_keys`` (the keys the
        given principals may read) checks metadata filters. ``extractive`` answers when
        ``generator`` fails before its first token and ``fallback_to_extractive`` allows it
        (it may be ``generator`` itself). ``generation_options`` gives the default sampling
        options; ``writer_threads`` store what answers leave behind. ``tables`` answers the
        questions the planner routes to ``table`` (none: they are answered from documents).
        ``prompts``: the operator's prompts (none: the Korean defaults). ``sql_generator`` writes
        the table route's SQL (none: ``generator``). ``vision`` describes a question's images
        (none: image questions are refused); ``ensemble_members`` are the providers that answer
        in ensemble mode (``mode``, or a request's own), each within ``ensemble_timeout_s``;
        ``judge`` (optional) adds its score of each candidate."""
        self.search = search
        self.sessions = sessions
        self.audit = audit
        self.count_tokens = count_tokens
        self.metadata_keys = metadata_keys
        self.generator = generator
        self.planner = planner
        self.settings = settings
        self.generation_options = generation_options
        self.fallback_to_extractive = fallback_to_extractive
        self._extractive = extractive
        self.tables = tables
        self.sql_generator = sql_generator
        self.vision = vision
        self.ensemble_members = ensemble_members
        self.mode = mode
        self.ensemble_timeout_s = ensemble_timeout_s
        self.judge = judge
        self.prompts = prompts
        self._writers = ThreadPoolExecutor(max_workers=writer_threads, thread_name_prefix="hanrag-turns")

    def close(self) -> None:
        self._writers.shutdown(wait=True)
        if self.tables is not None:
            self.tables.close()

    # ---------------------------------------------------------------- context

    def pack(self, hits: list[Hit]) -> list[Source]:
        """Numbered sources within the token budget: lowest-ranked passages go first,
        and a passage that does not fit whole is cut only between sentences."""
        budget = self.settings.context_tokens
        count = self.count_tokens
        sources: list[Source] = []
        for hit in hits:
            text = hit.chunk.text
            tokens = count(text)
            if tokens > budget:
                kept: list[str] = []
                used = 0
                for sentence in sentences(text):
                    sentence_tokens = count(sentence)
                    if used + sentence_tokens > budget:
                        break
                    kept.append(sentence)
                    used += sentence_tokens
                if not kept:
                    break
                text, tokens = " ".join(kept), used
            sources.append(Source(n=len(sources) + 1, hit=hit, text=text))
            budget -= tokens
            if budget <= 0:
                break
        return sources

    def _validate(self, question: str) -> str:
        return require_text(question, field="question", max_chars=self.settings.max_question_chars)

    def _window(self, turns: list[Turn]) -> list[Turn]:
        """The last ``memory_messages`` messages, starting with a question.

        Whole turns only: an odd window would start with an answer whose question was
        cut off, and chat templates that require user/assistant alternation reject that.
        """
        window = turns[-self.settings.memory_messages :] if self.settings.memory_messages else []
        while window and window[0].role != "user":
            window = window[1:]
        return window

    def _history(self, session_id: str | None) -> list[Turn]:
        if session_id is None or self.settings.memory_messages == 0:
            return []
        rows = self.sessions.messages(session_id, last=self.settings.memory_messages)
        return self._window([Turn(row.role, row.content) for row in rows])

    def check_request(
        self,
        question: str,
        *,
        session_id: str | None,
        principal: str | None,
        filters: SearchFilters | None,
        create_missing_session: bool = False,
    ) -> str:
        """The checks of an ask's input, before any work: run by :meth:`ask` and by the job
        routes at submit time, so a queued question is refused for the same reasons (and
        with the same codes) as a synchronous one. Returns the normalised question."""
        text = self._validate(question)
        self._check_session(session_id, principal, create_missing=create_missing_session)
        self._check_filters(filters)
        return text

    def _check_filters(self, filters: SearchFilters | None) -> None:
        if filters is not None and filters.metadata:
            check_metadata_keys(filters.metadata, self.metadata_keys(filters.principals))

    def _check_session(self, session_id: str | None, principal: str | None, *, create_missing: bool) -> bool:
        """Whether the session exists; refuses someone else's, and a missing one unless
        it may be created."""
        if session_id is None:
            return False
        missing = InvalidInputError(
            f"no session {session_id!r}", code="session_not_found", field="session_id"
        )
        if principal is not None:
            owner = self.sessions.owner(session_id)
            if owner is not None and owner != principal:
                raise missing  # someone else's conversation: refused exactly like a missing one
        exists = self.sessions.exists(session_id)
        if not exists and not create_missing:
            raise missing
        return exists

    def _open_session(
        self,
        session_id: str | None,
        principal: str | None,
        *,
        create_missing: bool,
        load_history: bool,
        filters: SearchFilters | None = None,
    ) -> list[Turn]:
        """Check (or create) the caller's session and return its recent turns."""
        self._check_filters(filters)
        if session_id is None:
            return []
        if not self._check_session(session_id, principal, create_missing=create_missing):
            try:
                self.sessions.create(session_id, principal=principal)
            except InvalidInputError as exc:
                # Another request created the room first (two first turns racing): use it.
                if exc.code != "session_exists":
                    raise
        return self._history(session_id) if load_history else []

    def _retrieve(
        self, plan: Plan, filters: SearchFilters | None, principals: list[str] | None, options: AskOptions
    ) -> list[Source]:
        """The numbered sources for a plan (none when retrieval is off or not needed)."""
        hits: list[Hit] = []
        if options.rag and plan.route != "none":
            search_filters = self._filters(plan, filters)
            if principals is not None:
                search_filters = replace(search_filters, principals=principals)
            hits = self.search(
                retrieval_query(plan), k=options.k or self.settings.k, filters=search_filters
            ).hits
        return self.pack(hits)

    def _record_turn(
        self,
        session_id: str | None,
        principal: str | None,
        *,
        new_session: bool,
        store_turn: bool,
        question: str,
        answer: str,
        citations: list[dict[str, Any]],
        references: list[dict[str, Any]],
        end_user: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        if store_turn and session_id is not None:
            self.sessions.append_turn(
                session_id,
                question=question,
                answer=answer,
                cited_chunk_ids=[c["chunk_id"] for c in citations],
                references=references,
                create=new_session,
                principal=principal,
                meta=meta,  # the generator and timings, kept with the answer (P12)
            )
        self.audit.record(
            principal or "anonymous",
            "question",
            target=session_id,
            detail={
                "question": question[:500],
                "cited_documents": sorted({c["document_id"] for c in citations}),
                **({"end_user": end_user[:256]} if end_user else {}),
            },
        )

    def _filters(self, plan: Plan, filters: SearchFilters | None) -> SearchFilters:
        filters = filters or SearchFilters()
        if (
            self.settings.apply_time_filter
            and plan.time_range is not None
            and filters.date_from is None
            and filters.date_to is None
        ):
            start = datetime(
                plan.time_range.start.year, plan.time_range.start.month, plan.time_range.start.day
            )
            end = datetime(plan.time_range.end.year, plan.time_range.end.month, plan.time_range.end.day)
            filters = replace(filters, date_from=to_epoch(start), date_to=to_epoch(end) + 86399)
        return filters

    # -------------------------------------------------------------------- ask

    async def ask(
        self,
        question: str,
        *,
        session_id: str | None = None,
        principal: str | None = None,
        principals: list[str] | None = None,
        filters: SearchFilters | None = None,
        options: AskOptions | None = None,
    ) -> AsyncIterator[AnswerEvent]:
        options = options or AskOptions()
        started = time.perf_counter()
        timings: dict[str, float] = {}
        try:
            text = self._validate(question)
            # Two thread hops before the first event (the session's checks and memory, then
            # search and packing), not one per step: under load every hop waits its turn.
            opened = await asyncio.to_thread(
                self._open_session,
                session_id,
                principal,
                create_missing=options.create_missing_session,
                load_history=options.history is None,
                filters=filters,
            )
            history = self._window(options.history) if options.history is not None else opened
            # An image question: the vision model's description joins the question for
            # planning and retrieval (the stored question stays the user's own words).
            asked = await self._with_image_description(text, options, timings)
            plan = await self.planner.plan(asked, history, options.today or date.today())
            timings["planning_ms"] = round((time.perf_counter() - started) * 1000, 2)
            table, notice = await self._table_step(plan, principals, history, options, timings)
            search_started = time.perf_counter()
            sources = (
                [] if table else await asyncio.to_thread(self._retrieve, plan, filters, principals, options)
            )
            timings["retrieval_ms"] = round((time.perf_counter() - search_started) * 1000, 2)
        except HanragError as exc:
            yield ErrorEvent(exc)
            return
        references = [reference_of(s) for s in sources]
        yield ReferencesEvent(references, plan.as_dict(), table.as_dict() if table else None)

        rag = options.rag and plan.route != "none"
        given = sources if options.rag else []
        today = (options.today or date.today()).isoformat()
        messages = (
            table_answer_messages(
                plan.question,
                table.sql,
                table.rows_markdown(self.tables.settings.prompt_rows if self.tables else 30),
                history,
                options.instructions,
                today=today,
                prompts=self.prompts,
            )
            if table
            else answer_messages(
                plan.question, given, history, rag, options.instructions, today=today, prompts=self.prompts
            )
        )
        if options.images and getattr(self.generator, "can_see", False) and messages:
            # The answering model sees the images too (on the question's own turn).
            messages[-1] = replace(messages[-1], images=list(options.images))
        request = GenerationRequest(
            question=plan.question,
            sources=given,
            messages=messages,
            rag=rag,
            options=options.stream_generation or self.generation_options(),
            replies=EXTRACTIVE_REPLIES,
        )
        parts: list[str] = []
        # Whitespace at the end of a delta is held back until more text follows, and leading
        # whitespace is dropped, so the deltas concatenate exactly to the (stripped) answer.
        held = ""
        usage: Usage | None = None
        fallback: str | None = None
        generation_started = time.perf_counter()
        generator: Generator = self.generator
        ensemble = None
        if table is None and rag and (options.mode or self.mode) == "ensemble":
            ensemble = await self._ensemble(request, sources, options)
            if ensemble is not None:
                text_out, usage, generator, _ = ensemble
                timings["time_to_first_token_ms"] = round((time.perf_counter() - started) * 1000, 2)
                parts.append(text_out)
                yield DeltaEvent(text_out)
        while ensemble is None:
            try:
                async for chunk in generator.stream(request):
                    if chunk.usage is not None:
                        usage = chunk.usage
                    piece = chunk.text.lstrip() if not parts else chunk.text
                    body = piece.rstrip()
                    if not body:
                        held += piece if parts else ""
                        continue
                    piece, held = held + body, piece[len(body) :]
                    if not parts:
                        timings["time_to_first_token_ms"] = round((time.perf_counter() - started) * 1000, 2)
                    parts.append(piece)
                    yield DeltaEvent(piece)
                break
            except HanragError as exc:
                if table is not None and not parts:
                    # The rows are there: say what they show without the model.
                    fallback = f"{exc.code}: {FALLBACK_NOTICE}"
                    parts.append(table.plain_answer())
                    yield DeltaEvent(parts[-1])
                    break
                can_fall_back = (
                    not parts
                    and generator is not self._extractive
                    and self.fallback_to_extractive
                    and request.rag
                )
                if not can_fall_back:
                    yield ErrorEvent(exc)
                    return
                fallback = f"{exc.code}: {FALLBACK_NOTICE}"
                generator = self._extractive
        if notice:
            parts.append(("\n\n" if parts else "") + notice)
            yield DeltaEvent(parts[-1])
        timings["generation_ms"] = round((time.perf_counter() - generation_started) * 1000, 2)
        answer = "".join(parts)
        by_number = {s.n: s for s in sources}
        citations = [
            {key: ref[key] for key in ("n", "chunk_id", "document_id", "source", "title", "page")}
            for ref in (reference_of(by_number[n]) for n in cited_numbers(answer) if n in by_number)
        ]
        new_session = options.history is None and session_id is None
        if new_session:
            session_id = uuid.uuid4().hex
        # One thread hop for what an answer leaves behind: the turn (with its new session, in
        # one transaction) and the audit row.
        await asyncio.get_running_loop().run_in_executor(
            self._writers,
            functools.partial(
                self._record_turn,
                session_id,
                principal,
                new_session=new_session,
                store_turn=options.history is None,
                question=text,
                answer=answer,
                citations=citations,
                references=references,
                end_user=options.end_user,
                meta={
                    "generator": generator.name,
                    "timings": {**timings, "total_ms": round((time.perf_counter() - started) * 1000, 2)},
                },
            ),
        )
        timings["total_ms"] = round((time.perf_counter() - started) * 1000, 2)
        yield DoneEvent(
            AnswerResult(
                answer=answer,
                citations=citations,
                references=references,
                session_id=session_id,
                timings=timings,
                usage=usage.as_dict() if usage else None,
                plan=plan.as_dict(),
                fallback=fallback,
                generator=generator.name,
                table=table.as_dict() if table else None,
                ensemble=ensemble[3] if ensemble is not None else None,
            )
        )

    async def _with_image_description(self, text: str, options: AskOptions, timings: dict[str, float]) -> str:
        if not options.images:
            return text
        if self.vision is None:
            raise InvalidInputError(
                "이미지가 포함된 질문에 답하려면 이미지 분석 모델(vision 역할의 모델)이 필요합니다.",
                code="vision_unavailable",
                field="images",
            )
        from hanrag.answer.images import describe_images

        started = time.perf_counter()
        description = await describe_images(
            self.vision, text, options.images, today=options.today or date.today(), prompts=self.prompts
        )
        timings["vision_ms"] = round((time.perf_counter() - started) * 1000, 2)
        return f"{text}\n\n[이미지 설명] {description}" if description else text

    async def _ensemble(
        self, request: GenerationRequest, sources: list[Source], options: AskOptions
    ) -> tuple[str, Usage | None, Generator, dict[str, Any]] | None:
        """The best-scored of several providers' answers (None: fewer than two providers,
        or none answered — the single-provider path then runs, with its fallbacks)."""
        members = self.ensemble_members() if self.ensemble_members is not None else []
        if len(members) < 2:
            return None
        from hanrag.answer.ensemble import ensemble_info, run_ensemble

        scored, usages = await run_ensemble(members, request, sources, timeout_s=self.ensemble_timeout_s)
        if self.judge is not None:
            from hanrag.answer.ensemble import judge_candidates
            from hanrag.answer.prompts import judge_messages, judge_score

            def messages_for(answer: str) -> list[Turn]:
                return judge_messages(request.question, sources, answer, prompts=self.prompts)

            scored = await judge_candidates(
                scored, self.judge, messages_for, judge_score, timeout_s=self.ensemble_timeout_s
            )
        best = scored[0]
        if best.candidate.error is not None or not best.candidate.text:
            return None
        chosen = next(m for name, m in members if name == best.candidate.provider)
        info = ensemble_info(scored, with_candidates=options.candidates)
        return best.candidate.text, usages.get(id(best.candidate)), chosen, info

    async def _table_step(
        self,
        plan: Plan,
        principals: list[str] | None,
        history: list[Turn],
        options: AskOptions,
        timings: dict[str, float],
    ) -> tuple[TableAnswer | None, str | None]:
        """The table route for a plan routed to ``table``: its answer, or (the plan then
        routed to documents) None and the notice the answer must end with."""
        if plan.route != "table":
            return None, None
        plan.route = "documents"
        if self.tables is None or not options.rag:
            return None, None
        scope = None if principals is None else tuple(principals)
        if not await asyncio.to_thread(self.tables.available, scope):
            plan.notes.append("no table the asker may query; answered from documents")
            return None, None
        sql_generator = self.sql_generator or self.generator
        if not sql_generator.is_llm:
            return None, TABLE_NEEDS_MODEL_NOTICE
        from hanrag.answer.table_route import TableRouteError

        try:
            table = await self.tables.answer(
                plan.question,
                principals=scope,
                generator=sql_generator,
                history=history,
                today=options.today or date.today(),
            )
        except (TableRouteError, HanragError) as exc:
            plan.notes.append(f"table route failed ({exc.code}); answered from documents")
            return None, None
        plan.route = "table"
        timings.update(table.timings)
        return table, None

    async def ask_result(self, question: str, **kwargs: Any) -> AnswerResult:
        """Non-streaming (the arguments of :meth:`ask`): the stream folded into its result;
        an error event raises its exception."""
        return await fold_answer(self.ask(question, **kwargs))
