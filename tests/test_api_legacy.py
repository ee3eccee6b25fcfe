"""The legacy protocol (LEGACY_API.md) field by field, over real HTTP on loopback.

The engine has its own sessions over the session's sample index (read-only). Push
mode POSTs to a real HTTP receiver on loopback that records what it gets.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_server import (
    LiveServer,
    Receiver,
    SlowExtractive,
    close_engine_on_index,
    engine_on_index,
    start_receiver,
    start_server,
    with_api,
)
from conftest import SampleCorpus
from hanrag.answer.prompts import EXTRACTIVE_NO_RAG_ANSWER
from hanrag.auth.access import SYSTEM
from hanrag.engine import Engine

T_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
LABEL = "사내 문서"  # api.legacy_corpus_label's default
ERROR_KEYS = {"status_code", "result", "qry_id", "detail", "evt_time"}
ENVELOPE_KEYS = {"status_code", "result", "detail", "continue", "qry_id", "rsp_time", "data_list"}
REFERENCE_EVENT_KEYS = {"type", "status_code", "result", "detail", "evt_time", "data_list"}
PUSHED_REFERENCE_KEYS = REFERENCE_EVENT_KEYS | {"qry_id", "continue", "rsp_time", "rsp_tit"}
R_LABEL = re.compile(r"(\d+)번째 검색데이터: (.+) \(출처:([^()]+)\)")
PASSWORD = "비밀번호는 최소 몇 자 이상이어야 하나요?"
LOCKOUT = "계정 잠금은 언제 되나요?"
BATCH_SECONDS = 0.2


@dataclass
class Legacy:
    engine: Engine
    live: LiveServer
    receiver: Receiver
    client: httpx.Client
    titles: dict[str, str]  # sample file name -> document title
    dates: dict[str, str]  # sample file name -> document date (YYYY-MM-DD)

    def configure(self, **api: Any) -> None:
        """Change ``api.*`` settings of the running app (read per request)."""
        self.live.app.state.settings = with_api(self.live.app.state.settings, **api)


@pytest.fixture(scope="module")
def legacy(
    samples_engine: SampleCorpus, shared_cache_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Legacy]:
    engine = engine_on_index(samples_engine.engine, tmp_path_factory.mktemp("api-legacy"), shared_cache_path)
    receiver = start_receiver()
    settings = with_api(
        engine.settings,
        legacy_response_url=receiver.url,
        legacy_batch_seconds=BATCH_SECONDS,
        legacy_max_body_mb=2.0,
    )
    live = start_server(engine, settings)
    client = httpx.Client(base_url=live.url, timeout=60)
    rows = samples_engine.engine.list_documents(caller=SYSTEM)
    titles = {Path(r.source).name: r.title for r in rows}
    dates = {Path(r.source).name: r.doc_date.date().isoformat() for r in rows if r.doc_date}
    try:
        yield Legacy(engine, live, receiver, client, titles, dates)
    finally:
        client.close()
        live.stop()
        receiver.stop()
        close_engine_on_index(engine)


@pytest.fixture
def slow_generator(legacy: Legacy) -> Iterator[None]:
    """Answers come a sentence every 0.3 s (the extractive generator, paced)."""
    answers = legacy.engine.answers
    original = answers.generator
    answers.generator = SlowExtractive(0.3, max_sentences=3)
    try:
        yield
    finally:
        answers.generator = original


def page() -> str:
    return f"page-{uuid.uuid4().hex[:12]}"


def request(question: str, page_id: str, qry_id: str = "Q1", **extra: Any) -> dict[str, Any]:
    return {
        "qry_id": qry_id,
        "user_id": "kim",
        "page_id": page_id,
        "qry_contents": question,
        "qry_time": [2025, 3, 4, 9, 15, 2, 123456789],
        **extra,
    }


def assert_timestamp(value: Any) -> datetime:
    assert isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", value), value
    moment = datetime.strptime(value, T_FORMAT)
    assert abs((datetime.now() - moment).total_seconds()) < 300  # local time, now
    return moment


def assert_legacy_error(response: httpx.Response, status: int, qry_id: str = "") -> dict[str, Any]:
    """The legacy error object, sent with HTTP 200 (api.legacy_http_status is off)."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert_error_object(body, status, qry_id)
    return body  # type: ignore[no-any-return]


def assert_local_iso(value: Any) -> datetime:
    """Timestamp I: local ISO time without an offset (Java's LocalDateTime.parse reads it)."""
    assert isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?", value), value
    moment = datetime.fromisoformat(value)
    assert moment.tzinfo is None and abs((datetime.now() - moment).total_seconds()) < 300
    return moment


def assert_error_object(body: Any, status: int, qry_id: str = "") -> None:
    assert set(body) == ERROR_KEYS
    assert body["status_code"] == status and body["qry_id"] == qry_id and body["detail"] == ""
    assert isinstance(body["result"], str) and body["result"]
    assert_timestamp(body["evt_time"])


def check_r_item(legacy: Legacy, item: Any) -> list[dict[str, Any]]:
    """The retrieval item: label, numbered Korean titles naming the file, display text, chunk ids."""
    assert set(item) == {"rsp_type", "rsp_tit", "rsp_data"}
    assert item["rsp_type"] == "R" and item["rsp_tit"] == LABEL
    assert isinstance(item["rsp_data"], list) and item["rsp_data"]
    for n, entry in enumerate(item["rsp_data"], start=1):
        assert set(entry) == {"rsp_tit", "rsp_data", "chunk_id"}
        match = R_LABEL.fullmatch(entry["rsp_tit"])
        assert match, entry["rsp_tit"]
        assert int(match.group(1)) == n
        title, file_name = match.group(2), match.group(3)
        assert legacy.titles[file_name] == title
        assert isinstance(entry["rsp_data"], str) and entry["rsp_data"].strip()
        assert isinstance(entry["chunk_id"], str) and entry["chunk_id"]
    return item["rsp_data"]  # type: ignore[no-any-return]


def check_a_item(item: Any, n: int = 1) -> str:
    assert item == {
        "rsp_type": "A",
        "rsp_tit": f"답변{n}",
        "rsp_data": [{"rsp_type": "TT", "rsp_data": item["rsp_data"][0]["rsp_data"]}],
    }
    text = item["rsp_data"][0]["rsp_data"]
    assert isinstance(text, str)
    return text


def cited_chunk_ids(answer: str, retrieved: list[dict[str, Any]]) -> list[str]:
    ids: list[str] = []
    for group in re.findall(r"\[(\d+(?:\s*,\s*\d+)*)\]", answer):
        for number in group.split(","):
            chunk_id = retrieved[int(number) - 1]["chunk_id"]
            if chunk_id not in ids:
                ids.append(chunk_id)
    return ids


def history(legacy: Legacy, page_id: str, **params: Any) -> list[dict[str, Any]]:
    response = legacy.client.get("/history", params={"request_id": page_id, **params})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"history"}
    return body["history"]  # type: ignore[no-any-return]


# -------------------------------------------------------------------- /query


def test_query_envelope(legacy: Legacy) -> None:
    page_id = page()
    response = legacy.client.post("/query", json=request(PASSWORD, page_id, "Q-100"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == ENVELOPE_KEYS
    assert (body["status_code"], body["result"], body["detail"], body["continue"], body["qry_id"]) == (
        200,
        "OK",
        "",
        "E",
        "Q-100",
    )
    assert_timestamp(body["rsp_time"])
    assert [item["rsp_type"] for item in body["data_list"]] == ["R", "A"]
    retrieved = check_r_item(legacy, body["data_list"][0])
    assert R_LABEL.fullmatch(retrieved[0]["rsp_tit"]).group(3) == "정보보안정책.txt"  # type: ignore[union-attr]
    answer = check_a_item(body["data_list"][1])
    assert "10자" in answer

    stored = history(legacy, page_id)
    assert stored == [
        {"role": "human", "content": PASSWORD},
        {"role": "ai", "content": answer, "references": [r["chunk_id"] for r in retrieved]},
    ]
    assert set(cited_chunk_ids(answer, retrieved)) <= set(stored[1]["references"])


def test_query_without_qry_id_and_with_iso_time(legacy: Legacy) -> None:
    body = {"page_id": page(), "qry_contents": PASSWORD, "qry_time": "2025-03-04 09:15:02.123456"}
    response = legacy.client.post("/query", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["qry_id"] is None  # "<qry_id or null>"
    assert response.json()["continue"] == "E"


@pytest.mark.parametrize(
    "qry_time",
    [
        [2025, 3, 4, 9, 15, 2, 123456789],  # nanoseconds, kept to the microsecond
        [2025, 3, 4, 9, 15, 2, 123456],
        [2025, 3, 4, 9, 15],
        "2025-03-04T09:15:02",
        None,
    ],
)
def test_qry_time_forms(legacy: Legacy, qry_time: Any) -> None:
    body = request(PASSWORD, page(), qry_time=qry_time)
    response = legacy.client.post("/query", json=body)
    assert response.status_code == 200, response.text
    assert set(response.json()) == ENVELOPE_KEYS


def test_empty_page_id_gets_a_new_page(legacy: Legacy) -> None:
    before = {s.id for s in legacy.engine.sessions.list_sessions(limit=10_000)}
    for _ in range(2):
        response = legacy.client.post("/query", json=request(PASSWORD, ""))
        assert response.status_code == 200
    created = {s.id for s in legacy.engine.sessions.list_sessions(limit=10_000)} - before
    assert len(created) == 2 and "" not in created
    for page_id in created:
        uuid.UUID(page_id)  # a generated UUID
        assert [m["role"] for m in history(legacy, page_id)] == ["human", "ai"]


def test_no_rag(legacy: Legacy) -> None:
    response = legacy.client.post("/query", json=request(PASSWORD, page(), rag=False))
    body = response.json()
    assert response.status_code == 200 and set(body) == ENVELOPE_KEYS
    assert len(body["data_list"]) == 1
    assert check_a_item(body["data_list"][0]) == EXTRACTIVE_NO_RAG_ANSWER


@pytest.mark.parametrize(
    "image_data",
    ["data:image/png;base64,iVBORw0KGgo=", "iVBORw0KGgo=", {"type": "png", "data": "iVBORw0KGgo="}],
    ids=["data-url", "base64", "object"],
)
@pytest.mark.parametrize("path", ["/query", "/query_stream", "/queryToSLLM"])
def test_image_data_without_a_vision_model(legacy: Legacy, path: str, image_data: Any) -> None:
    page_id = page()
    response = legacy.client.post(path, json=request(PASSWORD, page_id, "Q-img", image_data=image_data))
    body = assert_legacy_error(response, 400, "Q-img")
    assert "비전 모델" in body["result"] and "잘못된 요청" not in body["result"]  # not a shape error
    assert history(legacy, page_id) == []


@pytest.mark.parametrize("image_data", ["", None, {}, []])
def test_empty_image_data_is_no_image(legacy: Legacy, image_data: Any) -> None:
    response = legacy.client.post("/query", json=request(PASSWORD, page(), image_data=image_data))
    assert [item["rsp_type"] for item in response.json()["data_list"]] == ["R", "A"]


def test_lenient_bodies(legacy: Legacy) -> None:
    """What Jackson writes for a Spring DTO: nulls for unset fields, numeric ids, extras."""
    page_number = int(uuid.uuid4().int % 10**12)
    body = {
        "qry_id": 4711,
        "user_id": None,
        "page_id": page_number,
        "qry_contents": PASSWORD,
        "qry_time": [2025, 3, 4, 9, 15, 2, 123456789],
        "rag": None,
        "use_rag": None,
        "auth_class": 3,
        "image_data": None,
        "something_new": {"nested": [1, 2]},
    }
    response = legacy.client.post("/query", json=body)
    assert response.status_code == 200, response.text
    envelope = response.json()
    assert envelope["status_code"] == 200 and envelope["qry_id"] == "4711"
    assert [item["rsp_type"] for item in envelope["data_list"]] == ["R", "A"]  # null rag = retrieval
    assert [m["role"] for m in history(legacy, str(page_number))] == ["human", "ai"]


@pytest.mark.parametrize("field", ["use_rag", "rag"])
@pytest.mark.parametrize("path", ["/query", "/query_stream"])
def test_use_rag_or_rag_false_answers_without_retrieval(legacy: Legacy, field: str, path: str) -> None:
    page_id = page()
    response = legacy.client.post(path, json=request(PASSWORD, page_id, **{field: False}))
    if path == "/query":
        data_list = response.json()["data_list"]
        assert len(data_list) == 1 and check_a_item(data_list[0]) == EXTRACTIVE_NO_RAG_ANSWER
    else:
        payloads = stream_payloads(response)
        assert all(p["type"] == "answer" for p in payloads), payloads  # no reference event
        assert "".join(p["answer"] for p in payloads) == EXTRACTIVE_NO_RAG_ANSWER
    assert history(legacy, page_id)[-1]["references"] == []


@pytest.mark.parametrize("path", ["/query", "/query_stream", "/queryToSLLM"])
@pytest.mark.parametrize(
    ("content", "qry_id"),
    [
        (b"{not json", ""),
        (b"", ""),
        (b"[1, 2, 3]", ""),
        (b'{"qry_id": "Q-7", "page_id": "p"}', "Q-7"),  # no qry_contents
        (b'{"qry_id": "Q-8", "qry_contents": ""}', "Q-8"),
        (b'{"qry_id": "Q-9", "qry_contents": "\xed\x9c\xb4\xea\xb0\x80", "rag": "maybe"}', "Q-9"),
        (b'{"qry_id": "Q-10", "qry_contents": "x", "qry_time": [2025, 13, 1]}', "Q-10"),
    ],
)
def test_malformed_body(legacy: Legacy, path: str, content: bytes, qry_id: str) -> None:
    response = legacy.client.post(path, content=content, headers={"content-type": "application/json"})
    assert_legacy_error(response, 400, qry_id)


def test_too_long_question(legacy: Legacy) -> None:
    response = legacy.client.post("/query", json=request("휴가 " * 1000, page(), "Q-long"))
    assert_legacy_error(response, 400, "Q-long")


def test_real_http_statuses_when_configured(legacy: Legacy) -> None:
    import json

    legacy.configure(legacy_http_status=True)
    try:
        malformed = legacy.client.post("/query", json={"qry_id": "Q-real", "qry_contents": ""})
        missing = legacy.client.get("/history")
        big = json.dumps(request("휴가", page(), padding="x" * 2_200_000)).encode()
        too_large = legacy.client.post("/query", content=big, headers={"content-type": "application/json"})
    finally:
        legacy.configure(legacy_http_status=False)
    assert malformed.status_code == 400 and malformed.json()["status_code"] == 400
    assert missing.status_code == 400 and missing.json()["status_code"] == 400
    assert too_large.status_code == 413 and too_large.json()["status_code"] == 413


@pytest.mark.parametrize("path", ["/query", "/query_stream", "/queryToSLLM"])
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_body_over_the_limit_gets_the_legacy_error_object(legacy: Legacy, path: str, declared: bool) -> None:
    import json

    refused_page = page()
    # The legacy routes' own limit (api.legacy_max_body_mb, 2 MiB here; 20 MiB by default).
    body = json.dumps(request("휴가", refused_page, "Q-big", padding="x" * 2_200_000)).encode()
    content: bytes | Iterator[bytes] = (
        body if declared else iter([body[i : i + 65536] for i in range(0, len(body), 65536)])
    )
    response = legacy.client.post(path, content=content, headers={"content-type": "application/json"})
    assert_legacy_error(response, 413)
    assert history(legacy, refused_page) == []  # nothing was stored for the refused request
    assert legacy.client.post("/query", json=request(PASSWORD, page(), "Q-after")).status_code == 200


def test_legacy_body_limit_is_larger_than_the_general_one(legacy: Legacy) -> None:
    """A 1.5 MB body (a base64 image's size) passes on a legacy route (and on the other routes
    whose questions may carry images), not on the others."""
    page_id = page()
    response = legacy.client.post("/query", json=request(PASSWORD, page_id, padding="x" * 1_500_000))
    assert response.status_code == 200 and response.json()["status_code"] == 200, response.text[:300]
    native = legacy.client.post("/api/v1/ask", json={"question": PASSWORD, "padding": "x" * 1_500_000})
    assert native.status_code != 413
    search = legacy.client.post("/api/v1/search", json={"query": PASSWORD, "padding": "x" * 1_500_000})
    assert search.status_code == 413


# ------------------------------------------------------------- /query_stream


def stream_payloads(response: httpx.Response) -> list[dict[str, Any]]:
    """Each event is one ``data: <json>`` line and a blank line; nothing else on the wire."""
    import json

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    text = response.text
    assert text.endswith("\n\n")
    payloads = []
    for block in text.split("\n\n")[:-1]:
        assert "\n" not in block and block.startswith("data: "), block
        payloads.append(json.loads(block.removeprefix("data: ")))
    return payloads


def test_query_stream(legacy: Legacy, slow_generator: None) -> None:
    page_id = page()
    response = legacy.client.post("/query_stream", json=request(LOCKOUT, page_id, "Q-s1"))
    payloads = stream_payloads(response)
    reference = payloads[0]
    assert set(reference) == REFERENCE_EVENT_KEYS
    assert (reference["type"], reference["status_code"], reference["result"], reference["detail"]) == (
        "reference",
        200,
        "OK",
        "Reference data",
    )
    assert_local_iso(reference["evt_time"])
    assert len(reference["data_list"]) == 1
    retrieved = check_r_item(legacy, reference["data_list"][0])

    answers = payloads[1:]
    assert len(answers) >= 2, answers
    for payload in answers:
        assert set(payload) == {"type", "answer"} and payload["type"] == "answer"
        assert isinstance(payload["answer"], str) and payload["answer"]
    text = "".join(p["answer"] for p in answers)
    assert all(len(p["answer"]) < len(text) for p in answers)  # increments, never the whole text again
    stored = history(legacy, page_id)
    assert stored[-1] == {"role": "ai", "content": text, "references": [r["chunk_id"] for r in retrieved]}
    assert stored[-2] == {"role": "human", "content": LOCKOUT}


@pytest.mark.parametrize("rag", [True, None])
def test_query_stream_reference_event_without_hits(legacy: Legacy, rag: bool | None) -> None:
    """A greeting retrieves nothing: the reference event still comes, with an empty R item."""
    payloads = stream_payloads(
        legacy.client.post("/query_stream", json=request("안녕하세요", page(), rag=rag))
    )
    reference = payloads[0]
    assert set(reference) == REFERENCE_EVENT_KEYS and reference["type"] == "reference"
    assert reference["data_list"] == [{"rsp_type": "R", "rsp_tit": LABEL, "rsp_data": []}]
    assert_local_iso(reference["evt_time"])
    assert [p["type"] for p in payloads[1:]] == ["answer"] * (len(payloads) - 1) and payloads[1:]


def test_query_stream_ends_after_the_idle_timeout(legacy: Legacy) -> None:
    answers = legacy.engine.answers
    original = answers.generator
    answers.generator = SlowExtractive(1.0, max_sentences=3)
    legacy.configure(legacy_idle_timeout_s=0.3)
    try:
        payloads = stream_payloads(legacy.client.post("/query_stream", json=request(LOCKOUT, page())))
    finally:
        legacy.configure(legacy_idle_timeout_s=120.0)
        answers.generator = original
    assert [p["type"] for p in payloads] == ["reference", "error"], payloads
    assert "0.3초" in payloads[-1]["message"]


@pytest.mark.parametrize("question", ["   ", "휴가 " * 1000])
def test_query_stream_error_event(legacy: Legacy, question: str) -> None:
    page_id = page()
    payloads = stream_payloads(legacy.client.post("/query_stream", json=request(question, page_id)))
    assert len(payloads) == 1
    assert set(payloads[0]) == {"type", "message"} and payloads[0]["type"] == "error"
    assert payloads[0]["message"]
    assert history(legacy, page_id) == []  # nothing stored for a failed turn


# ------------------------------------------------------ /history, /reference


@pytest.fixture(scope="module")
def conversation(legacy: Legacy) -> tuple[str, list[dict[str, Any]]]:
    """A page with two turns; returns its id and the two /query envelopes."""
    page_id = page()
    bodies = []
    for qry_id, question in (("H1", PASSWORD), ("H2", "VPN은 어떻게 사용하나요?")):
        response = legacy.client.post("/query", json=request(question, page_id, qry_id))
        assert response.status_code == 200
        bodies.append(response.json())
    return page_id, bodies


def test_history(legacy: Legacy, conversation: tuple[str, list[dict[str, Any]]]) -> None:
    page_id, bodies = conversation
    stored = history(legacy, page_id)
    assert [m["role"] for m in stored] == ["human", "ai", "human", "ai"]
    for message in stored:
        assert set(message) == (
            {"role", "content"} if message["role"] == "human" else {"role", "content", "references"}
        )
    assert [stored[0]["content"], stored[2]["content"]] == [PASSWORD, "VPN은 어떻게 사용하나요?"]
    for ai, body in zip((stored[1], stored[3]), bodies, strict=True):
        retrieved = body["data_list"][0]["rsp_data"]
        answer = body["data_list"][1]["rsp_data"][0]["rsp_data"]
        assert ai["content"] == answer
        # Every chunk of the reference event, in order: the list lines up with /reference.
        assert ai["references"] == [r["chunk_id"] for r in retrieved]
    assert history(legacy, page_id, last_index=1) == stored[2:]
    assert history(legacy, page_id, last_index=0) == stored[1:]
    assert history(legacy, page_id, last_index=3) == []
    assert history(legacy, "no-such-page") == []


@pytest.mark.parametrize("params", [{}, {"request_id": ""}, {"last_index": "1"}])
def test_history_needs_request_id(legacy: Legacy, params: dict[str, str]) -> None:
    assert_legacy_error(legacy.client.get("/history", params=params), 400)


def test_history_bad_last_index(legacy: Legacy, conversation: tuple[str, list[dict[str, Any]]]) -> None:
    response = legacy.client.get("/history", params={"request_id": conversation[0], "last_index": "two"})
    assert_legacy_error(response, 400)


def test_reference(legacy: Legacy, conversation: tuple[str, list[dict[str, Any]]]) -> None:
    page_id, bodies = conversation
    for msg_index, body in ((1, bodies[0]), (3, bodies[1])):
        response = legacy.client.get("/reference", params={"request_id": page_id, "msg_index": msg_index})
        assert response.status_code == 200
        payload = response.json()
        assert set(payload) == {"references"}
        retrieved = body["data_list"][0]["rsp_data"]
        assert len(payload["references"]) == len(retrieved)
        for reference, shown in zip(payload["references"], retrieved, strict=True):
            assert set(reference) == {"file_name", "title", "text", "date"}
            assert shown["rsp_tit"].endswith(f": {reference['title']} (출처:{reference['file_name']})")
            assert reference["text"] == shown["rsp_data"]
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", reference["date"])
            assert reference["date"] == legacy.dates[reference["file_name"]] + " 00:00:00"
    first = legacy.client.get("/reference", params={"request_id": page_id, "msg_index": 1}).json()
    assert first["references"][0]["file_name"] == "정보보안정책.txt"
    assert first["references"][0]["date"] == "2024-11-01 00:00:00"  # the pinned date of the sample


@pytest.mark.parametrize(
    ("msg_index", "error"),
    [
        ("0", "해당 메시지는 AI 응답이 아닙니다."),
        ("2", "해당 메시지는 AI 응답이 아닙니다."),
        ("4", "유효하지 않은 메시지 인덱스"),
        ("99", "유효하지 않은 메시지 인덱스"),
        ("-1", "유효하지 않은 메시지 인덱스"),
        ("abc", "유효하지 않은 메시지 인덱스"),
    ],
)
def test_reference_errors(
    legacy: Legacy, conversation: tuple[str, list[dict[str, Any]]], msg_index: str, error: str
) -> None:
    response = legacy.client.get("/reference", params={"request_id": conversation[0], "msg_index": msg_index})
    assert response.status_code == 400
    assert response.json() == {"error": error}


def test_reference_unknown_page_and_missing_request_id(legacy: Legacy) -> None:
    unknown = legacy.client.get("/reference", params={"request_id": "no-such-page", "msg_index": 0})
    assert unknown.status_code == 400 and unknown.json() == {"error": "유효하지 않은 메시지 인덱스"}
    for params in ({"msg_index": 1}, {"request_id": "no-such-page"}, {"request_id": "p", "msg_index": ""}):
        assert_legacy_error(legacy.client.get("/reference", params=params), 400)
