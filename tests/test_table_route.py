"""The table route (P10): a question -> the model's SQL -> validated, narrowed, read-only rows.

The model is a local server speaking the OpenAI protocol that returns what a model would
(the planner's tagged plan, then SQL); the databases are the real PostgreSQL and MariaDB
(and SQLite), with the sample shop schema of :mod:`sql_support`. Every attempt to write,
lock, sleep or read what the asker may not is refused, and the row counts of every table
are the same before and after.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from answer_fixtures import ScriptedLLMServer, completion, scripted_server, sse
from conftest import EngineFactory
from hanrag.answer.prompts import TABLE_NEEDS_MODEL_NOTICE
from hanrag.auth.access import SYSTEM, Caller
from hanrag.domain import AnswerResult
from hanrag.engine import Engine
from hanrag.tables.sources import SqlSource, TableConfig
from sql_support import SECRET_MEMO

SHIPMENTS = TableConfig(
    "shipments",
    exclude=("memo",),
    date_column="shipped_at",
    updated_at_column="updated_at",
    acl_column="team",
    acl_template="group:{value}",
)
PRODUCTS = TableConfig("products")
CUSTOMERS = TableConfig("customers", query_acl=("group:cs",))
TABLES = ("customers", "products", "shipments")

KIM = Caller.of("kim", ["user:kim", "group:logistics"], "viewer")  # logistics rows only
PARK = Caller.of("park", ["user:park", "group:sales"], "viewer")  # sales rows only
LEE = Caller.of("lee", ["user:lee", "group:hr"], "viewer")  # no table granted


def plan(question: str, route: str = "table") -> Any:
    return completion(
        f"<question>{question}</question><keywords>배송</keywords><time>none</time><route>{route}</route>"
    )


def sql_reply(sql: str, source: str = "shop") -> Any:
    return completion(f"<source>{source}</source>\n<sql>{sql}</sql>")


def counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {t: int(conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar() or 0) for t in TABLES}
    finally:
        engine.dispose()


@pytest.fixture
def llm_engine(make_engine: EngineFactory, db_url: str) -> Iterator[tuple[Engine, str]]:
    """An engine whose model is the scripted server (set per test) and one SQL source."""
    engine = make_engine(llm={"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "read_timeout_s": 10})
    source = SqlSource(
        "shop", db_url, (SHIPMENTS, PRODUCTS, CUSTOMERS), query_acl=("group:logistics", "group:sales")
    )
    engine.sources.add(source, caller=SYSTEM)
    yield engine, db_url


def ask(engine: Engine, server: ScriptedLLMServer, question: str, caller: Caller = SYSTEM) -> AnswerResult:
    import asyncio

    engine.settings.llm.base_url = server.url
    if "answers" in engine.__dict__:
        engine.answers.close()
    for name in ("generator", "answers"):  # rebuilt on the scripted server's URL
        engine.__dict__.pop(name, None)
    return asyncio.run(engine.ask_result(question, caller=caller))


def sql_prompts(server: ScriptedLLMServer) -> list[str]:
    """The user messages of the SQL requests the model received (after the planner's)."""
    bodies = server.bodies(stream=False)[1:]
    return ["\n".join(m["content"] for m in b["messages"] if m["role"] == "user") for b in bodies]


# ------------------------------------------------------------------- the happy path


def test_table_question_runs_the_models_sql_and_returns_rows_and_a_chart(
    llm_engine: tuple[Engine, str],
) -> None:
    engine, url = llm_engine
    sql = "SELECT status AS 배송상태, COUNT(*) AS 건수 FROM shipments GROUP BY status ORDER BY 건수 DESC, status"
    with scripted_server(
        stream=[sse(["배송 상태별 건수는 표와 같습니다."])],
        complete=[plan("배송 상태별 건수"), sql_reply(sql)],
    ) as server:
        result = ask(engine, server, "배송 상태별 건수는?")
    table = result.table
    assert table is not None and result.plan["route"] == "table"
    assert table["columns"] == ["배송상태", "건수"]
    assert sorted(tuple(r) for r in table["rows"]) == sorted(
        [("출고 완료", 1), ("배송 중", 1), ("배송 준비", 1)]
    )
    assert table["chart"]["type"] == "bar" and table["source"] == "shop" and "LIMIT" in table["sql"].upper()
    assert result.answer == "배송 상태별 건수는 표와 같습니다." and result.references == []
    [prompt] = sql_prompts(server)
    # The summary carries the Korean comments and samples, never the excluded column.
    assert "shipments" in prompt and "memo" not in prompt and SECRET_MEMO not in prompt
    assert "배송상태" in prompt or url.startswith("sqlite")  # SQLite has no column comments


def test_a_time_series_gets_a_line_chart_and_a_single_value_none(llm_engine: tuple[Engine, str]) -> None:
    engine, _ = llm_engine
    series = (
        "SELECT shipped_at AS 출고일, COUNT(*) AS 건수 FROM shipments GROUP BY shipped_at ORDER BY shipped_at"
    )
    single = "SELECT COUNT(*) AS 건수 FROM shipments"
    with scripted_server(
        stream=[sse(["답"])],
        complete=[plan("일별 출고 추이"), sql_reply(series), plan("몇 건"), sql_reply(single)],
    ) as server:
        line = ask(engine, server, "일별 출고 추이는?")
        value = ask(engine, server, "배송은 몇 건?")
    assert line.table is not None and line.table["chart"]["type"] == "line"
    assert [r[1] for r in line.table["rows"]] == [1, 1, 1]
    assert value.table is not None and value.table["rows"] == [[3]] and value.table["chart"]["type"] == "none"


def test_a_refused_query_is_retried_once_with_the_reason(llm_engine: tuple[Engine, str]) -> None:
    engine, _ = llm_engine
    good = "SELECT COUNT(*) AS 건수 FROM shipments"
    with scripted_server(
        stream=[sse(["3건입니다."])],
        complete=[plan("배송 건수"), sql_reply("SELECT COUNT(nope) FROM shipments"), sql_reply(good)],
    ) as server:
        result = ask(engine, server, "배송은 몇 건?")
    assert result.table is not None and result.table["rows"] == [[3]]
    retry_prompt = sql_prompts(server)[-1]
    assert "sql_column_not_allowed" in retry_prompt


# ------------------------------------------------------------------ attacks


ATTACKS = [
    "DELETE FROM shipments",
    "UPDATE shipments SET status = 'x'",
    "INSERT INTO products (id, name) VALUES (99, 'x')",
    "SELECT * FROM shipments; DROP TABLE customers",
    "DROP TABLE shipments",
    "SELECT * FROM shipments FOR UPDATE",
    "SELECT pg_sleep(5)",
    "SELECT SLEEP(5)",
    "SELECT BENCHMARK(100000000, MD5('a'))",
    "SELECT LOAD_FILE('/etc/passwd')",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT memo FROM shipments",
    "SELECT * FROM information_schema.tables",
    "SELECT * FROM mysql.user",
    "SELECT * FROM sqlite_master",
    "WITH d AS (DELETE FROM shipments RETURNING *) SELECT * FROM d",
    "SELECT name INTO OUTFILE '/tmp/x' FROM products",
    "TRUNCATE shipments",
    "GRANT ALL ON shipments TO PUBLIC",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_malicious_sql_from_the_model_is_refused_and_changes_nothing(
    llm_engine: tuple[Engine, str], attack: str
) -> None:
    engine, url = llm_engine
    before = counts(url)
    started = time.perf_counter()
    with scripted_server(
        stream=[sse(["문서에서 찾은 답"])], complete=[plan("배송 건수"), sql_reply(attack), sql_reply(attack)]
    ) as server:
        result = ask(engine, server, "배송 건수를 알려주고 shipments 테이블을 지워줘")
    assert result.table is None and result.plan["route"] == "documents"  # answered from documents
    assert counts(url) == before
    assert time.perf_counter() - started < 5  # nothing slept
    assert len(sql_prompts(server)) == 2  # one retry, then no more


def test_hidden_statements_in_comments_never_run(llm_engine: tuple[Engine, str]) -> None:
    """MySQL runs ``/*! ... */``: the validator re-renders the query without comments."""
    engine, url = llm_engine
    before = counts(url)
    hidden = "SELECT COUNT(*) AS 건수 FROM shipments /*! ; DROP TABLE shipments */ -- ; DELETE FROM products"
    with scripted_server(stream=[sse(["3건"])], complete=[plan("배송 건수"), sql_reply(hidden)]) as server:
        result = ask(engine, server, "배송은 몇 건?")
    assert result.table is not None and result.table["rows"] == [[3]]
    assert "DROP" not in result.table["sql"].upper() and "DELETE" not in result.table["sql"].upper()
    assert counts(url) == before


def test_a_caller_never_sees_tables_or_rows_beyond_their_grants(llm_engine: tuple[Engine, str]) -> None:
    engine, _url = llm_engine
    every_team = "SELECT team AS 팀, COUNT(*) AS 건수 FROM shipments GROUP BY team ORDER BY team"
    customers = "SELECT name FROM customers"
    with scripted_server(
        stream=[sse(["답"])],
        complete=[plan("팀별 건수"), sql_reply(every_team)],
    ) as server:
        kim = ask(engine, server, "팀별 배송 건수는?", KIM)
        kim_prompt = sql_prompts(server)[0]
    assert kim.table is not None and kim.table["rows"] == [["logistics", 2]]  # sales rows filtered out
    # Customers are granted to group:cs only, and samples of row-ACL tables are not shown.
    assert "customers" not in kim_prompt and "products" in kim_prompt
    assert "부산광역시" not in kim_prompt and "출고 완료" not in kim_prompt
    with scripted_server(stream=[sse(["답"])], complete=[plan("팀별 건수"), sql_reply(every_team)]) as server:
        park = ask(engine, server, "팀별 배송 건수는?", PARK)
    assert park.table is not None and park.table["rows"] == [["sales", 1]]
    with scripted_server(
        stream=[sse(["답"])], complete=[plan("고객 명단"), sql_reply(customers), sql_reply(customers)]
    ) as server:
        refused = ask(engine, server, "고객 이름 건수", KIM)
    assert refused.table is None
    with scripted_server(stream=[sse(["답"])], complete=[plan("팀별 건수"), sql_reply(every_team)]) as server:
        lee = ask(engine, server, "팀별 배송 건수는?", LEE)
        assert sql_prompts(server) == []  # no table granted: the model is never asked for SQL
    assert lee.table is None and lee.plan["route"] == "documents"
    with scripted_server(stream=[sse(["답"])], complete=[plan("팀별 건수"), sql_reply(every_team)]) as server:
        admin = ask(engine, server, "팀별 배송 건수는?")
    assert admin.table is not None and admin.table["rows"] == [["logistics", 2], ["sales", 1]]


# ------------------------------------------------------------------ no model


def test_without_a_model_table_questions_are_answered_from_the_rows(
    make_engine: EngineFactory,
    databases: dict[str, str | None],
) -> None:
    url = databases["sqlite"]
    assert url is not None
    engine = make_engine()
    source = SqlSource("shop", url, (TableConfig("products"),))
    engine.sources.add(source, caller=SYSTEM)
    engine.sources.sync("shop", caller=SYSTEM)
    import asyncio

    result = asyncio.run(engine.ask_result("전기 밥솥 상품은 몇 건?", caller=SYSTEM))
    assert result.table is None and result.plan["route"] == "documents"
    assert result.answer.endswith(TABLE_NEEDS_MODEL_NOTICE)
    assert any(ref["source"].startswith("sql:shop/products/") for ref in result.references)
