"""The routes the web app needs besides feedback (issue P12), over real HTTP, with users
who try other users' things:

* ``PATCH /api/v1/sessions/{id}`` renames one's own conversation; anyone else's (an
  administrator's attempt included) is the 404 of a missing one;
* ``GET /api/v1/documents/{id}/original`` downloads what a reader may read — uploads,
  server-side files (only while unchanged since they were indexed: no edited file, no
  symlink swapped in, nothing but the indexed bytes), SQL rows as text — always as an
  attachment with the Korean file name (RFC 5987), ``nosniff``, HTML as bytes; hidden
  documents and paths that try to climb out are the 404 of a missing document;
* ``GET /api/v1/documents?q=`` finds titles and file names (any case) among what the
  caller may read only;
* ``GET /api/v1/admin/stats`` (administrators) counts questions per day, latency and
  time-to-first-token percentiles, feedback and documents from hanrag's own tables.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from api_server import LiveServer, start_server
from hanrag.auth.access import SYSTEM
from hanrag.embed.cache import EmbeddingCache
from hanrag.engine import Engine
from hanrag.ingest.model import IngestRequest
from hanrag.settings import Settings

PASSWORD = "correct-horse-battery"
SECRET = "ORCHID5521"
A_TEXT = "# Quarterly Report 분기 보고\n\nA팀의 분기 보고서는 매 분기 마지막 주에 제출합니다.\n"
B_TEXT = f"# 오로라 기밀 계획\n\n오로라 프로젝트 예산은 12억 원이며 승인 코드는 {SECRET}입니다.\n"
B_HTML = "<html><head><title>공지</title></head><body><script>alert(document.cookie)</script><p>영업팀 공지입니다.</p></body></html>"
CLI_TEXT = "# 운영 절차\n\n서버 점검은 매월 첫째 주 토요일 새벽에 진행합니다.\n"
UPLOAD_NAME = "영업 보고서 (최종) 100%; v2.md"
UPLOAD_TEXT = "# 영업 보고서\n\n이번 분기 영업 실적은 목표 대비 110퍼센트입니다.\n"
ROW_TEXT = "주문 내역\n주문 번호: 1001\n고객: 한빛상사\n금액: 1,200,000원\n상태: 배송 완료"


@dataclass
class World:
    engine: Engine
    live: LiveServer
    base: Path
    tokens: dict[str, str]
    ids: dict[str, str]  # name -> document id

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.live.url, headers={"Authorization": f"Bearer {self.tokens[who]}"}, timeout=60
        )

    def get(self, who: str, path: str, **params: Any) -> httpx.Response:
        with self.client(who) as client:
            return client.get(path, params=params)

    def original(self, who: str, name: str) -> httpx.Response:
        return self.get(who, f"/api/v1/documents/{self.ids[name]}/original")

    def ask(self, who: str, question: str) -> dict[str, Any]:
        with self.client(who) as client:
            response = client.post("/api/v1/ask", json={"question": question})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, shared_cache_path: Path) -> Iterator[World]:
    base = tmp_path_factory.mktemp("web-backend")
    srv = base / "srv"
    _write(srv / "a" / "quarterly-report.md", A_TEXT)
    _write(srv / "b" / "오로라 계획.md", B_TEXT)
    _write(srv / "b" / "notice.html", B_HTML)
    for name in ("edited.md", "swapped.md", "gone.md"):
        _write(srv / "b" / "mut" / name, f"# 변경 시험 {name}\n\n이 파일은 {name} 시험에 쓰입니다.\n")
    _write(base / "outside" / "운영절차.md", CLI_TEXT)
    settings = Settings(data_dir=base / "data", auth={"mode": "token"}, ingest={"server_roots": [srv]})
    engine = Engine(settings)
    engine.__dict__["embedding_cache"] = EmbeddingCache(shared_cache_path)
    for folder, acl in ((srv / "a", "group:a"), (srv / "b", "group:b"), (base / "outside", "group:b")):
        report = engine.ingest(IngestRequest(paths=[folder], acl=[acl]))
        assert all(o.status == "added" for o in report.outcomes), report.outcomes
    row = engine.pipeline.ingest_bytes(
        ROW_TEXT.encode("utf-8"),
        "orders-1001.txt",
        source="sql:shop/orders/1001",
        source_type="sql",
        acl=["group:b"],
        metadata={"sql_source": "shop", "sql_table": "orders", "sql_key": "1001"},
    )
    assert row.status == "added", row
    engine.index.refresh()
    ids = {Path(r.source).name: r.id for r in engine.list_documents(caller=SYSTEM, limit=1000)}
    ids["row"] = row.document_id

    auth = engine.auth
    auth.create_user("admin", PASSWORD, role="admin")
    auth.create_user("alice", PASSWORD, role="editor", groups=["a"])
    auth.create_user("bob", PASSWORD, role="editor", groups=["b"])
    tokens = {name: auth.login(name, PASSWORD)["access_token"] for name in ("admin", "alice", "bob")}
    live = start_server(engine)
    world = World(engine, live, base, tokens, ids)
    try:
        with world.client("bob") as client:
            for name, data in ((UPLOAD_NAME, UPLOAD_TEXT.encode()), ("xss.html", B_HTML.encode())):
                response = client.post(
                    "/api/v1/documents", files={"file": (name, data)}, data={"acl": "group:b"}
                )
                assert response.status_code == 201, response.text
                ids[name] = response.json()["document_id"]
        yield world
    finally:
        live.stop()
        engine.close()


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("request_id", "instance", "detail")}


# --------------------------------------------------------------------- rename


def test_the_owner_renames_a_conversation(world: World) -> None:
    session_id = world.ask("alice", "분기 보고서는 언제 제출하나요?")["session_id"]
    with world.client("alice") as client:
        response = client.patch(f"/api/v1/sessions/{session_id}", json={"title": "  분기 보고 일정  "})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["session_id"] == session_id and body["title"] == "분기 보고 일정"
        assert set(body) == {"session_id", "principal", "title", "created_at", "updated_at"}
        listed = client.get("/api/v1/sessions").json()
        assert {"session_id": session_id, "title": "분기 보고 일정"}.items() <= next(
            s for s in listed if s["session_id"] == session_id
        ).items()
        longest = "가" * 200
        assert (
            client.patch(f"/api/v1/sessions/{session_id}", json={"title": longest}).json()["title"] == longest
        )


def test_nobody_renames_someone_elses_conversation(world: World) -> None:
    session_id = world.ask("alice", "분기 보고서는 언제 제출하나요?")["session_id"]
    with world.client("bob") as client:
        missing = problem(
            client.patch("/api/v1/sessions/no-such-session", json={"title": "x"}), 404, "session_not_found"
        )
    for who in ("bob", "admin"):
        with world.client(who) as client:
            foreign = problem(
                client.patch(f"/api/v1/sessions/{session_id}", json={"title": "가로챔"}),
                404,
                "session_not_found",
            )
        assert comparable(foreign) == comparable(missing)
    assert world.engine.sessions.get(session_id).title != "가로챔"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"title": ""}, 422, "invalid_request"),
        ({"title": "가" * 201}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
        ({"title": "x", "principal": "bob"}, 422, "invalid_request"),
        ({"title": "   "}, 400, "invalid_title"),
        ({"title": "a\x00b"}, 400, "invalid_title"),
        ({"title": "줄\n바꿈"}, 400, "invalid_title"),
    ],
)
def test_bad_titles_are_refused(world: World, body: dict[str, Any], status: int, code: str) -> None:
    session_id = world.ask("alice", "분기 보고서는 언제 제출하나요?")["session_id"]
    with world.client("alice") as client:
        problem(client.patch(f"/api/v1/sessions/{session_id}", json=body), status, code)


# ------------------------------------------------------------------- download


def assert_attachment(response: httpx.Response, filename: str, media_type: str) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    assert response.headers["x-content-type-options"] == "nosniff"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="')
    assert disposition.endswith(f"; filename*=UTF-8''{quote(filename, safe='')}")
    fallback = disposition.split('filename="', 1)[1].split('"; filename*=', 1)[0]
    assert fallback.isascii() and '"' not in fallback and "\\" not in fallback
    assert "private" in response.headers["cache-control"] and "no-store" in response.headers["cache-control"]
    assert "sandbox" in response.headers["content-security-policy"]


def test_an_upload_downloads_with_its_korean_name(world: World) -> None:
    for who in ("bob", "admin"):
        response = world.original(who, UPLOAD_NAME)
        assert_attachment(response, UPLOAD_NAME, "text/markdown")
        assert response.content == UPLOAD_TEXT.encode()
    # The header's raw bytes are ASCII (no raw UTF-8 a proxy could mangle).
    response = world.original("bob", UPLOAD_NAME)
    raw = dict(response.headers.raw)[b"content-disposition"]
    assert raw.isascii() and b"%EC%98%81%EC%97%85" in raw


def test_a_server_side_file_downloads_while_it_is_unchanged(world: World) -> None:
    response = world.original("bob", "오로라 계획.md")
    assert_attachment(response, "오로라 계획.md", "text/markdown")
    assert response.content == B_TEXT.encode()
    response = world.original("alice", "quarterly-report.md")
    assert_attachment(response, "quarterly-report.md", "text/markdown")
    # Ingested by the operator (CLI) outside every server root: the operator chose it.
    response = world.original("bob", "운영절차.md")
    assert_attachment(response, "운영절차.md", "text/markdown")
    assert response.content == CLI_TEXT.encode()


@pytest.mark.parametrize("name", ["notice.html", "xss.html"])
def test_html_is_never_served_for_the_browser_to_render(world: World, name: str) -> None:
    response = world.original("bob", name)
    assert_attachment(response, name, "application/octet-stream")
    assert response.content == B_HTML.encode()


def test_a_sql_row_downloads_as_its_text(world: World) -> None:
    response = world.original("bob", "row")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["content-disposition"].endswith(".txt")
    assert response.text == ROW_TEXT


@pytest.mark.parametrize(
    "name", ["오로라 계획.md", "notice.html", "운영절차.md", UPLOAD_NAME, "xss.html", "row"]
)
def test_hidden_documents_are_the_404_of_missing_ones(world: World, name: str) -> None:
    missing = problem(
        world.get("alice", "/api/v1/documents/0123456789abcdef01234567/original"), 404, "document_not_found"
    )
    hidden = problem(world.original("alice", name), 404, "document_not_found")
    assert comparable(hidden) == comparable(missing)
    text = json.dumps(hidden, ensure_ascii=False)
    assert SECRET not in text and name not in text
    # By file name (a key the route also takes) the hidden document is not found either.
    if name != "row":
        by_name = problem(
            world.get("alice", f"/api/v1/documents/{quote(Path(name).name, safe='')}/original"),
            404,
            "document_not_found",
        )
        assert comparable(by_name) == comparable(missing)
        # ... while its reader finds it by that name.
        by_reader = world.get("bob", f"/api/v1/documents/{quote(Path(name).name, safe='')}/original")
        assert by_reader.status_code == 200, by_reader.text


@pytest.mark.parametrize(
    "key",
    [
        "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
        "passwd",
        "..",
        "%2e%2e",
        "..%5C..%5Cwindows%5Cwin.ini",
        "%00",
        "upload%3Apasswd",
    ],
)
def test_paths_that_climb_out_find_nothing(world: World, key: str) -> None:
    for who in ("alice", "admin"):
        response = world.get(who, f"/api/v1/documents/{key}/original")
        assert response.status_code in (404, 422), response.text
        assert b"root:" not in response.content and b"[fonts]" not in response.content


def test_a_file_changed_since_indexing_is_refused(world: World) -> None:
    path = world.base / "srv" / "b" / "mut" / "edited.md"
    original = path.read_bytes()
    assert world.original("bob", "edited.md").content == original
    path.write_bytes(original + f"\n추가된 비밀 {SECRET}\n".encode())
    try:
        body = problem(world.original("bob", "edited.md"), 409, "original_changed")
        assert SECRET not in json.dumps(body, ensure_ascii=False)
    finally:
        path.write_bytes(original)
    # The very bytes indexed again: served again.
    assert world.original("bob", "edited.md").content == original


def test_a_symlink_swapped_in_is_refused(world: World, tmp_path: Path) -> None:
    path = world.base / "srv" / "b" / "mut" / "swapped.md"
    original = path.read_bytes()
    # Even a link to the very same bytes: the path no longer names the file that was indexed.
    twin = _write(tmp_path / "twin.md", original)
    for target in (twin, Path("/etc/passwd")):
        if not target.exists():
            continue
        path.unlink()
        os.symlink(target, path)
        try:
            body = problem(world.original("bob", "swapped.md"), 409, "original_changed")
            assert "root:" not in json.dumps(body)
        finally:
            path.unlink()
            path.write_bytes(original)
    assert world.original("bob", "swapped.md").content == original


def test_a_folder_swapped_for_a_symlink_is_refused(world: World, tmp_path: Path) -> None:
    folder = world.base / "srv" / "b" / "mut"
    moved = tmp_path / "moved"
    folder.rename(moved)
    os.symlink(moved, folder)
    try:
        problem(world.original("bob", "gone.md"), 409, "original_changed")
    finally:
        folder.unlink()
        moved.rename(folder)
    assert world.original("bob", "gone.md").status_code == 200


def test_a_deleted_file_is_missing(world: World) -> None:
    path = world.base / "srv" / "b" / "mut" / "gone.md"
    original = path.read_bytes()
    path.unlink()
    try:
        problem(world.original("bob", "gone.md"), 404, "source_missing")
        path.mkdir()  # a folder where the file was
        problem(world.original("bob", "gone.md"), 404, "source_missing")
        path.rmdir()
    finally:
        path.write_bytes(original)


def test_the_bytes_sent_are_the_bytes_indexed(world: World) -> None:
    for name in ("오로라 계획.md", "notice.html", "quarterly-report.md"):
        row = world.engine.get_document(world.ids[name], caller=SYSTEM)
        who = "alice" if name.startswith("quarterly") else "bob"
        assert hashlib.sha256(world.original(who, name).content).hexdigest() == row.content_hash


# --------------------------------------------------------------------- search


def listing(world: World, who: str, **params: Any) -> dict[str, Any]:
    response = world.get(who, "/api/v1/documents", **params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_q_finds_titles_and_file_names_in_any_case(world: World) -> None:
    for q in ("quarterly", "QUARTERLY", "Quarterly Report", "분기 보고", "quarterly-report.md"):
        body = listing(world, "alice", q=q)
        assert [item["document_id"] for item in body["items"]] == [world.ids["quarterly-report.md"]], q
        assert body["total"] == 1
    assert listing(world, "alice", q="없는 제목")["total"] == 0
    # A file name matches on its own name, not on the folders above it.
    assert listing(world, "admin", q="srv")["total"] == 0
    assert listing(world, "admin", q="mut")["total"] == 0


def test_q_searches_only_what_the_caller_may_read(world: World) -> None:
    for q in ("오로라", "notice", "영업 보고서", "최종", "운영", "xss", "orders", "주문"):
        mine = listing(world, "alice", q=q)
        assert mine == {"items": [], "total": 0, "offset": 0, "limit": 50}, q
    for q in ("오로라", "notice", "영업 보고서", "xss"):
        assert listing(world, "bob", q=q)["total"] >= 1, q
        assert listing(world, "admin", q=q)["total"] >= 1, q
    everything = listing(world, "alice", limit=1000)
    text = json.dumps(everything, ensure_ascii=False)
    assert "오로라" not in text and "notice" not in text and SECRET not in text


def test_q_pages_and_combines_with_status(world: World) -> None:
    everything = listing(world, "bob", q=".md", limit=1000)
    assert everything["total"] >= 4
    page = listing(world, "bob", q=".md", limit=2, offset=1)
    assert page["total"] == everything["total"]
    assert [i["document_id"] for i in page["items"]] == [i["document_id"] for i in everything["items"][1:3]]
    assert listing(world, "bob", q=".md", status="failed")["total"] == 0
    assert listing(world, "bob", q=".md", status="indexed")["total"] == everything["total"]
    assert world.get("bob", "/api/v1/documents", q="가" * 201).status_code == 422


# ---------------------------------------------------------------------- stats


def stats(world: World, who: str = "admin", **params: Any) -> httpx.Response:
    return world.get(who, "/api/v1/admin/stats", **params)


def test_stats_count_questions_latency_feedback_and_documents(world: World) -> None:
    before = stats(world, days=7).json()
    asked = [world.ask(who, "분기 보고서는 언제 제출하나요?") for who in ("alice", "bob", "alice")]
    with world.client("alice") as client:
        for answer, rating in zip(asked[::2], ("up", "down"), strict=True):
            response = client.post(
                "/api/v1/feedback",
                json={"session_id": answer["session_id"], "message_index": 1, "rating": rating},
            )
            assert response.status_code == 201, response.text
    after = stats(world, days=7).json()

    assert after["days"] == 7 and after["tz"] == "UTC"
    days = [date.fromisoformat(day["date"]) for day in after["questions_per_day"]]
    today = datetime.now(UTC).date()
    assert days == [today - timedelta(days=6 - i) for i in range(7)]
    assert after["from"] == days[0].isoformat() and after["to"] == today.isoformat()
    assert after["questions_per_day"][-1]["count"] == before["questions_per_day"][-1]["count"] + 3
    assert after["questions"] == before["questions"] + 3
    assert after["latency_ms"]["count"] == before["latency_ms"]["count"] + 3
    assert after["ttft_ms"]["count"] == before["ttft_ms"]["count"] + 3
    for key in ("latency_ms", "ttft_ms"):
        assert 0 < after[key]["p50"] <= after[key]["p95"]
    assert after["ttft_ms"]["p50"] <= after["latency_ms"]["p95"]
    assert after["feedback"]["up"] == before["feedback"]["up"] + 1
    assert after["feedback"]["down"] == before["feedback"]["down"] + 1
    up, down = after["feedback"]["up"], after["feedback"]["down"]
    assert after["feedback"]["ratio"] == round(up / (up + down), 3)
    counts = world.engine.catalog.status_counts()
    assert after["documents"]["total"] == sum(counts.values())
    assert after["documents"]["indexed"] == counts.get("indexed", 0)
    assert after["documents"]["failed"] == counts.get("failed", 0)


def test_stats_in_a_time_zone(world: World) -> None:
    body = stats(world, days=3, tz="Asia/Seoul").json()
    assert body["tz"] == "Asia/Seoul" and len(body["questions_per_day"]) == 3
    from zoneinfo import ZoneInfo

    assert body["to"] == datetime.now(ZoneInfo("Asia/Seoul")).date().isoformat()
    utc = stats(world, days=3).json()
    assert body["questions"] <= utc["questions"] + utc["questions"]  # the same questions, other days


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"days": 0}, 422, "invalid_request"),
        ({"days": 367}, 422, "invalid_request"),
        ({"tz": "Mars/Olympus"}, 400, "invalid_tz"),
        ({"tz": "../../etc/passwd"}, 400, "invalid_tz"),
    ],
)
def test_bad_stats_parameters(world: World, params: dict[str, Any], status: int, code: str) -> None:
    problem(stats(world, **params), status, code)


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_only_administrators_see_stats(world: World, who: str) -> None:
    problem(stats(world, who), 403, "forbidden")


def test_an_empty_window_has_no_percentiles(tmp_path: Path) -> None:
    engine = Engine(Settings(data_dir=tmp_path / "data"))
    try:
        body = engine.feedback.stats(caller=SYSTEM, days=2)
        assert body["questions_per_day"][0]["count"] == 0 and body["questions"] == 0
        assert body["latency_ms"] == {"p50": None, "p95": None, "count": 0}
        assert body["feedback"] == {"up": 0, "down": 0, "ratio": None}
        assert body["documents"] == {"indexed": 0, "indexing": 0, "failed": 0, "total": 0}
    finally:
        engine.close()


# ------------------------------------------------ references of reopened conversations


def test_a_reopened_conversation_shows_only_sources_still_readable(world: World) -> None:
    with world.client("bob") as client:
        uploaded = client.post(
            "/api/v1/documents",
            files={
                "file": ("흑요석 사업.md", "# 흑요석 사업\n\n흑요석 사업의 예산은 7억 원이다.\n".encode())
            },
            data={"acl": "group:b"},
        )
        assert uploaded.status_code == 201, uploaded.text
        document_id = uploaded.json()["document_id"]
        answer = client.post("/api/v1/ask", json={"question": "흑요석 사업의 예산은 얼마인가요?"}).json()
        session = answer["session_id"]
        before = client.get(f"/api/v1/sessions/{session}/messages").json()
    assert any(ref["document_id"] == document_id for ref in before[1]["references"])
    with world.client("admin") as admin:
        changed = admin.put(f"/api/v1/documents/{document_id}/acl", json={"acl": ["user:admin"]})
        assert changed.status_code == 200, changed.text
    with world.client("bob") as client:
        after = client.get(f"/api/v1/sessions/{session}/messages").json()
    assert after[1]["content"] == before[1]["content"]  # the answer text is the user's own record
    assert all(ref["document_id"] != document_id for ref in after[1]["references"])
    assert "흑요석 사업.md" not in json.dumps(after[1]["references"], ensure_ascii=False)
