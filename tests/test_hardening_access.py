"""P7 access holes, tried over real HTTP against a token-mode server, as a hostile insider.

One uvicorn server on loopback around one engine: a documents root holding group A's,
group B's and public files (labelled by their ``.hanrag-acl`` files), users alice
(editor, group a), bob (viewer, group b), carol (editor, groups a and b), svc (a
service account in group a whose key may delegate) and an administrator. Every test
below names the hole it closes; each failed before its fix.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from api_server import LiveServer, parse_sse, start_server
from hanrag.auth.access import SYSTEM, may_read
from hanrag.embed.cache import EmbeddingCache
from hanrag.engine import Engine
from hanrag.settings import Settings

PASSWORD = "correct-horse-battery"
SECRET = "QUASAR5521"
B_TEXT = f"# 퀘이사 계획 {SECRET}\n\n퀘이사 계획의 예산은 31억 원이며 승인 코드는 {SECRET}입니다.\n"
A_TEXT = "# A팀 회의\n\nA팀 회의는 매주 월요일 오전 10시에 3층 회의실에서 열립니다.\n"
P_TEXT = "# 사내 공지\n\n모든 사내 공지는 인트라넷 게시판에 매주 화요일 게시됩니다.\n"
# The same file name in A's and B's folders: resolving it must never depend on B's copy.
SHARED_NAME = "meeting-notes.md"


@dataclass
class World:
    engine: Engine
    live: LiveServer
    root: Path
    tokens: dict[str, str]
    keys: dict[str, str]
    b_ids: set[str]
    a_shared_id: str

    def headers(self, who: str) -> dict[str, str]:
        credential = self.keys[who] if who in self.keys else self.tokens[who]
        return {"Authorization": f"Bearer {credential}"}

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(base_url=self.live.url, headers=self.headers(who), timeout=60)

    def b_acl(self) -> list[list[str]]:
        return [list(self.engine.catalog.get(i).acl) for i in sorted(self.b_ids)]  # type: ignore[union-attr]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, shared_cache_path: Path) -> Iterator[World]:
    base = tmp_path_factory.mktemp("hardening")
    root = base / "docs"
    _write(root / "a" / ".hanrag-acl", "group:a\n")
    _write(root / "b" / ".hanrag-acl", "group:b\n")
    _write(root / "a" / "a-team.md", A_TEXT)
    _write(root / "a" / SHARED_NAME, A_TEXT.replace("A팀 회의", "A팀 회의록"))
    _write(root / "b" / "quasar-plan.md", B_TEXT)
    _write(root / "b" / SHARED_NAME, B_TEXT.replace("퀘이사 계획", "퀘이사 회의록"))
    _write(root / "p" / "notice.md", P_TEXT)
    settings = Settings(
        data_dir=base / "data",
        auth={"mode": "token"},
        ingest={"server_roots": [str(root)], "default_acl": ["group:staff"]},
    )
    engine = Engine(settings)
    engine.__dict__["embedding_cache"] = EmbeddingCache(shared_cache_path)
    report = engine.ingest([root])
    assert all(o.status == "added" for o in report.outcomes), report.outcomes
    rows = engine.list_documents(limit=100, caller=SYSTEM)
    b_ids = {r.id for r in rows if "/b/" in r.source}
    (a_shared,) = [r for r in rows if r.source.endswith(f"/a/{SHARED_NAME}")]
    auth = engine.auth
    auth.create_user("admin", PASSWORD, role="admin")
    auth.create_user("alice", PASSWORD, role="editor", groups=["a"])
    auth.create_user("bob", PASSWORD, role="viewer", groups=["b"])
    auth.create_user("carol", PASSWORD, role="editor", groups=["a", "b"])
    auth.create_user("svc", PASSWORD, role="viewer", groups=["a"])
    auth.create_user("root2", PASSWORD, role="admin")
    keys = {
        "delegate": auth.create_api_key("svc", "spring-backend", can_delegate=True)["key"],
        "admin-delegate": auth.create_api_key("root2", "ops", can_delegate=True)["key"],
    }
    tokens = {name: auth.login(name, PASSWORD)["access_token"] for name in ("admin", "alice", "bob", "carol")}
    live = start_server(engine)
    try:
        yield World(engine, live, root, tokens, keys, b_ids, a_shared.id)
    finally:
        live.stop()
        engine.close()


def _job(client: httpx.Client, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}").json()["data"]
        if data["state"] in ("succeeded", "failed", "dead", "cancelled"):
            return data
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end")


# ------------------------------------------------------- 1. ingest ACL takeover


def test_an_editor_cannot_relabel_or_list_another_groups_files_through_server_ingest(world: World) -> None:
    before = world.b_acl()
    with world.client("alice") as alice:
        for paths in ([str(world.root / "b")], [str(world.root)]):
            accepted = alice.post("/api/v1/ingest", json={"paths": paths, "acl": ["public"]})
            assert accepted.status_code == 202, accepted.text
            job = _job(alice, accepted.json()["data"]["job_id"])
            assert job["state"] == "succeeded", job
            # B's files are neither ingested nor listed, nor counted.
            text = json.dumps(job, ensure_ascii=False)
            assert "/b/" not in text and "quasar" not in text, text
        assert job["result"]["files"] == 2  # a/'s two files; p/ is staff-only
        # A B file named outright is answered exactly like a file that does not exist.
        outcomes = []
        for name in ("quasar-plan.md", "no-such-plan.md"):
            path = str(world.root / "b" / name)
            accepted = alice.post("/api/v1/ingest", json={"paths": [path], "acl": ["public"]})
            job = _job(alice, accepted.json()["data"]["job_id"])
            outcomes.append((job["state"], job["error"]["code"], job["error"]["message"].replace(name, "X")))
        assert outcomes[0] == outcomes[1] and outcomes[0][0] == "failed", outcomes
        # A principal alice does not hold is refused at submit time.
        refused = alice.post("/api/v1/ingest", json={"paths": [str(world.root / "a")], "acl": ["group:b"]})
        assert refused.status_code == 403, refused.text
        assert refused.json()["data"] == {"code": "acl_not_permitted", "field": "acl"}
        # Nothing of B became readable to alice.
        hits = alice.post("/api/v1/search", json={"query": "퀘이사 계획 예산", "k": 10}).json()["hits"]
        assert all(SECRET not in h["text"] for h in hits)
    assert world.b_acl() == before == [["group:b"], ["group:b"]]


def test_a_reader_of_both_groups_may_ingest_them(world: World) -> None:
    """The rule is "may already read it", not "never": carol (a and b) re-ingests B."""
    with world.client("carol") as carol:
        accepted = carol.post("/api/v1/ingest", json={"paths": [str(world.root / "b")]})
        job = _job(carol, accepted.json()["data"]["job_id"])
    assert job["state"] == "succeeded", job
    assert job["result"]["files"] == 2


def test_editors_grant_only_principals_they_hold(world: World) -> None:
    with world.client("alice") as alice:
        upload = alice.post(
            "/api/v1/documents",
            files={"file": ("grant.md", "# 권한\n\n권한 부여 시험 문서입니다.\n".encode())},
            data={"acl": ["group:b"]},
        )
        assert upload.status_code == 403 and upload.json()["code"] == "acl_not_permitted", upload.text
        changed = alice.put(f"/api/v1/documents/{world.a_shared_id}/acl", json={"acl": ["group:b"]})
        assert changed.status_code == 403 and changed.json()["code"] == "acl_not_permitted"
        kept = alice.put(f"/api/v1/documents/{world.a_shared_id}/acl", json={"acl": ["group:a"]})
        assert kept.status_code == 200, kept.text
        b_id = sorted(world.b_ids)[0]
        hidden = alice.put(f"/api/v1/documents/{b_id}/acl", json={"acl": ["public"]})
        assert hidden.status_code == 404
    with world.client("admin") as admin:  # administrators grant anything
        assert admin.put(f"/api/v1/documents/{b_id}/acl", json={"acl": ["group:b"]}).status_code == 200


@pytest.mark.parametrize(
    "entry",
    ["group:a\u200b", "group:a\x00", "group:" + "a" * 5000, "group:a,group:b", "group:", "role:x", "evil:x"],
)
def test_acl_principals_are_validated_like_names(world: World, entry: str) -> None:
    with world.client("admin") as admin:
        upload = admin.post(
            "/api/v1/documents", files={"file": ("p.md", b"# x\n\nx\n")}, data={"acl": [entry]}
        )
        assert upload.status_code == 400 and upload.json()["code"] == "invalid_acl", upload.text
        job = admin.post("/api/v1/ingest", json={"paths": [str(world.root / "p")], "acl": [entry]})
        assert job.status_code == 400 and job.json()["data"]["code"] == "invalid_acl", job.text


def test_full_width_principals_are_normalised(world: World) -> None:
    with world.client("admin") as admin:
        accepted = admin.post(
            "/api/v1/ingest", json={"paths": [str(world.root / "p")], "acl": ["ｇｒｏｕｐ:ＳＴＡＦＦ２"]}
        )
        assert accepted.status_code == 202, accepted.text
        assert _job(admin, accepted.json()["data"]["job_id"])["state"] == "succeeded"
    (row,) = [
        r for r in world.engine.list_documents(limit=100, caller=SYSTEM) if r.source.endswith("notice.md")
    ]
    assert row.acl == ["group:staff2"]


# ------------------------------------------------------------ 5. delegation


def _legacy(who: str, world: World, **body: Any) -> httpx.Response:
    payload = {"qry_id": "Q1", "qry_contents": "퀘이사 계획의 예산은 얼마인가요?", **body}
    return httpx.post(f"{world.live.url}/query", json=payload, headers=world.headers(who), timeout=60)


def test_delegation_is_capped_by_the_keys_own_principals(world: World) -> None:
    # svc holds group a only: acting for bob (group b) reaches public material, never B.
    as_bob = _legacy("delegate", world, user_id="bob")
    assert as_bob.status_code == 200 and SECRET not in as_bob.text, as_bob.text
    # Never for an administrator unless the key is an administrator's.
    as_admin = _legacy("delegate", world, user_id="admin")
    assert as_admin.status_code == 200 and SECRET not in as_admin.text  # legacy: status in the body
    assert as_admin.json()["status_code"] == 403
    by_admin_key = _legacy("admin-delegate", world, user_id="bob")
    assert by_admin_key.status_code == 200 and SECRET in by_admin_key.text
    # Each delegation is audited with the key that did it.
    rows = world.engine.audit.query(actor="svc", action="delegate", limit=10)
    assert rows and rows[0]["target"] in ("user:bob", "user:admin")


def test_a_delegating_key_cannot_read_other_users_history(world: World) -> None:
    page = uuid.uuid4().hex
    with world.client("carol") as carol:
        assert (
            carol.post("/query", json={"qry_contents": "퀘이사 계획 예산", "page_id": page}).status_code
            == 200
        )
        own = carol.get("/history", params={"request_id": page}).json()["history"]
        assert [m["role"] for m in own] == ["human", "ai"]
    with httpx.Client(base_url=world.live.url, headers=world.headers("delegate"), timeout=60) as svc:
        assert svc.get("/history", params={"request_id": page}).json() == {"history": []}


def test_query_stream_with_an_unknown_delegated_user_is_an_error_object_not_a_cut_stream(
    world: World,
) -> None:
    response = httpx.post(
        f"{world.live.url}/query_stream",
        json={"qry_id": "Q9", "qry_contents": "공지", "user_id": "nobody-here"},
        headers=world.headers("delegate"),
        timeout=60,
    )
    assert response.status_code == 200, response.text  # legacy: the status is in the body
    assert response.json()["status_code"] == 401 and response.json()["qry_id"] == "Q9"


# ------------------------------------------------------ 11. existence oracles


def test_page_ids_are_per_caller_and_cannot_be_claimed_or_probed(world: World) -> None:
    page = f"room-{uuid.uuid4().hex[:8]}"
    with world.client("bob") as bob:
        # bob claims the page id first; alice later uses the same id for her own room.
        assert bob.post("/query", json={"qry_contents": "공지 게시", "page_id": page}).status_code == 200
    with world.client("alice") as alice:
        first = alice.post("/query", json={"qry_contents": "A팀 회의 시간", "page_id": page})
        assert first.status_code == 200, first.text
        assert [m["role"] for m in alice.get("/history", params={"request_id": page}).json()["history"]] == [
            "human",
            "ai",
        ]
    with world.client("bob") as bob:
        mine = bob.get("/history", params={"request_id": page}).json()["history"]
        assert [m["content"] for m in mine if m["role"] == "human"] == ["공지 게시"]
    # An over-long page id is a room too (stored by digest), never a database error.
    with world.client("alice") as alice:
        long_page = alice.post("/query", json={"qry_contents": "공지", "page_id": "p" * 300})
        assert long_page.status_code == 200, long_page.text


def test_a_file_name_resolves_among_readable_documents_only(world: World) -> None:
    with world.client("alice") as alice:
        found = alice.get(f"/api/v1/documents/{SHARED_NAME}")
        assert found.status_code == 200, found.text
        assert found.json()["document_id"] == world.a_shared_id
        assert SECRET not in found.text


def test_hidden_and_missing_documents_cost_the_same_lookups(world: World) -> None:
    """A hidden id used to be answered after one primary-key read, a missing one after
    three queries: measurably faster. Now both run the same statements."""
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.split(" FROM ")[0][:40])

    engine = world.engine.catalog.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        alice = ["public", "user:alice", "group:a"]
        hidden_id = sorted(world.b_ids)[0]
        for key in (hidden_id, uuid.uuid4().hex[:32]):
            statements.clear()
            assert world.engine.catalog.find(key, lambda row: may_read(alice, row.acl)) is None
            if key == hidden_id:
                hidden = list(statements)
            else:
                missing = list(statements)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(hidden) == len(missing) == 3


# ------------------------------------------------- 12. checks at submit time


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"question": "   "}, "empty_question"),
        ({"question": "가" * 5000}, "question_too_long"),
        ({"question": "공지", "filters": {"metadata": {"codename": "x"}}}, "unknown_filter_field"),
        ({"question": "공지", "session_id": "no-such-session"}, "session_not_found"),
    ],
)
def test_ask_jobs_are_refused_at_submit_for_the_reasons_a_direct_ask_is(
    world: World, body: dict[str, Any], code: str
) -> None:
    with world.client("alice") as alice:
        direct = alice.post("/api/v1/ask", json=body)
        queued = alice.post("/api/v1/jobs/ask", json=body)
    assert direct.status_code == 400 and direct.json()["code"] == code, direct.text
    assert queued.status_code == 400 and queued.json()["data"]["code"] == code, queued.text


def test_ingest_paths_with_nul_bytes_are_refused(world: World) -> None:
    with world.client("alice") as alice:
        refused = alice.post("/api/v1/ingest", json={"paths": [f"{world.root}/a\x00/x"]})
    assert refused.status_code == 400 and refused.json()["data"]["code"] == "invalid_path"


# -------------------------------------------------- 7. long upload file names


def test_a_long_korean_file_name_is_stored_and_reindexable(world: World) -> None:
    name = "가" * 96 + ".md"  # 291 bytes in UTF-8: more than a file name may have
    with world.client("alice") as alice:
        upload = alice.post(
            "/api/v1/documents",
            files={"file": (name, "# 긴 이름\n\n긴 파일 이름 문서의 본문입니다.\n".encode())},
            data={"acl": ["group:a"]},
        )
        assert upload.status_code == 201, upload.text
        document_id = upload.json()["document_id"]
        again = alice.post(f"/api/v1/documents/{document_id}/reindex")
        assert again.status_code == 200, again.text
        shown = alice.get(f"/api/v1/documents/{document_id}").json()
        assert shown["source"].endswith(name)
        too_long = alice.post("/api/v1/documents", files={"file": ("가" * 300 + ".md", b"# x\n\nx\n")})
        assert too_long.status_code == 400 and too_long.json()["code"] == "invalid_filename"


# ------------------------------------------------- 13. password reset ends tokens


def test_a_password_reset_ends_access_tokens_at_once(world: World) -> None:
    world.engine.auth.create_user("dave", PASSWORD, role="viewer")
    token = world.engine.auth.login("dave", PASSWORD)["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{world.live.url}/api/v1/auth/me", headers=headers).status_code == 200
    world.engine.auth.reset_password("dave", "another-horse-battery")
    refused = httpx.get(f"{world.live.url}/api/v1/auth/me", headers=headers)
    assert refused.status_code == 401 and refused.json()["code"] == "token_revoked"
    fresh = world.engine.auth.login("dave", "another-horse-battery")["access_token"]
    assert (
        httpx.get(
            f"{world.live.url}/api/v1/auth/me", headers={"Authorization": f"Bearer {fresh}"}
        ).status_code
        == 200
    )


def test_sse_ask_by_a_restricted_user_never_streams_hidden_text(world: World) -> None:
    with world.client("alice") as alice:
        response = alice.post("/api/v1/ask", json={"question": "퀘이사 계획의 예산은?", "stream": True})
    assert response.status_code == 200
    assert SECRET not in response.text
    assert parse_sse(response.text)[-1].event == "done"
