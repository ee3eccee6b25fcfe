"""Ingestion pipeline through the Engine: skip logic, updates, failures, ACLs, sync, globs.

Mutating tests use their own data directory and a few short documents; the sample
corpus ingested once per session is only read.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import hanrag.ingest.pipeline as pipeline_module
from conftest import EngineFactory, SampleCorpus
from hanrag.auth.access import SYSTEM, Caller
from hanrag.domain import SearchFilters, to_epoch
from hanrag.engine import Engine
from hanrag.errors import InvalidInputError, NotFoundError
from hanrag.ingest.model import FileOutcome, IngestPlan, IngestRequest
from hanrag.ingest.pipeline import IngestReport
from hanrag.ingest.uploads import UploadBatch

LEAVE = "# 휴가 규정\n\n연차휴가는 1년에 15일이다. 반차는 4시간 단위로 쓸 수 있다.\n"
LEAVE_CHANGED = "# 휴가 규정\n\n연차휴가는 1년에 18일이다. 반차는 4시간 단위로 쓸 수 있다.\n"
SECURITY = "보안 수칙\n\nUSB 저장장치는 정보보안팀 승인 후에만 쓸 수 있다.\n"
TRAVEL = "# 출장 규정\n\n국내 출장 일비는 하루 3만 원이다.\n"


class Spy:
    """Counts calls of a real function (the thing under test is whoever calls it)."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(args)
        return self.func(*args, **kwargs)


@pytest.fixture
def parse_spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    spy = Spy(pipeline_module.parse_bytes)
    monkeypatch.setattr(pipeline_module, "parse_bytes", spy)
    return spy


@pytest.fixture
def read_spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    spy = Spy(pipeline_module.read_limited)
    monkeypatch.setattr(pipeline_module, "read_limited", spy)
    return spy


def write(directory: Path, name: str, text: str | bytes) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def by_name(report: IngestReport) -> dict[str, Any]:
    return {Path(o.source).name: o for o in report.outcomes}


def statuses(report: IngestReport) -> dict[str, str]:
    return {name: o.status for name, o in by_name(report).items()}


def misses(engine: Engine) -> int:
    assert engine.embedding_cache is not None
    return engine.embedding_cache.misses


def texts_for(engine: Engine, query: str, **filters: Any) -> list[str]:
    """Chunk texts the engine returns (lexical signals only: these tests check what is
    indexed and visible, not the ranking, and need no query embedding)."""
    principals = filters.pop("principals", None)
    result = engine.search(
        query,
        caller=SYSTEM if principals is None else Caller.of("tester", principals),
        k=50,
        filters=SearchFilters(**filters) if filters else None,
        weights={"dense": 0.0, "bm25": 1.0, "bigram": 0.5},
    )
    return [h.chunk.text for h in result.hits]


# ----------------------------------------------------------------- samples


def test_samples_are_all_added(samples_engine: SampleCorpus) -> None:
    report = samples_engine.report
    assert statuses(report) == {
        "가격표.xlsx": "added",
        "경비처리지침.html": "added",
        "복리후생안내.hwpx": "added",
        "인사규정.md": "added",
        "정보보안정책.txt": "added",
        "제품매뉴얼.docx": "added",
        "제품매뉴얼.pdf": "added",
    }
    engine = samples_engine.engine
    counts = engine.index.document_chunk_counts()
    for outcome in report.outcomes:
        assert outcome.chunks > 0 and outcome.error_code is None
        assert counts[outcome.document_id] == outcome.chunks
        row = engine.get_document(outcome.document_id, caller=SYSTEM)
        assert row.status == "indexed" and row.chunk_count == outcome.chunks
        assert row.content_hash and row.acl == ["public"]
    assert engine.catalog.status_counts() == {"indexed": 7}
    assert engine.index.stats().documents == 7
    row = engine.get_document(samples_engine.ids["가격표.xlsx"], caller=SYSTEM)
    assert (row.title, row.format) == ("2025년 클린에어 제품 가격표", "xlsx")


def test_reingesting_unchanged_samples_does_no_work(
    make_engine: EngineFactory,
    sample_copier: Callable[..., Path],
    tmp_path: Path,
    parse_spy: Spy,
    read_spy: Spy,
) -> None:
    docs = sample_copier(tmp_path / "docs")
    engine = make_engine()
    first = engine.ingest([docs])
    assert set(statuses(first).values()) == {"added"}
    assert len(parse_spy.calls) == 7
    cache = engine.embedding_cache
    assert cache is not None
    before = (cache.hits, cache.misses, len(parse_spy.calls), len(read_spy.calls))
    rows = engine.index.stats().details["rows_in_memory"]

    again = engine.ingest([docs])
    assert set(statuses(again).values()) == {"unchanged"}
    assert [o.chunks for o in again.outcomes] == [o.chunks for o in first.outcomes]
    # Not parsed, not even read, not embedded, nothing appended to the index.
    assert (cache.hits, cache.misses, len(parse_spy.calls), len(read_spy.calls)) == before
    assert engine.index.stats().details["rows_in_memory"] == rows

    # A new process on the same data directory knows the files too.
    other = make_engine(engine.settings.data_dir)
    assert set(statuses(other.ingest([docs])).values()) == {"unchanged"}
    assert len(parse_spy.calls) == 7
    assert misses(other) == 0


def test_touched_file_is_unchanged_by_hash(
    make_engine: EngineFactory, tmp_path: Path, parse_spy: Spy, read_spy: Spy
) -> None:
    docs = tmp_path / "docs"
    leave = write(docs, "휴가.md", LEAVE)
    engine = make_engine()
    assert statuses(engine.ingest([docs])) == {"휴가.md": "added"}
    parses, reads, missed = len(parse_spy.calls), len(read_spy.calls), misses(engine)

    later = leave.stat().st_mtime + 3600
    os.utime(leave, (later, later))
    assert statuses(engine.ingest([docs])) == {"휴가.md": "unchanged"}
    assert len(read_spy.calls) == reads + 1  # read to compare the hash...
    assert len(parse_spy.calls) == parses  # ...but not parsed
    assert misses(engine) == missed
    # The new modification time is remembered: the next run does not even read.
    assert statuses(engine.ingest([docs])) == {"휴가.md": "unchanged"}
    assert len(read_spy.calls) == reads + 1


def test_changed_file_is_updated_and_old_chunks_are_gone(make_engine: EngineFactory, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    leave = write(docs, "휴가.md", LEAVE)
    write(docs, "보안.txt", SECURITY)
    engine = make_engine()
    engine.ingest([docs])
    document_id = by_name(engine.ingest([docs]))["휴가.md"].document_id
    old_ids = [c.chunk_id for c in engine.document_chunks(document_id, caller=SYSTEM)]
    security_ids = [
        c.chunk_id
        for c in engine.document_chunks(by_name(engine.ingest([docs]))["보안.txt"].document_id, caller=SYSTEM)
    ]

    leave.write_text(LEAVE_CHANGED, encoding="utf-8")
    report = engine.ingest([docs])
    assert statuses(report) == {"휴가.md": "updated", "보안.txt": "unchanged"}
    assert by_name(report)["휴가.md"].document_id == document_id  # same source, same document
    chunks = engine.document_chunks(document_id, caller=SYSTEM)
    assert "18일" in chunks[0].text
    assert not {c.chunk_id for c in chunks} & set(old_ids)
    found = texts_for(engine, "연차휴가 며칠")
    assert any("18일" in t for t in found)
    assert not any("15일" in t for t in found)
    assert engine.index.stats().documents == 2
    assert [
        c.chunk_id for c in engine.document_chunks(by_name(report)["보안.txt"].document_id, caller=SYSTEM)
    ] == security_ids
    assert engine.get_document(document_id, caller=SYSTEM).chunk_count == len(chunks)


def test_bad_files_fail_alone_and_the_batch_goes_on(make_engine: EngineFactory, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs, "휴가.md", LEAVE)
    write(docs, "empty.txt", b"")
    write(docs, "broken.pdf", b"%PDF-1.7\n this is no pdf at all")
    write(docs, "broken.docx", b"PK\x03\x04 truncated")
    write(docs, "photo.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64))
    write(docs, "big.txt", "가나다라 " * 400)
    write(docs, "data.bin", b"\x00\x01\x02")
    explicit = write(tmp_path, "notes.xyz", "그냥 메모")
    missing = tmp_path / "nowhere.md"
    engine = make_engine(ingest={"max_file_mb": 0.002})  # about 2 KB

    report = engine.ingest([docs, explicit, missing])
    outcomes = by_name(report)
    assert outcomes["휴가.md"].status == "added"
    expected = {
        "empty.txt": "empty_file",
        "broken.pdf": "corrupt_file",
        "broken.docx": "corrupt_file",
        "photo.txt": "unsupported_format",
        "big.txt": "file_too_large",
        "notes.xyz": "unsupported_format",
        "nowhere.md": "not_found",
    }
    for name, code in expected.items():
        assert outcomes[name].status == "failed", name
        assert outcomes[name].error_code == code, name
        assert name in (outcomes[name].error or ""), name
    # Inside a folder, a file no parser takes is skipped, not failed.
    assert (outcomes["data.bin"].status, outcomes["data.bin"].error_code) == ("skipped", "unsupported_format")
    assert {o.source for o in report.failures} == {
        o.source for o in outcomes.values() if o.status == "failed"
    }
    # The catalog remembers each failure; the good file is searchable.
    for name in ("empty.txt", "broken.pdf", "photo.txt", "big.txt"):
        row = engine.get_document(str((docs / name).resolve()), caller=SYSTEM)
        assert (row.status, row.error_code) == ("failed", expected[name])
        assert row.chunk_count == 0
    assert engine.catalog.status_counts() == {"indexed": 1, "failed": 6}
    assert any("15일" in t for t in texts_for(engine, "연차휴가"))

    # A fixed file is added on the next run.
    write(docs, "empty.txt", SECURITY)
    again = by_name(engine.ingest([docs]))
    assert again["empty.txt"].status == "added"
    assert (again["broken.pdf"].status, again["broken.pdf"].error_code) == ("failed", "corrupt_file")


def test_indexed_document_that_turns_corrupt_keeps_its_chunks(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    leave = write(docs, "휴가.md", LEAVE)
    engine = make_engine()
    document_id = by_name(engine.ingest([docs]))["휴가.md"].document_id
    chunks = [c.chunk_id for c in engine.document_chunks(document_id, caller=SYSTEM)]

    leave.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64))
    outcome = by_name(engine.ingest([docs]))["휴가.md"]
    assert (outcome.status, outcome.error_code) == ("failed", "unsupported_format")
    row = engine.get_document(document_id, caller=SYSTEM)
    assert row.status == "indexed"  # the previous version stays searchable...
    assert row.error_code == "unsupported_format" and "휴가.md" in (
        row.last_error or ""
    )  # ...with the error noted
    assert [c.chunk_id for c in engine.document_chunks(document_id, caller=SYSTEM)] == chunks
    assert any("15일" in t for t in texts_for(engine, "연차휴가"))

    leave.write_bytes(b"")  # and when it becomes empty
    outcome = by_name(engine.ingest([docs]))["휴가.md"]
    assert (outcome.status, outcome.error_code) == ("failed", "empty_file")
    assert [c.chunk_id for c in engine.document_chunks(document_id, caller=SYSTEM)] == chunks
    assert engine.get_document(document_id, caller=SYSTEM).status == "indexed"


def test_acl_change_on_reingest_does_not_reembed(
    make_engine: EngineFactory, tmp_path: Path, parse_spy: Spy
) -> None:
    docs = tmp_path / "docs"
    write(docs, "보안.txt", SECURITY)
    engine = make_engine()
    document_id = by_name(engine.ingest([docs]))["보안.txt"].document_id
    assert texts_for(engine, "USB 저장장치", principals=["public"])
    parses, missed, rows = (
        len(parse_spy.calls),
        misses(engine),
        engine.index.stats().details["rows_in_memory"],
    )

    report = engine.ingest(IngestRequest(paths=[docs], acl=["group:security", "user:kim"]))
    assert statuses(report) == {"보안.txt": "acl_updated"}
    assert (len(parse_spy.calls), misses(engine)) == (parses, missed)
    assert engine.index.stats().details["rows_in_memory"] == rows  # not re-indexed either
    assert texts_for(engine, "USB 저장장치", principals=["public"]) == []
    assert texts_for(engine, "USB 저장장치", principals=["user:kim"])
    assert texts_for(engine, "USB 저장장치", principals=["group:security"])
    assert engine.get_document(document_id, caller=SYSTEM).acl == ["group:security", "user:kim"]
    # Same ACL in another order: nothing to do.
    assert statuses(engine.ingest(IngestRequest(paths=[docs], acl=["user:kim", "group:security"]))) == {
        "보안.txt": "unchanged"
    }


@pytest.mark.parametrize("acl", [["admin"], ["group:"], ["user:  "], [""], [], ["public", "team:x"]])
def test_invalid_acl_is_refused_before_anything_is_stored(
    make_engine: EngineFactory, tmp_path: Path, parse_spy: Spy, read_spy: Spy, acl: list[str]
) -> None:
    docs = tmp_path / "docs"
    write(docs, "휴가.md", LEAVE)
    engine = make_engine()
    with pytest.raises(InvalidInputError) as caught:
        engine.ingest(IngestRequest(paths=[docs], acl=acl))
    assert caught.value.code == "invalid_acl"
    assert caught.value.field == "acl"
    assert parse_spy.calls == [] and read_spy.calls == []
    assert engine.catalog.count() == 0
    assert engine.index.stats().chunks == 0


def test_set_document_acl_through_the_engine(make_engine: EngineFactory, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs, "출장.md", TRAVEL)
    engine = make_engine()
    engine.ingest([docs])
    row = engine.set_document_acl("출장.md", ["group:finance"], caller=SYSTEM)  # found by its file name
    assert row.acl == ["group:finance"]
    assert texts_for(engine, "출장 일비", principals=["public"]) == []
    assert texts_for(engine, "출장 일비", principals=["group:finance"])
    with pytest.raises(InvalidInputError) as caught:
        engine.set_document_acl(row.id, ["finance"], caller=SYSTEM)
    assert caught.value.code == "invalid_acl"
    assert engine.get_document(row.id, caller=SYSTEM).acl == ["group:finance"]
    with pytest.raises(NotFoundError) as missing:
        engine.set_document_acl("no-such-document", ["public"], caller=SYSTEM)
    assert missing.value.code == "document_not_found"


def test_new_metadata_or_date_on_unchanged_bytes_reaches_the_chunks(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    write(docs, "출장.md", TRAVEL)
    engine = make_engine()
    document_id = by_name(engine.ingest([docs]))["출장.md"].document_id
    assert "dept" not in engine.index.metadata_keys()

    report = engine.ingest(IngestRequest(paths=[docs], metadata={"dept": "재무"}))
    assert statuses(report) == {"출장.md": "updated"}
    assert engine.document_chunks(document_id, caller=SYSTEM)[0].metadata["dept"] == "재무"
    assert texts_for(engine, "출장 일비", metadata={"dept": "재무"})
    assert statuses(engine.ingest(IngestRequest(paths=[docs], metadata={"dept": "재무"}))) == {
        "출장.md": "unchanged"
    }

    when = datetime(2023, 5, 1, tzinfo=UTC)
    assert statuses(
        engine.ingest(IngestRequest(paths=[docs], metadata={"dept": "재무"}, date_override=when))
    ) == {"출장.md": "updated"}
    assert engine.document_chunks(document_id, caller=SYSTEM)[0].date == to_epoch(when)
    assert statuses(
        engine.ingest(IngestRequest(paths=[docs], metadata={"dept": "재무"}, date_override=when))
    ) == {"출장.md": "unchanged"}
    # A later run that names neither leaves both as they are.
    assert statuses(engine.ingest([docs])) == {"출장.md": "unchanged"}
    chunk = engine.document_chunks(document_id, caller=SYSTEM)[0]
    assert (chunk.metadata["dept"], chunk.date) == ("재무", to_epoch(when))


# -------------------------------------------------------------------- sync


def test_sync_mirrors_a_directory(make_engine: EngineFactory, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs, "휴가.md", LEAVE)
    security = write(docs, "sub/보안.txt", SECURITY)
    sibling = write(tmp_path / "docs2", "출장.md", TRAVEL)  # a sibling whose name starts the same
    engine = make_engine()
    engine.ingest([sibling])
    assert statuses(engine.sync(docs)) == {"휴가.md": "added", "보안.txt": "added"}
    security_id = engine.get_document(str(security.resolve()), caller=SYSTEM).id

    security.unlink()
    report = engine.sync(docs)
    assert statuses(report) == {"휴가.md": "unchanged", "보안.txt": "removed"}
    assert by_name(report)["보안.txt"].document_id == security_id
    assert by_name(report)["보안.txt"].chunks == 1
    with pytest.raises(NotFoundError):
        engine.get_document(security_id, caller=SYSTEM)
    assert engine.document_chunks(security_id, caller=SYSTEM) == []
    # The removed document's text is gone; the others are still found.
    assert not any("USB" in t for t in texts_for(engine, "USB 저장장치"))
    assert texts_for(engine, "휴가")
    # Documents outside the synced folder are left alone.
    assert engine.get_document(str(sibling.resolve()), caller=SYSTEM).status == "indexed"
    assert engine.index.stats().documents == 2


def test_sync_removes_failed_documents_whose_files_vanished(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    write(docs, "휴가.md", LEAVE)
    empty = write(docs, "empty.txt", b"")
    engine = make_engine()
    assert statuses(engine.sync(docs))["empty.txt"] == "failed"
    empty.unlink()
    assert statuses(engine.sync(docs)) == {"휴가.md": "unchanged", "empty.txt": "removed"}
    assert engine.catalog.status_counts() == {"indexed": 1}


def test_sync_of_something_that_is_not_a_directory(make_engine: EngineFactory, tmp_path: Path) -> None:
    engine = make_engine()
    for target in (tmp_path / "missing", write(tmp_path, "file.md", LEAVE)):
        with pytest.raises(InvalidInputError) as caught:
            engine.sync(target)
        assert caught.value.code == "not_a_directory"


def test_delete_document(make_engine: EngineFactory, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs, "휴가.md", LEAVE)
    engine = make_engine()
    engine.ingest([docs])
    row, removed = engine.delete_document("휴가.md", caller=SYSTEM)
    assert removed == 1
    assert engine.catalog.count() == 0 and engine.index.stats().chunks == 0
    with pytest.raises(NotFoundError):
        engine.delete_document(row.id, caller=SYSTEM)


# ------------------------------------------------------------------- globs


def test_include_and_exclude_globs(make_engine: EngineFactory, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs, "휴가.md", LEAVE)
    write(docs, "보안.txt", SECURITY)
    write(docs, "drafts/출장.md", TRAVEL)
    write(docs, "~$휴가.md", LEAVE)  # an office lock file (excluded by default)
    write(docs, ".git/notes.md", TRAVEL)  # excluded by default
    engine = make_engine()

    assert set(
        statuses(engine.ingest(IngestRequest(paths=[docs], include=["*.md"], exclude=["drafts/*"])))
    ) == {"휴가.md"}
    assert set(statuses(engine.ingest(IngestRequest(paths=[docs], exclude=["**/drafts/**", "*.md"])))) == {
        "보안.txt"
    }
    report = engine.ingest([docs])
    assert statuses(report) == {"휴가.md": "unchanged", "보안.txt": "unchanged", "출장.md": "added"}
    assert not any("~$" in o.source or ".git" in o.source for o in report.outcomes)


def test_an_explicit_file_is_still_subject_to_exclude(make_engine: EngineFactory, tmp_path: Path) -> None:
    leave = write(tmp_path, "휴가.md", LEAVE)
    engine = make_engine()
    assert engine.ingest(IngestRequest(paths=[leave], exclude=["*.md"])).outcomes == []
    assert statuses(engine.ingest(IngestRequest(paths=[leave], include=["*.txt"]))) == {
        "휴가.md": "added"
    }  # named explicitly


def test_sample_copies_are_unchanged_after_copying_again(
    make_engine: EngineFactory, sample_copier: Callable[..., Path], tmp_path: Path
) -> None:
    docs = sample_copier(tmp_path / "docs", ["인사규정.md", "정보보안정책.txt"])
    engine = make_engine()
    assert set(statuses(engine.ingest([docs])).values()) == {"added"}
    # Copying the same bytes again changes the modification times only.
    shutil.rmtree(docs)
    sample_copier(docs, ["인사규정.md", "정보보안정책.txt"])
    for path in docs.iterdir():
        os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 10))
    assert set(statuses(engine.ingest([docs])).values()) == {"unchanged"}


# ------------------------------------------------------ one ingestion loop


def test_a_run_yields_its_plan_then_each_file_and_stops_when_asked(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    for name, text in (("휴가.md", LEAVE), ("보안.txt", SECURITY), ("출장.md", TRAVEL)):
        write(docs, name, text)
    write(docs, "도면.xyz", b"?")  # an unsupported format inside a folder: skipped
    engine = make_engine()
    request = IngestRequest(paths=[docs, tmp_path / "없음"])
    root = docs.resolve()

    plan, *outcomes = engine.pipeline.run(request, caller=SYSTEM, done={str(root / "보안.txt")})
    assert isinstance(plan, IngestPlan)
    assert [p.name for p in plan.files] == ["보안.txt", "출장.md", "휴가.md"]
    assert ([p.name for p in plan.skipped], [p.name for p in plan.missing]) == (["도면.xyz"], ["없음"])
    # A file an earlier attempt finished is not done again.
    assert [(o.path, o.status) for o in outcomes] == [
        (str(root / "출장.md"), "added"),
        (str(root / "휴가.md"), "added"),
    ]

    asked: list[int] = []

    def stop_after_one() -> bool:
        asked.append(1)
        return len(asked) > 1

    events = list(engine.pipeline.run(request, caller=SYSTEM, should_stop=stop_after_one))
    assert [type(e).__name__ for e in events] == ["IngestPlan", "FileOutcome"] and len(asked) == 2
    assert isinstance(events[1], FileOutcome) and events[1].status == "added"  # 보안.txt, then the stop


def test_an_ingest_request_travels_as_a_job_payload() -> None:
    when = datetime(2024, 5, 1, tzinfo=UTC)
    request = IngestRequest(
        paths=[Path("/srv/docs")],
        include=["*.md"],
        acl=["group:legal"],
        date_override=when,
        metadata={"d": "법무"},
    )
    assert IngestRequest.from_payload(json.loads(json.dumps(request.as_payload()))) == request
    # Payloads as earlier versions queued them (the API's, the CLI's, an upload batch's).
    old = {"paths": ["/srv/docs"], "acl": None, "include": [], "exclude": None}
    assert IngestRequest.from_payload(old) == IngestRequest(paths=[Path("/srv/docs")])
    batch = {"upload_dir": "/data/upload-batches/j1", "acl": ["public"], "names": {"a.md": "가.md"}}
    upload = IngestRequest.from_payload(batch)
    assert upload.upload == UploadBatch(Path("/data/upload-batches/j1"), {"a.md": "가.md"})
    assert upload.as_payload() == batch
    with pytest.raises(InvalidInputError):
        IngestRequest.from_payload({"acl": ["public"]})
