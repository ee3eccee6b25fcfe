"""``hanrag backup`` / ``hanrag restore`` (P14): a consistent online backup and its restore.

* a backup taken while a thread keeps ingesting files and uploads (each document's index
  write slowed, so that a backup lands mid-document) is restored into a new data
  directory: every document finished before the backup began is there, every document is
  there whole or not at all (catalog row, chunks, kept original), nothing half-indexed,
  and searches give the same hits as a fresh ingestion of exactly those documents;
* a ``.tar`` backup through the CLI round-trips, and ``hanrag offline verify`` checks it;
* restore refuses another format, a newer hanrag or schema, a corrupted or incomplete
  backup (a PostgreSQL catalog's dump missing), and a non-empty data directory without
  ``--force``; secrets never reach the backup.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from hanrag.auth.access import SYSTEM
from hanrag.cli.main import app
from hanrag.domain import SearchFilters
from hanrag.embed.base import Vectors, estimate_tokens, l2_normalise
from hanrag.embed.manager import SharedEmbedder
from hanrag.engine import Engine
from hanrag.errors import InvalidInputError
from hanrag.ingest.pipeline import document_id_for
from hanrag.ops.backup import backup, external_steps
from hanrag.ops.manifest import verify, write_manifest
from hanrag.ops.restore import restore
from hanrag.settings import Settings

DIM = 64
QUERIES = [
    "연차휴가 이월",
    "주차장 이용 시간",
    "보안 점검 절차",
    "문서 17 예산",
    "출장비 정산 기한",
    "회의실 예약",
]
TOPICS = ["연차휴가", "주차장", "보안 점검", "예산", "출장비", "회의실", "교육", "복지"]


class StandInEmbedder:
    """Deterministic hashed unit vectors (the model left out), with a pause per batch so
    that ingestion is still running while a backup is taken."""

    backend = "test-stand-in"
    name = f"blake2b-{DIM}"
    serial = False

    def __init__(self, pause_s: float = 0.0) -> None:
        self.pause_s = pause_s

    def load(self) -> None:
        pass

    @property
    def dimension(self) -> int:
        return DIM

    @property
    def device(self) -> str:
        return "cpu"

    def _vectors(self, texts: list[str]) -> Vectors:
        out = np.empty((len(texts), DIM), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
            out[i] = np.random.default_rng(seed).standard_normal(DIM, dtype=np.float32)
        return l2_normalise(out)

    def embed_queries(self, texts: list[str]) -> Vectors:
        return self._vectors(texts)

    def embed_passages(self, texts: list[str]) -> Vectors:
        time.sleep(self.pause_s)
        return self._vectors(texts)

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)


def open_engine(data_dir: Path, *, pause_s: float = 0.0, **overrides: Any) -> Engine:
    engine = Engine(Settings(data_dir=data_dir, **overrides))
    engine.__dict__["shared_embedder"] = SharedEmbedder(StandInEmbedder(pause_s))
    return engine


def document_text(number: int) -> str:
    topic = TOPICS[number % len(TOPICS)]
    lines = [f"# 문서 {number} {topic} 안내"]
    for part in range(1, 6):
        lines.append(
            f"문서 {number}의 {part}번째 조항: {topic} 관련 규정은 매년 {number % 12 + 1}월에 검토하며, "
            f"예산 {number * 10 + part}만원 한도에서 부서장이 승인한다. 세부 절차는 {topic} 담당자가 정한다."
        )
    return "\n\n".join(lines) + "\n"


def ingest_one(engine: Engine, folder: Path, number: int) -> str:
    """Document ``number``: even ones as files, odd ones as uploads; its document id."""
    name = f"문서{number:02d}.md"
    if number % 2 == 0:
        path = folder / name
        path.write_text(document_text(number), encoding="utf-8")
        outcome = engine.pipeline.ingest_file(path)
    else:
        outcome = engine.pipeline.ingest_upload(document_text(number).encode(), name, caller=SYSTEM)
    assert outcome.status == "added", outcome
    assert outcome.document_id is not None
    return outcome.document_id


def hits(engine: Engine) -> list[list[tuple[str, float]]]:
    found = []
    for query in QUERIES:
        result = engine.search(query, caller=SYSTEM, k=8, filters=SearchFilters())
        found.append([(h.chunk.chunk_id, round(h.score, 6)) for h in result.hits])
    return found


def slow_index_writes(engine: Engine, seconds: float, entered: threading.Event) -> None:
    """Widen the window between a document's catalog row and its chunks (``entered`` is set
    as a document enters it)."""
    index = engine.index
    original = index.upsert_document

    def slowed(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        time.sleep(seconds)
        return original(*args, **kwargs)

    index.upsert_document = slowed  # type: ignore[method-assign]


def test_backup_during_ingestion_restores_whole_documents_and_the_same_hits(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    live = open_engine(tmp_path / "live", pause_s=0.01, auth={"jwt_secret": "jwt-s3cret-value"})
    before = [ingest_one(live, folder, n) for n in range(12)]
    in_window = threading.Event()
    slow_index_writes(live, 0.2, in_window)
    finished: dict[int, tuple[str, float]] = {}
    stop = threading.Event()

    def keep_ingesting() -> None:
        for number in range(12, 60):
            if stop.is_set():
                return
            finished[number] = (ingest_one(live, folder, number), time.monotonic())

    thread = threading.Thread(target=keep_ingesting)
    thread.start()
    try:
        while len(finished) < 3:
            time.sleep(0.01)
        # The backup begins while a document is half written (its catalog row is, its
        # chunks are not): it must wait for that document, then take it whole.
        in_window.clear()
        assert in_window.wait(30)
        in_flight = len(finished) + 12
        began = time.monotonic()
        done_before = {doc for doc, at in finished.values() if at < began} | set(before)
        report = backup(live.settings, tmp_path / "backup")
        ended = time.monotonic()
    finally:
        stop.set()
        thread.join()
    done_after = {doc for doc, at in finished.values() if at > ended}
    assert 50 < report.gate_ms < 1000  # it waited for the document's writes, not longer
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["indexed_documents_not_matching_index"] == 0
    assert counts["index_documents_not_in_catalog"] == 0
    assert manifest["schema_revision"] and manifest["external"] == []
    assert verify(tmp_path / "backup").ok

    restored = restore(Settings(data_dir=tmp_path / "unused"), tmp_path / "backup", data_dir=tmp_path / "new")
    assert restored.schema[0] == restored.schema[1]
    engine = open_engine(tmp_path / "new")
    try:
        rows = {row.id: row for row in engine.catalog.list_documents(limit=1000)}
        assert {row.status for row in rows.values()} == {"indexed"}  # nothing half-indexed
        assert done_before <= set(rows), "a document finished before the backup is missing"
        assert not (done_after & set(rows)), "a document finished after the backup is present"
        assert finished[in_flight][0] in rows  # the half-written one, whole
        index_counts = engine.index.document_chunk_counts()
        live_counts = live.index.document_chunk_counts()
        for document_id, row in rows.items():
            assert index_counts[document_id] == row.chunk_count == live_counts[document_id]
            if row.source_type == "upload":  # its original came with it
                assert len(list((tmp_path / "new" / "uploads" / document_id).iterdir())) == 1
        assert set(index_counts) == set(rows)

        # The same hits as a fresh ingestion of exactly these documents, in the same order.
        reference = open_engine(tmp_path / "reference")
        try:
            numbers = sorted(
                n
                for n in range(60)
                if (document_id_for("file", str((folder / f"문서{n:02d}.md").resolve())) in rows)
                or (document_id_for("upload", f"upload:문서{n:02d}.md") in rows)
            )
            assert len(numbers) == len(rows)
            for number in numbers:
                ingest_one(reference, folder, number)
            assert hits(engine) == hits(reference)
            assert any(hits(engine))
        finally:
            reference.close()
    finally:
        engine.close()
        live.close()
    # No secret went into the backup (settings masked, signing secrets left out).
    for path in (tmp_path / "backup").rglob("*"):
        if path.is_file():
            assert b"jwt-s3cret-value" not in path.read_bytes(), path
    assert not (tmp_path / "backup" / "jwt-secret").exists()


def test_tar_backup_through_the_cli_verify_and_restore_refusals(tmp_path: Path) -> None:
    data = tmp_path / "data"
    engine = open_engine(data)
    try:
        for number in range(3):
            ingest_one(engine, tmp_path, number)
    finally:
        engine.close()
    vocabulary = '{"version": 1, "words": [], "synonyms": [["법카", "법인카드"]], "stopwords": []}'
    (data / "vocabulary.json").write_text(vocabulary)  # analysed with it: travels with the index
    runner = CliRunner()
    made = runner.invoke(app, ["--data-dir", str(data), "backup", str(tmp_path / "b.tar"), "--json"])
    assert made.exit_code == 0, made.stderr
    assert json.loads(made.stdout)["counts"]["uploads"] == 1
    checked = runner.invoke(app, ["offline", "verify", str(tmp_path / "b.tar"), "--json"])
    assert checked.exit_code == 0 and json.loads(checked.stdout)["ok"], checked.stdout
    again = runner.invoke(app, ["--data-dir", str(data), "backup", str(tmp_path / "b.tar")])
    assert again.exit_code == 2 and "[file_exists]" in again.stderr

    # Into a non-empty directory only with --force.
    refused = runner.invoke(app, ["--data-dir", str(data), "restore", str(tmp_path / "b.tar")])
    assert refused.exit_code == 2 and "error [data_dir_not_empty]" in refused.stderr
    into = ["--data-dir", str(data), "restore", str(tmp_path / "b.tar"), "--data-dir", str(tmp_path / "r")]
    assert runner.invoke(app, into).exit_code == 0
    forced = runner.invoke(app, ["--data-dir", str(data), "restore", str(tmp_path / "b.tar"), "--force"])
    assert forced.exit_code == 0, forced.stderr
    engine = open_engine(tmp_path / "r")
    try:
        assert len(engine.catalog.list_documents(limit=100)) == 3 and engine.index.stats().chunks > 0
        assert (tmp_path / "r" / "vocabulary.json").read_text() == vocabulary
    finally:
        engine.close()

    # A folder backup: verify finds changed, missing and unlisted files; restore refuses.
    folder = tmp_path / "b"
    assert runner.invoke(app, ["--data-dir", str(data), "backup", str(folder)]).exit_code == 0
    (folder / "extra.txt").write_text("x")
    bad = runner.invoke(app, ["offline", "verify", str(folder)])
    assert bad.exit_code == 1 and "extra extra.txt" in bad.stderr
    (folder / "extra.txt").unlink()
    with (folder / "catalog.db").open("r+b") as handle:
        handle.seek(200)
        handle.write(b"\x01")
    with pytest.raises(InvalidInputError) as corrupt:
        restore(Settings(data_dir=tmp_path / "x"), folder, data_dir=tmp_path / "x")
    assert corrupt.value.code == "backup_corrupt" and "changed catalog.db" in corrupt.value.message
    assert not (tmp_path / "x" / "catalog.db").exists()


def _rewrite(folder: Path, **changes: Any) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))
    write_manifest(folder)


def test_restore_refuses_newer_versions_schemas_and_missing_external_dumps(tmp_path: Path) -> None:
    data = tmp_path / "data"
    engine = open_engine(data)
    try:
        ingest_one(engine, tmp_path, 0)
    finally:
        engine.close()
    folder = tmp_path / "b"
    backup(Settings(data_dir=data), folder)
    target = tmp_path / "t"

    def refused(code: str, **changes: Any) -> str:
        _rewrite(folder, **changes)
        with pytest.raises(InvalidInputError) as refusal:
            restore(Settings(data_dir=target), folder, data_dir=target)
        assert refusal.value.code == code, refusal.value
        assert not target.exists() or not any(target.iterdir())
        return refusal.value.message

    assert "hanrag 99.0.0" in refused("backup_incompatible", hanrag_version="99.0.0")
    assert "revision 0099" in refused("backup_incompatible", hanrag_version="0.1.0", schema_revision="0099")
    refused("backup_invalid", schema_revision="0005", format=2)
    step = {"name": "postgresql catalog", "file": "catalog.pgdump", "command": "pg_dump ...", "restore": "x"}
    message = refused("backup_incomplete", format=1, external=[step])
    assert "pg_dump" in message
    (folder / "catalog.pgdump").write_bytes(b"dump")  # the operator ran it: then it restores
    report = restore(Settings(data_dir=target), folder, data_dir=target)
    assert report.todo == ["postgresql catalog: x"]

    # What a PostgreSQL catalog and a Milvus server need, without their passwords.
    settings = Settings(
        data_dir=data,
        catalog_url="postgresql+psycopg://hanrag:pw@db.internal:5432/hanrag",
        index={"backend": "milvus", "milvus_uri": "http://milvus.internal:19530"},
    )
    steps = external_steps(settings, tmp_path / "out")
    assert [s["file"] for s in steps] == ["catalog.pgdump", "milvus-backup.txt"]
    assert "pg_dump --format=custom" in steps[0]["command"] and "pw" not in steps[0]["command"]
    assert "postgresql://hanrag@db.internal:5432/hanrag" in steps[0]["command"]
    with pytest.raises(InvalidInputError) as needs_folder:
        backup(settings, tmp_path / "pg.tar")
    assert needs_folder.value.code == "backup_needs_folder"
