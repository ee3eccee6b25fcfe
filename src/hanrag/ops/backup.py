"""``hanrag backup OUT``: a consistent copy of a data directory while the server keeps
serving and ingesting.

What is copied, and how:

* the catalog (SQLite) and the local index (``index/index.db``, SQLite: every chunk's
  text, tokens and vector; the in-memory matrix and postings are rebuilt from it) — with
  SQLite's online backup API (``sqlite3.Connection.backup``) from read transactions that
  were opened together under the data directory's write gate
  (:mod:`hanrag.store.writegate`): ingestion writes a document's catalog row, its chunks
  and its kept original under the gate's shared lock, so the two snapshots agree and every
  document is in the backup whole or not at all. The gate is held for milliseconds (open
  two read transactions, hard-link the originals); the copying happens after, from the
  snapshots, while writes go on;
* the embedding cache (its own snapshot: a cache need not agree with anything);
* the uploaded originals (``uploads/<document id>/``), hard-linked under the gate into a
  scratch folder of the data directory, then copied (kept files are never rewritten in
  place: a new version is a new file);
* the settings, secrets masked (``settings.json``), and ``manifest.json``: the hanrag
  version, the catalog's schema revision, counts, a consistency check of the catalog
  against the index, what was left out, and the steps hanrag cannot do itself;
* ``MANIFEST.sha256`` of every file (``hanrag offline verify OUT`` checks it).

Left out: the JWT and callback signing secrets (``jwt-secret``, ``callback-secret``: new
ones are made on the restored server — sessions sign in again; callbacks get a new
signature unless ``jobs.callback_secret`` is set), staged upload batches of running jobs,
evaluation runs, logs. A PostgreSQL catalog and a Milvus index are outside the data
directory: the manifest lists the commands (``pg_dump``, Milvus backup) and the file each
must leave in the backup folder; :mod:`.restore` refuses a backup without them.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hanrag import __version__
from hanrag.errors import InvalidInputError
from hanrag.ingest.uploads import ORIGINALS
from hanrag.ops.manifest import pack, write_manifest
from hanrag.settings import Settings
from hanrag.store.writegate import WriteGate

FORMAT = 1
KIND = "hanrag-backup"
CATALOG_FILE = "catalog.db"
INDEX_FILE = "index/index.db"
CACHE_FILE = "embed-cache.db"
# Small files of the data directory that go with the index (replaced atomically by their
# writers): the company vocabulary (hanrag.korean.vocabulary) the chunks were analysed with.
SMALL_FILES = ("vocabulary.json",)
LEFT_OUT = [
    "jwt-secret and callback-secret (signing secrets: new ones are made after a restore)",
    "upload-batches/ (files staged for running upload jobs)",
    "eval/ (evaluation runs), log files",
]

Say = Callable[[str], None]


@dataclass(slots=True)
class BackupReport:
    path: Path
    seconds: float
    gate_ms: float
    bytes: int
    manifest: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "seconds": round(self.seconds, 2),
            "gate_ms": round(self.gate_ms, 1),
            "bytes": self.bytes,
            **{k: self.manifest[k] for k in ("hanrag_version", "schema_revision", "counts", "external")},
        }


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for any other database)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _libpq_url(url: str) -> str:
    """A PostgreSQL URL as pg_dump takes it, without its password (use PGPASSWORD or .pgpass)."""
    from sqlalchemy.engine import URL, make_url

    parsed = make_url(url)
    bare = URL.create("postgresql", parsed.username, None, parsed.host, parsed.port, parsed.database)
    return bare.render_as_string(hide_password=False)


def external_steps(settings: Settings, out: Path) -> list[dict[str, str]]:
    """What hanrag cannot copy itself: each step's command and the file it leaves in ``out``."""
    steps: list[dict[str, str]] = []
    if sqlite_file(settings.resolved_catalog_url) is None:
        url = _libpq_url(settings.resolved_catalog_url)
        steps.append(
            {
                "name": "postgresql catalog",
                "file": "catalog.pgdump",
                "command": f'pg_dump --format=custom --file "{out / "catalog.pgdump"}" "{url}"',
                "restore": f'pg_restore --clean --if-exists --no-owner --dbname "{url}" catalog.pgdump',
            }
        )
    index = settings.index
    if index.backend == "milvus":
        if "://" in index.milvus_uri:
            steps.append(
                {
                    "name": "milvus index",
                    "file": "milvus-backup.txt",
                    "command": f"milvus-backup create -n hanrag-{datetime.now(UTC):%Y%m%d%H%M} "
                    f"--colls {index.milvus_collection}  (then write the backup's name into "
                    f"{out / 'milvus-backup.txt'})",
                    "restore": "milvus-backup restore -n <the name in milvus-backup.txt>",
                }
            )
        else:
            steps.append(
                {
                    "name": "milvus-lite index",
                    "file": "milvus-lite.db",
                    "command": f'stop every hanrag process, then cp "{index.milvus_uri}" "{out / "milvus-lite.db"}"',
                    "restore": f'cp milvus-lite.db "{index.milvus_uri}" (with hanrag stopped)',
                }
            )
    return steps


def _check_out(out: Path, force: bool) -> None:
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    earlier = (out / "manifest.json").is_file() or (out.is_file() and out.suffix == ".tar")
    if not force:
        raise InvalidInputError(f"{out} exists; --force replaces an earlier backup", code="file_exists")
    if not earlier:
        raise InvalidInputError(f"{out} exists and is not a backup: not replaced", code="file_exists")
    if out.is_dir():
        shutil.rmtree(out)
    else:
        out.unlink()


def _snapshot(path: Path) -> sqlite3.Connection:
    """A read transaction on a SQLite database (WAL): what the backup API then copies."""
    connection = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    connection.execute("BEGIN")
    connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    return connection


def _copy(snapshot: sqlite3.Connection, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    destination = sqlite3.connect(str(target), isolation_level=None)
    try:
        snapshot.backup(destination)
        destination.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        destination.close()
        snapshot.rollback()
        snapshot.close()


def _link_originals(originals: Path, into: Path) -> tuple[int, int]:
    """Hard-link (else copy) every kept original into ``into``; (files, bytes)."""
    files = size = 0
    if not originals.is_dir():
        return 0, 0
    for folder in originals.iterdir():
        if not folder.is_dir():
            continue  # .incoming-* files: uploads in flight, not yet anyone's original
        for path in folder.iterdir():
            if not path.is_file():
                continue
            target = into / folder.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
            files += 1
            size += path.stat().st_size
    return files, size


def _move_tree(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
    except OSError:  # another filesystem
        shutil.copytree(source, target)
        shutil.rmtree(source, ignore_errors=True)


def describe(folder: Path) -> dict[str, Any]:
    """Counts of a backup's catalog and index copies, and whether they agree."""
    found: dict[str, Any] = {}
    catalog, index = folder / CATALOG_FILE, folder / INDEX_FILE
    if catalog.is_file():
        db = sqlite3.connect(str(catalog))
        try:
            found["documents"] = dict(db.execute("SELECT status, COUNT(*) FROM documents GROUP BY status"))
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
            found["schema_revision"] = row[0] if row else None
            if index.is_file():
                db.execute("ATTACH DATABASE ? AS idx", (str(index),))
                found["indexed_documents_not_matching_index"] = db.execute(
                    "SELECT COUNT(*) FROM documents d WHERE d.status = 'indexed' AND d.chunk_count != "
                    "(SELECT COUNT(*) FROM idx.chunks c WHERE c.document_id = d.id)"
                ).fetchone()[0]
                found["index_documents_not_in_catalog"] = db.execute(
                    "SELECT COUNT(DISTINCT document_id) FROM idx.chunks WHERE document_id NOT IN "
                    "(SELECT id FROM documents)"
                ).fetchone()[0]
        finally:
            db.close()
    if index.is_file():
        db = sqlite3.connect(str(index))
        try:
            found["chunks"] = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
            found["index_documents"] = db.execute(
                "SELECT COUNT(DISTINCT document_id) FROM chunks"
            ).fetchone()[0]
            row = db.execute("SELECT value FROM meta WHERE key = 'dimension'").fetchone()
            found["dimension"] = int(row[0]) if row else None
        finally:
            db.close()
    return found


def _live_revision(settings: Settings) -> str | None:
    from hanrag.store.db import make_engine
    from hanrag.store.migrate import current_revision

    engine = make_engine(settings.resolved_catalog_url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def backup(
    settings: Settings,
    out: Path,
    *,
    force: bool = False,
    gate_timeout_s: float = 60.0,
    say: Say = lambda _: None,
) -> BackupReport:
    """Back up ``settings.data_dir`` (and say what else must be backed up) into ``out``."""
    started = time.perf_counter()
    data_dir = settings.data_dir
    if not data_dir.is_dir():
        raise InvalidInputError(f"no data directory at {data_dir}", code="not_found", field="data_dir")
    _check_out(out, force)
    steps = external_steps(settings, out)
    tar = out.suffix == ".tar"
    if tar and steps:
        raise InvalidInputError(
            f"this installation needs {', '.join(s['name'] for s in steps)} backed up beside hanrag's "
            "files: write the backup to a folder, not a .tar",
            code="backup_needs_folder",
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".hanrag-backup-", dir=out.parent)) if tar else None
    folder = scratch / out.stem if scratch is not None else out
    folder.mkdir(parents=True, exist_ok=True)
    links = data_dir / f".backup-{uuid.uuid4().hex[:12]}"
    catalog = sqlite_file(settings.resolved_catalog_url)
    index = data_dir / "index" / "index.db" if settings.index.backend == "local" else None
    snapshots: dict[str, sqlite3.Connection] = {}
    try:
        say("waiting for a moment without writes in progress")
        gate_started = time.perf_counter()
        with WriteGate(data_dir).exclusive(gate_timeout_s):
            taken_at = datetime.now(UTC)
            if catalog is not None and catalog.is_file():
                snapshots[CATALOG_FILE] = _snapshot(catalog)
            if index is not None and index.is_file():
                snapshots[INDEX_FILE] = _snapshot(index)
            uploads = _link_originals(data_dir / ORIGINALS, links)
            small = {
                name: (data_dir / name).read_bytes() for name in SMALL_FILES if (data_dir / name).is_file()
            }
        gate_ms = (time.perf_counter() - gate_started) * 1000
        for relative in list(snapshots):
            say(f"copying {relative}")
            _copy(snapshots.pop(relative), folder / relative)
        cache = data_dir / CACHE_FILE
        if cache.is_file():
            say(f"copying {CACHE_FILE}")
            _copy(_snapshot(cache), folder / CACHE_FILE)
        if links.is_dir():
            say(f"copying {uploads[0]} uploaded originals")
            _move_tree(links, folder / "uploads")
        for name, data in small.items():
            (folder / name).write_bytes(data)
        (folder / "settings.json").write_text(
            json.dumps(settings.masked(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )
        counts = describe(folder)
        revision = counts.pop("schema_revision", None) if catalog is not None else _live_revision(settings)
        manifest: dict[str, Any] = {
            "kind": KIND,
            "format": FORMAT,
            "hanrag_version": __version__,
            "schema_revision": revision,
            "taken_at": taken_at.isoformat(timespec="milliseconds"),
            "data_dir": str(data_dir.resolve()),
            "catalog": {"backend": "sqlite" if catalog is not None else "postgresql", "file": CATALOG_FILE},
            "index": {"backend": settings.index.backend, "file": INDEX_FILE if index is not None else None},
            "embedding": {"backend": settings.embed.backend, "model": settings.embed.model},
            "counts": {**counts, "uploads": uploads[0], "upload_bytes": uploads[1]},
            "external": steps,
            "left_out": LEFT_OUT,
        }
        if catalog is None:
            manifest["catalog"]["file"] = None
        (folder / "manifest.json").write_text(
            json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )
        write_manifest(folder)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        if scratch is not None:
            pack(folder, out)
        return BackupReport(out, time.perf_counter() - started, gate_ms, size, manifest)
    except BaseException:
        if scratch is None:
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        for connection in snapshots.values():
            connection.close()
        shutil.rmtree(links, ignore_errors=True)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
