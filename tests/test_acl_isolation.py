"""Cross-endpoint isolation over real HTTP: group A never sees a group-B-only document.

One token-mode server (uvicorn on loopback) around one engine whose corpus is built so
that the B-only documents are by far the best match for the question every test asks;
alice (group a) asks it through every endpoint and must get A/public material only:
no document id, chunk id, title, file name or the B-only secret string anywhere in any
response body or pushed payload. bob (group b) and the administrator asking the same
question DO get the B documents, so every "never" below is a real check.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from api_server import LiveServer, parse_sse, start_server
from hanrag.auth.access import SYSTEM
from hanrag.embed.cache import EmbeddingCache
from hanrag.engine import Engine
from hanrag.errors import NotFoundError
from hanrag.ingest.model import IngestRequest
from hanrag.settings import Settings

SECRET = "ZEBRA7731"
B_FILE_STEM = "b-aurora"
QUESTION = "오로라 프로젝트의 출시 일정과 예산은 어떻게 되나요?"
PASSWORD = "correct-horse-battery"

B_DOCS = [
    f"# 오로라 프로젝트 출시 일정 {SECRET}-{i}\n\n"
    f"오로라 프로젝트의 출시 일정은 2025년 {i + 3}월이며 예산은 {i + 12}억 원입니다. "
    f"오로라 프로젝트 출시 일정과 예산은 기밀이며 승인 코드는 {SECRET}입니다.\n"
    for i in range(6)
]
A_DOCS = [
    "# A팀 주간 회의\n\nA팀 주간 회의는 매주 월요일 오전 10시에 3층 회의실에서 열립니다.\n",
    "# A팀 장비 대여\n\n노트북과 모니터 대여는 A팀 총무에게 신청서를 제출하면 됩니다.\n",
    "# A팀 교육 계획\n\n신입 사원 교육은 입사 후 첫 2주 동안 진행되며 멘토가 배정됩니다.\n",
    "# A팀 보고 절차\n\n프로젝트 진행 현황은 매월 마지막 주 금요일에 팀장에게 보고합니다.\n",
]
B_META_KEY = "codename"  # a metadata key that only B's documents carry
PUBLIC_DOC = "# 사내 공지\n\n모든 사내 공지는 인트라넷 게시판에 매주 화요일 게시됩니다.\n"


@dataclass
class Receiver:
    """Records the JSON bodies the legacy push mode POSTs to its response URL."""

    server: ThreadingHTTPServer
    bodies: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/rsp"

    def until_last(self, qry_id: str, timeout: float = 30.0) -> list[Any]:
        """The payloads about ``qry_id`` once the last one (``continue: E``) has arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                mine = [b for b in self.bodies if isinstance(b, dict) and b.get("qry_id") == qry_id]
            if any(b.get("continue") == "E" for b in mine):
                return mine
            time.sleep(0.05)
        raise AssertionError(f"no final push for {qry_id} in {timeout} s: {mine!r}")


def start_receiver() -> Receiver:
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's naming
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            with holder[0].lock:
                holder[0].bodies.append(json.loads(raw.decode("utf-8")))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder.append(Receiver(server))
    threading.Thread(target=server.serve_forever, name="push-receiver", daemon=True).start()
    return holder[0]


@dataclass
class World:
    engine: Engine
    live: LiveServer
    receiver: Receiver
    tokens: dict[str, str]  # username -> access token
    keys: dict[str, str]  # name -> API key
    a_ids: set[str]
    b_ids: set[str]
    public_id: str
    b_chunks: set[str]
    b_sources: set[str]

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(base_url=self.live.url, headers=self.headers(who), timeout=60)

    @property
    def forbidden(self) -> list[str]:
        """Strings that must never reach alice: the secret, B's ids, chunk ids and file names."""
        return [SECRET, B_FILE_STEM, *self.b_ids, *self.b_chunks, *self.b_sources]


def assert_clean(world: World, payload: Any, where: str) -> None:
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    leaked = [s for s in world.forbidden if s in text]
    assert not leaked, f"{where}: B-only material leaked: {leaked}\n{text[:2000]}"


def assert_leaks(world: World, payload: Any, *, with_ids: bool = True) -> None:
    """The opposite check for B's readers (proves the corpus makes B the best match)."""
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    assert SECRET in text, text[:2000]
    if with_ids:
        assert any(d in text for d in world.b_ids), text[:2000]


def _write(directory: Path, name: str, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, shared_cache_path: Path) -> Iterator[World]:
    base = tmp_path_factory.mktemp("acl-isolation")
    docs = base / "docs"
    for i, text in enumerate(B_DOCS):
        _write(docs / "b", f"{B_FILE_STEM}-{i}.md", text)
    for i, text in enumerate(A_DOCS):
        _write(docs / "a", f"a-team-{i}.md", text)
    _write(docs / "p", "notice.md", PUBLIC_DOC)

    receiver = start_receiver()
    settings = Settings(
        data_dir=base / "data",
        auth={"mode": "token"},
        api={"legacy_response_url": receiver.url, "legacy_batch_seconds": 0.05},
    )
    engine = Engine(settings)
    engine.__dict__["embedding_cache"] = EmbeddingCache(shared_cache_path)
    reports = [
        engine.ingest(IngestRequest(paths=[docs / "b"], acl=["group:b"], metadata={B_META_KEY: "aurora"})),
        engine.ingest(IngestRequest(paths=[docs / "a"], acl=["group:a"])),
        engine.ingest(IngestRequest(paths=[docs / "p"], acl=["public"])),
    ]
    for report in reports:
        assert all(o.status == "added" for o in report.outcomes), report.outcomes
    rows = engine.list_documents(limit=100, caller=SYSTEM)
    b_rows = [r for r in rows if B_FILE_STEM in r.source]
    a_rows = [r for r in rows if "a-team" in r.source]
    (public_row,) = [r for r in rows if r.source.endswith("notice.md")]
    assert len(b_rows) == 6 and len(a_rows) == 4
    assert all(r.acl == ["group:b"] for r in b_rows) and all(r.acl == ["group:a"] for r in a_rows)
    b_chunks = {c.chunk_id for r in b_rows for c in engine.document_chunks(r.id, caller=SYSTEM)}
    assert len(b_chunks) >= 6

    auth = engine.auth
    auth.create_user("admin", PASSWORD, role="admin")
    auth.create_user("alice", PASSWORD, role="editor", groups=["a"])
    auth.create_user("bob", PASSWORD, role="viewer", groups=["b"])
    auth.create_user("svc", PASSWORD, role="viewer")
    # The delegating backend's own account: a key acts for a user only within the
    # principals the key holds, so the backend is a member of the groups it serves.
    auth.create_user("spring", PASSWORD, role="viewer", groups=["a", "b"])
    keys = {
        "alice": auth.create_api_key("alice", "alice-script")["key"],
        "delegate": auth.create_api_key("spring", "spring-backend", can_delegate=True)["key"],
        "plain": auth.create_api_key("svc", "no-delegation")["key"],
    }
    tokens = {name: auth.login(name, PASSWORD)["access_token"] for name in ("admin", "alice", "bob")}
    live = start_server(engine)
    try:
        yield World(
            engine=engine,
            live=live,
            receiver=receiver,
            tokens=tokens,
            keys=keys,
            a_ids={r.id for r in a_rows},
            b_ids={r.id for r in b_rows},
            public_id=public_row.id,
            b_chunks=b_chunks,
            b_sources={r.source for r in b_rows},
        )
    finally:
        live.stop()
        receiver.server.shutdown()
        receiver.server.server_close()
        engine.close()


def search(world: World, who: str, k: int, **extra: Any) -> dict[str, Any]:
    with world.client(who) as client:
        response = client.post("/api/v1/search", json={"query": QUESTION, "k": k, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def legacy_body(**fields: Any) -> dict[str, Any]:
    return {"qry_id": uuid.uuid4().hex, "qry_contents": QUESTION, "rag": True, **fields}


# ------------------------------------------------------------------ retrieval


def test_b_documents_are_the_best_match_for_their_readers(world: World) -> None:
    for who in ("bob", "admin"):
        hits = search(world, who, 4)["hits"]
        assert len(hits) == 4
        assert {h["document_id"] for h in hits} <= world.b_ids, (who, hits)
        assert_leaks(world, hits)


def test_retrieval_filters_inside_the_index_query(world: World) -> None:
    """Six B-only documents outrank everything alice may read; she still gets k hits."""
    allowed = world.a_ids | {world.public_id}
    for k in (3, 5):
        body = search(world, "alice", k)
        hits = body["hits"]
        assert len(hits) == k, hits
        assert {h["document_id"] for h in hits} <= allowed
        assert_clean(world, body, f"search k={k}")
    # Asking for B's documents by id does not get around the ACL.
    body = search(world, "alice", 5, filters={"document_ids": sorted(world.b_ids)})
    assert body["hits"] == []
    assert_clean(world, body, "search by B ids")


def test_a_metadata_filter_never_reveals_keys_of_documents_the_caller_cannot_read(world: World) -> None:
    """Only B's documents carry the key: for alice it is as unknown as a key nobody has,
    and the error's list of known keys holds none of B's."""
    filtered = {"query": QUESTION, "k": 5, "filters": {"metadata": {B_META_KEY: "aurora"}}}
    with world.client("bob") as client:
        readable = client.post("/api/v1/search", json=filtered)
    assert readable.status_code == 200 and readable.json()["hits"], readable.text
    assert {h["document_id"] for h in readable.json()["hits"]} <= world.b_ids
    with world.client("alice") as client:
        hidden = client.post("/api/v1/search", json=filtered)
        nobody = client.post("/api/v1/search", json={**filtered, "filters": {"metadata": {"nokey": "x"}}})
    assert hidden.status_code == nobody.status_code == 400, hidden.text
    assert hidden.json()["code"] == nobody.json()["code"] == "unknown_filter_field"
    assert hidden.json()["detail"].replace(B_META_KEY, "nokey") == nobody.json()["detail"]
    assert B_META_KEY not in nobody.json()["detail"]
    assert_clean(world, hidden.json(), "metadata filter on a B-only key")


# -------------------------------------------------------------------- native


def test_native_ask_json_and_sse_never_leak(world: World) -> None:
    allowed = world.a_ids | {world.public_id}
    with world.client("alice") as client:
        response = client.post("/api/v1/ask", json={"question": QUESTION, "k": 4})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["references"], body
        assert {r["document_id"] for r in body["references"]} <= allowed
        assert {c["document_id"] for c in body["citations"]} <= allowed
        assert_clean(world, response.text, "ask JSON")

        streamed = client.post("/api/v1/ask", json={"question": QUESTION, "k": 4, "stream": True})
        assert streamed.status_code == 200
        assert streamed.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(streamed.text)
        assert events[0].event == "references" and events[-1].event == "done"
        references = events[0].json()["references"]
        assert references and {r["document_id"] for r in references} <= allowed
        assert_clean(world, streamed.text, "ask SSE")

        # Her own session holds only what she was shown.
        messages = client.get(f"/api/v1/sessions/{body['session_id']}/messages")
        assert messages.status_code == 200 and len(messages.json()) == 2
        assert_clean(world, messages.text, "own session messages")


# ----------------------------------------------------------------- documents


def test_documents_endpoints_treat_b_as_missing(world: World) -> None:
    b_id = sorted(world.b_ids)[0]
    b_source = next(s for s in world.b_sources if s.endswith("-0.md"))
    missing = "f" * 24
    with world.client("alice") as client:
        listing = client.get("/api/v1/documents", params={"limit": 1000})
        assert listing.status_code == 200
        ids = {item["document_id"] for item in listing.json()["items"]}
        assert ids == world.a_ids | {world.public_id}
        assert listing.json()["total"] == 5
        assert_clean(world, listing.text, "documents list")

        def attempts(key: str) -> list[httpx.Response]:
            return [
                client.get(f"/api/v1/documents/{key}"),
                client.delete(f"/api/v1/documents/{key}"),
                client.post(f"/api/v1/documents/{key}/reindex"),
                client.put(f"/api/v1/documents/{key}/acl", json={"acl": ["group:a"]}),
            ]

        for hidden, absent in zip(attempts(b_id), attempts(missing), strict=True):
            assert hidden.status_code == absent.status_code == 404, (hidden.text, absent.text)
            got, expected = hidden.json(), absent.json()
            assert got["code"] == expected["code"] == "document_not_found"
            assert got["detail"].replace(b_id, missing) == expected["detail"]
            assert SECRET not in hidden.text and B_FILE_STEM not in hidden.text
        # By source path too (get_document accepts either).
        by_source = client.get(f"/api/v1/documents/{b_source}")
        assert by_source.status_code == 404 and SECRET not in by_source.text
    # Nothing happened to B's document.
    row = world.engine.get_document(b_id, caller=SYSTEM)
    assert row.acl == ["group:b"] and row.status == "indexed"
    assert {c.chunk_id for c in world.engine.document_chunks(b_id, caller=SYSTEM)} <= world.b_chunks
    assert world.engine.document_chunks(b_id, caller=SYSTEM)
    with world.client("bob") as client:
        assert client.get(f"/api/v1/documents/{b_id}").status_code == 200


def test_hidden_document_404_body_is_identical_to_a_missing_one(world: World) -> None:
    b_id = sorted(world.b_ids)[0]
    missing = "f" * 24
    with world.client("alice") as client:
        hidden = client.get(f"/api/v1/documents/{b_id}").json()
        absent = client.get(f"/api/v1/documents/{missing}").json()
    for body in (hidden, absent):
        body.pop("request_id", None)
    assert json.dumps(hidden, sort_keys=True).replace(b_id, missing) == json.dumps(absent, sort_keys=True)


# ------------------------------------------------------------------ sessions


def test_sessions_are_private(world: World) -> None:
    with world.client("bob") as bob:
        answer = bob.post("/api/v1/ask", json={"question": QUESTION, "k": 4})
        assert answer.status_code == 200, answer.text
        assert_leaks(world, answer.text)
        bob_session = answer.json()["session_id"]
        bob_messages = bob.get(f"/api/v1/sessions/{bob_session}/messages")
        assert bob_messages.status_code == 200 and len(bob_messages.json()) == 2
        assert_leaks(world, bob_messages.text)

    with world.client("alice") as alice:
        listed = alice.get("/api/v1/sessions")
        assert listed.status_code == 200
        assert bob_session not in listed.text
        assert all(s["principal"] == "alice" for s in listed.json())

        messages = alice.get(f"/api/v1/sessions/{bob_session}/messages")
        assert messages.status_code == 404 and messages.json()["code"] == "session_not_found"
        deleted = alice.delete(f"/api/v1/sessions/{bob_session}")
        assert deleted.status_code == 404
        hijack = alice.post("/api/v1/ask", json={"question": QUESTION, "session_id": bob_session})
        assert hijack.status_code in (400, 404) and hijack.json()["code"] == "session_not_found"
        hijack_stream = alice.post(
            "/api/v1/ask", json={"question": QUESTION, "session_id": bob_session, "stream": True}
        )
        assert hijack_stream.status_code in (400, 404)
        # Legacy history/reference without delegation: alice sees nothing of bob's page.
        history = alice.get("/history", params={"request_id": bob_session})
        assert history.status_code == 200 and history.json() == {"history": []}
        reference = alice.get("/reference", params={"request_id": bob_session, "msg_index": 1})
        assert reference.status_code == 400
        # Naming bob's page id in a legacy query opens a room of alice's own: no refusal
        # that would tell her the id is taken, and nothing of bob's conversation.
        legacy = alice.post("/query", json=legacy_body(page_id=bob_session, user_id="bob"))
        assert legacy.status_code == 200
        own = alice.get("/history", params={"request_id": bob_session}).json()["history"]
        assert [m["role"] for m in own] == ["human", "ai"]
        for response in (messages, deleted, hijack, hijack_stream, history, reference, legacy, listed):
            assert_clean(world, response.text, str(response.request.url))
        # A non-delegating service key naming bob does not read his page either.
        plain = alice.get(
            "/history",
            params={"request_id": bob_session},
            headers={"Authorization": f"Bearer {world.keys['plain']}"},
        )
        assert plain.json() == {"history": []}

    # Bob's conversation is untouched by those attempts.
    with world.client("bob") as bob:
        after = bob.get(f"/api/v1/sessions/{bob_session}/messages")
        assert after.status_code == 200 and len(after.json()) == 2
        history = bob.get("/history", params={"request_id": bob_session})
        assert len(history.json()["history"]) == 2
        reference = bob.get("/reference", params={"request_id": bob_session, "msg_index": 1})
        assert_leaks(world, reference.text, with_ids=False)  # legacy references carry no ids


# ---------------------------------------------------------- OpenAI-compatible


def test_openai_compatible_never_leaks(world: World) -> None:
    allowed = world.a_ids | {world.public_id}
    client = openai.OpenAI(base_url=f"{world.live.url}/v1", api_key=world.tokens["alice"], max_retries=0)
    completion = client.chat.completions.create(
        model="hanrag", messages=[{"role": "user", "content": QUESTION}]
    )
    dumped = completion.model_dump()
    assert completion.choices[0].message.content
    assert {s["document_id"] for s in dumped["sources"]} <= allowed
    assert_clean(world, dumped, "chat completion")

    chunks = list(
        client.chat.completions.create(
            model="hanrag", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
    )
    dumps = [c.model_dump() for c in chunks]
    assert any(d.get("sources") is not None for d in dumps)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert_clean(world, dumps, "chat completion stream")

    # The same request from bob gets B's documents (the check above is not vacuous).
    bob_client = openai.OpenAI(base_url=f"{world.live.url}/v1", api_key=world.tokens["bob"], max_retries=0)
    bob_completion = bob_client.chat.completions.create(
        model="hanrag", messages=[{"role": "user", "content": QUESTION}]
    )
    assert_leaks(world, bob_completion.model_dump())

    # No token: refused before anything is retrieved.
    anonymous = openai.OpenAI(base_url=f"{world.live.url}/v1", api_key="not-a-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.chat.completions.create(model="hanrag", messages=[{"role": "user", "content": QUESTION}])


# -------------------------------------------------------------------- legacy


def _legacy_query_texts(world: World, headers: dict[str, str], **fields: Any) -> tuple[str, str]:
    with httpx.Client(base_url=world.live.url, headers=headers, timeout=60) as client:
        query = client.post("/query", json=legacy_body(**fields))
        assert query.status_code == 200, query.text
        assert query.json()["data_list"], query.text
        stream = client.post("/query_stream", json=legacy_body(**fields))
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        return query.text, stream.text


def test_legacy_query_and_stream_never_leak(world: World) -> None:
    # alice by token, naming bob as the user: without delegation she acts as herself.
    for text in _legacy_query_texts(world, world.headers("alice"), user_id="bob"):
        assert_clean(world, text, "legacy by token")
    # alice's API key in the legacy X-API-Key header.
    query_text, stream_text = _legacy_query_texts(world, {"X-API-Key": world.keys["alice"]}, user_id="bob")
    assert_clean(world, query_text, "legacy /query by key")
    assert_clean(world, stream_text, "legacy /query_stream by key")
    references = json.loads(query_text)["data_list"][0]
    assert references["rsp_type"] == "R" and references["rsp_data"]
    # bob's own legacy query does see B (same question, same endpoint).
    assert_leaks(world, _legacy_query_texts(world, world.headers("bob"))[0])


def test_legacy_delegation_acts_for_the_named_user(world: World) -> None:
    delegate = {"Authorization": f"Bearer {world.keys['delegate']}"}
    for text in _legacy_query_texts(world, delegate, user_id="alice"):
        assert_clean(world, text, "delegated for alice")
    for text in _legacy_query_texts(world, delegate, user_id="bob"):
        assert_leaks(world, text)
    # A key without delegation naming bob acts as its owner (svc: public only).
    plain = {"Authorization": f"Bearer {world.keys['plain']}"}
    for text in _legacy_query_texts(world, plain, user_id="bob"):
        assert_clean(world, text, "plain key naming bob")
    # Delegation to an unknown user is refused, not widened.
    with httpx.Client(base_url=world.live.url, headers=delegate, timeout=60) as client:
        refused = client.post("/query", json=legacy_body(user_id="nobody-here"))
    assert refused.status_code == 200  # legacy error objects come with HTTP 200 (LEGACY_API.md)
    assert_clean(world, refused.text, "delegated to unknown user")
    # Legacy clients get the legacy error object, also from the authentication layer.
    legacy_error_keys = {"status_code", "result", "qry_id", "detail", "evt_time"}
    assert set(refused.json()) == legacy_error_keys and refused.json()["status_code"] == 401
    anonymous = httpx.post(f"{world.live.url}/query", json=legacy_body(), timeout=60)
    assert anonymous.status_code == 200 and anonymous.headers["www-authenticate"].startswith("Bearer")
    assert set(anonymous.json()) == legacy_error_keys and anonymous.json()["status_code"] == 401


def test_legacy_push_never_leaks(world: World) -> None:
    page = uuid.uuid4().hex
    qry_id = f"push-{uuid.uuid4().hex}"
    with world.receiver.lock:
        first = len(world.receiver.bodies)
    with world.client("alice") as client:
        accepted = client.post("/queryToSLLM", json=legacy_body(qry_id=qry_id, page_id=page, user_id="bob"))
    assert accepted.status_code == 200, accepted.text
    assert_clean(world, accepted.text, "push acknowledgement")
    pushed = world.receiver.until_last(qry_id)
    reference = [b for b in pushed if b.get("type") == "reference"]
    assert reference and reference[0]["data_list"][0]["rsp_data"], pushed
    assert_clean(world, pushed, "pushed payloads")
    with world.receiver.lock:  # nothing else arrived either (whatever its qry_id)
        assert_clean(world, world.receiver.bodies[first:], "everything pushed since")

    # The page is alice's; its history and references are clean as well.
    with world.client("alice") as client:
        history = client.get("/history", params={"request_id": page})
        assert history.status_code == 200 and len(history.json()["history"]) == 2
        assert_clean(world, history.text, "own legacy history")
        reference_list = client.get("/reference", params={"request_id": page, "msg_index": 1})
        assert reference_list.status_code == 200 and reference_list.json()["references"]
        assert_clean(world, reference_list.text, "own legacy references")
    # alice's room for that page id is hers (stored in her namespace of page ids).
    rooms = world.engine.sessions.list_sessions(principal="alice", limit=10_000)
    assert any(r.id.startswith("lg_") and world.engine.sessions.messages(r.id) for r in rooms)
    assert not world.engine.sessions.exists(page)


def test_legacy_push_for_bob_does_carry_b(world: World) -> None:
    qry_id = f"push-{uuid.uuid4().hex}"
    with world.client("bob") as client:
        assert client.post("/queryToSLLM", json=legacy_body(qry_id=qry_id)).status_code == 200
    pushed = world.receiver.until_last(qry_id)
    assert_leaks(world, pushed)


# ---------------------------------------------------------------- auth none


def test_auth_mode_none_needs_no_token(world: World) -> None:
    """The laptop default: no token anywhere, one implicit user who reads everything."""
    settings = world.engine.settings.model_copy(
        update={"auth": world.engine.settings.auth.model_copy(update={"mode": "none"})}
    )
    live = start_server(world.engine, settings)
    try:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            me = client.get("/api/v1/auth/me")
            assert me.status_code == 200 and me.json()["principals"] is None
            hits = client.post("/api/v1/search", json={"query": QUESTION, "k": 3})
            assert hits.status_code == 200 and len(hits.json()["hits"]) == 3
            answer = client.post("/api/v1/ask", json={"question": QUESTION, "k": 3})
            assert answer.status_code == 200 and answer.json()["references"]
            session = answer.json()["session_id"]
            assert client.get(f"/api/v1/sessions/{session}/messages").status_code == 200
            assert client.get("/api/v1/documents").json()["total"] == 11
            assert client.get("/api/v1/admin/users").status_code == 200
            legacy = client.post("/query", json=legacy_body())
            assert legacy.status_code == 200 and legacy.json()["data_list"]
            assert client.get("/history", params={"request_id": session}).json()["history"]
        completion = openai.OpenAI(
            base_url=f"{live.url}/v1", api_key="unused", max_retries=0
        ).chat.completions.create(model="hanrag", messages=[{"role": "user", "content": QUESTION}])
        assert completion.choices[0].message.content
    finally:
        live.stop()
    # Meanwhile the token-mode server still refuses the same requests without a token.
    refused = httpx.post(f"{world.live.url}/api/v1/search", json={"query": QUESTION}, timeout=30)
    assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"


def test_an_upload_never_replaces_a_document_the_uploader_cannot_read(world: World) -> None:
    name = f"{B_FILE_STEM}-upload.txt"
    b_text = f"오로라 프로젝트 업로드 메모 {SECRET}".encode()
    created: set[str] = set()
    try:
        with world.client("admin") as admin:
            b_upload = admin.post(
                "/api/v1/documents", files={"file": (name, b_text)}, data={"acl": "group:b"}
            )
        assert b_upload.status_code == 201, b_upload.text
        created.add(b_upload.json()["document_id"])
        with world.client("alice") as alice:
            a_upload = alice.post(
                "/api/v1/documents", files={"file": (name, "A팀 메모".encode())}, data={"acl": "group:a"}
            )
        if a_upload.status_code == 201:
            created.add(a_upload.json()["document_id"])
            assert a_upload.json()["status"] == "added", a_upload.text
        b_row = world.engine.get_document(b_upload.json()["document_id"], caller=SYSTEM)
        assert b_row.acl == ["group:b"]
        chunks = world.engine.document_chunks(b_row.id, caller=SYSTEM)
        assert chunks and SECRET in chunks[0].text
    finally:
        for document_id in created:
            with contextlib.suppress(NotFoundError):
                world.engine.delete_document(document_id, caller=SYSTEM)
