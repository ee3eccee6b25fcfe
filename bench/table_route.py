"""The table route's overhead around the language model (P10: ≤ 50 ms p95 excluding the LLM).

Usage::

    .venv/bin/python bench/table_route.py [--backends postgresql mariadb sqlite] [--rows 10000]
        [--rounds 5] [--cold 5] [--callers viewer system] [--http] [--profile]
        [--json]

Method
======

**Databases.** A scratch shop database per backend: PostgreSQL (``--pg-admin``, default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``, trust authentication) and MariaDB
(``--mariadb-admin``, default ``mysql+pymysql://root@127.0.0.1:3306/``) each get a database
``hanrag_bench_route_<random>`` that is dropped at the end, also after a failure or Ctrl-C
(PostgreSQL: ``DROP DATABASE ... WITH (FORCE)``); SQLite gets a file in a temporary
directory. A server that cannot be reached is skipped with a note. Tables, with Korean
table and column comments (SQLite keeps none): ``customers`` (500 rows: name, region, tier,
joined date, a phone column the source excludes), ``products`` (50: name, category, unit
price), ``shipments`` (``--rows``, default 10,000: customer and product foreign keys,
quantity, amount, status, region, team, shipped date 2023-2024, updated time, an excluded
memo), with indexes on the foreign keys and the shipped date. Values are drawn from a
seeded RNG, so every run and backend holds the same rows.

**The engine.** A real :class:`hanrag.engine.Engine` on a temporary data directory (SQLite
catalog, default settings) whose language model is ``llm.backend = openai`` pointed at the
fake model below, with the source added exactly as an administrator would:
``engine.sources.add(SqlSource("shop", url, tables, query_acl=(group:logistics,
group:sales)), caller=SYSTEM)``; ``shipments`` excludes ``memo`` and maps its row ACL from
``team`` (``group:{value}``), ``customers`` excludes ``phone``. Each question is one
``await engine.ask_result(question, caller=...)`` on one event loop, as a server runs it
(new session each time, so the turn and the audit row are written as usual). Callers
(``--callers``): ``viewer`` = ``kim`` holding ``group:logistics`` (restricted: the query is
rewritten to the rows the ACL column grants, samples of ``shipments`` are hidden) and
``system`` (unrestricted: no rewrite). A question that is not answered by the table
route (``plan.route != "table"``) counts as a failure and is listed.

**The model** answers instantly: a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 in this
process speaks the OpenAI chat-completions protocol. The planner's request (its user
message holds ``마지막 질문:``) gets ``<question>Q</question><keywords>k</keywords>
<time>none</time><route>table</route>``; the SQL request (its user message holds the schema
summary and ``질문:`` Q) gets ``<source>shop</source><sql>SQL</sql>`` with the SQL written
for Q in the backend's dialect (17 realistic Korean questions: counts by status, a monthly
trend, quarterly revenue, top-5 products by quantity, averages by region, joins with
customers and products, NOT EXISTS, a CTE with LAG, a daily series); the streamed answer
request gets a three-delta SSE stream with a usage chunk and ``[DONE]``. Nothing sleeps.

**What is measured, per question.**

* ``total``: wall time of ``engine.ask_result`` (perf_counter around the await).
* ``model (server)``: the time the fake model's handlers spent per request (from the
  start of ``do_POST`` to the last byte written), summed over the question's three
  requests. This is what a real model would replace with its own time.
* ``model (client)``: the time spent inside the generator's calls, measured by wrapping
  ``engine.generator.complete`` and every ``__anext__`` of ``engine.generator.stream``
  (so the engine's own work between two chunks is not counted). It includes hanrag's
  HTTP client: today ``OpenAICompatGenerator`` builds a new ``httpx.AsyncClient`` per
  call (which creates an SSL context and loads the CA bundle even for ``http://``),
  connects, sends, and parses.
* ``overhead = total - model (server)``: everything hanrag does around the model's
  own time, its HTTP client included. **This is the figure P10's target is about.**
* ``route-only = total - model (client)``: the same without hanrag's HTTP client cost,
  i.e. the session/planner plumbing, the table route (scope, validation, row
  restriction, the query on the database, chart), the answer stream handling and the
  turn and audit writes.

Phases: ``cold`` = the first question of a new ``Engine`` object on the same data
directory (``--cold`` times, each a new engine: the answer engine is built, the source's
connection pool opens, every table is introspected with sample values); the very first
of the process (imports) is marked ``first`` and kept out of the cold figures.
``warm`` = ``--rounds`` rounds over all questions in a seeded random order on one engine
after one untimed question (the schema cache, ``SCHEMA_TTL_S`` = 300 s, is filled: the
normal case). ``expired`` = the schema cache emptied before each of ``--cold`` questions on
the warm engine (what the first question after the TTL pays; the pool is open).

**Stages** (warm, p50/p95 ms), from ``result.timings`` and the model clocks:
``plan`` = ``planning_ms`` minus the planner call (session checks and the thread hop),
``schema`` = ``table_schema_ms`` (grants from the catalog, schema cache, summary),
``sql call`` = ``table_sql_llm_ms`` (client side), ``query`` = ``table_query_ms`` (parse the
reply, validate, restrict rows, run read-only on the database, fetch), ``stream`` =
``generation_ms`` minus the time inside the stream (the engine's delta handling),
``rest`` = ``total_ms`` minus all of those and ``retrieval_ms`` (the ``available`` check,
thread hops, prompt building, the turn and audit write), ``outside`` = wall minus
``total_ms`` (the fold over the events). The first table also gives ``table_schema_ms``
per phase (``schm``: what introspection costs when the cache is cold). A third table times
the route's parts directly, in a worker thread without the event loop in between, per
question, ``--rounds`` times each: ``TableRoute.available``, ``scope`` (warm),
``summary`` (the schema text), ``prepare`` (parse the reply, validate, restrict rows),
``run`` (the guarded read-only query), ``raw query`` (the same SQL on a pooled connection
without the guard: the database's own time plus one round trip), ``chart_spec``, and
``record turn`` (``AnswerEngine._record_turn``: the session, the turn and the audit row
written to the catalog, as every answer does).

One shared TLS context for the generator's HTTP clients (``hanrag.netpolicy.tls_context``)
brought the warm p95 from 0.5-1.2 s to under 50 ms: each new client used to load the CA
bundle again on the event loop's thread.

**HTTP (``--http``).** For the first backend: ``hanrag serve`` in a subprocess
(``bench/served.py``; auth mode none, so the caller is unrestricted) on the same data
directory and the same fake model; ``POST /api/v1/ask`` (JSON, one kept-alive
``httpx.Client``) for the first question (cold in that process) and ``--rounds`` rounds;
``overhead`` = wall minus model (server), ``http`` = wall minus the response's ``total_ms``.
Starting the server loads the embedding model (warm-up), which takes a while.

**``--profile``.** One more warm round per backend under cProfile: the event loop's thread
and, merged in, every function the engine hands to a thread (``asyncio.to_thread`` is
wrapped for that round, and the turn writer): the top functions by cumulative and own time.

Output: tables on stdout, the load average (``os.getloadavg``) before and after, and a
verdict against 50 ms p95; ``--json`` prints one JSON object instead (progress on stderr).
Exit status 1 when a question failed or a database could not be set up.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import logging
import os
import pstats
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from sqlalchemy import (
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    text,
)

from hanrag.answer.prompts import QUESTION_HEADER
from hanrag.auth.access import SYSTEM, Caller
from hanrag.engine import Engine
from hanrag.settings import Settings
from hanrag.tables.chart import chart_spec
from hanrag.tables.sources import SqlSource, TableConfig

TARGET_P95_MS = 50.0
DB_PREFIX = "hanrag_bench_route_"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MARIADB_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/?charset=utf8mb4"

VIEWER = Caller.of("kim", ["user:kim", "group:logistics"], "viewer")
CALLERS = {"viewer": VIEWER, "system": SYSTEM}

# ------------------------------------------------------------------- questions

# Per dialect: a month label and a quarter number of shipped_at.
MONTH = {
    "postgresql": "to_char(shipped_at, 'YYYY-MM')",
    "mariadb": "DATE_FORMAT(shipped_at, '%Y-%m')",
    "sqlite": "strftime('%Y-%m', shipped_at)",
}
QUARTER = {
    "postgresql": "EXTRACT(QUARTER FROM shipped_at)",
    "mariadb": "QUARTER(shipped_at)",
    "sqlite": "(CAST(strftime('%m', shipped_at) AS INTEGER) + 2) / 3",
}
YEAR_2024 = "shipped_at >= '2024-01-01' AND shipped_at < '2025-01-01'"

QUESTIONS: list[tuple[str, str]] = [
    (
        "배송 상태별 건수는?",
        "SELECT status AS 배송상태, COUNT(*) AS 건수 FROM shipments GROUP BY status ORDER BY 건수 DESC",
    ),
    (
        "2024년 월별 출고 건수 추이를 보여줘",
        f"SELECT {{month}} AS 월, COUNT(*) AS 건수 FROM shipments WHERE {YEAR_2024} GROUP BY 1 ORDER BY 1",
    ),
    (
        "출고 수량 기준 상위 5개 상품은?",
        "SELECT p.name AS 상품명, SUM(s.quantity) AS 수량 FROM shipments s JOIN products p "
        "ON p.id = s.product_id GROUP BY p.name ORDER BY 수량 DESC LIMIT 5",
    ),
    (
        "지역별 평균 주문 금액은?",
        "SELECT region AS 지역, ROUND(AVG(amount), 0) AS 평균금액 FROM shipments GROUP BY region "
        "ORDER BY 평균금액 DESC",
    ),
    ("전체 배송은 몇 건이야?", "SELECT COUNT(*) AS 건수 FROM shipments"),
    (
        "고객 등급별 총 매출은?",
        "SELECT c.tier AS 등급, SUM(s.amount) AS 매출 FROM shipments s JOIN customers c "
        "ON c.id = s.customer_id GROUP BY c.tier ORDER BY 매출 DESC",
    ),
    (
        "상품 분류별 출고 수량 합계는?",
        "SELECT p.category AS 분류, SUM(s.quantity) AS 수량 FROM shipments s JOIN products p "
        "ON p.id = s.product_id GROUP BY p.category ORDER BY 수량 DESC",
    ),
    (
        "2024년 분기별 매출은?",
        f"SELECT {{quarter}} AS 분기, SUM(amount) AS 매출 FROM shipments WHERE {YEAR_2024} "
        "GROUP BY 1 ORDER BY 1",
    ),
    (
        "매출 상위 10개 고객은 누구야?",
        "SELECT c.name AS 고객명, SUM(s.amount) AS 매출 FROM shipments s JOIN customers c "
        "ON c.id = s.customer_id GROUP BY c.id, c.name ORDER BY 매출 DESC LIMIT 10",
    ),
    (
        "배송 중인 건이 가장 많은 지역 3곳은?",
        "SELECT region AS 지역, COUNT(*) AS 건수 FROM shipments WHERE status = '배송 중' "
        "GROUP BY region ORDER BY 건수 DESC LIMIT 3",
    ),
    (
        "담당팀별 출고 건수와 평균 수량은?",
        "SELECT team AS 담당팀, COUNT(*) AS 건수, ROUND(AVG(quantity), 1) AS 평균수량 FROM shipments "
        "GROUP BY team ORDER BY team",
    ),
    (
        "단가가 가장 비싼 상품 5개는?",
        "SELECT name AS 상품명, category AS 분류, unit_price AS 단가 FROM products "
        "ORDER BY unit_price DESC LIMIT 5",
    ),
    (
        "2024년 3월에 서울로 간 출고는 몇 건?",
        "SELECT COUNT(*) AS 건수 FROM shipments WHERE region = '서울' "
        "AND shipped_at BETWEEN '2024-03-01' AND '2024-03-31'",
    ),
    (
        "반품이 많은 상품 순위는?",
        "SELECT p.name AS 상품명, COUNT(*) AS 반품건수 FROM shipments s JOIN products p "
        "ON p.id = s.product_id WHERE s.status = '반품' GROUP BY p.name ORDER BY 반품건수 DESC LIMIT 10",
    ),
    (
        "한 번도 주문하지 않은 고객은 몇 명?",
        "SELECT COUNT(*) AS 고객수 FROM customers c WHERE NOT EXISTS "
        "(SELECT 1 FROM shipments s WHERE s.customer_id = c.id)",
    ),
    (
        "2024년 월별 매출과 전월 대비 증감은?",
        f"WITH m AS (SELECT {{month}} AS 월, SUM(amount) AS 매출 FROM shipments WHERE {YEAR_2024} "
        "GROUP BY 1) SELECT 월, 매출, 매출 - LAG(매출) OVER (ORDER BY 월) AS 증감 FROM m ORDER BY 월",
    ),
    (
        "최근 2주간 일별 출고 건수는?",
        "SELECT shipped_at AS 출고일, COUNT(*) AS 건수 FROM shipments WHERE shipped_at >= '2024-12-18' "
        "GROUP BY shipped_at ORDER BY shipped_at",
    ),
]


def sql_for(backend: str) -> dict[str, str]:
    return {q: sql.format(month=MONTH[backend], quarter=QUARTER[backend]) for q, sql in QUESTIONS}


ANSWER_DELTAS = ["조회 결과를 ", "표로 정리했습니다. ", "자세한 값은 표를 확인해 주십시오."]

# ---------------------------------------------------------------- the fake model

_LAST_QUESTION = re.compile(r"마지막 질문:\s*(.*)\Z", re.DOTALL)
_SQL_QUESTION = re.compile(re.escape(QUESTION_HEADER) + r"\s*(.*)\Z", re.DOTALL)


def _chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    payload = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "model": "instant",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, code: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _completion(self, content: str) -> None:
        self._json(
            200,
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "model": "instant",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            },
        )

    def do_POST(self) -> None:
        started = time.perf_counter()
        owner = self.server.owner
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        kind = "?"
        if not self.path.endswith("/chat/completions"):
            self._json(404, {"error": {"message": "not found"}})
        elif body.get("stream"):
            kind = "answer"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            parts = [_chunk({"role": "assistant"})]
            parts += [_chunk({"content": t}) for t in ANSWER_DELTAS]
            parts.append(_chunk({}, finish="stop"))
            usage = {"prompt_tokens": 300, "completion_tokens": 30, "total_tokens": 330}
            parts.append(f"data: {json.dumps({'id': 'chatcmpl-bench', 'choices': [], 'usage': usage})}\n\n")
            parts.append("data: [DONE]\n\n")
            for part in parts:  # one write per event, as a model server streams
                self.wfile.write(part.encode())
                self.wfile.flush()
        else:
            user = next((m["content"] for m in reversed(body.get("messages", [])) if m["role"] == "user"), "")
            plan = _LAST_QUESTION.search(user)
            if plan is not None:
                kind = "plan"
                question = plan.group(1).strip()
                self._completion(
                    f"<question>{question}</question><keywords>배송, 출고</keywords>"
                    "<time>none</time><route>table</route>"
                )
            else:
                kind = "sql"
                match = _SQL_QUESTION.search(user)
                question = match.group(1).strip() if match else ""
                sql = owner.sql.get(question)
                if sql is None:
                    self._json(500, {"error": {"message": f"no SQL scripted for {question!r}"}})
                else:
                    self._completion(f"<source>shop</source>\n<sql>{sql}</sql>")
        elapsed = time.perf_counter() - started
        with owner.lock:
            owner.records.append((kind, elapsed))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: InstantModel


class InstantModel:
    """An OpenAI-compatible model on loopback that answers at once (see the module docstring)."""

    def __init__(self) -> None:
        self.sql: dict[str, str] = {}
        self.records: list[tuple[str, float]] = []
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="instant-model", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def take(self, expected: int, timeout_s: float = 1.0) -> list[tuple[str, float]]:
        """The records since the last call (waits briefly for the last handler to note its time)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.lock:
                if len(self.records) >= expected or time.monotonic() > deadline:
                    records, self.records = self.records, []
                    return records
            time.sleep(0.0005)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# ------------------------------------------------------------ the model clock


@dataclass
class ModelClock:
    """Seconds spent inside the generator's calls, by kind (plan, sql, answer)."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, kind: str, seconds: float) -> None:
        self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds

    def take(self) -> dict[str, float]:
        taken, self.seconds = self.seconds, {}
        return taken


def instrument(generator: Any, clock: ModelClock) -> None:
    """Time ``complete`` and each step of ``stream`` on this generator instance."""
    inner_complete = generator.complete
    inner_stream = generator.stream

    async def complete(messages: Any, options: Any) -> str:
        kind = "plan" if messages and "마지막 질문:" in messages[-1].content else "sql"
        started = time.perf_counter()
        try:
            return str(await inner_complete(messages, options))
        finally:
            clock.add(kind, time.perf_counter() - started)

    async def stream(request: Any) -> AsyncIterator[Any]:
        iterator = inner_stream(request).__aiter__()
        while True:
            started = time.perf_counter()
            try:
                chunk = await iterator.__anext__()
            except StopAsyncIteration:
                clock.add("answer", time.perf_counter() - started)
                return
            except BaseException:
                clock.add("answer", time.perf_counter() - started)
                raise
            clock.add("answer", time.perf_counter() - started)
            yield chunk

    generator.complete = complete
    generator.stream = stream


# ------------------------------------------------------------------- databases

REGIONS = ["서울", "부산", "대구", "인천", "광주", "대전", "울산", "경기", "강원", "제주"]
STATUSES = [("배송 준비", 10), ("배송 중", 15), ("출고 완료", 20), ("배송 완료", 50), ("반품", 5)]
TEAMS = ["logistics", "sales", "cs"]
CATEGORIES = ["가전", "주방", "생활", "위험물", "포장재", "식품"]
TIERS = ["gold", "silver", "bronze"]
SURNAMES = "김이박최정강조윤장임한오서신권황안송류홍"
GIVEN = ["민수", "영희", "지훈", "서연", "도윤", "하은", "준호", "수빈", "현우", "지민"]
GOODS = ["무선 청소기", "전기 밥솥", "공기청정기", "리튬 배터리", "종이 상자", "페인트", "생수", "커피 원두"]


def shop_metadata() -> MetaData:
    md = MetaData()
    Table(
        "customers",
        md,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("name", String(50), comment="고객명"),
        Column("region", String(20), comment="지역"),
        Column("tier", String(10), comment="등급"),
        Column("joined_at", Date, comment="가입일"),
        Column("phone", String(20), comment="전화번호"),
        comment="고객",
    )
    Table(
        "products",
        md,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("name", String(50), comment="상품명"),
        Column("category", String(20), comment="분류"),
        Column("unit_price", Integer, comment="단가(원)"),
        comment="상품",
    )
    shipments = Table(
        "shipments",
        md,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("customer_id", Integer, ForeignKey("customers.id"), comment="고객번호"),
        Column("product_id", Integer, ForeignKey("products.id"), comment="상품번호"),
        Column("quantity", Integer, comment="수량"),
        Column("amount", Integer, comment="금액(원)"),
        Column("status", String(20), comment="배송상태"),
        Column("region", String(20), comment="도착지역"),
        Column("team", String(20), comment="담당팀"),
        Column("memo", String(100), comment="내부메모"),
        Column("shipped_at", Date, comment="출고일"),
        Column("updated_at", DateTime, comment="수정시각"),
        comment="배송 내역",
    )
    Index("ix_shipments_shipped_at", shipments.c.shipped_at)
    Index("ix_shipments_product_id", shipments.c.product_id)
    Index("ix_shipments_customer_id", shipments.c.customer_id)
    return md


def shop_rows(rows: int, seed: int = 10) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(seed)
    products: list[dict[str, Any]] = [
        {
            "id": i,
            "name": f"{GOODS[i % len(GOODS)]} {chr(ord('A') + i // len(GOODS))}형",
            "category": CATEGORIES[i % len(CATEGORIES)],
            "unit_price": rng.randrange(1_000, 500_000, 100),
        }
        for i in range(1, 51)
    ]
    customers = [
        {
            "id": i,
            "name": f"{rng.choice(SURNAMES)}{rng.choice(GIVEN)}",
            "region": rng.choice(REGIONS),
            "tier": rng.choice(TIERS),
            "joined_at": date(2020, 1, 1) + timedelta(days=rng.randrange(1500)),
            "phone": f"010-{rng.randrange(10000):04d}-{rng.randrange(10000):04d}",
        }
        for i in range(1, 501)
    ]
    statuses = [s for s, _ in STATUSES]
    weights = [w for _, w in STATUSES]
    start = date(2023, 1, 1)
    shipments = []
    for i in range(1, rows + 1):
        product = rng.choice(products)
        quantity = rng.randint(1, 20)
        shipped = start + timedelta(days=rng.randrange(731))
        shipments.append(
            {
                "id": i,
                "customer_id": rng.randint(1, 450),  # customers 451-500 never ordered
                "product_id": product["id"],
                "quantity": quantity,
                "amount": quantity * product["unit_price"],
                "status": rng.choices(statuses, weights)[0],
                "region": rng.choice(REGIONS),
                "team": rng.choice(TEAMS),
                "memo": f"내부메모-{i:05d}",
                "shipped_at": shipped,
                "updated_at": datetime(shipped.year, shipped.month, shipped.day, 9) + timedelta(hours=i % 48),
            }
        )
    return {"customers": customers, "products": products, "shipments": shipments}


def populate(url: str, rows: int) -> None:
    md = shop_metadata()
    engine = create_engine(url)
    try:
        md.create_all(engine)
        data = shop_rows(rows)
        with engine.begin() as conn:
            for name in ("customers", "products", "shipments"):
                table = md.tables[name]
                batch = data[name]
                for i in range(0, len(batch), 2000):
                    conn.execute(table.insert(), batch[i : i + 2000])
        if url.startswith("postgresql"):
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE"))
    finally:
        engine.dispose()


class Databases:
    """Scratch databases per backend; :meth:`drop` removes every one that was created."""

    def __init__(self, work: Path, pg_admin: str, mariadb_admin: str) -> None:
        self.work = work
        self.pg_admin = pg_admin
        self.mariadb_admin = mariadb_admin
        self.name = DB_PREFIX + uuid.uuid4().hex[:10]
        self.created: list[str] = []

    def create(self, backend: str, rows: int) -> str:
        if backend == "sqlite":
            url = f"sqlite:///{self.work / 'shop.db'}"
        elif backend == "postgresql":
            admin = create_engine(
                self.pg_admin, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
            )
            try:
                with admin.connect() as conn:
                    conn.execute(text(f'CREATE DATABASE "{self.name}"'))
            finally:
                admin.dispose()
            self.created.append(backend)
            base = self.pg_admin.rsplit("/", 1)[0]
            url = f"{base}/{self.name}"
        elif backend == "mariadb":
            admin = create_engine(self.mariadb_admin, connect_args={"connect_timeout": 5})
            try:
                with admin.begin() as conn:
                    conn.execute(
                        text(
                            f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                        )
                    )
            finally:
                admin.dispose()
            self.created.append(backend)
            base = self.mariadb_admin.split("?", 1)[0].rstrip("/")
            url = f"{base}/{self.name}?charset=utf8mb4"
        else:
            raise ValueError(backend)
        populate(url, rows)
        return url

    def drop(self) -> list[str]:
        problems = []
        for backend in list(self.created):
            try:
                if backend == "postgresql":
                    admin = create_engine(self.pg_admin, isolation_level="AUTOCOMMIT")
                    with admin.connect() as conn:
                        conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
                else:
                    admin = create_engine(self.mariadb_admin)
                    with admin.begin() as conn:
                        conn.execute(text(f"DROP DATABASE IF EXISTS `{self.name}`"))
                admin.dispose()
                self.created.remove(backend)
            except Exception as exc:
                problems.append(f"could not drop {backend} database {self.name}: {type(exc).__name__}: {exc}")
        return problems


# --------------------------------------------------------------------- the runs


@dataclass
class Sample:
    question: str
    wall_ms: float
    model_server_ms: float
    model_client_ms: float
    client_by_kind: dict[str, float]
    timings: dict[str, float]
    ok: bool

    @property
    def overhead_ms(self) -> float:
        return self.wall_ms - self.model_server_ms

    @property
    def route_only_ms(self) -> float:
        return self.wall_ms - self.model_client_ms

    def stages(self) -> dict[str, float]:
        t = self.timings
        plan_call = self.client_by_kind.get("plan", 0.0)
        answer_call = self.client_by_kind.get("answer", 0.0)
        stages = {
            "plan": t.get("planning_ms", 0.0) - plan_call,
            "schema": t.get("table_schema_ms", 0.0),
            "sql call": t.get("table_sql_llm_ms", 0.0),
            "query": t.get("table_query_ms", 0.0),
            "stream": t.get("generation_ms", 0.0) - answer_call,
        }
        accounted = (
            t.get("planning_ms", 0.0)
            + stages["schema"]
            + stages["sql call"]
            + stages["query"]
            + t.get("retrieval_ms", 0.0)
            + t.get("generation_ms", 0.0)
        )
        stages["rest"] = t.get("total_ms", 0.0) - accounted
        stages["outside"] = self.wall_ms - t.get("total_ms", 0.0)
        stages["model calls (client)"] = self.model_client_ms
        return stages


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def make_engine(data_dir: Path, model: InstantModel) -> Engine:
    settings = Settings(
        data_dir=data_dir,
        llm={
            "backend": "openai",
            "base_url": model.url,
            "read_timeout_s": 30,
            "fallback_to_extractive": False,
        },
        log_level="WARNING",
    )
    return Engine(settings)


def source_for(url: str) -> SqlSource:
    return SqlSource(
        "shop",
        url,
        (
            TableConfig(
                "shipments",
                exclude=("memo",),
                date_column="shipped_at",
                updated_at_column="updated_at",
                acl_column="team",
                acl_template="group:{value}",
            ),
            TableConfig("products"),
            TableConfig("customers", exclude=("phone",)),
        ),
        query_acl=("group:logistics", "group:sales"),
    )


async def ask_once(
    engine: Engine, model: InstantModel, clock: ModelClock, question: str, caller: Caller
) -> Sample:
    clock.take()
    model.take(0, 0)
    started = time.perf_counter()
    error = None
    try:
        result = await engine.ask_result(question, caller=caller)
    except Exception as exc:
        error = exc
    wall_ms = (time.perf_counter() - started) * 1000
    records = model.take(3)
    by_kind = {k: v * 1000 for k, v in clock.take().items()}
    if error is not None:
        return Sample(question, wall_ms, 0.0, 0.0, by_kind, {"error": 1.0}, False)
    ok = result.plan.get("route") == "table" and result.table is not None
    return Sample(
        question,
        wall_ms,
        sum(s for _, s in records) * 1000,
        sum(by_kind.values()),
        by_kind,
        dict(result.timings),
        ok,
    )


@dataclass
class Profiler:
    """cProfile for the loop's thread plus every function handed to a thread."""

    main: cProfile.Profile = field(default_factory=cProfile.Profile)
    threads: list[cProfile.Profile] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wrap(self, func: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            prof = cProfile.Profile()
            prof.enable()
            try:
                return func(*args, **kwargs)
            finally:
                prof.disable()
                with self.lock:
                    self.threads.append(prof)

        return run

    def report(self, top: int) -> str:
        out = io.StringIO()
        stats = pstats.Stats(self.main, stream=out)
        for prof in self.threads:
            stats.add(prof)
        stats.strip_dirs()
        stats.sort_stats("cumulative").print_stats(top)
        stats.sort_stats("tottime").print_stats(top)
        return out.getvalue()


async def profiled_round(
    engine: Engine, model: InstantModel, clock: ModelClock, questions: list[str], caller: Caller, top: int
) -> str:
    profiler = Profiler()
    original = asyncio.to_thread

    async def to_thread(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return await original(profiler.wrap(func), *args, **kwargs)

    answers = engine.answers
    record_turn = answers._record_turn
    asyncio.to_thread = to_thread
    answers._record_turn = profiler.wrap(record_turn)  # type: ignore[method-assign]
    try:
        profiler.main.enable()
        for question in questions:
            await ask_once(engine, model, clock, question, caller)
        profiler.main.disable()
    finally:
        asyncio.to_thread = original
        del answers._record_turn
    return profiler.report(top)


DIRECT_PARTS = ("available", "scope", "summary", "prepare", "run", "raw query", "chart", "record turn")


def direct_stages(engine: Engine, backend: str, caller: Caller, rounds: int) -> dict[str, list[float]]:
    """The route's parts called directly (warm), per question, ``rounds`` times."""
    answers = engine.answers
    route = answers.tables
    assert route is not None
    principals = caller.principals
    sqls = sql_for(backend)
    out: dict[str, list[float]] = {part: [] for part in DIRECT_PARTS}
    for _ in range(rounds):
        for question, sql in sqls.items():
            t0 = time.perf_counter()
            route.available(principals)
            t1 = time.perf_counter()
            scoped = route.scope(principals)
            t2 = time.perf_counter()
            "\n\n".join(s.summary(restricted=principals is not None) for s in scoped)
            t3 = time.perf_counter()
            target, checked = route.prepare(f"<source>shop</source>\n<sql>{sql}</sql>", scoped, principals)
            t4 = time.perf_counter()
            result = route.run(target, checked)
            t5 = time.perf_counter()
            chart_spec(result, question)
            t6 = time.perf_counter()
            with route._engine(target.source).connect() as conn:  # the same SQL, no guard
                conn.exec_driver_sql(checked, execution_options={"no_parameters": True}).fetchall()
            t7 = time.perf_counter()
            answers._record_turn(
                uuid.uuid4().hex,
                caller.name,
                new_session=True,
                store_turn=True,
                question=question,
                answer="조회 결과를 표로 정리했습니다.",
                citations=[],
                references=[],
            )
            t8 = time.perf_counter()
            for part, ms in zip(
                DIRECT_PARTS,
                (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t7 - t6, t6 - t5, t8 - t7),
                strict=True,
            ):
                out[part].append(ms * 1000)
    return out


def http_run(
    data_dir: Path, model: InstantModel, rounds: int, seed: int, err: Callable[[str], None]
) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import httpx
    from rich.console import Console

    import served

    env = {k: v for k, v in os.environ.items() if not k.startswith("HANRAG_")}
    env.update(
        {
            "HANRAG_DATA_DIR": str(data_dir),
            "HANRAG_LLM__BACKEND": "openai",
            "HANRAG_LLM__BASE_URL": model.url,
            "HANRAG_LLM__FALLBACK_TO_EXTRACTIVE": "false",
            "HANRAG_LOG_LEVEL": "WARNING",
            "OMP_WAIT_POLICY": "PASSIVE",
        }
    )
    port = served.free_port()
    log_path = data_dir / "serve.log"
    samples: list[dict[str, float]] = []
    first: dict[str, float] | None = None
    failures: list[str] = []
    with open(log_path, "w+b") as log:
        started = time.perf_counter()
        server = served.start_server(port, env, log, Console(stderr=True))
        err(f"  hanrag serve ready in {time.perf_counter() - started:.1f} s")
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                rng = random.Random(seed)
                order = [q for q, _ in QUESTIONS]
                plan = [order[0]]
                for _ in range(rounds):
                    rng.shuffle(order)
                    plan += order
                for i, question in enumerate(plan):
                    model.take(0, 0)
                    t0 = time.perf_counter()
                    response = client.post("/api/v1/ask", json={"question": question})
                    wall = (time.perf_counter() - t0) * 1000
                    records = model.take(3)
                    body = response.json() if response.status_code == 200 else {}
                    timings = body.get("timings") or {}
                    if response.status_code != 200 or "table_query_ms" not in timings:
                        failures.append(f"http: {question}: HTTP {response.status_code} {str(body)[:200]}")
                        continue
                    sample = {
                        "wall_ms": wall,
                        "model_server_ms": sum(s for _, s in records) * 1000,
                        "total_ms": float(timings.get("total_ms", 0.0)),
                    }
                    if i == 0:
                        first = sample
                    else:
                        samples.append(sample)
        finally:
            served.stop_server(server)
    overhead = [s["wall_ms"] - s["model_server_ms"] for s in samples]
    http_layer = [s["wall_ms"] - s["total_ms"] for s in samples]
    return {
        "n": len(samples),
        "wall_p50_ms": pct([s["wall_ms"] for s in samples], 0.5),
        "overhead_p50_ms": pct(overhead, 0.5),
        "overhead_p95_ms": pct(overhead, 0.95),
        "overhead_max_ms": max(overhead, default=float("nan")),
        "http_layer_p50_ms": pct(http_layer, 0.5),
        "http_layer_p95_ms": pct(http_layer, 0.95),
        "first_wall_ms": first["wall_ms"] if first else None,
        "first_overhead_ms": (first["wall_ms"] - first["model_server_ms"]) if first else None,
        "failures": failures,
    }


def summarize(samples: list[Sample]) -> dict[str, Any]:
    good = [s for s in samples if s.ok]
    return {
        "n": len(good),
        "failed": len(samples) - len(good),
        "total_p50_ms": pct([s.wall_ms for s in good], 0.5),
        "total_p95_ms": pct([s.wall_ms for s in good], 0.95),
        "model_server_p50_ms": pct([s.model_server_ms for s in good], 0.5),
        "model_client_p50_ms": pct([s.model_client_ms for s in good], 0.5),
        "model_client_p95_ms": pct([s.model_client_ms for s in good], 0.95),
        "overhead_p50_ms": pct([s.overhead_ms for s in good], 0.5),
        "overhead_p95_ms": pct([s.overhead_ms for s in good], 0.95),
        "overhead_max_ms": max((s.overhead_ms for s in good), default=float("nan")),
        "route_only_p50_ms": pct([s.route_only_ms for s in good], 0.5),
        "route_only_p95_ms": pct([s.route_only_ms for s in good], 0.95),
        "route_only_max_ms": max((s.route_only_ms for s in good), default=float("nan")),
        "schema_p50_ms": pct([s.timings.get("table_schema_ms", 0.0) for s in good], 0.5),
        "schema_max_ms": max((s.timings.get("table_schema_ms", 0.0) for s in good), default=float("nan")),
    }


def stage_summary(samples: list[Sample]) -> dict[str, dict[str, float]]:
    good = [s.stages() for s in samples if s.ok]
    names = list(good[0]) if good else []
    return {n: {"p50": pct([g[n] for g in good], 0.5), "p95": pct([g[n] for g in good], 0.95)} for n in names}


async def bench_backend(
    backend: str,
    url: str,
    work: Path,
    model: InstantModel,
    args: argparse.Namespace,
    err: Callable[[str], None],
    first_of_process: bool,
) -> dict[str, Any]:
    model.sql = sql_for(backend)
    data_dir = work / f"data-{backend}"
    clock = ModelClock()
    out: dict[str, Any] = {"phases": {}, "stages": {}, "direct": {}, "failures": []}

    setup = make_engine(data_dir, model)
    t0 = time.perf_counter()
    setup.sources.add(source_for(url), caller=SYSTEM)
    out["source_add_ms"] = (time.perf_counter() - t0) * 1000
    setup.close()

    callers = [CALLERS[c] for c in args.callers]
    caller_names = list(args.callers)
    questions = [q for q, _ in QUESTIONS]

    # cold: the first question of a new Engine object (pool, introspection)
    cold: list[Sample] = []
    first: Sample | None = None
    for i in range(args.cold):
        engine = make_engine(data_dir, model)
        instrument(engine.generator, clock)
        try:
            sample = await ask_once(engine, model, clock, questions[i % len(questions)], callers[0])
        finally:
            engine.close()
        if first_of_process and i == 0:
            first = sample
        else:
            cold.append(sample)
    if first is not None:
        out["phases"][(caller_names[0], "first")] = [first]
    out["phases"][(caller_names[0], "cold")] = cold

    engine = make_engine(data_dir, model)
    instrument(engine.generator, clock)
    try:
        await ask_once(engine, model, clock, questions[0], callers[0])  # untimed: fills the caches
        rng = random.Random(args.seed)
        for name, caller in zip(caller_names, callers, strict=True):
            warm: list[Sample] = []
            for r in range(args.rounds):
                order = questions[:]
                rng.shuffle(order)
                for question in order:
                    warm.append(await ask_once(engine, model, clock, question, caller))
                err(f"  {backend}/{name}: round {r + 1}/{args.rounds} done")
            out["phases"][(name, "warm")] = warm
            out["stages"][name] = stage_summary(warm)
        expired: list[Sample] = []
        route = engine.answers.tables
        assert route is not None
        for i in range(args.cold):
            route._schemas.clear()  # what SCHEMA_TTL_S expiring does
            expired.append(await ask_once(engine, model, clock, questions[i % len(questions)], callers[0]))
        out["phases"][(caller_names[0], "expired")] = expired
        for name, caller in zip(caller_names, callers, strict=True):
            out["direct"][name] = await asyncio.to_thread(direct_stages, engine, backend, caller, args.rounds)
        if args.profile:
            err(f"  {backend}: profiling one round")
            out["profile"] = await profiled_round(
                engine, model, clock, questions, callers[0], args.profile_top
            )
    finally:
        engine.close()
    for (name, phase), samples in out["phases"].items():
        for s in samples:
            if not s.ok:
                out["failures"].append(f"{backend}/{name}/{phase}: {s.question}")
    out["data_dir"] = data_dir
    return out


# --------------------------------------------------------------------- output


def fmt(value: float | None, width: int = 7) -> str:
    if value is None or value != value:
        return f"{'-':>{width}}"
    return f"{value:>{width}.1f}"


def print_report(
    report: dict[str, Any], results: dict[str, dict[str, Any]], args: argparse.Namespace
) -> None:
    print(
        f"table route overhead (P10 target: <= {TARGET_P95_MS:.0f} ms p95 excluding the LLM); "
        f"{len(QUESTIONS)} questions, shipments {args.rows:,} rows"
    )
    print(f"load average before: {report['load_before']}")
    print()
    print(
        "ms per question; overhead = total - model(server); route-only (rte) = total - model(client, "
        "incl. HTTP client); schm = table_schema_ms"
    )
    head = (
        f"{'backend':<10} {'caller':<7} {'phase':<8} {'n':>3} {'total50':>7} {'total95':>7} "
        f"{'mdl srv':>7} {'mdl cli':>7} {'ovh p50':>7} {'ovh p95':>7} {'ovh max':>7} "
        f"{'rte p50':>7} {'rte p95':>7} {'rte max':>7} {'schm50':>7} {'schmmax':>7}"
    )
    print(head)
    print("-" * len(head))
    for backend, res in results.items():
        for (caller, phase), s in res["summary"].items():
            print(
                f"{backend:<10} {caller:<7} {phase:<8} {s['n']:>3} {fmt(s['total_p50_ms'])} {fmt(s['total_p95_ms'])} "
                f"{fmt(s['model_server_p50_ms'])} {fmt(s['model_client_p50_ms'])} {fmt(s['overhead_p50_ms'])} "
                f"{fmt(s['overhead_p95_ms'])} {fmt(s['overhead_max_ms'])} {fmt(s['route_only_p50_ms'])} "
                f"{fmt(s['route_only_p95_ms'])} {fmt(s['route_only_max_ms'])} "
                f"{fmt(s['schema_p50_ms'])} {fmt(s['schema_max_ms'])}"
            )
    print()
    print("warm stages from result.timings, p50 / p95 ms (model calls: client side, all three)")
    names: list[str] = []
    for res in results.values():
        for stages in res["stages"].values():
            names = list(stages)
            break
    head = f"{'backend':<10} {'caller':<7} " + " ".join(f"{n[:14]:>14}" for n in names)
    print(head)
    print("-" * len(head))
    for backend, res in results.items():
        for caller, stages in res["stages"].items():
            cells = " ".join(f"{stages[n]['p50']:>6.1f}/{stages[n]['p95']:<7.1f}" for n in names)
            print(f"{backend:<10} {caller:<7} {cells}")
    print()
    print("the route's parts called directly (warm, this thread), p50 / p95 ms")
    parts = list(DIRECT_PARTS)
    head = f"{'backend':<10} {'caller':<7} " + " ".join(f"{p:>14}" for p in parts)
    print(head)
    print("-" * len(head))
    for backend, res in results.items():
        for caller, direct in res["direct"].items():
            cells = " ".join(f"{direct[p]['p50']:>6.2f}/{direct[p]['p95']:<7.2f}" for p in parts)
            print(f"{backend:<10} {caller:<7} {cells}")
    if report.get("http"):
        h = report["http"]
        print()
        print(f"HTTP API ({h['backend']}, hanrag serve, POST /api/v1/ask, unrestricted caller), ms")
        print(
            f"n {h['n']}; wall p50 {fmt(h['wall_p50_ms'], 0)}; overhead p50/p95/max "
            f"{fmt(h['overhead_p50_ms'], 0)}/{fmt(h['overhead_p95_ms'], 0)}/{fmt(h['overhead_max_ms'], 0)}; "
            f"HTTP layer (wall - total_ms) p50/p95 {fmt(h['http_layer_p50_ms'], 0)}/{fmt(h['http_layer_p95_ms'], 0)}; "
            f"first question wall {fmt(h['first_wall_ms'], 0)}, overhead {fmt(h['first_overhead_ms'], 0)}"
        )
    print()
    for line in report["verdict"]:
        print(line)
    for backend, res in results.items():
        if res.get("profile"):
            print()
            print(f"=== cProfile, {backend}, one warm round ({len(QUESTIONS)} questions) ===")
            print(res["profile"])
    print(f"load average after: {report['load_after']}; wall {report['wall_s']:.0f} s")
    for line in report["failures"]:
        print("FAIL", line)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.epilog = "See the module docstring (the top of this file) for the method."
    parser.add_argument(
        "--backends", nargs="+", default=["postgresql", "mariadb", "sqlite"], choices=list(MONTH)
    )
    parser.add_argument("--rows", type=int, default=10_000, help="shipments rows (default 10000)")
    parser.add_argument("--rounds", type=int, default=5, help="warm rounds over all questions per caller")
    parser.add_argument("--cold", type=int, default=5, help="cold (new engine) and expired-schema questions")
    parser.add_argument("--callers", nargs="+", default=["viewer", "system"], choices=list(CALLERS))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--http", action="store_true", help="also through hanrag serve (first backend)")
    parser.add_argument("--profile", action="store_true", help="cProfile one warm round per backend")
    parser.add_argument("--profile-top", type=int, default=30)
    parser.add_argument("--pg-admin", default=PG_ADMIN)
    parser.add_argument("--mariadb-admin", default=MARIADB_ADMIN)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()

    for key in [k for k in os.environ if k.startswith("HANRAG_")]:
        os.environ.pop(key)  # this benchmark configures its own engine
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("sqlglot").setLevel(logging.ERROR)

    def err(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(130)

    signal.signal(signal.SIGTERM, on_term)

    report: dict[str, Any] = {"load_before": load(), "failures": []}
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="hanrag-bench-route-"))
    dbs = Databases(work, args.pg_admin, args.mariadb_admin)
    model = InstantModel()
    results: dict[str, dict[str, Any]] = {}
    loop = asyncio.new_event_loop()
    try:
        first = True
        for backend in args.backends:
            err(f"{backend}: creating the shop database ({args.rows:,} shipments)")
            t0 = time.perf_counter()
            try:
                url = dbs.create(backend, args.rows)
            except Exception as exc:
                report["failures"].append(
                    f"{backend}: database not set up: {type(exc).__name__}: {exc}"[:300]
                )
                err(f"  skipped: {type(exc).__name__}")
                continue
            err(f"  populated in {time.perf_counter() - t0:.1f} s")
            res = loop.run_until_complete(bench_backend(backend, url, work, model, args, err, first))
            first = False
            res["summary"] = {key: summarize(samples) for key, samples in res["phases"].items()}
            res["direct"] = {
                caller: {p: {"p50": pct(v, 0.5), "p95": pct(v, 0.95)} for p, v in parts.items()}
                for caller, parts in res["direct"].items()
            }
            report["failures"] += res["failures"]
            if args.http and "http" not in report:
                err(f"{backend}: HTTP run (hanrag serve)")
                model.sql = sql_for(backend)
                report["http"] = {
                    "backend": backend,
                    **http_run(res["data_dir"], model, args.rounds, args.seed, err),
                }
                report["failures"] += report["http"].pop("failures")
            results[backend] = res
    finally:
        loop.close()
        model.stop()
        report["failures"] += dbs.drop()
        shutil.rmtree(work, ignore_errors=True)

    verdict = []
    for backend, res in results.items():
        for (caller, phase), s in res["summary"].items():
            if phase != "warm":
                continue
            ok = s["overhead_p95_ms"] <= TARGET_P95_MS
            verdict.append(
                f"{backend}/{caller} warm: overhead p95 {s['overhead_p95_ms']:.1f} ms "
                f"({'PASS' if ok else 'FAIL'} vs {TARGET_P95_MS:.0f}); without the HTTP client "
                f"(route-only) p95 {s['route_only_p95_ms']:.1f} ms "
                f"({'PASS' if s['route_only_p95_ms'] <= TARGET_P95_MS else 'FAIL'})"
            )
    report["verdict"] = verdict
    report["load_after"] = load()
    report["wall_s"] = time.perf_counter() - started

    if args.json:
        out = {
            "load_before": report["load_before"],
            "load_after": report["load_after"],
            "wall_s": round(report["wall_s"], 1),
            "rows": args.rows,
            "questions": len(QUESTIONS),
            "target_p95_ms": TARGET_P95_MS,
            "verdict": verdict,
            "failures": report["failures"],
            "http": report.get("http"),
            "backends": {
                backend: {
                    "source_add_ms": round(res["source_add_ms"], 1),
                    "phases": {
                        f"{caller}/{phase}": {
                            k: round(v, 2) if isinstance(v, float) else v for k, v in s.items()
                        }
                        for (caller, phase), s in res["summary"].items()
                    },
                    "stages": res["stages"],
                    "direct": res["direct"],
                    **({"profile": res["profile"]} if res.get("profile") else {}),
                }
                for backend, res in results.items()
            },
        }
        print(json.dumps(out, ensure_ascii=False, indent=2, default=str))
    else:
        print_report(report, results, args)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
