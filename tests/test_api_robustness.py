"""Robustness of the HTTP API on a real server: schema-driven fuzzing, bad input, limits,
clients that go away mid-stream, and the Prometheus metrics.

The server's engine holds two of the bundled samples (copied, embeddings from the
session cache), so fuzzed uploads and deletes touch nothing shared.
"""

from __future__ import annotations

import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error

from api_server import (
    LiveServer,
    SlowExtractive,
    engine_over_samples,
    metric_value,
    parse_sse,
    read_metric,
    start_server,
    with_api,
)
from conftest import SampleCorpus
from hanrag.api.app import create_app
from hanrag.engine import Engine
from hanrag.settings import Settings

PROBLEM_JSON = "application/problem+json"
BODY_LIMIT_MB = 0.25

# The OpenAPI document of the app (building the app starts no engine). Operations of the
# authentication, administration and job routers are left to their own suites.
_OPENAPI = create_app(
    Settings(data_dir=Path(tempfile.gettempdir()) / "hanrag-openapi-only", _env_file=None)  # type: ignore[call-arg]
).openapi()
SCHEMA = schemathesis.openapi.from_dict(_OPENAPI).exclude(tag_regex="^(auth|admin|jobs)$")


@dataclass
class Robust:
    engine: Engine
    live: LiveServer
    client: httpx.Client


@pytest.fixture(scope="module")
def robust(
    samples_engine: SampleCorpus,
    sample_copier: Any,
    shared_cache_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Robust]:
    base = tmp_path_factory.mktemp("api-robust")
    docs = sample_copier(base / "docs", ["인사규정.md", "정보보안정책.txt"])
    engine = engine_over_samples(base / "data", docs, shared_cache_path)
    live = start_server(engine, with_api(engine.settings, max_body_mb=BODY_LIMIT_MB, max_upload_mb=0.5))
    client = httpx.Client(base_url=live.url, timeout=60)
    try:
        yield Robust(engine, live, client)
    finally:
        client.close()
        live.stop()
        engine.close()


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["status"] == status and body["type"].endswith("/" + body["code"])
    assert body["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert body["code"] == code, body
    return body


# ------------------------------------------------------------------ fuzzing


def test_schema_covers_the_routes() -> None:
    """The fuzzed operations include every native, document, session and health route."""
    paths = {op.path for op in (result.ok() for result in SCHEMA.get_all_operations())}
    for path in (
        "/api/v1/ask",
        "/api/v1/search",
        "/api/v1/documents",
        "/api/v1/documents/{document_id}",
        "/api/v1/documents/{document_id}/reindex",
        "/api/v1/sessions",
        "/api/v1/sessions/{session_id}/messages",
        "/api/v1/models/status",
        "/healthz",
        "/readyz",
        "/v1/chat/completions",
        "/v1/embeddings",
    ):
        assert path in paths
    assert not any(p.startswith(("/api/v1/auth", "/api/v1/admin", "/api/v1/jobs")) for p in paths)


@SCHEMA.parametrize()
@settings(
    max_examples=10,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_fuzzed_requests_never_get_a_server_error(case: Any, robust: Robust) -> None:
    response = case.call(base_url=robust.live.url, timeout=60)
    case.validate_response(response, checks=[not_a_server_error])
    headers = {name.lower(): values[0] for name, values in response.headers.items()}
    assert headers.get("x-request-id")
    legacy = case.path in ("/query", "/query_stream", "/queryToSLLM", "/history", "/reference")
    if response.status_code >= 400 and not legacy:
        assert headers["content-type"].startswith(PROBLEM_JSON), (response.status_code, response.text)


# -------------------------------------------------------------- bad input


@pytest.mark.parametrize("path", ["/api/v1/ask", "/api/v1/search", "/v1/chat/completions", "/v1/embeddings"])
@pytest.mark.parametrize("content", [b"{", b'{"question": "x",}', b"\xff\xfe\x00", b"null", b"[]", b'"q"'])
def test_malformed_json(robust: Robust, path: str, content: bytes) -> None:
    response = robust.client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code in (400, 422)
    body = assert_problem(response, response.status_code)
    # Bytes that are not UTF-8 are refused by FastAPI itself before any JSON parsing ("bad_request").
    assert body["code"] in ("malformed_json", "invalid_request", "bad_request")
    assert body["code"] != "bad_request" or content == b"\xff\xfe\x00"
    if path.startswith("/v1/"):
        assert body["error"]["message"] and body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/ask", {"question": 42}, "question"),
        ("/api/v1/ask", {"question": ["휴가"]}, "question"),
        ("/api/v1/ask", {"question": "휴가", "stream": "yes please"}, "stream"),
        ("/api/v1/ask", {"question": "휴가", "k": "five"}, "k"),
        ("/api/v1/ask", {"question": "휴가", "filters": []}, "filters"),
        ("/api/v1/ask", {"question": "휴가", "session_id": 7}, "session_id"),
        ("/api/v1/search", {"query": None}, "query"),
        ("/api/v1/search", {"query": "휴가", "k": 1.5}, "k"),
        ("/api/v1/search", {"query": "휴가", "filters": {"document_ids": "abc"}}, "filters.document_ids"),
        ("/api/v1/search", {"query": "휴가", "filters": {"metadata": {"dept": 1}}}, "filters.metadata.dept"),
        ("/v1/chat/completions", {"messages": "hello"}, "messages"),
        ("/v1/embeddings", {"input": 5}, "input"),
    ],
)
def test_wrong_types(robust: Robust, path: str, body: dict[str, Any], field: str) -> None:
    problem = assert_problem(robust.client.post(path, json=body), 422, "invalid_request")
    assert problem["errors"] and problem["errors"][0]["field"].startswith(field)
    assert all(e["message"] for e in problem["errors"])


def test_wrong_content_type(robust: Robust) -> None:
    response = robust.client.post(
        "/api/v1/ask", content=b"question=hi", headers={"content-type": "text/plain"}
    )
    assert response.status_code in (400, 415, 422)
    assert_problem(response, response.status_code)


def test_huge_bodies(robust: Robust) -> None:
    limit = int(BODY_LIMIT_MB * 2**20)
    huge = b'{"question": "' + "휴가".encode() * (limit // 4) + b'"}'
    assert len(huge) > limit
    for path in ("/api/v1/search", "/api/v1/documents/x/acl"):
        declared = robust.client.post(path, content=huge, headers={"content-type": "application/json"})
        body = assert_problem(declared, 413, "payload_too_large")
        assert f"{limit:,}" in body["detail"]
    # Questions may carry base64 images: /api/v1/ask and /v1/chat/completions read bodies up to
    # the legacy routes' larger limit (api.legacy_max_body_mb), then refuse them for what they say.
    for path in ("/api/v1/ask", "/v1/chat/completions"):
        read = robust.client.post(path, content=huge, headers={"content-type": "application/json"})
        assert read.status_code in (400, 422), read.text[:200]
    # The legacy routes have a larger limit of their own (api.legacy_max_body_mb, for base64
    # images; refusals there are tested in test_api_legacy.py): this body is read, and
    # answered with the legacy error object (no qry_contents) with HTTP 200.
    legacy = robust.client.post("/query", content=huge, headers={"content-type": "application/json"})
    assert legacy.status_code == 200 and legacy.json()["status_code"] == 400

    def chunks() -> Iterator[bytes]:  # no content-length: cut off while reading
        yield b'{"question": "'
        for _ in range(limit // 8192 + 2):
            yield b"a" * 8192
        yield b'"}'

    chunked = robust.client.post(
        "/api/v1/search", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_problem(chunked, 413, "payload_too_large")
    # Just under the limit is read (and then refused for what it says, not for its size).
    under = robust.client.post("/api/v1/search", json={"query": "가" * (limit // 4)})
    assert_problem(under, 400, "query_too_long")
    assert robust.client.get("/healthz").status_code == 200


def test_unknown_route_and_method(robust: Robust) -> None:
    missing = assert_problem(robust.client.get("/api/v1/nothing-here"), 404, "not_found")
    assert missing["instance"] == "/api/v1/nothing-here"
    assert_problem(robust.client.post("/v2/chat/completions", json={}), 404, "not_found")
    wrong = robust.client.get("/api/v1/ask")
    assert_problem(wrong, 405, "method_not_allowed")
    assert "POST" in wrong.headers["allow"]
    assert_problem(robust.client.delete("/api/v1/documents"), 405, "method_not_allowed")


def test_slow_sender_is_still_served(robust: Robust) -> None:
    """A client that sends its body in small pieces over a second gets its answer."""

    def trickle() -> Iterator[bytes]:
        payload = '{"query": "비밀번호 변경 주기", "k": 2}'.encode()
        for i in range(0, len(payload), 8):
            time.sleep(0.05)
            yield payload[i : i + 8]

    response = robust.client.post(
        "/api/v1/search", content=trickle(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200 and len(response.json()["hits"]) == 2


# ------------------------------------------------------------- disconnects


@pytest.fixture
def slow_answers(robust: Robust) -> Iterator[None]:
    answers = robust.engine.answers
    original = answers.generator
    answers.generator = SlowExtractive(0.5, max_sentences=3)
    try:
        yield
    finally:
        answers.generator = original


def wait_for_metric(url: str, name: str, expected: float, timeout: float = 10.0) -> float | None:
    deadline = time.monotonic() + timeout
    value = read_metric(url, name)
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        value = read_metric(url, name)
    return value


def stored_messages(engine: Engine) -> int:
    return sum(len(engine.sessions.messages(s.id)) for s in engine.sessions.list_sessions(limit=10_000))


@pytest.mark.parametrize(
    ("path", "body", "marker"),
    [
        ("/api/v1/ask", {"question": "계정 잠금은 언제 되나요?", "stream": True}, b"event: delta"),
        (
            "/v1/chat/completions",
            {"stream": True, "messages": [{"role": "user", "content": "계정 잠금은 언제 되나요?"}]},
            b'"delta": {"content": "',  # the first chunk with text (the one before only names the role)
        ),
        (
            "/query_stream",
            {"page_id": "gone-page", "qry_contents": "계정 잠금은 언제 되나요?"},
            b'"type": "answer"',
        ),
    ],
)
def test_client_disconnects_mid_stream(
    robust: Robust, slow_answers: None, path: str, body: dict[str, Any], marker: bytes
) -> None:
    url = robust.live.url
    assert wait_for_metric(url, "hanrag_active_streams", 0) == 0
    messages_before = stored_messages(robust.engine)
    with socket.create_connection(("127.0.0.1", robust.live.port), timeout=30) as sock:
        payload = httpx.Request("POST", url + path, json=body).read()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        )
        sock.sendall(head.encode() + payload)
        received = b""
        while marker not in received:
            data = sock.recv(65536)
            assert data, received
            received += data
        assert received.startswith(b"HTTP/1.1 200")
        assert read_metric(url, "hanrag_active_streams") == 1
    # The socket is closed with the answer half sent.
    assert wait_for_metric(url, "hanrag_active_streams", 0) == 0
    time.sleep(1.0)  # longer than the rest of the answer would have taken
    assert stored_messages(robust.engine) == messages_before  # the interrupted turn was not stored
    # The server goes on serving, streams included.
    answer = robust.client.post("/api/v1/ask", json={"question": "비밀번호 변경 주기는?", "stream": True})
    assert [e.event for e in parse_sse(answer.text)][-1] == "done"
    assert read_metric(url, "hanrag_active_streams") == 0


def test_many_disconnects_leave_nothing_behind(robust: Robust, slow_answers: None) -> None:
    url = robust.live.url
    for _ in range(5):
        with httpx.stream(
            "POST", url + "/api/v1/ask", json={"question": "VPN 사용 규칙", "stream": True}, timeout=30
        ) as response:
            assert response.status_code == 200
            next(response.iter_bytes())
    assert wait_for_metric(url, "hanrag_active_streams", 0) == 0
    assert robust.client.get("/readyz").status_code == 200


# ------------------------------------------------------------------ metrics


def test_metrics(robust: Robust) -> None:
    client, url = robust.client, robust.live.url
    before = client.get("/metrics").text

    def delta(after: str, name: str, labels: dict[str, str] | None = None) -> float:
        return (metric_value(after, name, labels) or 0.0) - (metric_value(before, name, labels) or 0.0)

    assert client.post("/api/v1/ask", json={"question": "수습 기간은 얼마인가요?"}).status_code == 200
    streamed = client.post("/api/v1/ask", json={"question": "연차휴가 이월", "stream": True})
    assert streamed.status_code == 200
    assert client.post("/api/v1/search", json={"query": "재택근무"}).status_code == 200
    assert client.get("/api/v1/documents/nope").status_code == 404
    assert client.get("/not/a/route").status_code == 404
    uploaded = client.post(
        "/api/v1/documents", files={"file": ("메트릭.txt", "메트릭 시험용 문서입니다.".encode())}
    )
    assert uploaded.status_code == 201
    failed = client.post("/api/v1/documents", files={"file": ("빈.txt", b"")})
    assert failed.status_code == 422

    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    after = response.text
    requests = "hanrag_http_requests_total"
    assert delta(after, requests, {"route": "/api/v1/ask", "method": "POST", "status": "200"}) == 2
    assert delta(after, requests, {"route": "/api/v1/search", "method": "POST", "status": "200"}) == 1
    assert delta(after, requests, {"route": "/api/v1/documents/{document_id}", "status": "404"}) == 1
    assert delta(after, requests, {"route": "unmatched", "method": "GET", "status": "404"}) == 1
    assert delta(after, requests, {"route": "/api/v1/documents", "method": "POST", "status": "201"}) == 1
    assert delta(after, "hanrag_http_request_seconds_count", {"route": "/api/v1/ask", "method": "POST"}) == 2
    assert delta(after, "hanrag_http_request_seconds_sum", {"route": "/api/v1/search"}) > 0
    assert metric_value(after, "hanrag_http_request_seconds_bucket", {"route": "/api/v1/ask", "le": "+Inf"})
    assert delta(after, "hanrag_time_to_first_token_seconds_count") == 2
    assert delta(after, "hanrag_time_to_first_token_seconds_sum") > 0
    assert delta(after, "hanrag_retrieval_seconds_count") == 2
    assert metric_value(after, "hanrag_active_streams") == 0
    assert delta(after, "hanrag_ingested_documents_total", {"status": "added"}) == 1
    assert delta(after, "hanrag_ingested_documents_total", {"status": "failed"}) == 1
    ratio = metric_value(after, "hanrag_embedding_cache_hit_ratio")
    assert ratio is not None and 0 < ratio <= 1  # the samples came from the cache
    assert read_metric(url, "hanrag_http_requests_total", {"route": "/metrics", "status": "200"})
