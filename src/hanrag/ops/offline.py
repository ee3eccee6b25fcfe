"""Offline mode at start-up: every URL the settings configure, checked against the rule of
:func:`hanrag.netpolicy.offline_refusal` (loopback or ``offline_allow`` only).

:func:`configured_urls` lists the URLs the settings will use — the catalog, Redis, a Milvus
server, the embedding server, each model provider (a native cloud adapter without a
``base_url`` goes to its vendor's public endpoint), the legacy push URL; the SQL sources'
URLs live in the catalog and are checked when a source is added or synced.
:func:`offline_refusals` gives one line per refused URL and :func:`check_offline` raises
``ConfigError(code="offline_refused")``: ``hanrag serve``, ``hanrag worker``, the app's
start, ``hanrag config validate``, ``hanrag doctor`` and model reloads call them. Requests
are checked where they are made (image URLs, job callbacks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hanrag.errors import ConfigError
from hanrag.netpolicy import offline_refusal
from hanrag.ops.checks import Found

if TYPE_CHECKING:
    from hanrag.engine import Engine
    from hanrag.settings import Settings

# Where the native SDK adapters go without a base_url (hanrag.llm.anthropic, .gemini).
VENDOR_ENDPOINTS = {
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
}


def configured_urls(settings: Settings) -> list[tuple[str, str]]:
    """(setting, URL) for every outgoing destination the settings will use."""
    from hanrag.settings import DEFAULT_ROLES, ProviderSettings

    found: list[tuple[str, str]] = []
    if settings.catalog_url:
        found.append(("catalog_url", settings.catalog_url))
    if settings.redis_url:
        found.append(("redis_url", settings.redis_url))
    if settings.index.backend == "milvus" and "://" in settings.index.milvus_uri:
        found.append(("index.milvus_uri", settings.index.milvus_uri))
    embed = settings.embed
    if embed.backend == "openai":
        found.append(("embed.base_url", embed.base_url))
    elif embed.backend == "gemini":
        explicit = "base_url" in embed.model_fields_set and embed.base_url.strip()
        found.append(("embed.base_url", embed.base_url if explicit else VENDOR_ENDPOINTS["gemini"]))
    llm = settings.llm
    providers = llm.providers or [
        ProviderSettings(name="default", kind=llm.backend, base_url=llm.base_url, roles=list(DEFAULT_ROLES))
    ]
    for provider in providers:
        where = f"llm.providers[{provider.name}].base_url" if llm.providers else "llm.base_url"
        if provider.kind == "openai":
            found.append((where, provider.base_url))
        elif provider.kind in VENDOR_ENDPOINTS:
            found.append((where, provider.base_url.strip() or VENDOR_ENDPOINTS[provider.kind]))
    if settings.api.legacy_response_url:
        found.append(("api.legacy_response_url", settings.api.legacy_response_url))
    return found


def offline_refusals(settings: Settings) -> list[str]:
    """One line per configured URL that offline mode refuses (none when not offline)."""
    allow = settings.offline_policy
    if allow is None:
        return []
    refused: list[str] = []
    for name, url in configured_urls(settings):
        why = offline_refusal(url, allow)
        if why is not None:
            refused.append(f"{name}: {why}")
    return refused


def check_offline(settings: Settings) -> None:
    """Raise ``ConfigError(code="offline_refused")`` naming every refused URL."""
    refused = offline_refusals(settings)
    if refused:
        raise ConfigError(
            "offline is on and these settings point elsewhere: "
            + "; ".join(refused)
            + " (list the host in offline_allow, or turn offline off)",
            code="offline_refused",
        )


def doctor_check(engine: Engine) -> Found:
    """``hanrag doctor``'s ``offline`` line: the configured URLs and the SQL sources' URLs
    (from the catalog) against the offline rule."""
    from hanrag.ops import checks

    settings = engine.settings
    allow = settings.offline_policy or []
    refused = offline_refusals(settings)
    try:
        rows = checks.sql_sources(engine)
    except Exception as exc:  # the catalog check reports the catalog itself
        rows = []
        refused.append(f"SQL sources not listed: {checks.reason(exc)}")
    for row in rows:
        why = offline_refusal(row.url, allow)
        if why is not None:
            refused.append(f"sql source {row.name}: {why}")
    checked = len(configured_urls(settings)) + len(rows)
    if refused:
        return Found(
            "fail",
            "; ".join(refused),
            "list these hosts in offline_allow, or point the settings at hosts inside the network",
            data={"refused": refused},
            blocking=False,
        )
    return Found("ok", f"{checked} URLs checked: all loopback or in offline_allow", data={"checked": checked})
