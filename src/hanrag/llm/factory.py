"""Builds the generator named in settings."""

from __future__ import annotations

from hanrag.llm.base import GenerationOptions, Generator
from hanrag.settings import Settings


def generation_options(settings: Settings) -> GenerationOptions:
    llm = settings.llm
    return GenerationOptions(
        max_tokens=llm.max_tokens,
        temperature=llm.temperature,
        top_p=llm.top_p,
        top_k=llm.top_k,
        repetition_penalty=llm.repetition_penalty,
        stop=list(llm.stop),
    )


def build_generator(settings: Settings) -> Generator:
    llm = settings.llm
    if llm.backend == "openai":
        from hanrag.llm.openai_compat import OpenAICompatGenerator

        return OpenAICompatGenerator(
            base_url=llm.base_url,
            model=llm.model,
            api_key=llm.api_key.get_secret_value() if llm.api_key else None,
            connect_timeout_s=llm.connect_timeout_s,
            read_timeout_s=llm.read_timeout_s,
            defaults=generation_options(settings),
        )
    if llm.backend == "llama_cpp":
        from hanrag.llm.llama_cpp import LlamaCppGenerator

        return LlamaCppGenerator(llm.model_path, n_ctx=llm.n_ctx, n_threads=llm.n_threads)
    from hanrag.llm.extractive import ExtractiveGenerator

    return ExtractiveGenerator(
        max_sentences=settings.answer.extractive_sentences,
        analysis_cache_size=settings.answer.extractive_cache_passages,
    )
