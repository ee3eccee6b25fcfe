"""SQL sources over real HTTP (P10): /api/v1/sources and its sync jobs, as each role and as
an attacker.

One token-mode server (uvicorn on loopback) with an administrator, two editors of different
groups and a viewer. SQLite sources are files in a temporary directory (only administrators
may add those); the editors' case runs on a scratch PostgreSQL database whose URL carries a
password that no response, job record, audit entry or log line may ever show (skipped
without a server). Every refusal is problem+json with a stable code, never a 500, and
stores nothing.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_server import LiveServer, start_server
from hanrag.auth.access import SYSTEM, Caller
from hanrag.embed.cache import EmbeddingCache
from hanrag.engine import Engine
from hanrag.errors import ForbiddenError
from hanrag.settings import Settings
from hanrag.tables.options import source_from_options
from hanrag.tables.service import SourceService
from sources_support import DB_PASSWORD, drop_postgres, make_notes_db, scratch_postgres, wait_job

PASSWORD = "correct-horse-battery"
PROBLEM_JSON = "application/problem+json"
UNREACHABLE = f"postgresql+psycopg://reader:{DB_PASSWORD}@127.0.0.1:1/nothing"


@dataclass
class Site:
    engine: Engine
    live: LiveServer
    tokens: dict[str, str]
    data_dir: Path
    shop: Path  # a SQLite source file outside the data directory
    pg_url: str | None  # a scratch PostgreSQL database with the notes table

    def client(self, who: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        return httpx.Client(base_url=self.live.url, headers=headers, timeout=60)

    def names(self) -> set[str]:
        """Every stored source, whoever owns it."""
        return {view["name"] for view in self.engine.sources.list(caller=SYSTEM)}


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, shared_cache_path: Path) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("sources-api")
    shop = base / "sources" / "shop.db"
    shop.parent.mkdir()
    make_notes_db(f"sqlite:///{shop}")
    scratch = scratch_postgres()
    if scratch is not None:
        make_notes_db(scratch[1])
    settings = Settings(
        data_dir=base / "data",
        auth={"mode": "token"},
        tables={"editor_hosts": ["127.0.0.1"], "scheduler": False},
    )
    engine = Engine(settings)
    engine.__dict__["embedding_cache"] = EmbeddingCache(shared_cache_path)
    auth = engine.auth
    auth.create_user("admin", PASSWORD, role="admin")
    auth.create_user("ed", PASSWORD, role="editor", groups=["a"])
    auth.create_user("eve", PASSWORD, role="editor", groups=["b"])
    auth.create_user("vic", PASSWORD, role="viewer", groups=["a"])
    live = start_server(engine)
    try:
        tokens = {}
        with httpx.Client(base_url=live.url, timeout=60) as client:
            for name in ("admin", "ed", "eve", "vic"):
                response = client.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
                assert response.status_code == 200, response.text
                tokens[name] = response.json()["access_token"]
        yield Site(engine, live, tokens, base / "data", shop, scratch[1] if scratch else None)
    finally:
        live.stop()
        engine.close()
        if scratch is not None:
            drop_postgres(scratch[0])


def sqlite_body(site: Site, name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "url": f"sqlite:///{site.shop}", "tables": ["notes"], **extra}


# ------------------------------------------------------------------ admin


def test_admin_adds_lists_shows_syncs_and_removes(site: Site) -> None:
    with site.client("admin") as admin:
        added = admin.post("/api/v1/sources", json=sqlite_body(site, "shop", acl=["group:a"]))
        assert added.status_code == 201, added.text
        view = added.json()
        assert view["name"] == "shop" and view["dialect"] == "sqlite" and view["owner"] == "admin"
        assert view["url"] == f"sqlite:///{site.shop}"
        assert view["acl"] == ["group:a"] and [t["name"] for t in view["tables"]] == ["notes"]
        assert view["warnings"]  # a writable SQLite file: a read-only account is recommended
        assert view["last_sync"] is None and view["interval_minutes"] is None

        assert [v["name"] for v in admin.get("/api/v1/sources").json()] == ["shop"]
        shown = admin.get("/api/v1/sources/shop").json()
        [notes] = shown["schema"]
        assert notes["table"] == "notes" and notes["primary_key"] == ["id"]
        title = next(c for c in notes["columns"] if c["name"] == "title")
        assert set(title["samples"]) == {"연차 규정", "출장 지침"}
        assert "schema" not in admin.get("/api/v1/sources/shop", params={"schema": "false"}).json()

        queued = admin.post("/api/v1/sources/shop/sync", json={})
        assert queued.status_code == 202, queued.text
        assert queued.json()["status"] == 202 and queued.json()["data"]["state"] == "queued"
        job = wait_job(admin, queued.json()["data"]["job_id"])
        assert job["state"] == "succeeded", job
        assert job["kind"] == "sql_sync" and job["payload"] == {"source": "shop", "full": False}
        assert job["principal"] == "admin"
        assert job["result"]["counts"] == {"added": 2} and job["result"]["rows"] == 2
        assert job["progress"]["table"] == "notes" and job["progress"]["rows"] == 2
        assert job["progress"]["rows_total"] == 2 and job["progress"]["counts"] == {"added": 2}
        hits = site.engine.search("연차휴가 부여", caller=SYSTEM).hits
        assert hits and hits[0].chunk.source == "sql:shop/notes/1" and hits[0].chunk.acl == ["group:a"]

        # No body at all is an incremental sync; a full one reads every row again.
        again = wait_job(admin, admin.post("/api/v1/sources/shop/sync").json()["data"]["job_id"])
        assert again["state"] == "succeeded" and again["payload"]["full"] is False
        full = admin.post("/api/v1/sources/shop/sync", json={"full": True}).json()["data"]["job_id"]
        done = wait_job(admin, full)
        assert done["state"] == "succeeded" and done["result"]["counts"] == {"unchanged": 2}
        assert admin.get("/api/v1/sources/shop?schema=false").json()["last_sync"]["full"] is True

        removed = admin.delete("/api/v1/sources/shop")
        assert removed.status_code == 200, removed.text
        assert removed.json() == {"name": "shop", "removed": True, "documents_removed": 2}
        problem(admin.get("/api/v1/sources/shop"), 404, "sql_source_not_found")
        assert not [
            h
            for h in site.engine.search("연차휴가 부여", caller=SYSTEM).hits
            if h.chunk.source.startswith("sql:")
        ]


def test_remove_can_keep_the_documents(site: Site) -> None:
    with site.client("admin") as admin:
        assert admin.post("/api/v1/sources", json=sqlite_body(site, "kept")).status_code == 201
        assert (
            wait_job(admin, admin.post("/api/v1/sources/kept/sync").json()["data"]["job_id"])["state"]
            == "succeeded"
        )
        removed = admin.delete("/api/v1/sources/kept", params={"keep_documents": "true"})
        assert removed.json() == {"name": "kept", "removed": True, "documents_removed": 0}
        kept = site.engine.catalog.documents_with_metadata({"sql_source": "kept"})
        assert len(kept) == 2
        for document_id in kept:  # tidy up for the other tests
            site.engine.pipeline.delete_document(document_id)


# ------------------------------------------------------------------ roles


def test_a_viewer_is_refused_on_every_route(site: Site) -> None:
    with site.client("admin") as admin:
        assert admin.post("/api/v1/sources", json=sqlite_body(site, "viewed")).status_code == 201
    try:
        with site.client("vic") as viewer:
            calls = [
                viewer.get("/api/v1/sources"),
                viewer.post("/api/v1/sources", json=sqlite_body(site, "mine")),
                viewer.post("/api/v1/sources", json={"nonsense": True}),  # refused before the body is read
                viewer.get("/api/v1/sources/viewed"),
                viewer.get("/api/v1/sources/viewed", params={"schema": "false"}),
                viewer.post("/api/v1/sources/viewed/sync", json={}),
                viewer.delete("/api/v1/sources/viewed"),
                viewer.get("/api/v1/sources/missing"),
            ]
        for response in calls:
            problem(response, 403, "forbidden")
        with httpx.Client(base_url=site.live.url, timeout=30) as anonymous:
            problem(anonymous.get("/api/v1/sources"), 401, "unauthorized")
        assert "mine" not in site.names() and "viewed" in site.names()
    finally:
        site.engine.sources.remove("viewed", caller=SYSTEM)


def test_editors_add_only_on_allowed_hosts_and_grant_only_what_they_hold(site: Site) -> None:
    with site.client("ed") as ed:
        # SQLite is a file on this server: administrators only, whatever the path.
        body = problem(
            ed.post("/api/v1/sources", json=sqlite_body(site, "edlite")), 403, "sql_source_forbidden"
        )
        assert body["field"] == "url"
        elsewhere = {
            "name": "far",
            "url": f"postgresql+psycopg://u:{DB_PASSWORD}@db.example.com/x",
            "tables": ["t"],
        }
        problem(ed.post("/api/v1/sources", json=elsewhere), 403, "sql_source_forbidden")
        # On an allowed host, the ACLs are checked before anything connects.
        near = {"name": "near", "url": UNREACHABLE, "tables": ["notes"]}
        for extra, field in (
            ({"acl": ["group:b"]}, "acl"),
            ({"acl": ["group:a", "user:eve"]}, "acl"),
            ({"query_acl": ["user:admin"]}, "query_acl"),
            ({"tables": [{"name": "notes", "query_acl": ["group:b"]}]}, "query_acl"),
        ):
            refused = problem(ed.post("/api/v1/sources", json={**near, **extra}), 403, "acl_not_permitted")
            assert refused["field"] == field and DB_PASSWORD not in str(refused)
        # What they hold passes the checks (and then fails to connect: nothing there).
        held = ed.post("/api/v1/sources", json={**near, "acl": ["group:a"], "query_acl": ["user:ed"]})
        problem(held, 400, "sql_source_unreachable")
        assert DB_PASSWORD not in held.text
    assert not {"edlite", "far", "near"} & site.names()


def test_an_editor_never_reaches_anyone_elses_source(site: Site) -> None:
    with site.client("admin") as admin:
        assert (
            admin.post("/api/v1/sources", json=sqlite_body(site, "admins", interval_minutes=60)).status_code
            == 201
        )
    try:
        with site.client("ed") as ed:
            assert ed.get("/api/v1/sources").json() == []
            for response in (
                ed.get("/api/v1/sources/admins"),
                ed.get("/api/v1/sources/admins", params={"schema": "false"}),
                ed.post("/api/v1/sources/admins/sync", json={"full": True}),
                ed.delete("/api/v1/sources/admins"),
                ed.get("/api/v1/sources/nothing-here"),
            ):
                body = problem(response, 404, "sql_source_not_found")
                assert "admins" in body["detail"] or "nothing-here" in body["detail"]
            # Replacing it is refused too (the name is taken), and changes nothing.
            replaced = {"name": "admins", "url": UNREACHABLE, "tables": ["notes"], "replace": True}
            problem(ed.post("/api/v1/sources", json=replaced), 400, "sql_source_exists")
        view = site.engine.sources.show("admins", caller=SYSTEM, schema=False)
        assert (
            view["owner"] == "admin"
            and view["url"] == f"sqlite:///{site.shop}"
            and view["interval_minutes"] == 60
        )
        queued = site.live.app.state.jobs.store.list_jobs(limit=1000)
        assert not [j for j in queued if j.kind == "sql_sync" and j.payload["source"] == "admins"]
    finally:
        site.engine.sources.remove("admins", caller=SYSTEM)


def test_an_editors_postgres_source_with_its_password_never_shown(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    if site.pg_url is None:
        pytest.skip("no PostgreSQL server reachable")
    assert DB_PASSWORD in site.pg_url
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    with site.client("ed") as ed, site.client("eve") as eve, site.client("admin") as admin:
        added = ed.post(
            "/api/v1/sources",
            json={
                "name": "pgnotes",
                "url": site.pg_url,
                "tables": ["notes"],
                "acl": ["group:a"],
                "batch_size": 1,
            },
        )
        assert added.status_code == 201, added.text
        assert added.json()["url"].startswith("postgresql+psycopg://postgres:***@127.0.0.1:5432/")
        assert added.json()["owner"] == "ed" and added.json()["warnings"]  # postgres can write
        texts += [added.text, ed.get("/api/v1/sources").text, ed.get("/api/v1/sources/pgnotes").text]

        job_id = ed.post("/api/v1/sources/pgnotes/sync", json={"full": True}).json()["data"]["job_id"]
        job = wait_job(ed, job_id)
        assert job["state"] == "succeeded" and job["principal"] == "ed", job
        assert job["result"]["counts"] == {"added": 2}
        stored = site.live.app.state.jobs.store.get(job_id)
        texts += [ed.get(f"/api/v1/jobs/{job_id}").text, str(stored.to_dict())]

        # The other editor sees nothing of it, neither the source nor its job.
        assert eve.get("/api/v1/sources").json() == []
        problem(eve.get("/api/v1/sources/pgnotes"), 404, "sql_source_not_found")
        problem(eve.post("/api/v1/sources/pgnotes/sync"), 404, "sql_source_not_found")
        problem(eve.delete("/api/v1/sources/pgnotes"), 404, "sql_source_not_found")
        assert eve.get(f"/api/v1/jobs/{job_id}").status_code == 404
        # The administrator sees and manages every source, URL masked all the same.
        assert [v["name"] for v in admin.get("/api/v1/sources").json()] == ["pgnotes"]
        audit = admin.get("/api/v1/admin/audit", params={"action": "sql_source_add"})
        assert "postgres:***@127.0.0.1" in audit.text
        texts += [admin.get("/api/v1/sources/pgnotes?schema=false").text, audit.text]
        texts.append(admin.get("/api/v1/admin/audit", params={"limit": 1000}).text)

        # Errors that carry the URL carry it masked.
        for body, code in (
            ({"name": "down", "url": UNREACHABLE, "tables": ["notes"]}, "sql_source_unreachable"),
            ({"name": "bad", "url": f"not a url {DB_PASSWORD}", "tables": ["notes"]}, "invalid_sql_url"),
        ):
            refused = admin.post("/api/v1/sources", json=body)
            problem(refused, 400, code)
            texts.append(refused.text)
        unknown_field = admin.post(
            "/api/v1/sources", json={"name": "x", "url": site.pg_url, "tables": ["notes"], "pw": 1}
        )
        problem(unknown_field, 422, "invalid_request")
        texts.append(unknown_field.text)

        removed = ed.delete("/api/v1/sources/pgnotes")
        assert removed.json()["documents_removed"] == 2
        texts.append(removed.text)
    for text in texts:
        assert DB_PASSWORD not in text
    records = [str(record.__dict__) for record in caplog.records]
    assert any("sql_source" in r or "SQL source" in r for r in records)  # the sync did log
    assert not [r for r in records if DB_PASSWORD in r]


# ------------------------------------------------------------ own data


def test_no_source_may_read_hanrag_s_own_data(site: Site) -> None:
    inside = site.data_dir / "copy.db"
    shutil.copyfile(site.shop, inside)
    try:
        with site.client("admin") as admin:
            for url in (
                site.engine.settings.resolved_catalog_url,
                f"sqlite:///{site.data_dir / 'catalog.db'}",
                f"sqlite:///{inside}",
                f"sqlite:///{site.shop.parent / '..' / site.data_dir.name / 'copy.db'}",
            ):
                refused = admin.post("/api/v1/sources", json={"name": "own", "url": url, "tables": ["notes"]})
                problem(refused, 403, "sql_source_forbidden")
        assert "own" not in site.names()
    finally:
        inside.unlink()


@pytest.mark.parametrize(
    "catalog, url",
    [
        # Loopback only (nothing is looked up, and a check that let one through would
        # only meet a refused connection): same server however it is spelled.
        ("postgresql+psycopg://hanrag:pw@127.0.0.1:1/hanrag", "postgresql://other:x@127.0.0.1:1/hanrag"),
        (
            "postgresql+psycopg://hanrag:pw@127.0.0.1/hanrag",
            "postgresql+psycopg://hanrag:pw@127.0.0.1:5432/hanrag",
        ),
        (
            "postgresql+psycopg://hanrag:pw@localhost:1/hanrag",
            "postgresql+psycopg://hanrag:pw@127.0.0.1:1/hanrag",
        ),
        (
            "postgresql+psycopg://hanrag:pw@LocalHost:1/hanrag",
            "postgresql+psycopg://hanrag:pw@localhost.:1/hanrag",
        ),
        ("mysql+pymysql://hanrag:pw@127.0.0.1/hanrag", "mariadb+pymysql://r:pw@127.0.0.1:3306/hanrag"),
    ],
)
def test_a_postgres_or_mysql_catalog_is_refused_as_a_source(
    catalog: str, url: str, site: Site, tmp_path: Path
) -> None:
    """The check runs before anything connects: a service whose settings name a server
    catalog (its own store stays SQLite) refuses that catalog however it is spelled."""
    settings = Settings(data_dir=tmp_path / "data", catalog_url=catalog)
    service = SourceService(site.engine.sources.store, lambda: site.engine.pipeline, settings)
    source = source_from_options("catalog", url, tables=["documents"])
    for caller in (SYSTEM, Caller.of("admin", None, "admin")):
        with pytest.raises(ForbiddenError) as refused:
            service.add(source, caller=caller)
        assert refused.value.code == "sql_source_forbidden"
    assert "catalog" not in site.names()


# ------------------------------------------------------------- bad input


def test_bad_input_is_a_4xx_problem_and_stores_nothing(site: Site) -> None:
    shop = f"sqlite:///{site.shop}"
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"name": "b1", "url": shop, "tables": ["missing"]}, 400, "sql_table_unknown"),
        ({"name": "b2", "url": shop, "tables": ["nokey"]}, 400, "sql_no_primary_key"),
        ({"name": "b3", "url": shop, "tables": ["notes"], "columns": ["nope"]}, 400, "sql_column_unknown"),
        (
            {"name": "b4", "url": shop, "tables": ["notes"], "updated_at_column": "nope"},
            400,
            "sql_column_unknown",
        ),
        ({"name": "b5", "url": "not a url", "tables": ["notes"]}, 400, "invalid_sql_url"),
        (
            {"name": "b6", "url": f"sqlite://reader:{DB_PASSWORD}@//{site.shop}", "tables": ["notes"]},
            400,
            "invalid_sql_url",
        ),
        (
            {"name": "b7", "url": f"postgresql+nosuchdriver://u:{DB_PASSWORD}@127.0.0.1/x", "tables": ["t"]},
            400,
            "invalid_sql_url",
        ),
        ({"name": "b8", "url": UNREACHABLE, "tables": ["notes"]}, 400, "sql_source_unreachable"),
        ({"name": "b9", "url": "sqlite://", "tables": ["notes"]}, 400, "invalid_sql_url"),
        ({"name": "b10", "url": shop, "tables": ["notes"], "interval_minutes": 0}, 400, "invalid_sql_source"),
        (
            {"name": "b11", "url": shop, "tables": ["notes"], "interval_minutes": 10**9},
            400,
            "invalid_sql_source",
        ),
        ({"name": "b12", "url": shop, "tables": ["notes"], "batch_size": 0}, 400, "invalid_sql_source"),
        (
            {"name": "b13", "url": shop, "tables": ["notes"], "where": "1=1; DROP TABLE notes"},
            400,
            "invalid_sql_source",
        ),
        ({"name": "b14", "url": shop, "tables": ["no tes"]}, 400, "invalid_sql_source"),
        ({"name": "b15", "url": shop, "tables": ["notes"], "acl": ["everyone"]}, 400, "invalid_acl"),
        (
            {"name": "b16", "url": shop, "tables": ["notes"], "acl_template": "group:x"},
            400,
            "invalid_sql_source",
        ),
        ({"name": "a/b", "url": shop, "tables": ["notes"]}, 400, "invalid_sql_source"),
        ({"name": "b17", "url": shop, "tables": ["notes", "notes"]}, 400, "invalid_sql_source"),
        ({"name": "b18", "url": shop, "tables": []}, 422, "invalid_request"),
        (
            {"name": "b19", "url": shop, "tables": [{"name": "notes", "colour": "red"}]},
            422,
            "invalid_request",
        ),
        (
            {"name": "b20", "url": shop, "tables": ["notes"], "interval_minutes": "often"},
            422,
            "invalid_request",
        ),
        ({"name": "b21", "tables": ["notes"]}, 422, "invalid_request"),
    ]
    with site.client("admin") as admin:
        for body, status, code in cases:
            response = admin.post("/api/v1/sources", json=body)
            assert response.status_code == status, (body, response.text)
            problem(response, status, code)
            assert DB_PASSWORD not in response.text
        malformed = admin.post(
            "/api/v1/sources", content=b"{not json", headers={"content-type": "application/json"}
        )
        problem(malformed, 400, "malformed_json")
        assert admin.post("/api/v1/sources", json=sqlite_body(site, "taken")).status_code == 201
        try:
            problem(admin.post("/api/v1/sources", json=sqlite_body(site, "taken")), 400, "sql_source_exists")
            problem(admin.post("/api/v1/sources/nothing/sync", json={}), 404, "sql_source_not_found")
            problem(
                admin.post("/api/v1/sources/taken/sync", json={"full": True, "x": 1}), 422, "invalid_request"
            )
            problem(admin.post("/api/v1/sources/taken/sync", json={"full": "very"}), 422, "invalid_request")
            problem(admin.delete("/api/v1/sources/nothing"), 404, "sql_source_not_found")
            problem(admin.get("/api/v1/sources/nothing"), 404, "sql_source_not_found")
            refused = admin.post("/api/v1/sources/taken/sync", json={"callback_headers": {"Host": "x"}})
            assert refused.status_code == 400 and refused.json()["code"] == "invalid_callback_headers", (
                refused.text
            )
            problem(
                admin.post("/api/v1/sources/taken/sync", json={"callback_url": "ftp://x"}),
                422,
                "invalid_request",
            )
            assert [v["name"] for v in admin.get("/api/v1/sources").json()] == ["taken"]
        finally:
            assert admin.delete("/api/v1/sources/taken").status_code == 200
    assert site.names() == set()
