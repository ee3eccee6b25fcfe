"""``hanrag model list|test|benchmark``: the model providers of ``llm.providers`` (issue
P11) as the operator sees them — their state, a quick check of each, and a measurement.

* ``list`` shows what ``/api/v1/models/status`` shows (``Engine.model_status``): every
  provider with its kind, model, roles, priority, vision, breaker state and statistics,
  and the embedding model. No API key, nor a base URL's credentials, is ever printed.
* ``test`` sends each provider (or the one named) a short Korean prompt — a completion for
  a language model, a stream over a tiny made-up passage for the extractive generator —,
  an image to those that can see, and one Korean query to the embedding model. Any
  failure: the table, then one line on stderr naming the failed checks, exit 1.
* ``benchmark`` streams N answers to one fixed grounded prompt from each provider:
  time to first token (p50, p95), tokens per second, error rate.

Both call each provider DIRECTLY through its own handle's generator, never through a
role's router: a provider that fails is reported as failing instead of being hidden by a
fallback to the next one, and no retry smooths its error rate. The calls are recorded in
the handle's statistics (requests, errors, latency, time to first token, tokens, cost),
but not in its circuit breaker: a benchmark deliberately keeps calling a failing provider,
and the breaker's half-open probe protocol is the router's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from hanrag.cli.common import app, console, engine_session, fail, print_json, run, settings
from hanrag.domain import Chunk, Hit
from hanrag.engine import Engine
from hanrag.errors import HanragError, NotFoundError
from hanrag.llm.base import (
    GenerationChunk,
    GenerationOptions,
    GenerationRequest,
    GeneratorError,
    ImageInput,
    Source,
    Turn,
)
from hanrag.llm.registry import ProviderHandle, ProviderRegistry

model_app = typer.Typer(
    help="Model providers: list them with their state, test them, benchmark them.", no_args_is_help=True
)
app.add_typer(model_app, name="model")

# The checks' fixed texts (Korean, as the questions the models will get).
CHAT_SYSTEM = "당신은 짧고 정확하게 답하는 한국어 도우미입니다."
CHAT_PROMPT = "안녕하세요. 한 문장으로 자기소개를 해 주세요."
IMAGE_PROMPT = "이 그림의 주된 색은 무엇인가요? 한 단어로 답해 주세요."
EMBED_QUERY = "연차휴가 이월 규정"
QUESTION = "입사 3년차 직원의 연차휴가는 며칠인가요?"
PASSAGE = (
    "연차휴가는 입사 1년 후 15일이 주어진다. 3년 이상 근속한 직원에게는 2년마다 1일이 가산되어 "
    "3년차 직원의 연차휴가는 16일이다. 사용하지 못한 연차는 다음 해로 최대 5일까지 이월할 수 있다."
)
CHECK_MAX_TOKENS = 64
# A reply shown in the test table is cut to this many characters.
PREVIEW_CHARS = 60


# ---------------------------------------------------------------- helpers


def select_providers(registry: ProviderRegistry, name: str | None) -> list[ProviderHandle]:
    """Every provider, or the one named (``provider_not_found`` when none has that name)."""
    if name is None:
        return list(registry.providers)
    handle = registry.get(name)
    if handle is None:
        known = ", ".join(p.name for p in registry.providers) or "none"
        raise NotFoundError(
            f"no provider named {name!r} (configured: {known})", code="provider_not_found", field="provider"
        )
    return [handle]


def tiny_png() -> bytes:
    """A 32×32 red square with a white bar, as PNG (made with Pillow, no file needed)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (32, 32), (220, 30, 30))
    ImageDraw.Draw(image).rectangle((4, 13, 27, 18), fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def sample_sources() -> list[Source]:
    """One made-up passage, numbered [1] (for the extractive check and the benchmark)."""
    chunk = Chunk(
        chunk_id="model-check-1",
        document_id="model-check",
        position=0,
        text=PASSAGE,
        title="연차휴가 규정 (점검용)",
        source="model-check",
        content_hash="model-check",
        date=0,
    )
    return [Source(n=1, hit=Hit(chunk=chunk, score=1.0), text=PASSAGE)]


def estimate_tokens(text: str) -> int:
    """Output tokens when the provider reports no usage: a Hangul syllable (or a CJK
    character) about one token, other text about four characters a token."""
    wide = sum(1 for ch in text if "\uac00" <= ch <= "\ud7a3" or "\u3040" <= ch <= "\u9fff")
    narrow = sum(1 for ch in text if not ch.isspace()) - wide
    return wide + math.ceil(narrow / 4)


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) with linear interpolation between the nearest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def cell(value: object) -> str:
    return "-" if value is None else str(value)


def deadline(handle: ProviderHandle) -> float:
    """The longest one check may take (the adapter's own timeouts apply between reads)."""
    return handle.config.connect_timeout_s + 2 * handle.config.timeout_s


# ----------------------------------------------------------- one call, timed


@dataclass(slots=True)
class Call:
    """One call to one provider: whether it answered, how fast, and what."""

    ok: bool = False
    seconds: float = 0.0
    first_s: float | None = None  # first text chunk of a stream
    text: str = ""
    tokens_out: int | None = None  # from usage
    tokens_in: int | None = None
    code: str | None = None
    status: int | None = None
    message: str | None = None

    def out_tokens(self) -> tuple[int, bool]:
        """Output tokens and whether they were reported (False: estimated)."""
        if self.tokens_out is not None:
            return self.tokens_out, True
        return estimate_tokens(self.text), False


async def _timed(handle: ProviderHandle, work: Callable[[Call], Awaitable[None]]) -> Call:
    """Run one call to ``handle`` under its deadline, recording it in its statistics."""
    call = Call()
    stats = handle.stats
    with stats.lock:
        stats.requests += 1
    started = time.perf_counter()
    try:
        async with asyncio.timeout(deadline(handle)):
            await work(call)
    except TimeoutError:
        call.code, call.message = "llm_timeout", f"no complete answer within {deadline(handle):.0f} s"
    except HanragError as exc:
        call.code, call.message = exc.code, handle.scrub(exc.message)
        call.status = exc.status if isinstance(exc, GeneratorError) else None
    except Exception as exc:  # an SDK's own error: the check fails, the command goes on
        call.code, call.message = "llm_error", type(exc).__name__
    call.seconds = time.perf_counter() - started
    if call.code is None:
        call.ok = True
        stats.response(
            call.first_s if call.first_s is not None else call.seconds, first_chunk=call.first_s is not None
        )
        tokens_in, tokens_out = call.tokens_in or 0, call.tokens_out or 0
        stats.finished(call.seconds, tokens_in, tokens_out, handle.cost_of(tokens_in, tokens_out))
    else:
        stats.failed(call.code, call.status, call.message)
    return call


async def complete_call(handle: ProviderHandle, messages: list[Turn], options: GenerationOptions) -> Call:
    async def work(call: Call) -> None:
        call.text = await handle.generator.complete(messages, options)

    return await _timed(handle, work)


async def stream_call(handle: ProviderHandle, request: GenerationRequest) -> Call:
    async def work(call: Call) -> None:
        started = time.perf_counter()
        parts: list[str] = []
        stream: AsyncIterator[GenerationChunk] = handle.generator.stream(request)
        try:
            async for chunk in stream:
                if chunk.text:
                    if call.first_s is None:
                        call.first_s = time.perf_counter() - started
                    parts.append(chunk.text)
                if chunk.usage is not None:
                    call.tokens_in = chunk.usage.prompt_tokens
                    call.tokens_out = chunk.usage.completion_tokens
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):  # closing must not hide the call's error
                    await aclose()
        call.text = "".join(parts)

    return await _timed(handle, work)


# ------------------------------------------------------------------ list


@model_app.command("list")
def list_models(
    provider: Annotated[str | None, typer.Option("--provider", help="Only this provider.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the providers (kind, model, roles, priority, vision, breaker, statistics) and the
    embedding model; API keys are never shown."""

    def listing() -> dict[str, Any]:
        with engine_session() as engine:
            status = engine.model_status()
            names = {p.name for p in select_providers(engine.llm_registry, provider)}
            status["providers"] = [p for p in status["providers"] if p["name"] in names]
            return status

    status = run(listing)
    if as_json:
        print_json(status)
        return
    table = Table(
        "provider",
        "kind",
        "model",
        "roles",
        "prio",
        "vision",
        "breaker",
        "requests",
        "errors",
        "latency ms",
        title=f"model providers (strategy {status['strategy']}, mode {status['mode']})",
    )
    for item in status["providers"]:
        table.add_row(
            escape(item["name"]),
            item["kind"],
            escape(str(item["model"])),
            ", ".join(item["roles"]),
            str(item["priority"]),
            "yes" if item["vision"] else "no",
            item["state"],
            str(item["requests"]),
            str(item["errors"]),
            cell(item["latency_ms"]),
        )
    console.print(table)
    embedder = status["embedder"]
    dimension = embedder["dimension"] if embedder["loaded"] else "not loaded"
    console.print(
        f"embedding model: {escape(str(embedder['name']))} ({embedder['backend']}, {embedder['device']}, "
        f"dimension {dimension})"
    )


# ------------------------------------------------------------------ test


@dataclass(slots=True)
class CheckResult:
    provider: str
    kind: str
    model: str
    check: str  # chat | stream | vision | embedding
    ok: bool
    latency_ms: float | None
    code: str | None = None
    message: str | None = None
    reply: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "kind": self.kind,
            "model": self.model,
            "check": self.check,
            "ok": self.ok,
            "latency_ms": self.latency_ms,
            "code": self.code,
            "message": self.message,
            "reply": self.reply,
            **self.detail,
        }


def _result(handle: ProviderHandle, check: str, call: Call) -> CheckResult:
    reply = " ".join(call.text.split())
    if call.ok and not reply:
        call.ok, call.code, call.message = False, "llm_empty_reply", "the provider answered nothing"
    return CheckResult(
        provider=handle.name,
        kind=handle.config.kind,
        model=str(getattr(handle.generator, "name", handle.config.model)),
        check=check,
        ok=call.ok,
        latency_ms=ms(call.seconds),
        code=call.code,
        message=call.message,
        reply=reply[:PREVIEW_CHARS] if reply else None,
    )


async def check_provider(handle: ProviderHandle, options: GenerationOptions) -> list[CheckResult]:
    """A language model: one completion (and one with an image when it can see); the
    extractive generator: one stream over the made-up passage."""
    if not handle.is_llm:
        request = GenerationRequest(question=QUESTION, sources=sample_sources(), options=options)
        return [_result(handle, "stream", await stream_call(handle, request))]
    messages = [Turn("system", CHAT_SYSTEM), Turn("user", CHAT_PROMPT)]
    results = [_result(handle, "chat", await complete_call(handle, messages, options))]
    if handle.can_see:
        image = ImageInput(mime_type="image/png", data=tiny_png())
        seeing = [Turn("user", IMAGE_PROMPT, images=[image])]
        results.append(_result(handle, "vision", await complete_call(handle, seeing, options)))
    return results


def check_embedding(engine: Engine) -> CheckResult:
    """Load the embedding model (timed apart) and embed one Korean query."""
    embedder = engine.shared_embedder
    settings = engine.settings.embed
    load_s: float | None = None
    started = time.perf_counter()
    try:
        embedder.load()
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        vectors = embedder.embed_queries([EMBED_QUERY])
        seconds = time.perf_counter() - started
        dimension = int(vectors.shape[1])
    except Exception as exc:  # a model file or a server failing in its own way
        return CheckResult(
            "embedding",
            settings.backend,
            embedder.name,
            "embedding",
            False,
            ms(time.perf_counter() - started),
            exc.code if isinstance(exc, HanragError) else "embed_error",
            exc.message if isinstance(exc, HanragError) else type(exc).__name__,
        )
    return CheckResult(
        "embedding",
        settings.backend,
        embedder.name,
        "embedding",
        dimension > 0,
        ms(seconds),
        None if dimension > 0 else "embed_error",
        None if dimension > 0 else "an empty vector",
        detail={"dimension": dimension, "load_ms": ms(load_s)},
    )


@model_app.command("test")
def test_models(
    provider: Annotated[str | None, typer.Option("--provider", help="Only this provider.")] = None,
    embedding: Annotated[
        bool | None,
        typer.Option(
            "--embedding/--no-embedding", help="Test the embedding model (default: unless --provider)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Send each provider a short Korean prompt (an image too when it can see) and the
    embedding model a query; exit 1 when any check fails."""

    def testing() -> list[CheckResult]:
        with engine_session() as engine:
            handles = select_providers(engine.llm_registry, provider)
            options = replace(
                engine.generation_options(),
                max_tokens=min(engine.settings.llm.max_tokens, CHECK_MAX_TOKENS),
                temperature=0.0,
            )

            async def providers() -> list[CheckResult]:
                return [result for handle in handles for result in await check_provider(handle, options)]

            results = asyncio.run(providers())
            if embedding if embedding is not None else provider is None:
                results.append(check_embedding(engine))
            return results

    results = run(testing)
    failed = [r for r in results if not r.ok]
    if as_json:
        print_json({"ok": not failed, "results": [r.as_dict() for r in results]})
    else:
        table = Table("provider", "kind", "check", "result", "ms", "detail", title="model checks")
        for r in results:
            if r.ok:
                outcome = "[green]ok[/]"
                detail = r.reply or ""
                if r.check == "embedding":
                    detail = (
                        f"dimension {r.detail['dimension']}, model loaded in {cell(r.detail['load_ms'])} ms"
                    )
            else:
                outcome = f"[red]{escape(r.code or 'error')}[/]"
                detail = r.message or ""
            table.add_row(escape(r.provider), r.kind, r.check, outcome, cell(r.latency_ms), escape(detail))
        console.print(table)
    if failed:
        named = ", ".join(f"{r.provider} {r.check} ({r.code})" for r in failed)
        fail(HanragError(f"{len(failed)} of {len(results)} checks failed: {named}", code="model_test_failed"))


# ------------------------------------------------------------- benchmark


TOKEN_SOURCES = {
    frozenset({True}): "usage",
    frozenset({False}): "estimated",
    frozenset({True, False}): "mixed",
}


def summarise(handle: ProviderHandle, calls: list[Call]) -> dict[str, Any]:
    good = [c for c in calls if c.ok]
    first = [c.first_s for c in good if c.first_s is not None]
    whole = [c.seconds for c in good]
    counted = [c.out_tokens() for c in good]
    tokens = sum(n for n, _ in counted)
    reported = {was for _, was in counted}
    busy = sum(whole)
    return {
        "provider": handle.name,
        "kind": handle.config.kind,
        "model": str(getattr(handle.generator, "name", handle.config.model)),
        "runs": len(calls),
        "ok": len(good),
        "errors": len(calls) - len(good),
        "error_rate": round((len(calls) - len(good)) / len(calls), 4) if calls else 0.0,
        "error_codes": dict(Counter(c.code for c in calls if c.code)),
        "ttft_ms": {"p50": ms(percentile(first, 0.5)), "p95": ms(percentile(first, 0.95))},
        "latency_ms": {"p50": ms(percentile(whole, 0.5)), "p95": ms(percentile(whole, 0.95))},
        "tokens_out": tokens,
        "tokens_per_s": round(tokens / busy, 1) if good and busy > 0 else None,
        "tokens_source": TOKEN_SOURCES.get(frozenset(reported)),
    }


@model_app.command("benchmark")
def benchmark(
    provider: Annotated[str | None, typer.Option("--provider", help="Only this provider.")] = None,
    runs: Annotated[int, typer.Option("--runs", min=1, max=1000, help="Streamed answers per provider.")] = 5,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", min=1, max=8192, help="Output tokens per answer at most.")
    ] = 128,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Stream N answers to one fixed grounded prompt from each provider (directly, no router):
    time to first token p50/p95, tokens per second, error rate."""
    from hanrag.answer.prompts import answer_messages

    def measuring() -> list[dict[str, Any]]:
        with engine_session() as engine:
            handles = select_providers(engine.llm_registry, provider)
            sources = sample_sources()
            request = GenerationRequest(
                question=QUESTION,
                sources=sources,
                messages=answer_messages(QUESTION, sources, [], True, prompts=engine.prompts),
                options=replace(engine.generation_options(), max_tokens=max_tokens),
            )

            async def measure() -> list[dict[str, Any]]:
                rows = []
                for handle in handles:
                    calls = [await stream_call(handle, request) for _ in range(runs)]
                    rows.append(summarise(handle, calls))
                return rows

            return asyncio.run(measure())

    rows = run(measuring)
    if as_json:
        print_json({"runs": runs, "question": QUESTION, "providers": rows})
        return
    table = Table(
        "provider",
        "kind",
        "ok/runs",
        "error rate",
        "TTFT p50 ms",
        "TTFT p95 ms",
        "total p50 ms",
        "tokens/s",
        title=f"benchmark: {runs} streamed answers per provider (direct, no fallback)",
        caption="tokens/s: output tokens over the whole streams' time; * estimated from the text length",
    )
    for row in rows:
        rate = row["tokens_per_s"]
        estimated = "*" if row["tokens_source"] in ("estimated", "mixed") else ""
        errors = ", ".join(f"{code}×{n}" for code, n in row["error_codes"].items())
        table.add_row(
            escape(row["provider"]),
            row["kind"],
            f"{row['ok']}/{row['runs']}",
            f"{row['error_rate']:.0%}" + (f" ({escape(errors)})" if errors else ""),
            cell(row["ttft_ms"]["p50"]),
            cell(row["ttft_ms"]["p95"]),
            cell(row["latency_ms"]["p50"]),
            "-" if rate is None else f"{rate}{estimated}",
        )
    console.print(table)


# ------------------------------------------------------------------ reload


@model_app.command("reload")
def reload_models(
    url: Annotated[str | None, typer.Option("--url", help="Server (default: api.host:api.port).")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="HANRAG_API_KEY")] = None,
    force: Annotated[bool, typer.Option("--force", help="Accept another embedding model.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Make a running server read its settings again and reload its providers, prompts and
    embedding model without a restart (POST /api/v1/admin/models/reload, administrators)."""
    import httpx

    def send() -> dict[str, Any]:
        api = settings().api
        host = "127.0.0.1" if api.host in ("0.0.0.0", "::") else api.host
        base = (url or f"http://{host}:{api.port}").rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            reply = httpx.post(
                f"{base}/api/v1/admin/models/reload", json={"force": force}, headers=headers, timeout=600
            )
        except httpx.HTTPError as exc:
            raise HanragError(
                f"cannot reach {base}: {type(exc).__name__}", code="server_unreachable"
            ) from None
        body = reply.json() if reply.headers.get("content-type", "").endswith("json") else {}
        if reply.status_code != 200:
            raise HanragError(
                body.get("detail") or f"HTTP {reply.status_code}", code=body.get("code", "reload_failed")
            )
        return dict(body)

    result = run(send)
    if as_json:
        print_json(result)
        return
    embedder, providers = result.get("embedder") or {}, result.get("providers") or {}
    console.print(f"reloaded {', '.join(result['reloaded']) or 'nothing'} in {result['seconds']} s")
    console.print(
        escape(
            f"providers: {', '.join(providers.get('names', [])) or '-'}; embedding model: {embedder.get('name', '-')} ({embedder.get('load_seconds')} s, {embedder.get('memory_mb')} MB)"
        )
    )
    if result["restart_needed"]:
        console.print("[yellow]settings that need a restart:[/] " + ", ".join(result["restart_needed"]))
