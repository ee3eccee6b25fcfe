"""Small SQL sources for the HTTP API and scheduler tests of P10 (tests/test_sources_*.py).

* :func:`make_notes_db` — a database with a ``notes`` table (two short Korean rows, a
  primary key) and a ``nokey`` table without one; the same row texts everywhere, so the
  session's embedding cache embeds them once.
* :func:`scratch_postgres` — a scratch PostgreSQL database (127.0.0.1:5432, trust
  authentication) whose URL carries a password that must never be shown, or None when
  no server is reachable; :func:`drop_postgres` removes it.
* :func:`wait_job` — poll ``GET /api/v1/jobs/{id}`` until the job has ended.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, text

from sql_support import reachable  # (tests/ is on sys.path)

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DB_PASSWORD = "Db-s3cret-never-SHOWN"
NOTES = [
    (1, "연차 규정", "연차휴가는 입사 1년 후 15일이 부여된다."),
    (2, "출장 지침", "출장비 정산은 출장 후 7일 이내에 신청한다."),
]
FINAL = ("succeeded", "failed", "dead", "cancelled")


def make_notes_db(url: str, rows: int = len(NOTES)) -> str:
    """Create ``notes`` (``rows`` rows; beyond the two texts, numbered copies) and ``nokey``."""
    md = MetaData()
    notes = Table(
        "notes",
        md,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("title", String(100), comment="제목"),
        Column("body", String(500), comment="내용"),
        comment="사내 메모",
    )
    nokey = Table("nokey", md, Column("a", String(20)), Column("b", String(20)))
    engine = create_engine(url)
    md.create_all(engine)
    with engine.begin() as conn:
        for i in range(rows):
            _, title, body = NOTES[i % len(NOTES)]
            conn.execute(
                notes.insert().values(id=i + 1, title=title, body=body if i < len(NOTES) else f"{body} ({i})")
            )
        conn.execute(nokey.insert().values(a="x", b="y"))
    engine.dispose()
    return url


def scratch_postgres() -> tuple[str, str] | None:
    """(name, URL with DB_PASSWORD) of a new empty database, or None without a server."""
    if not reachable(PG_ADMIN):
        return None
    name = f"hanrag_srcapi_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    # Trust authentication ignores the password: it is there to be hidden.
    return name, f"postgresql+psycopg://postgres:{DB_PASSWORD}@127.0.0.1:5432/{name}"


def drop_postgres(name: str) -> None:
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def wait_job(client: httpx.Client, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """The job's public record once it has ended."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/api/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        if data["state"] in FINAL:
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} did not end in {timeout} s: {data}")
        time.sleep(0.1)
