"""Builds the generators named in settings: one per role, over the provider registry.

Each role (answer, planner, vision, judge, sql) gets a :class:`RoutedGenerator` over the
providers that serve it (roles with the same providers share one); they share the
registry's handles, so a provider that is down for the planner is known to be down for the
answer too. A role served only by the
extractive generator gets that generator itself (nothing to route, and the answer engine
recognises it as its own fallback). The answer role always exists: without a provider
for it, questions are answered extractively.
"""

from __future__ import annotations

from hanrag.llm.base import GenerationOptions, Generator
from hanrag.llm.registry import ProviderRegistry
from hanrag.settings import Settings

ROLES = ("answer", "planner", "vision", "judge", "sql")


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


def build_registry(settings: Settings) -> ProviderRegistry:
    return ProviderRegistry(settings, generation_options(settings))


def build_generators(settings: Settings, registry: ProviderRegistry | None = None) -> dict[str, Generator]:
    """role -> its generator, for every role some provider serves (and always ``answer``)."""
    from hanrag.llm.router import RoutedGenerator

    registry = registry or build_registry(settings)
    llm = settings.llm
    # Roles served by the same providers share one router: the legacy provider's answer,
    # planner and sql calls go through one object, as they went through one generator.
    groups: dict[tuple[str, ...], list[str]] = {}
    for role in ROLES:
        names = tuple(p.name for p in registry.for_role(role))
        if names:
            groups.setdefault(names, []).append(role)
    generators: dict[str, Generator] = {}
    for names, roles in groups.items():
        providers = [p for p in registry.providers if p.name in names]
        generator: Generator
        if len(providers) == 1 and not providers[0].is_llm:
            generator = providers[0].generator
        else:
            generator = RoutedGenerator(
                "+".join(roles),
                providers,
                strategy=llm.strategy,
                retries=registry.retries,
                retry_base_s=llm.retry_base_s,
                retry_max_s=llm.retry_max_s,
                queue_wait_s=llm.queue_wait_s,
            )
        for role in roles:
            generators[role] = generator
    if "answer" not in generators:
        from hanrag.llm.extractive import ExtractiveGenerator

        generators["answer"] = ExtractiveGenerator(
            max_sentences=settings.answer.extractive_sentences,
            analysis_cache_size=settings.answer.extractive_cache_passages,
        )
    return generators


def member_generators(
    settings: Settings, registry: ProviderRegistry, role: str, limit: int
) -> list[tuple[str, Generator]]:
    """(provider name, generator) per language-model provider of ``role`` (priority order, at
    most ``limit``): each generator routes to its own provider only, so that an ensemble
    hears every provider (a failed one is a failed candidate, not a fallback to another)."""
    from hanrag.llm.router import RoutedGenerator

    llm = settings.llm
    handles = sorted(
        (h for h in registry.for_role(role) if h.is_llm), key=lambda h: (h.config.priority, h.order)
    )[:limit]
    return [
        (
            handle.name,
            RoutedGenerator(
                role,
                [handle],
                retries=registry.retries,
                retry_base_s=llm.retry_base_s,
                retry_max_s=llm.retry_max_s,
                queue_wait_s=llm.queue_wait_s,
            ),
        )
        for handle in handles
    ]


def build_generator(settings: Settings) -> Generator:
    """The answer role's generator."""
    return build_generators(settings)["answer"]
