"""The table route's result (P10) as every client sees it, over real HTTP on loopback.

One API server (module-scoped) over a data directory where the SQLite sample shop of
:mod:`sql_support` is registered as the SQL source ``shop`` (nothing synced or embedded);
its model is a scripted OpenAI-protocol server whose replies each test sets: the planner's
tagged plan routed to ``table``, then the SQL, then the streamed answer. Covered: the
legacy ``/query`` (R(TB) and A([TT, CT])), ``/query_stream`` (reference [R(TB), CT], then
deltas), ``/queryToSLLM`` push (reference R(TB), the last envelope's A item [TT, CT]), the
native SSE (``table`` on references and done), the OpenAI-compatible answers (a Markdown
table ahead of the text; the extra ``table`` field) and ``hanrag ask`` (a Rich table and
the SQL).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from typer.testing import CliRunner

from answer_fixtures import Reply, ScriptedLLMServer, completion, sse
from api_server import LiveServer, Receiver, parse_sse, start_receiver, start_server, with_api
from hanrag.auth.access import SYSTEM
from hanrag.cli.main import app as cli_app
from hanrag.embed.cache import EmbeddingCache
from hanrag.engine import Engine
from hanrag.settings import Settings
from hanrag.tables.sources import SqlSource, TableConfig
from sql_support import SHIPMENTS, populate

LABEL = "사내 문서"  # api.legacy_corpus_label's default
RESULT_TITLE = "SQL Query 결과표"
ENVELOPE_KEYS = {"status_code", "result", "detail", "continue", "qry_id", "rsp_time", "data_list"}
TABLE_KEYS = {"title", "source", "sql", "columns", "rows", "truncated", "row_count", "chart"}

BY_STATUS = "SELECT status AS 배송상태, COUNT(*) AS 건수 FROM shipments GROUP BY status ORDER BY MIN(id)"
BY_STATUS_ROWS = [
    {"배송상태": "출고 완료", "건수": 1},
    {"배송상태": "배송 중", "건수": 1},
    {"배송상태": "배송 준비", "건수": 1},
]
BY_DAY = (
    "SELECT shipped_at AS 출고일, COUNT(*) AS 건수 FROM shipments GROUP BY shipped_at ORDER BY shipped_at"
)
BY_DAY_ROWS = [
    {"출고일": "2025-03-01", "건수": 1},
    {"출고일": "2025-03-02", "건수": 1},
    {"출고일": "2025-03-03", "건수": 1},
]
COUNT = "SELECT COUNT(*) AS 건수 FROM shipments"
# A value and a column name holding "|", which a Markdown table must escape.
BY_TEAM = "SELECT team || '|팀' AS \"담당|팀\", COUNT(*) AS 건수 FROM shipments GROUP BY team ORDER BY team"


@dataclass
class Served:
    engine: Engine
    live: LiveServer
    llm: ScriptedLLMServer
    receiver: Receiver
    client: httpx.Client
    openai: openai.OpenAI
    sqlite_url: str


def add_shop(engine: Engine, url: str) -> None:
    source = SqlSource("shop", url, (SHIPMENTS, TableConfig("products"), TableConfig("customers")))
    engine.sources.add(source, caller=SYSTEM)


def llm_settings(url: str) -> dict[str, Any]:
    return {"backend": "openai", "base_url": url, "read_timeout_s": 10, "fallback_to_extractive": False}


@pytest.fixture(scope="module")
def served(shared_cache_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    url = f"sqlite:///{tmp_path_factory.mktemp('table-shop') / 'shop.db'}"
    populate(url)  # the sample shop of sql_support, on SQLite only (fast)
    llm = ScriptedLLMServer().start()
    engine = Engine(Settings(data_dir=tmp_path_factory.mktemp("table-api"), llm=llm_settings(llm.url)))
    engine.__dict__["embedding_cache"] = EmbeddingCache(shared_cache_path)
    add_shop(engine, url)
    receiver = start_receiver()
    settings = with_api(engine.settings, legacy_response_url=receiver.url, legacy_batch_seconds=0.2)
    live = start_server(engine, settings)
    client = httpx.Client(base_url=live.url, timeout=30)
    chat = openai.OpenAI(base_url=f"{live.url}/v1", api_key="x", max_retries=0, timeout=30)
    try:
        yield Served(engine, live, llm, receiver, client, chat, url)
    finally:
        client.close()
        chat.close()
        live.stop()
        receiver.stop()
        llm.stop()
        engine.close()


def script(llm: ScriptedLLMServer, complete: list[Reply], stream: list[Reply]) -> None:
    """The scripted model's next replies (its counters and recorded requests start over)."""
    with llm.lock:
        llm.complete_script = list(complete)
        llm.stream_script = list(stream)
        llm._counts = {True: 0, False: 0}
        llm.requests.clear()


def table_turn(llm: ScriptedLLMServer, question: str, sql: str, answer: list[str]) -> None:
    """One table-route answer: the plan (routed to table), the SQL, then ``answer`` streamed."""
    plan = f"<question>{question}</question><keywords>배송</keywords><time>none</time><route>table</route>"
    script(llm, [completion(plan), completion(f"<source>shop</source>\n<sql>{sql}</sql>")], [sse(answer)])


def legacy_request(question: str, qry_id: str) -> dict[str, Any]:
    return {
        "qry_id": qry_id,
        "user_id": "kim",
        "page_id": f"page-{uuid.uuid4().hex[:12]}",
        "qry_contents": question,
        "qry_time": [2025, 3, 4, 9, 15, 2, 123456789],
    }


def strict_json(text: str) -> Any:
    """Parse as Jackson does by default: no NaN or Infinity, no duplicate keys."""

    def no_constant(name: str) -> Any:
        raise AssertionError(f"{name} is not JSON a Java client reads")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), keys
        return dict(pairs)

    return json.loads(text, parse_constant=no_constant, object_pairs_hook=no_duplicates)


def check_table_r_item(item: Any, title: str, records: list[dict[str, Any]]) -> None:
    """R(table): one entry titled "SQL Query 결과표" holding the TB item, rows as objects
    keyed by column name, in column order (what a Java ``List<Map<String, Object>>`` reads)."""
    assert item == {
        "rsp_type": "R",
        "rsp_tit": LABEL,
        "rsp_data": [
            {
                "rsp_tit": RESULT_TITLE,
                "rsp_data": [{"rsp_type": "TB", "rsp_tit": title, "rsp_data": records}],
            }
        ],
    }
    tb = item["rsp_data"][0]["rsp_data"][0]["rsp_data"]
    assert isinstance(tb, list) and all(isinstance(row, dict) for row in tb)
    assert all(list(row) == list(records[0]) for row in tb)  # key order = column order
    assert all(isinstance(v, str | int | float) for row in tb for v in row.values())


def ct_item(kind: str, title: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"rsp_type": "CT", "rsp_tit": title, "rsp_data": {"chart_tp": kind, "chart_data": records}}


def check_table(table: Any, title: str, records: list[dict[str, Any]], chart: str) -> None:
    """The native ``table`` object."""
    assert set(table) == TABLE_KEYS
    assert table["title"] == title and table["source"] == "shop"
    assert "FROM shipments" in table["sql"] and "LIMIT" in table["sql"].upper()
    assert table["columns"] == list(records[0])
    assert table["rows"] == [list(r.values()) for r in records]
    assert table["row_count"] == len(records) and table["truncated"] is False
    assert table["chart"]["type"] == chart and table["chart"]["title"] == title


# -------------------------------------------------------------------- /query


@pytest.mark.parametrize(
    ("sql", "records", "chart"),
    [
        (BY_STATUS, BY_STATUS_ROWS, "BAR"),  # categories
        (BY_DAY, BY_DAY_ROWS, "LINE"),  # a date series
        (COUNT, [{"건수": 3}], None),  # a single value: no chart at all
    ],
    ids=["bar", "line", "single-value"],
)
def test_query_returns_the_rows_and_the_chart(
    served: Served, sql: str, records: list[dict[str, Any]], chart: str | None
) -> None:
    title = "배송 현황 조회"
    answer = "배송 현황은 표와 같습니다."
    table_turn(served.llm, title, sql, ["배송 현황은 ", "표와 같습니다."])
    response = served.client.post("/query", json=legacy_request("배송 현황은?", "Q-T1"))
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = strict_json(response.text)
    assert set(body) == ENVELOPE_KEYS
    assert (body["status_code"], body["result"], body["continue"], body["qry_id"]) == (200, "OK", "E", "Q-T1")
    r_item, a_item = body["data_list"]
    check_table_r_item(r_item, title, records)
    expected_a = [{"rsp_type": "TT", "rsp_data": answer}]
    if chart is not None:
        expected_a.append(ct_item(chart, title, records))
    assert a_item == {"rsp_type": "A", "rsp_tit": "답변1", "rsp_data": expected_a}
    # The model wrote the answer from the rows it was shown.
    [answer_request] = served.llm.bodies(stream=True)
    prompt = "\n".join(m["content"] for m in answer_request["messages"])
    assert next(iter(records[0])) in prompt  # the rows shown to the model


def test_query_is_history_like_any_answer(served: Served) -> None:
    table_turn(served.llm, "배송 건수", COUNT, ["배송은 3건입니다."])
    request = legacy_request("배송은 몇 건?", "Q-T2")
    body = served.client.post("/query", json=request).json()
    assert body["data_list"][1]["rsp_data"] == [{"rsp_type": "TT", "rsp_data": "배송은 3건입니다."}]
    history = served.client.get("/history", params={"request_id": request["page_id"]}).json()["history"]
    assert [m["role"] for m in history] == ["human", "ai"]
    assert history[1]["content"] == "배송은 3건입니다."


def test_query_keeps_every_column_of_a_join(served: Served) -> None:
    sql = (
        "SELECT p.name, c.name FROM shipments s JOIN products p ON p.id = s.product_id "
        "JOIN customers c ON c.id = s.customer_id ORDER BY s.id"
    )
    table_turn(served.llm, "상품별 고객", sql, ["표와 같습니다."])
    body = served.client.post("/query", json=legacy_request("상품별 고객은?", "Q-T3")).json()
    tb = body["data_list"][0]["rsp_data"][0]["rsp_data"][0]["rsp_data"]
    rows = [["무선 청소기", "김민수"], ["전기 밥솥", "이영희"], ["전기 밥솥", "김민수"]]
    assert [list(record.values()) for record in tb] == rows


# ------------------------------------------------------------- /query_stream


def test_query_stream_sends_the_table_and_chart_then_the_answer(served: Served) -> None:
    title = "배송 상태별 건수"
    table_turn(served.llm, title, BY_STATUS, ["상태별로 ", "한 건씩", "입니다."])
    response = served.client.post("/query_stream", json=legacy_request("배송 상태별 건수는?", "Q-S1"))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [strict_json(e.data) for e in parse_sse(response.text)]
    assert all(e.event is None for e in parse_sse(response.text))  # data lines only
    reference, *answers = events
    assert reference["type"] == "reference" and reference["status_code"] == 200
    assert reference["detail"] == "Reference data"
    r_item, ct = reference["data_list"]  # a stream has no final A item: CT follows R
    check_table_r_item(r_item, title, BY_STATUS_ROWS)
    assert ct == ct_item("BAR", title, BY_STATUS_ROWS)
    assert answers and all(set(a) == {"type", "answer"} and a["type"] == "answer" for a in answers)
    assert "".join(a["answer"] for a in answers) == "상태별로 한 건씩입니다."


def test_query_stream_of_a_single_value_has_no_chart(served: Served) -> None:
    table_turn(served.llm, "배송 건수", COUNT, ["3건입니다."])
    response = served.client.post("/query_stream", json=legacy_request("배송은 몇 건?", "Q-S2"))
    reference, answer = [strict_json(e.data) for e in parse_sse(response.text)]
    [r_item] = reference["data_list"]
    check_table_r_item(r_item, "배송 건수", [{"건수": 3}])
    assert answer == {"type": "answer", "answer": "3건입니다."}


# -------------------------------------------------------------- /queryToSLLM


def test_push_sends_the_table_first_and_the_chart_last(served: Served) -> None:
    title = "일별 출고 추이"
    table_turn(served.llm, title, BY_DAY, ["3월 1일부터 ", "매일 한 건씩 ", "출고되었습니다."])
    qry_id = f"Q-P-{uuid.uuid4().hex[:6]}"
    ack = served.client.post("/queryToSLLM", json=legacy_request("일별 출고 추이는?", qry_id)).json()
    assert (ack["status_code"], ack["result"], ack["qry_id"]) == (200, "수신양호", qry_id)
    posts = served.receiver.wait_for(qry_id, lambda ps: any(p.body.get("continue") == "E" for p in ps))
    reference, *batches = [p.body for p in posts]
    assert reference["type"] == "reference" and reference["continue"] == "C"
    assert reference["rsp_tit"] == "Reference" and reference["qry_id"] == qry_id
    [r_item] = reference["data_list"]  # R(table) only: the CT ends the answer
    check_table_r_item(r_item, title, BY_DAY_ROWS)
    assert [b["continue"] for b in batches] == ["C"] * (len(batches) - 1) + ["E"]
    texts = []
    for n, batch in enumerate(batches, start=1):
        assert set(batch) == ENVELOPE_KEYS and batch["status_code"] == 200 and batch["qry_id"] == qry_id
        [a_item] = batch["data_list"]
        assert a_item["rsp_type"] == "A" and a_item["rsp_tit"] == f"답변{n}"
        tt, *rest = a_item["rsp_data"]
        assert tt["rsp_type"] == "TT"
        texts.append(tt["rsp_data"])
        assert rest == ([ct_item("LINE", title, BY_DAY_ROWS)] if n == len(batches) else [])
    assert "".join(texts) == "3월 1일부터 매일 한 건씩 출고되었습니다."


def test_push_of_a_single_value_has_no_chart(served: Served) -> None:
    table_turn(served.llm, "배송 건수", COUNT, ["3건입니다."])
    qry_id = f"Q-P-{uuid.uuid4().hex[:6]}"
    served.client.post("/queryToSLLM", json=legacy_request("배송은 몇 건?", qry_id))
    posts = served.receiver.wait_for(qry_id, lambda ps: any(p.body.get("continue") == "E" for p in ps))
    reference, *batches = [p.body for p in posts]
    check_table_r_item(reference["data_list"][0], "배송 건수", [{"건수": 3}])
    assert len(reference["data_list"]) == 1
    assert all(len(b["data_list"][0]["rsp_data"]) == 1 for b in batches)  # TT only, no CT
    assert "".join(b["data_list"][0]["rsp_data"][0]["rsp_data"] for b in batches) == "3건입니다."


# ------------------------------------------------------------------- native


def test_native_sse_carries_the_table_on_references_and_done(served: Served) -> None:
    title = "배송 상태별 건수"
    table_turn(served.llm, title, BY_STATUS, ["표와 ", "같습니다."])
    response = served.client.post("/api/v1/ask", json={"question": "배송 상태별 건수는?", "stream": True})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    assert [e.event for e in events] == ["references", "delta", "delta", "done"]
    references, done = events[0].json(), events[-1].json()
    assert references["references"] == [] and references["plan"]["route"] == "table"
    check_table(references["table"], title, BY_STATUS_ROWS, "bar")
    assert "".join(e.json()["text"] for e in events[1:-1]) == "표와 같습니다."
    assert done["answer"] == "표와 같습니다." and done["citations"] == []
    assert done["table"] == references["table"] and done["plan"]["route"] == "table"


def test_native_json_answer_carries_the_table(served: Served) -> None:
    title = "배송 상태별 건수"
    table_turn(served.llm, title, BY_STATUS, ["표와 같습니다."])
    body = served.client.post("/api/v1/ask", json={"question": "배송 상태별 건수는?"}).json()
    assert body["answer"] == "표와 같습니다." and body["references"] == []
    check_table(body["table"], title, BY_STATUS_ROWS, "bar")


def test_native_documents_answer_has_no_table(served: Served) -> None:
    plan = "<question>연차 규정</question><keywords>연차</keywords><time>none</time><route>documents</route>"
    script(served.llm, [completion(plan)], [sse(["문서에 없습니다."])])
    events = parse_sse(served.client.post("/api/v1/ask", json={"question": "연차는?", "stream": True}).text)
    assert "table" not in events[0].json() and "table" not in events[-1].json()


# ------------------------------------------------------------------- OpenAI


MARKDOWN = (
    "**팀별 배송 건수**\n\n"
    "| 담당\\|팀 | 건수 |\n"
    "| --- | ---: |\n"
    "| logistics\\|팀 | 2 |\n"
    "| sales\\|팀 | 1 |\n\n"
)


def test_openai_answer_starts_with_the_markdown_table(served: Served) -> None:
    table_turn(served.llm, "팀별 배송 건수", BY_TEAM, ["물류팀이 ", "2건입니다."])
    raw = served.openai.chat.completions.with_raw_response.create(
        model="hanrag", messages=[{"role": "user", "content": "팀별 배송 건수는?"}]
    )
    body = strict_json(raw.text)
    content = body["choices"][0]["message"]["content"]
    assert content == MARKDOWN + "물류팀이 2건입니다."
    assert raw.parse().choices[0].message.content == content
    assert body["sources"] == []
    table = body["table"]
    assert table["columns"] == ["담당|팀", "건수"]
    assert table["rows"] == [["logistics|팀", 2], ["sales|팀", 1]]
    assert table["chart"]["type"] == "bar" and table["chart"]["x"] == "담당|팀"


def test_openai_stream_sends_the_table_as_the_first_content(served: Served) -> None:
    table_turn(served.llm, "팀별 배송 건수", BY_TEAM, ["물류팀이 ", "2건입니다."])
    chunks = list(
        served.openai.chat.completions.create(
            model="hanrag", messages=[{"role": "user", "content": "팀별 배송 건수는?"}], stream=True
        )
    )
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert contents[0] == MARKDOWN
    assert "".join(contents[1:]) == "물류팀이 2건입니다."
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_openai_single_value_is_a_one_cell_table(served: Served) -> None:
    table_turn(served.llm, "배송 건수", COUNT, ["3건입니다."])
    response = served.openai.chat.completions.create(
        model="hanrag", messages=[{"role": "user", "content": "배송은 몇 건?"}]
    )
    content = response.choices[0].message.content
    assert content == "**배송 건수**\n\n| 건수 |\n| ---: |\n| 3 |\n\n3건입니다."


# ---------------------------------------------------------------------- CLI


def test_cli_ask_prints_the_table_and_the_sql(
    served: Served, shared_cache_path: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    engine = Engine(Settings(data_dir=data_dir))
    engine.__dict__["embedding_cache"] = EmbeddingCache(shared_cache_path)
    try:
        add_shop(engine, served.sqlite_url)
    finally:
        engine.close()
    env = {"HANRAG_LLM__BACKEND": "openai", "HANRAG_LLM__BASE_URL": served.llm.url, "COLUMNS": "200"}
    runner = CliRunner()

    def ask(*args: str) -> str:
        table_turn(served.llm, "배송 상태별 건수", BY_STATUS, ["상태별로 ", "한 건씩입니다."])
        argv = ["--data-dir", str(data_dir), "ask", "배송 상태별 건수는?", *args]
        result = runner.invoke(cli_app, argv, env=env, catch_exceptions=False)
        assert result.exit_code == 0, (result.stdout, result.stderr)
        return result.stdout

    answer = json.loads(ask("--json"))
    assert answer["answer"] == "상태별로 한 건씩입니다."
    check_table(answer["table"], "배송 상태별 건수", BY_STATUS_ROWS, "bar")
    sql = answer["table"]["sql"]  # as it ran: qualified, narrowed, capped

    out = ask()
    lines = out.splitlines()
    assert any("배송 상태별 건수" in line for line in lines[:2])  # the table's title
    header = next(line for line in lines if "배송상태" in line)
    assert "건수" in header and header.index("배송상태") < header.index("건수")
    for status in ("출고 완료", "배송 중", "배송 준비"):
        row = next(line for line in lines if status in line)
        assert row.rstrip(" │|").endswith("1")  # the count, in its own column
    # The SQL below the table (dim), then the streamed answer.
    flat = " ".join(out.split())
    assert f"shop: {sql}" in flat
    assert flat.index(f"shop: {sql}") < flat.index("상태별로 한 건씩입니다.")
    assert lines.index(next(line for line in lines if line.startswith("shop: "))) > lines.index(header)
