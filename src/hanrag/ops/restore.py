"""``hanrag restore IN [--data-dir NEW]``: a backup of :mod:`.backup` back into a data directory.

Refused, with one line saying why, before anything is written:

* not a hanrag backup, or of another backup format (``backup_invalid``);
* made by a newer hanrag, or its catalog at a schema revision this hanrag's migrations do
  not know (``backup_incompatible``: install that hanrag version, or a newer one);
  an older catalog is brought to this version's schema by its migrations after the copy;
* a file missing, changed or unlisted against ``MANIFEST.sha256`` (``backup_corrupt``);
* a step of ``external`` (``pg_dump``, Milvus backup) whose file is not in the backup
  folder (``backup_incomplete``: the command to run is in the message);
* a target data directory that is not empty, unless ``force`` (``data_dir_not_empty``);
  ``force`` replaces the catalog, index, embedding cache and originals there and leaves
  the rest. Stop every hanrag process on that directory first.

After the copy, jobs that were queued, running or paused when the backup was taken are
marked cancelled (``restored_from_backup``): their callbacks, staged uploads and workers
belong to the old installation. The result lists the external restore commands to run.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hanrag import __version__
from hanrag.errors import InvalidInputError
from hanrag.ops.backup import CACHE_FILE, CATALOG_FILE, FORMAT, INDEX_FILE, KIND, SMALL_FILES
from hanrag.ops.manifest import unpack, verify
from hanrag.settings import Settings

Say = Callable[[str], None]
SHOWN = 5


@dataclass(slots=True)
class RestoreReport:
    data_dir: Path
    seconds: float
    bytes: int
    manifest: dict[str, Any]
    schema: tuple[str | None, str | None] = (None, None)
    jobs_cancelled: int = 0
    todo: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.data_dir),
            "seconds": round(self.seconds, 2),
            "bytes": self.bytes,
            "hanrag_version": self.manifest.get("hanrag_version"),
            "schema_revision": {"backup": self.schema[0], "now": self.schema[1]},
            "counts": self.manifest.get("counts", {}),
            "jobs_cancelled": self.jobs_cancelled,
            "todo": self.todo,
        }


def _refuse(message: str, code: str) -> InvalidInputError:
    return InvalidInputError(message, code=code, field="backup")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def known_revisions() -> list[str]:
    from alembic.script import ScriptDirectory

    from hanrag.store.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return [revision.revision for revision in script.walk_revisions()]


def check_compatible(manifest: dict[str, Any]) -> None:
    """Refuse a backup this hanrag cannot restore (see the module's docstring)."""
    if manifest.get("kind") != KIND or manifest.get("format") != FORMAT:
        raise _refuse(
            f"not a hanrag backup of format {FORMAT} (kind {manifest.get('kind')!r}, "
            f"format {manifest.get('format')!r})",
            "backup_invalid",
        )
    made_by = str(manifest.get("hanrag_version") or "0")
    if _version(made_by) > _version(__version__):
        raise _refuse(
            f"the backup was made by hanrag {made_by}, newer than this hanrag {__version__}: "
            f"restore it with hanrag {made_by} or later",
            "backup_incompatible",
        )
    revision = manifest.get("schema_revision")
    known = known_revisions()
    if revision is not None and revision not in known:
        raise _refuse(
            f"the backup's catalog is at schema revision {revision}, which this hanrag {__version__} "
            f"(schema {known[0]}) does not know: restore it with the hanrag that made it ({made_by}) or later",
            "backup_incompatible",
        )


def _clear_target(target: Path) -> None:
    """Remove what a restore replaces (the SQLite files with their WAL and shared-memory files)."""
    for name in (CATALOG_FILE, CACHE_FILE, INDEX_FILE):
        for suffix in ("", "-wal", "-shm", "-journal"):
            (target / f"{name}{suffix}").unlink(missing_ok=True)
    for name in SMALL_FILES:
        (target / name).unlink(missing_ok=True)
    shutil.rmtree(target / "uploads", ignore_errors=True)


def _cancel_unfinished(catalog: Path) -> int:
    from hanrag.jobs.base import now_iso
    from hanrag.jobs.sql_store import SqlJobStore
    from hanrag.store.db import make_engine

    engine = make_engine(f"sqlite:///{catalog.resolve()}")
    try:
        store = SqlJobStore(engine)  # also brings the catalog to this version's schema
        unfinished = store.unfinished()
        for record in unfinished:
            store.update(
                record.id,
                state="cancelled",
                control=None,
                finished_at=now_iso(),
                error={
                    "code": "restored_from_backup",
                    "message": "the data directory was restored from a backup",
                },
            )
        return len(unfinished)
    finally:
        engine.dispose()


def _schema_after(catalog: Path) -> str | None:
    from hanrag.store.db import make_engine
    from hanrag.store.migrate import current_revision

    engine = make_engine(f"sqlite:///{catalog.resolve()}")
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def restore(
    settings: Settings,
    source: Path,
    *,
    data_dir: Path | None = None,
    force: bool = False,
    say: Say = lambda _: None,
) -> RestoreReport:
    started = time.perf_counter()
    if not source.exists():
        raise _refuse(f"{source}: no such backup", "not_found")
    target = (data_dir or settings.data_dir).expanduser()
    with tempfile.TemporaryDirectory(prefix=".hanrag-restore-", dir=_scratch_parent(target)) as scratch:
        root = source if source.is_dir() else unpack(source, Path(scratch))
        described = root / "manifest.json"
        if not described.is_file():
            raise _refuse(f"{source} has no manifest.json: not a hanrag backup", "backup_invalid")
        manifest = json.loads(described.read_text(encoding="utf-8"))
        check_compatible(manifest)
        external = manifest.get("external", [])
        say("checking every file against MANIFEST.sha256")
        checked = verify(root, ignore=[step["file"] for step in external])
        if not checked.ok:
            problems = [f"missing {n}" for n in checked.missing] + [f"changed {n}" for n in checked.changed]
            problems += [f"not listed {n}" for n in checked.extra]
            raise _refuse(
                f"the backup does not match its manifest: {'; '.join(problems[:SHOWN])}"
                + (f" (and {len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""),
                "backup_corrupt",
            )
        for step in external:
            if not (root / step["file"]).is_file():
                raise _refuse(
                    f"the backup lacks {step['file']} ({step['name']}): when taking the backup, run: {step['command']}",
                    "backup_incomplete",
                )
        if target.exists() and any(target.iterdir()) and not force:
            raise _refuse(
                f"{target} is not empty: restore into a new --data-dir, or pass --force to replace "
                "its catalog, index, cache and originals (stop hanrag first)",
                "data_dir_not_empty",
            )
        target.mkdir(parents=True, exist_ok=True)
        _clear_target(target)
        copied = 0
        for relative in (CATALOG_FILE, INDEX_FILE, CACHE_FILE, *SMALL_FILES):
            if (root / relative).is_file():
                say(f"restoring {relative}")
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(root / relative, target / relative)
                copied += (target / relative).stat().st_size
        if (root / "uploads").is_dir():
            say("restoring the uploaded originals")
            shutil.copytree(root / "uploads", target / "uploads")
            copied += sum(p.stat().st_size for p in (target / "uploads").rglob("*") if p.is_file())
    report = RestoreReport(target, 0.0, copied, manifest)
    catalog = target / CATALOG_FILE
    if catalog.is_file():
        report.jobs_cancelled = _cancel_unfinished(catalog)
        report.schema = (manifest.get("schema_revision"), _schema_after(catalog))
        _check_counts(target, manifest)
    report.todo = [f"{step['name']}: {step['restore']}" for step in external]
    if catalog.is_file() and settings.catalog_url and data_dir is None:
        report.todo.append("catalog_url points to another database: unset it to use the restored catalog.db")
    report.seconds = time.perf_counter() - started
    return report


def _scratch_parent(target: Path) -> Path:
    parent = target.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def _check_counts(target: Path, manifest: dict[str, Any]) -> None:
    """The restored index holds the chunks the backup counted."""
    expected = manifest.get("counts", {}).get("chunks")
    index = target / INDEX_FILE
    if expected is None or not index.is_file():
        return
    db = sqlite3.connect(str(index))
    try:
        found = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    finally:
        db.close()
    if found != expected:
        raise _refuse(f"the restored index holds {found} chunks, the backup {expected}", "backup_corrupt")
