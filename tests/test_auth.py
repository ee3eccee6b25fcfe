"""Authentication and authorisation: passwords, tokens, API keys, groups, roles, ACL changes,
audit log and rate limits.

Service-level checks call :class:`~hanrag.auth.service.AuthService` directly; everything a
client sees (401/403/429 codes, headers) goes through a real uvicorn server on loopback.
Passwords are Argon2id-hashed (about half a second each on a busy machine), so users are few.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis
from argon2 import PasswordHasher
from sqlalchemy import update
from sqlalchemy.orm import Session

from api_server import LiveServer, start_server
from conftest import EngineFactory  # (tests/ is on sys.path)
from hanrag.auth.access import SYSTEM, Caller
from hanrag.auth.audit import AuditLog
from hanrag.auth.service import AuthError, ConflictError, ForbiddenError
from hanrag.embed.cache import EmbeddingCache
from hanrag.engine import Engine
from hanrag.errors import InvalidInputError, NotFoundError
from hanrag.ingest.model import IngestRequest
from hanrag.settings import Settings
from hanrag.store.models import AuditRow, UserRow

PASSWORD = "correct-horse-battery"
PROBLEM_JSON = "application/problem+json"
REDIS_URL = "redis://127.0.0.1:6379/0"
ADMIN_PATHS = ("/api/v1/admin/users", "/api/v1/admin/groups", "/api/v1/admin/api-keys", "/api/v1/admin/audit")

PUBLIC_TEXT = "# 연차 규정\n\n직원의 연차 휴가는 매년 15일이며 입사 1년 후부터 부여됩니다.\n"
B_TEXT = "# 영업 비밀 메모\n\n영업팀 분기 목표 매출은 120억 원이며 할인 한도는 15퍼센트입니다.\n"
B_QUESTION = "영업팀 분기 목표 매출은 얼마인가요?"


class _Raises:
    """``pytest.raises`` that also checks the error's stable code."""

    def __init__(self, kind: type[Exception], code: str) -> None:
        self.kind, self.code = kind, code
        self._cm = pytest.raises(kind)

    def __enter__(self) -> Any:
        self.info = self._cm.__enter__()
        return self.info

    def __exit__(self, *exc: Any) -> bool:
        handled = self._cm.__exit__(*exc)
        assert getattr(self.info.value, "code", None) == self.code, self.info.value
        return bool(handled)


def raises(kind: type[Exception], code: str) -> _Raises:
    return _Raises(kind, code)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    return body


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def wait_for_fresh_minute_window(margin: float = 6.0) -> None:
    """Rate limits count per wall-clock minute: start a burst well inside one window."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.2)


# --------------------------------------------------------------- service level


@pytest.fixture
def auth_engine(make_engine: EngineFactory) -> Engine:
    return make_engine(auth={"mode": "token"})


def test_passwords_are_argon2id_and_checked(auth_engine: Engine) -> None:
    auth = auth_engine.auth
    auth.create_user("Alice", PASSWORD, role="editor", groups=["a"])
    row = auth.get_user("alice")
    assert row.username == "alice"
    assert row.password_hash.startswith("$argon2id$") and PASSWORD not in row.password_hash
    assert auth.login("ALICE", PASSWORD)["token_type"] == "bearer"

    with raises(AuthError, "invalid_credentials"):
        auth.login("alice", PASSWORD + "x")
    with raises(AuthError, "invalid_credentials"):  # an unknown name answers the same
        auth.login("nobody", PASSWORD)
    with raises(InvalidInputError, "weak_password"):
        auth.create_user("weak", "short")
    with raises(InvalidInputError, "invalid_role"):
        auth.create_user("rooted", PASSWORD, role="root")
    with raises(InvalidInputError, "invalid_username"):
        auth.create_user("bad name", PASSWORD)
    with raises(ConflictError, "user_exists") as info:
        auth.create_user("alice", PASSWORD)
    assert info.value.http_status == 409

    # A hash made with weaker parameters is upgraded on the next successful login.
    weak_hash = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    with Session(auth_engine.catalog.engine) as db:
        db.execute(update(UserRow).where(UserRow.username == "alice").values(password_hash=weak_hash))
        db.commit()
    auth.login("alice", PASSWORD)
    upgraded = auth.get_user("alice").password_hash
    assert upgraded != weak_hash and not PasswordHasher().check_needs_rehash(upgraded)

    # A new password: the old one stops working and refresh tokens issued before are revoked.
    refresh = auth.login("alice", PASSWORD)["refresh_token"]
    with raises(InvalidInputError, "weak_password"):
        auth.reset_password("alice", "tiny")
    auth.reset_password("alice", "another-long-password")
    with raises(AuthError, "invalid_credentials"):
        auth.login("alice", PASSWORD)
    assert auth.login("alice", "another-long-password")["access_token"]
    with raises(AuthError, "token_revoked"):
        auth.refresh(refresh)
    with raises(NotFoundError, "user_not_found"):
        auth.reset_password("ghost", "another-long-password")


def test_groups_change_readable_principals_at_once(auth_engine: Engine) -> None:
    auth = auth_engine.auth
    auth.create_user("victor", PASSWORD)
    token = auth.login("victor", PASSWORD)["access_token"]
    assert auth.authenticate(token).principals == ["public", "user:victor"]

    auth.create_group("sales")
    with raises(ConflictError, "group_exists"):
        auth.create_group("Sales")
    with raises(InvalidInputError, "invalid_group"):
        auth.create_group("no spaces")
    auth.create_group("영업")  # groups named in Korean, as metadata-derived ACLs use them
    auth.add_member("sales", "victor")
    auth.add_member("영업", "victor")
    auth.add_member("sales", "victor")  # idempotent
    identity = auth.authenticate(token)  # the same token: groups are re-read per request
    assert identity.groups == sorted(["sales", "영업"])
    assert set(identity.principals or []) == {"public", "user:victor", "group:sales", "group:영업"}
    assert {g["name"]: g["members"] for g in auth.list_groups()} == {"sales": ["victor"], "영업": ["victor"]}

    auth.remove_member("sales", "victor")
    assert "group:sales" not in (auth.authenticate(token).principals or [])
    with raises(NotFoundError, "group_not_found"):
        auth.add_member("nope", "victor")
    with raises(NotFoundError, "user_not_found"):
        auth.add_member("sales", "ghost")

    # Administrators are unrestricted; everyone else is limited to their principals.
    auth.set_role("victor", "admin")
    assert auth.authenticate(token).principals is None
    with raises(InvalidInputError, "invalid_role"):
        auth.set_role("victor", "owner")


def test_tokens_service_level(auth_engine: Engine) -> None:
    auth = auth_engine.auth
    auth.create_user("tess", PASSWORD)
    tokens = auth.login("tess", PASSWORD)
    assert auth.authenticate(tokens["access_token"]).username == "tess"
    with raises(AuthError, "invalid_token"):  # a refresh token is not an access token
        auth.authenticate(tokens["refresh_token"])
    with raises(AuthError, "invalid_token"):  # nor the other way round
        auth.refresh(tokens["access_token"])

    rotated = auth.refresh(tokens["refresh_token"])
    with raises(AuthError, "token_revoked"):  # each refresh token works once
        auth.refresh(tokens["refresh_token"])
    again = auth.refresh(rotated["refresh_token"])

    auth.logout(again["access_token"], again["refresh_token"])
    with raises(AuthError, "token_revoked"):
        auth.authenticate(again["access_token"])
    with raises(AuthError, "token_revoked"):
        auth.refresh(again["refresh_token"])
    assert auth.authenticate(rotated["access_token"]).username == "tess"  # other tokens unaffected

    # The signing secret is generated once per data directory and survives a restart.
    secret_file = auth_engine.settings.data_dir / "jwt-secret"
    assert secret_file.is_file() and len(secret_file.read_text().strip()) >= 32
    from hanrag.auth.service import AuthService

    restarted = AuthService(
        auth_engine.catalog.engine, auth_engine.settings.auth, auth_engine.settings.data_dir
    )
    assert restarted.authenticate(rotated["access_token"]).username == "tess"


def test_api_keys_service_level(auth_engine: Engine) -> None:
    auth = auth_engine.auth
    auth.create_user("ed", PASSWORD, role="editor", groups=["a"])
    created = auth.create_api_key("ed", "ci")
    key = created["key"]
    assert key.startswith("hrk_") and created["role"] == "editor"
    identity = auth.authenticate(key)
    assert (identity.username, identity.role, identity.via) == ("ed", "editor", "api_key")
    assert identity.principals == ["public", "user:ed", "group:a"]
    listed = auth.list_api_keys("ed")
    assert len(listed) == 1 and key not in json.dumps(listed) and listed[0]["last_used_at"]

    with raises(ForbiddenError, "forbidden"):  # never more than the owner
        auth.create_api_key("ed", "too-much", role="admin")
    viewer_key = auth.create_api_key("ed", "read-only", role="viewer")["key"]
    assert auth.authenticate(viewer_key).role == "viewer"
    # Demoting the owner demotes their keys at once.
    auth.set_role("ed", "viewer")
    assert auth.authenticate(key).role == "viewer"
    auth.set_role("ed", "editor")

    with raises(AuthError, "invalid_api_key"):
        auth.authenticate("hrk_" + "x" * 43)
    auth.revoke_api_key(created["prefix"])  # by prefix or by id
    with raises(AuthError, "api_key_revoked"):
        auth.authenticate(key)
    with raises(NotFoundError, "api_key_not_found"):
        auth.revoke_api_key("nothing-like-it")
    with raises(NotFoundError, "user_not_found"):
        auth.create_api_key("ghost", "x")

    auth.set_disabled("ed", True)
    with raises(AuthError, "account_disabled"):
        auth.authenticate(viewer_key)
    auth.set_disabled("ed", False)
    assert auth.authenticate(viewer_key).username == "ed"


def test_audit_retention_prune_and_query(auth_engine: Engine) -> None:
    audit = AuditLog(auth_engine.catalog.engine, retention_days=30)
    audit.record("alice", "login", ip="127.0.0.1")
    audit.record("old-actor", "login")
    audit.record("bob", "question", target="s1", detail={"cited_documents": ["d1"]})
    with Session(auth_engine.catalog.engine) as db:
        db.execute(
            update(AuditRow)
            .where(AuditRow.actor == "old-actor")
            .values(at=datetime.now(UTC) - timedelta(days=45))
        )
        db.commit()
    assert [r["actor"] for r in audit.query(action="login")] == ["old-actor", "alice"]
    assert [r["actor"] for r in audit.query(since=datetime.now(UTC) - timedelta(days=1))] == ["bob", "alice"]
    assert audit.prune() == 1
    rows = audit.query()
    assert {r["actor"] for r in rows} == {"alice", "bob"}
    assert audit.query(actor="bob")[0]["detail"] == {"cited_documents": ["d1"]}
    assert audit.prune() == 0


def test_acl_from_directory_files_and_metadata(make_engine: EngineFactory, tmp_path: Path) -> None:
    engine = make_engine(ingest={"acl_from_metadata": {"dept": "group:{value}"}})
    root = tmp_path / "share"
    (root / "sales" / "exec").mkdir(parents=True)
    (root / "open.md").write_text("# 공지\n\n사내 식당은 오전 11시 30분에 엽니다.\n", encoding="utf-8")
    (root / "sales" / ".hanrag-acl").write_text(
        "# 영업팀 전용 (comments and blank lines are ignored)\n\ngroup:sales\nuser:boss  # 본부장\n",
        encoding="utf-8",
    )
    (root / "sales" / "plan.md").write_text("# 영업 계획\n\n하반기 영업 목표는 신규 고객 40곳입니다.\n")
    (root / "sales" / "exec" / ".hanrag-acl").write_text("group:exec\n")
    (root / "sales" / "exec" / "pay.md").write_text("# 임원 보수\n\n임원 성과급 기준은 이사회가 정합니다.\n")
    report = engine.ingest([root])
    by_name = {Path(o.source).name: o for o in report.outcomes}
    assert set(by_name) == {"open.md", "plan.md", "pay.md"}  # ACL files are not documents
    acl = {name: engine.get_document(o.document_id, caller=SYSTEM).acl for name, o in by_name.items()}
    assert acl == {"open.md": ["public"], "plan.md": ["group:sales", "user:boss"], "pay.md": ["group:exec"]}
    # The chunks carry the same ACL: the filter inside the index query uses it.
    plan_id = by_name["plan.md"].document_id
    assert all(c.acl == ["group:sales", "user:boss"] for c in engine.document_chunks(plan_id, caller=SYSTEM))

    meta_file = tmp_path / "loose" / "memo.md"
    meta_file.parent.mkdir()
    meta_file.write_text("# 영업 메모\n\n거래처 방문 일정은 매주 목요일입니다.\n", encoding="utf-8")
    memo = engine.ingest(IngestRequest(paths=[meta_file], metadata={"dept": "영업"})).outcomes[0]
    assert engine.get_document(memo.document_id, caller=SYSTEM).acl == ["group:영업"]
    # An explicit ACL wins over the file and the metadata mapping.
    explicit = engine.ingest(IngestRequest(paths=[root / "sales" / "plan.md"], acl=["user:boss"])).outcomes[0]
    assert explicit.status == "acl_updated"
    assert engine.get_document(plan_id, caller=SYSTEM).acl == ["user:boss"]

    auth = engine.auth
    auth.create_user("minsu", PASSWORD, groups=["영업"])
    principals = auth.identity_for("minsu").principals
    hits = engine.search("거래처 방문 일정", caller=Caller.of("tester", principals), k=5).hits
    assert {h.chunk.document_id for h in hits} == {memo.document_id, by_name["open.md"].document_id}
    hits = engine.search("거래처 방문 일정", caller=Caller.of("tester", ["public"]), k=5).hits
    assert memo.document_id not in {h.chunk.document_id for h in hits}


# ------------------------------------------------------------------ over HTTP


@dataclass
class Site:
    engine: Engine
    live: LiveServer
    tokens: dict[str, dict[str, str]]  # username -> login response
    public_id: str
    b_id: str
    secret: str

    def client(self, who: str | None = None, credential: str | None = None) -> httpx.Client:
        headers = {}
        if who is not None:
            headers = bearer(self.tokens[who]["access_token"])
        elif credential is not None:
            headers = bearer(credential)
        return httpx.Client(base_url=self.live.url, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, shared_cache_path: Path) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("auth-site")
    (base / "docs" / "b").mkdir(parents=True)
    (base / "docs" / "public.md").write_text(PUBLIC_TEXT, encoding="utf-8")
    (base / "docs" / "b" / "sales-memo.md").write_text(B_TEXT, encoding="utf-8")
    engine = Engine(Settings(data_dir=base / "data", auth={"mode": "token"}))
    engine.__dict__["embedding_cache"] = EmbeddingCache(shared_cache_path)
    b_id = engine.ingest(IngestRequest(paths=[base / "docs" / "b"], acl=["group:b"])).outcomes[0].document_id
    public_id = engine.ingest([base / "docs" / "public.md"]).outcomes[0].document_id
    auth = engine.auth
    auth.create_user("admin", PASSWORD, role="admin")
    auth.create_user("alice", PASSWORD, role="editor", groups=["a"])
    auth.create_user("victor", PASSWORD, role="viewer", groups=["a"])
    secret = (base / "data" / "jwt-secret").read_text().strip()
    live = start_server(engine)
    try:
        tokens = {}
        with httpx.Client(base_url=live.url, timeout=60) as client:
            for name in ("admin", "alice", "victor"):
                response = client.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
                assert response.status_code == 200, response.text
                tokens[name] = response.json()
        yield Site(engine, live, tokens, public_id, b_id, secret)
    finally:
        live.stop()
        engine.close()


def test_login_me_and_missing_credentials(site: Site) -> None:
    with site.client("alice") as client:
        me = client.get("/api/v1/auth/me")
    assert me.status_code == 200
    assert me.json() == {
        "username": "alice",
        "role": "editor",
        "groups": ["a"],
        "principals": ["public", "user:alice", "group:a"],
        "via": "token",
    }
    with site.client() as anonymous:
        for method, path in (("GET", "/api/v1/auth/me"), ("POST", "/api/v1/search"), ("GET", "/v1/models")):
            response = anonymous.request(method, path, json={"query": "연차"} if method == "POST" else None)
            assert_problem(response, 401, "unauthorized")
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.get("/healthz").status_code == 200  # open paths stay open
        wrong = anonymous.post("/api/v1/auth/login", json={"username": "alice", "password": "nope-nope"})
        assert_problem(wrong, 401, "invalid_credentials")
        assert PASSWORD not in wrong.text


def test_bad_tokens_are_refused_with_401(site: Site) -> None:
    victor = site.tokens["victor"]
    claims = jwt.decode(victor["access_token"], site.secret, algorithms=["HS256"])
    now = datetime.now(UTC)
    expired = jwt.encode(
        {**claims, "jti": uuid.uuid4().hex, "iat": now - timedelta(hours=2), "exp": now - timedelta(hours=1)},
        site.secret,
        algorithm="HS256",
    )
    forged = jwt.encode({**claims, "jti": uuid.uuid4().hex}, "not-the-server-secret-" * 3, algorithm="HS256")
    header, payload, signature = victor["access_token"].split(".")
    edited = json.loads(_unb64(payload))
    edited["sub"] = site.engine.auth.get_user("admin").id  # become the administrator?
    tampered = ".".join([header, _b64(json.dumps(edited).encode()), signature])
    unsigned = ".".join([_b64(b'{"alg":"none","typ":"JWT"}'), _b64(json.dumps(edited).encode()), ""])

    cases = {
        "expired": (expired, "token_expired"),
        "forged": (forged, "invalid_token"),
        "tampered": (tampered, "invalid_token"),
        "alg none": (unsigned, "invalid_token"),
        "refresh as access": (victor["refresh_token"], "invalid_token"),
        "garbage": ("not.a.token", "invalid_token"),
        "unknown key": ("hrk_" + "A" * 43, "invalid_api_key"),
    }
    with site.client() as client:
        for name, (credential, code) in cases.items():
            response = client.get("/api/v1/auth/me", headers=bearer(credential))
            body = assert_problem(response, 401, code)
            assert "admin" not in json.dumps(body), name
        # The real token still works (the refusals above are about the tokens, not the user).
        assert client.get("/api/v1/auth/me", headers=bearer(victor["access_token"])).status_code == 200


def test_refresh_rotation_and_logout_over_http(site: Site) -> None:
    with site.client() as client:
        first = client.post("/api/v1/auth/login", json={"username": "victor", "password": PASSWORD}).json()
        rotated = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert rotated.status_code == 200
        second = rotated.json()
        assert second["refresh_token"] != first["refresh_token"]
        reused = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert_problem(reused, 401, "token_revoked")
        as_refresh = client.post("/api/v1/auth/refresh", json={"refresh_token": second["access_token"]})
        assert_problem(as_refresh, 401, "invalid_token")

        out = client.post(
            "/api/v1/auth/logout",
            json={"refresh_token": second["refresh_token"]},
            headers=bearer(second["access_token"]),
        )
        assert out.status_code == 200 and out.json() == {"logged_out": True}
        assert_problem(
            client.get("/api/v1/auth/me", headers=bearer(second["access_token"])), 401, "token_revoked"
        )
        again = client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
        assert_problem(again, 401, "token_revoked")
        # The access token issued at the first login was not logged out.
        assert client.get("/api/v1/auth/me", headers=bearer(first["access_token"])).status_code == 200


def test_api_keys_and_disabled_users_over_http(site: Site) -> None:
    auth = site.engine.auth
    auth.create_user("dora", PASSWORD, role="editor", groups=["a"])
    with site.client("admin") as admin:
        too_much = admin.post("/api/v1/admin/api-keys", json={"username": "dora", "role": "admin"})
        assert_problem(too_much, 403, "forbidden")
        created = admin.post(
            "/api/v1/admin/api-keys", json={"username": "dora", "name": "etl", "role": "viewer"}
        )
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        listed = admin.get("/api/v1/admin/api-keys")
        assert listed.status_code == 200 and key not in listed.text
    token = auth.login("dora", PASSWORD)

    with site.client(credential=key) as by_key:
        me = by_key.get("/api/v1/auth/me").json()
        assert (me["username"], me["role"], me["via"]) == ("dora", "viewer", "api_key")
        # A viewer key of an editor cannot do what an editor can.
        assert_problem(by_key.post(f"/api/v1/documents/{site.public_id}/reindex"), 403, "forbidden")
    with site.client(credential=key) as by_key, site.client(credential=token["access_token"]) as by_token:
        with site.client("admin") as admin:
            disabled = admin.patch("/api/v1/admin/users/dora", json={"disabled": True})
            assert disabled.status_code == 200 and disabled.json()["disabled"] is True
        # At once, without a restart: the key, the access token and the refresh token stop working.
        assert_problem(by_key.get("/api/v1/auth/me"), 401, "account_disabled")
        assert_problem(by_token.get("/api/v1/auth/me"), 401, "account_disabled")
        refresh = by_token.post("/api/v1/auth/refresh", json={"refresh_token": token["refresh_token"]})
        assert refresh.status_code == 401
        login = by_token.post("/api/v1/auth/login", json={"username": "dora", "password": PASSWORD})
        assert_problem(login, 401, "account_disabled")

        with site.client("admin") as admin:
            assert admin.patch("/api/v1/admin/users/dora", json={"disabled": False}).status_code == 200
            assert by_key.get("/api/v1/auth/me").status_code == 200
            revoked = admin.delete(f"/api/v1/admin/api-keys/{created.json()['id']}")
            assert revoked.status_code == 200
        assert_problem(by_key.get("/api/v1/auth/me"), 401, "api_key_revoked")


def test_roles_decide_who_may_change_documents(site: Site) -> None:
    upload = {
        "file": ("role-test.txt", "권한 시험 문서: 회의록 보관 기간은 3년입니다.".encode(), "text/plain")
    }
    with site.client("victor") as viewer:
        assert_problem(viewer.post("/api/v1/documents", files=upload), 403, "forbidden")
        assert_problem(viewer.delete(f"/api/v1/documents/{site.public_id}"), 403, "forbidden")
        assert_problem(viewer.post(f"/api/v1/documents/{site.public_id}/reindex"), 403, "forbidden")
        acl = viewer.put(f"/api/v1/documents/{site.public_id}/acl", json={"acl": ["group:a"]})
        assert_problem(acl, 403, "forbidden")
        for path in ADMIN_PATHS:
            assert_problem(viewer.get(path), 403, "forbidden")
        # Reading is allowed.
        assert viewer.get(f"/api/v1/documents/{site.public_id}").status_code == 200
    assert site.engine.get_document(site.public_id, caller=SYSTEM).acl == ["public"]

    with site.client("alice") as editor:
        created = editor.post("/api/v1/documents", files=upload, data={"acl": "group:a"})
        assert created.status_code == 201, created.text
        doc_id = created.json()["document_id"]
        assert editor.post(f"/api/v1/documents/{doc_id}/reindex").status_code == 200
        # An editor grants only principals they hold (P7): not another user.
        foreign = editor.put(f"/api/v1/documents/{doc_id}/acl", json={"acl": ["group:a", "user:victor"]})
        assert_problem(foreign, 403, "acl_not_permitted")
        changed = editor.put(f"/api/v1/documents/{doc_id}/acl", json={"acl": ["group:a", "user:alice"]})
        assert changed.status_code == 200 and changed.json()["acl"] == ["group:a", "user:alice"]
        for path in ("/api/v1/admin/users", "/api/v1/admin/audit"):
            assert_problem(editor.get(path), 403, "forbidden")
        assert_problem(editor.post("/api/v1/admin/groups", json={"name": "x"}), 403, "forbidden")
        deleted = editor.delete(f"/api/v1/documents/{doc_id}")
        assert deleted.status_code == 200 and deleted.json()["deleted"] is True

    with site.client("admin") as admin:
        for path in ADMIN_PATHS:
            assert admin.get(path).status_code == 200, path
        bad_role = admin.post(
            "/api/v1/admin/users", json={"username": "x", "password": PASSWORD, "role": "root"}
        )
        assert bad_role.status_code == 422


def test_acl_change_takes_effect_at_once_without_reembedding(site: Site) -> None:
    engine = site.engine

    def alice_sees_b() -> bool:
        with site.client("alice") as client:
            response = client.post("/api/v1/search", json={"query": B_QUESTION, "k": 5})
        assert response.status_code == 200
        return site.b_id in {h["document_id"] for h in response.json()["hits"]}

    assert not alice_sees_b()
    chunks_before = [(c.chunk_id, c.text) for c in engine.document_chunks(site.b_id, caller=SYSTEM)]
    cache = engine.embedding_cache
    assert cache is not None
    counters = (cache.hits, cache.misses, cache.count())
    try:
        with site.client("admin") as admin:
            changed = admin.put(f"/api/v1/documents/{site.b_id}/acl", json={"acl": ["group:b", "group:a"]})
        assert changed.status_code == 200 and changed.json()["acl"] == ["group:b", "group:a"]
        assert (cache.hits, cache.misses, cache.count()) == counters  # nothing was embedded
        assert [
            (c.chunk_id, c.text) for c in engine.document_chunks(site.b_id, caller=SYSTEM)
        ] == chunks_before
        assert all(c.acl == ["group:b", "group:a"] for c in engine.document_chunks(site.b_id, caller=SYSTEM))
        assert alice_sees_b()
    finally:
        engine.set_document_acl(site.b_id, ["group:b"], caller=SYSTEM)
    assert not alice_sees_b()
    assert (cache.hits, cache.misses) == counters[:2]
    entry = engine.audit.query(actor="admin", action="acl_change")[0]
    assert entry["target"] == site.b_id
    assert entry["detail"] == {"from": ["group:b"], "to": ["group:b", "group:a"]}


def test_audit_records_logins_admin_actions_and_questions(site: Site) -> None:
    with site.client() as client:
        for password, status in ((PASSWORD, 200), ("wrong-one", 401)):
            login = client.post("/api/v1/auth/login", json={"username": "victor", "password": password})
            assert login.status_code == status
    with site.client("admin") as admin:
        assert admin.post("/api/v1/admin/groups", json={"name": "audit-g"}).status_code == 201
        created = admin.post(
            "/api/v1/admin/users", json={"username": "erin", "password": PASSWORD, "groups": ["audit-g"]}
        )
        assert created.status_code == 201 and created.json()["groups"] == ["audit-g"]
        assert admin.put("/api/v1/admin/groups/audit-g/members/victor").status_code == 200
        assert admin.delete("/api/v1/admin/groups/audit-g/members/victor").status_code == 200
    with site.client("victor") as victor:
        answer = victor.post("/api/v1/ask", json={"question": "연차 휴가는 며칠인가요?", "k": 2})
    assert answer.status_code == 200, answer.text
    cited = sorted({c["document_id"] for c in answer.json()["citations"]})
    assert cited == [site.public_id]

    with site.client("admin") as admin:

        def audit(**params: Any) -> list[dict[str, Any]]:
            response = admin.get("/api/v1/admin/audit", params=params)
            assert response.status_code == 200
            rows: list[dict[str, Any]] = response.json()
            return rows

        logins = audit(actor="victor", action="login")
        assert logins and logins[0]["ip"] == "127.0.0.1"
        failed = audit(actor="victor", action="login_failed")
        assert failed[0]["detail"] == {"code": "invalid_credentials"}
        assert "wrong-one" not in json.dumps(failed)
        actions = [(r["action"], r["target"]) for r in audit(actor="admin", limit=20)]
        for expected in (
            ("group_create", "audit-g"),
            ("user_create", "erin"),
            ("group_add", "audit-g"),
            ("group_remove", "audit-g"),
        ):
            assert expected in actions, actions
        question = audit(actor="victor", action="question")[0]
        assert question["target"] == answer.json()["session_id"]
        assert question["detail"]["cited_documents"] == cited
        assert question["detail"]["question"] == "연차 휴가는 며칠인가요?"
        only_questions = audit(action="question")
        assert only_questions and {r["action"] for r in only_questions} == {"question"}
        future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        assert audit(since=future) == []


def test_rate_limit_answers_429_with_retry_after(site: Site) -> None:
    limited = site.engine.settings.model_copy(
        update={"auth": site.engine.settings.auth.model_copy(update={"rate_limit_per_minute": 3})}
    )
    live = start_server(site.engine, limited)
    try:
        wait_for_fresh_minute_window()
        with httpx.Client(base_url=live.url, timeout=30) as client:
            victor = bearer(site.tokens["victor"]["access_token"])
            statuses = [client.get("/api/v1/auth/me", headers=victor).status_code for _ in range(3)]
            assert statuses == [200, 200, 200]
            refused = client.get("/api/v1/auth/me", headers=victor)
            assert_problem(refused, 429, "rate_limited")
            assert 1 <= int(refused.headers["retry-after"]) <= 60
            # Per principal: another user is not affected; open paths are not counted.
            alice = bearer(site.tokens["alice"]["access_token"])
            assert client.get("/api/v1/auth/me", headers=alice).status_code == 200
            assert client.get("/healthz").status_code == 200
    finally:
        live.stop()


def test_rate_limit_is_shared_through_redis(site: Site) -> None:
    """Two app instances (two uvicorn servers, each with its own limiter) share one count in Redis."""
    store = redis.Redis.from_url(REDIS_URL)
    name = f"rl-{uuid.uuid4().hex[:12]}"
    pattern = f"hanrag:rate:user:{name}:*"
    site.engine.auth.create_user(name, PASSWORD)
    key = site.engine.auth.create_api_key(name, "rate")["key"]
    shared = site.engine.settings.model_copy(
        update={
            "redis_url": REDIS_URL,
            "auth": site.engine.settings.auth.model_copy(update={"rate_limit_per_minute": 3}),
        }
    )
    first, second = start_server(site.engine, shared), start_server(site.engine, shared)
    try:
        wait_for_fresh_minute_window()
        with httpx.Client(timeout=30, headers=bearer(key)) as client:
            assert client.get(f"{first.url}/api/v1/auth/me").status_code == 200
            assert client.get(f"{first.url}/api/v1/auth/me").status_code == 200
            assert client.get(f"{second.url}/api/v1/auth/me").status_code == 200
            # The second server has seen only two requests, yet the shared count is over the limit.
            refused = client.get(f"{second.url}/api/v1/auth/me")
            assert_problem(refused, 429, "rate_limited")
            assert int(refused.headers["retry-after"]) >= 1
            assert client.get(f"{first.url}/api/v1/auth/me").status_code == 429
        counts = [int(store.get(k) or 0) for k in store.scan_iter(match=pattern)]
        assert counts == [5]
    finally:
        first.stop()
        second.stop()
        for stale in store.scan_iter(match=pattern):
            store.delete(stale)
        store.close()
