"""The ``hanrag`` command line through Typer's runner: a real engine on a temporary data
directory, two small samples ingested (with the session's embedding cache copied in)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from answer_fixtures import seed_embedding_cache
from hanrag.cli.main import app

SMALL_SAMPLES = ["정보보안정책.txt", "경비처리지침.html"]
USB = "USB 사용 승인은 며칠 동안 유효한가요?"

HIT_KEYS = {
    "chunk_id",
    "document_id",
    "source",
    "title",
    "text",
    "score",
    "dense_score",
    "bm25_score",
    "page",
}
CITATION_KEYS = {"n", "chunk_id", "document_id", "source", "title", "page"}


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, data_dir: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, ["--data-dir", str(data_dir), *args], env=env, catch_exceptions=False)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def flat(text: str) -> str:
    """Rich wraps long lines at the runner's terminal width; compare without the wrapping."""
    return " ".join(text.split())


def one_line_error(result: Result, code: str) -> str:
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error [{code}] "), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def corpus(
    runner: CliRunner,
    tmp_path_factory: pytest.TempPathFactory,
    shared_cache_path: Path,
    sample_copier: Callable[..., Path],
) -> dict[str, Any]:
    """Two small samples ingested once through ``hanrag ingest --json`` (read-only for the tests)."""
    base = tmp_path_factory.mktemp("cli")
    docs = sample_copier(base / "docs", SMALL_SAMPLES)
    data_dir = base / "data"
    seed_embedding_cache(shared_cache_path, data_dir)
    report = as_json(invoke(runner, data_dir, "ingest", str(docs), "--json"))
    return {"data_dir": data_dir, "docs": docs, "report": report}


# ------------------------------------------------------------------ ingest


def test_ingest_json_report(corpus: dict[str, Any]) -> None:
    report = corpus["report"]
    assert report["counts"] == {"added": 2}
    assert {Path(f["source"]).name for f in report["files"]} == set(SMALL_SAMPLES)
    assert all(f["status"] == "added" and f["chunks"] > 0 and f["document_id"] for f in report["files"])
    assert report["chunks"] == sum(f["chunks"] for f in report["files"])


def test_ingest_again_reports_unchanged_in_the_summary(
    runner: CliRunner, tmp_path: Path, corpus: dict[str, Any], sample_copier: Callable[..., Path]
) -> None:
    docs = sample_copier(tmp_path / "docs", ["경비처리지침.html"])
    data_dir = tmp_path / "data"
    seed_embedding_cache(corpus["data_dir"] / "embed-cache.db", data_dir)
    first = invoke(runner, data_dir, "ingest", str(docs))
    assert first.exit_code == 0, first.stderr
    assert "ingest summary" in first.stdout
    again = invoke(runner, data_dir, "ingest", str(docs), "--json")
    assert as_json(again)["counts"] == {"unchanged": 1}


def test_a_bad_file_in_the_batch_is_reported_with_its_code(
    runner: CliRunner, tmp_path: Path, corpus: dict[str, Any], sample_copier: Callable[..., Path]
) -> None:
    docs = sample_copier(tmp_path / "docs", ["경비처리지침.html"])
    (docs / "빈파일.txt").write_bytes(b"")
    data_dir = tmp_path / "data"
    seed_embedding_cache(corpus["data_dir"] / "embed-cache.db", data_dir)
    report = as_json(invoke(runner, data_dir, "ingest", str(docs), "--json"))
    by_name = {Path(f["source"]).name: f for f in report["files"]}
    assert by_name["빈파일.txt"]["status"] == "failed"
    assert by_name["빈파일.txt"]["error_code"] == "empty_file"
    assert "빈파일.txt" in by_name["빈파일.txt"]["error"]
    assert by_name["경비처리지침.html"]["status"] in ("added", "unchanged")
    # The human summary names the failure and its code too.
    (docs / "경비처리지침.html").unlink()
    table = invoke(runner, data_dir, "ingest", str(docs))
    assert "failures" in table.stdout
    assert "empty_file" in table.stdout.replace("\n", "").replace("│", "").replace(" ", "")
    # Nothing in the batch succeeded: a non-zero exit.
    assert table.exit_code == 1


def test_ingest_of_a_missing_path_fails(runner: CliRunner, tmp_path: Path) -> None:
    result = invoke(runner, tmp_path / "data", "ingest", str(tmp_path / "없는폴더"), "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["counts"] == {"failed": 1}
    assert report["files"][0]["error_code"] == "not_found"


def test_ingest_with_a_bad_date_is_a_one_line_error(runner: CliRunner, tmp_path: Path) -> None:
    result = invoke(runner, tmp_path / "data", "ingest", str(tmp_path), "--date", "어제")
    one_line_error(result, "invalid_input")
    assert result.exit_code == 2


# ------------------------------------------------------------------ search


def test_search_json_shape(runner: CliRunner, corpus: dict[str, Any]) -> None:
    data = as_json(invoke(runner, corpus["data_dir"], "search", USB, "--json", "--k", "3"))
    assert set(data) == {"query", "hits"}
    assert data["query"] == USB
    assert 1 <= len(data["hits"]) <= 3
    for hit in data["hits"]:
        assert set(hit) >= HIT_KEYS
        assert isinstance(hit["score"], float)
        assert isinstance(hit["text"], str) and hit["text"]
    top = data["hits"][0]
    assert Path(top["source"]).name == "정보보안정책.txt"
    assert "30일" in top["text"]
    assert [h["score"] for h in data["hits"]] == sorted((h["score"] for h in data["hits"]), reverse=True)


def test_search_text_output_lists_hits(runner: CliRunner, corpus: dict[str, Any]) -> None:
    result = invoke(runner, corpus["data_dir"], "search", "야근 식대 한도")
    assert result.exit_code == 0, result.stderr
    assert "경비처리지침.html" in result.stdout
    assert "[1]" in result.stdout


@pytest.mark.parametrize("query", ["", "   "])
def test_empty_query_is_a_one_line_error(runner: CliRunner, corpus: dict[str, Any], query: str) -> None:
    result = invoke(runner, corpus["data_dir"], "search", query, "--json")
    one_line_error(result, "empty_query")
    assert result.exit_code == 2
    assert result.stdout == ""


def test_search_with_bad_filters_is_a_one_line_error(runner: CliRunner, corpus: dict[str, Any]) -> None:
    result = invoke(
        runner, corpus["data_dir"], "search", USB, "--date-from", "2025-01-01", "--date-to", "2024-01-01"
    )
    one_line_error(result, "invalid_input")
    unknown_fusion = invoke(runner, corpus["data_dir"], "search", USB, "--fusion", "magic")
    one_line_error(unknown_fusion, "invalid_input")


# ------------------------------------------------------------- ask, sessions


def test_ask_json_shape_and_sessions(runner: CliRunner, corpus: dict[str, Any], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(corpus["data_dir"], data_dir)
    answer = as_json(invoke(runner, data_dir, "ask", USB, "--json"))
    assert {"answer", "citations", "session_id", "timings"} <= set(answer)
    assert "30일" in answer["answer"]
    assert answer["citations"]
    for citation in answer["citations"]:
        assert set(citation) == CITATION_KEYS
        assert f"[{citation['n']}]" in answer["answer"]
    assert Path(answer["citations"][0]["source"]).name == "정보보안정책.txt"
    assert {"planning_ms", "retrieval_ms", "total_ms"} <= set(answer["timings"])
    session = answer["session_id"]

    # A second turn in the same session.
    follow = as_json(
        invoke(runner, data_dir, "ask", "보안사고는 몇 시간 안에 신고하나요?", "--session", session, "--json")
    )
    assert follow["session_id"] == session
    assert "1시간" in follow["answer"]

    sessions = as_json(invoke(runner, data_dir, "sessions", "list", "--json"))
    assert [s["session_id"] for s in sessions] == [session]
    assert sessions[0]["title"] == USB
    messages = as_json(invoke(runner, data_dir, "sessions", "show", session, "--json"))
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0]["content"] == USB
    assert messages[1]["content"] == answer["answer"]
    assert messages[1]["cited_chunk_ids"] == [c["chunk_id"] for c in answer["citations"]]

    text = invoke(runner, data_dir, "sessions", "show", session)
    assert text.exit_code == 0 and "USB" in text.stdout

    deleted = invoke(runner, data_dir, "sessions", "delete", session)
    assert deleted.exit_code == 0 and session in flat(deleted.stdout)
    assert as_json(invoke(runner, data_dir, "sessions", "list", "--json")) == []
    one_line_error(invoke(runner, data_dir, "sessions", "show", session), "session_not_found")
    one_line_error(invoke(runner, data_dir, "sessions", "delete", session), "session_not_found")


def test_ask_streams_text_with_sources(runner: CliRunner, corpus: dict[str, Any], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(corpus["data_dir"], data_dir)
    result = invoke(runner, data_dir, "ask", "야근 식대 한도는 얼마인가요?")
    assert result.exit_code == 0, result.stderr
    assert "12,000원" in result.stdout
    assert "출처" in result.stdout
    assert "session " in result.stdout


def test_ask_with_an_unknown_session_fails(runner: CliRunner, corpus: dict[str, Any], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(corpus["data_dir"], data_dir)
    result = invoke(runner, data_dir, "ask", USB, "--session", "없는-세션", "--json")
    one_line_error(result, "session_not_found")
    assert result.stdout == ""
    assert as_json(invoke(runner, data_dir, "sessions", "list", "--json")) == []


def test_ask_with_an_empty_question_fails(runner: CliRunner, corpus: dict[str, Any], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(corpus["data_dir"], data_dir)
    one_line_error(invoke(runner, data_dir, "ask", " ", "--json"), "empty_question")
    assert as_json(invoke(runner, data_dir, "sessions", "list", "--json")) == []


def test_ask_without_retrieval(runner: CliRunner, corpus: dict[str, Any], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(corpus["data_dir"], data_dir)
    answer = as_json(invoke(runner, data_dir, "ask", USB, "--no-rag", "--json"))
    assert answer["citations"] == []
    assert "언어 모델" in answer["answer"]


# --------------------------------------------------------------- documents


def test_documents_list_show_delete(runner: CliRunner, corpus: dict[str, Any], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(corpus["data_dir"], data_dir)
    documents = as_json(invoke(runner, data_dir, "documents", "list", "--json"))
    assert {Path(d["source"]).name for d in documents} == set(SMALL_SAMPLES)
    assert all(d["status"] == "indexed" and d["chunk_count"] > 0 for d in documents)
    security = next(d for d in documents if d["source"].endswith("정보보안정책.txt"))

    shown = as_json(
        invoke(runner, data_dir, "documents", "show", security["document_id"], "--chunks", "--json")
    )
    assert shown["document_id"] == security["document_id"]
    assert len(shown["chunks"]) == security["chunk_count"]
    assert any("30일" in c["text"] for c in shown["chunks"])
    # A document is found by its source path too.
    by_source = as_json(invoke(runner, data_dir, "documents", "show", security["source"], "--json"))
    assert by_source["document_id"] == security["document_id"]

    deleted = invoke(runner, data_dir, "documents", "delete", security["document_id"])
    assert deleted.exit_code == 0, deleted.stderr
    assert f"{security['chunk_count']} chunks removed" in flat(deleted.stdout)
    remaining = as_json(invoke(runner, data_dir, "documents", "list", "--json"))
    assert [Path(d["source"]).name for d in remaining] == ["경비처리지침.html"]
    one_line_error(
        invoke(runner, data_dir, "documents", "show", security["document_id"]), "document_not_found"
    )
    one_line_error(
        invoke(runner, data_dir, "documents", "delete", security["document_id"]), "document_not_found"
    )
    hits = as_json(invoke(runner, data_dir, "search", USB, "--json"))["hits"]
    assert all(h["document_id"] != security["document_id"] for h in hits)


# ------------------------------------------------------------ status, config


def test_status_json(runner: CliRunner, corpus: dict[str, Any]) -> None:
    data = as_json(invoke(runner, corpus["data_dir"], "status", "--json"))
    assert data["data_dir"] == str(corpus["data_dir"].resolve())
    assert data["documents"] == {"indexed": 2}
    assert data["index"]["documents"] == 2
    assert data["index"]["chunks"] == corpus["report"]["chunks"]
    assert data["generator"]["backend"] == "extractive"
    assert "embedding_model" in data


def test_config_show_masks_secrets(runner: CliRunner, tmp_path: Path) -> None:
    env = {
        "HANRAG_LLM__API_KEY": "sk-very-secret-value",
        "HANRAG_CATALOG_URL": "postgresql://hanrag:db-password-123@db.internal/hanrag",
        "HANRAG_LLM__MAX_TOKENS": "77",
    }
    shown = invoke(runner, tmp_path / "data", "config", "show", "--json", env=env)
    data = as_json(shown)
    assert "sk-very-secret-value" not in shown.stdout
    assert "db-password-123" not in shown.stdout
    assert data["llm"]["api_key"] and data["llm"]["api_key"] != "sk-very-secret-value"
    assert data["llm"]["max_tokens"] == 77  # env settings are applied
    assert data["data_dir"] == str(tmp_path / "data")
    table = invoke(runner, tmp_path / "data", "config", "show", env=env)
    assert table.exit_code == 0
    assert "sk-very-secret-value" not in table.stdout and "db-password-123" not in table.stdout


def test_config_validate(runner: CliRunner, tmp_path: Path) -> None:
    ok = invoke(runner, tmp_path / "data", "config", "validate")
    assert ok.exit_code == 0, ok.stderr
    assert "valid" in ok.stdout
    bad = invoke(runner, tmp_path / "data", "config", "validate", env={"HANRAG_INDEX__BACKEND": "milvus"})
    assert bad.exit_code == 1
    assert "[invalid_settings]" in bad.stderr and "milvus_uri" in bad.stderr


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("HANRAG_CHUNK__MAX_TOKENS", "abc", "chunk.max_tokens"),
        ("HANRAG_LLM__BACKEND", "gpt5", "llm.backend"),
        ("HANRAG_ANSWER__MAX_SESSION_MESSAGES", "1", "answer.max_session_messages"),
    ],
)
@pytest.mark.parametrize("command", [["config", "show"], ["config", "validate"], ["status", "--json"]])
def test_invalid_env_setting_is_a_one_line_error(
    runner: CliRunner, tmp_path: Path, variable: str, value: str, field: str, command: list[str]
) -> None:
    result = invoke(runner, tmp_path / "data", *command, env={variable: value})
    line = one_line_error(result, "invalid_settings")
    assert field in line
    assert result.stdout == ""


def test_missing_config_file_is_a_one_line_error(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["--config", str(tmp_path / "없음.yaml"), "config", "show"])
    one_line_error(result, "config_not_found")
