"""Feedback on answers (issue P12) over real HTTP, with users who try other users' things.

One token-mode server on loopback around an engine with two short documents (one public,
one for group b). alice and bob ask questions through ``/api/v1/ask``; then:

* the owner rates an answer (201 ``{"feedback_id"}``); the row holds the question, the
  answer, the cited chunk ids and titles, the generator and the timings kept with the
  answer; a second rating replaces the first (same id, one row);
* anyone else — another user, an administrator — rating that conversation gets exactly the
  404 of a missing conversation; a message that is not an answer is 400
  ``feedback_not_an_answer``; bad ratings, reasons and comments are refused;
* only administrators list feedback (``GET /api/v1/feedback``, with filters and paging);
* ``hanrag_feedback_total{rating,reason}`` counts; ``hanrag feedback list|export`` read
  the same rows, the export in the documented evaluation-dataset format.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from api_server import LiveServer, read_metric, start_server
from hanrag.auth.access import SYSTEM, Caller
from hanrag.cli.main import app
from hanrag.embed.cache import EmbeddingCache
from hanrag.engine import Engine
from hanrag.errors import ForbiddenError
from hanrag.ingest.model import IngestRequest
from hanrag.settings import Settings

PASSWORD = "correct-horse-battery"
PUBLIC_TEXT = "# 연차 규정\n\n직원의 연차 휴가는 매년 15일이며 입사 1년 후부터 부여됩니다.\n"
B_TEXT = "# 영업 비밀 메모\n\n영업팀 분기 목표 매출은 120억 원이며 할인 한도는 15퍼센트입니다.\n"
PUBLIC_QUESTION = "연차 휴가는 며칠인가요?"
B_QUESTION = "영업팀 분기 목표 매출은 얼마인가요?"


@dataclass
class World:
    engine: Engine
    live: LiveServer
    data_dir: Path
    tokens: dict[str, str]

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.live.url, headers={"Authorization": f"Bearer {self.tokens[who]}"}, timeout=60
        )

    def ask(self, who: str, question: str, session_id: str | None = None) -> dict[str, Any]:
        with self.client(who) as client:
            response = client.post("/api/v1/ask", json={"question": question, "session_id": session_id})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, shared_cache_path: Path) -> Iterator[World]:
    base = tmp_path_factory.mktemp("feedback")
    for folder, name, text in (("p", "연차규정.md", PUBLIC_TEXT), ("b", "영업메모.md", B_TEXT)):
        (base / "docs" / folder).mkdir(parents=True)
        (base / "docs" / folder / name).write_text(text, encoding="utf-8")
    settings = Settings(data_dir=base / "data", auth={"mode": "token"})
    engine = Engine(settings)
    engine.__dict__["embedding_cache"] = EmbeddingCache(shared_cache_path)
    engine.ingest(IngestRequest(paths=[base / "docs" / "p"], acl=["public"]))
    engine.ingest(IngestRequest(paths=[base / "docs" / "b"], acl=["group:b"]))
    auth = engine.auth
    auth.create_user("admin", PASSWORD, role="admin")
    auth.create_user("alice", PASSWORD, role="viewer", groups=["a"])
    auth.create_user("bob", PASSWORD, role="editor", groups=["b"])
    tokens = {name: auth.login(name, PASSWORD)["access_token"] for name in ("admin", "alice", "bob")}
    live = start_server(engine)
    try:
        yield World(engine, live, base / "data", tokens)
    finally:
        live.stop()
        engine.close()


def post_feedback(world: World, who: str, **body: Any) -> httpx.Response:
    with world.client(who) as client:
        return client.post("/api/v1/feedback", json=body)


def list_feedback(world: World, who: str = "admin", **params: Any) -> httpx.Response:
    with world.client(who) as client:
        return client.get("/api/v1/feedback", params=params)


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    """A problem body without what differs between any two requests."""
    return {k: v for k, v in body.items() if k not in ("request_id", "instance", "detail")}


# ------------------------------------------------------------------- writing


def test_the_owner_rates_an_answer_and_everything_about_it_is_kept(world: World) -> None:
    answer = world.ask("alice", PUBLIC_QUESTION)
    session_id = answer["session_id"]
    assert answer["citations"], answer
    # The answer's generator and timings are kept with the stored message.
    stored = world.engine.sessions.messages(session_id)
    assert [m.role for m in stored] == ["user", "assistant"]
    assert stored[1].meta is not None and stored[1].meta["generator"] == "extractive"
    assert stored[1].meta["timings"]["total_ms"] > 0

    response = post_feedback(world, "alice", session_id=session_id, message_index=1, rating="up")
    assert response.status_code == 201, response.text
    feedback_id = response.json()["feedback_id"]
    assert response.json() == {"feedback_id": feedback_id}

    items = list_feedback(world).json()["items"]
    (mine,) = [item for item in items if item["feedback_id"] == feedback_id]
    assert mine["principal"] == "alice" and mine["session_id"] == session_id
    assert mine["message_index"] == 1 and mine["rating"] == "up" and mine["reason"] is None
    assert mine["question"] == PUBLIC_QUESTION
    assert mine["answer"] == answer["answer"]
    assert [c["chunk_id"] for c in mine["citations"]] == [c["chunk_id"] for c in answer["citations"]]
    assert {c["title"] for c in mine["citations"]} == {"연차 규정"}
    assert mine["model"] == "extractive"
    assert mine["timings"]["total_ms"] > 0 and "retrieval_ms" in mine["timings"]


def test_a_second_rating_replaces_the_first(world: World) -> None:
    session_id = world.ask("alice", PUBLIC_QUESTION)["session_id"]
    first = post_feedback(world, "alice", session_id=session_id, message_index=1, rating="up").json()
    second = post_feedback(
        world,
        "alice",
        session_id=session_id,
        message_index=1,
        rating="down",
        reason="outdated",
        comment="작년 규정입니다 <script>alert(1)</script>",
    )
    assert second.status_code == 201, second.text
    assert second.json() == first
    rows = [
        item for item in list_feedback(world, limit=1000).json()["items"] if item["session_id"] == session_id
    ]
    assert len(rows) == 1
    assert rows[0]["rating"] == "down" and rows[0]["reason"] == "outdated"
    assert rows[0]["comment"] == "작년 규정입니다 <script>alert(1)</script>"  # stored as text, as given


def test_every_answer_of_a_conversation_can_be_rated(world: World) -> None:
    session_id = world.ask("alice", PUBLIC_QUESTION)["session_id"]
    world.ask("alice", "입사 1년 후에는요?", session_id=session_id)
    for index in (1, 3):
        response = post_feedback(world, "alice", session_id=session_id, message_index=index, rating="up")
        assert response.status_code == 201, response.text
    rows = [
        item for item in list_feedback(world, limit=1000).json()["items"] if item["session_id"] == session_id
    ]
    assert sorted(row["message_index"] for row in rows) == [1, 3]
    assert {row["question"] for row in rows} == {PUBLIC_QUESTION, "입사 1년 후에는요?"}


def test_someone_elses_conversation_is_answered_like_a_missing_one(world: World) -> None:
    session_id = world.ask("alice", PUBLIC_QUESTION)["session_id"]
    missing = problem(
        post_feedback(world, "bob", session_id="no-such-session", message_index=1, rating="up"),
        404,
        "session_not_found",
    )
    for who in ("bob", "admin"):  # conversations are private from administrators too
        foreign = problem(
            post_feedback(world, who, session_id=session_id, message_index=1, rating="down", reason="other"),
            404,
            "session_not_found",
        )
        assert comparable(foreign) == comparable(missing)
        assert foreign["detail"].replace(session_id, "X") == missing["detail"].replace("no-such-session", "X")
    # Nothing was stored for them.
    rows = [
        item for item in list_feedback(world, limit=1000).json()["items"] if item["session_id"] == session_id
    ]
    assert rows == []


def test_only_answers_can_be_rated(world: World) -> None:
    session_id = world.ask("bob", B_QUESTION)["session_id"]
    for index in (0, 2, 999):
        problem(
            post_feedback(world, "bob", session_id=session_id, message_index=index, rating="up"),
            400,
            "feedback_not_an_answer",
        )


@pytest.mark.parametrize(
    "body",
    [
        {"rating": "meh"},
        {"rating": "up", "reason": "boring"},
        {"rating": "up", "comment": "가" * 2001},
        {"rating": "up", "message_index": -1},
        {"rating": "up", "principal": "alice"},  # unknown fields are refused, not ignored
        {"rating": None},
    ],
)
def test_bad_feedback_is_refused(world: World, body: dict[str, Any]) -> None:
    session_id = world.ask("bob", B_QUESTION)["session_id"]
    payload = {"session_id": session_id, "message_index": 1, **body}
    problem(post_feedback(world, "bob", **payload), 422, "invalid_request")


def test_a_comment_of_2000_characters_is_kept_whole(world: World) -> None:
    session_id = world.ask("bob", B_QUESTION)["session_id"]
    comment = "출처가 틀렸습니다. " * 200
    comment = comment[:2000]
    response = post_feedback(
        world,
        "bob",
        session_id=session_id,
        message_index=1,
        rating="down",
        reason="wrong_source",
        comment=comment,
    )
    assert response.status_code == 201, response.text
    rows = [
        item for item in list_feedback(world, limit=1000).json()["items"] if item["session_id"] == session_id
    ]
    assert rows[0]["comment"] == comment


def test_feedback_outlives_its_conversation(world: World) -> None:
    session_id = world.ask("bob", B_QUESTION)["session_id"]
    assert post_feedback(world, "bob", session_id=session_id, message_index=1, rating="up").status_code == 201
    with world.client("bob") as client:
        assert client.delete(f"/api/v1/sessions/{session_id}").status_code == 200
    rows = [
        item for item in list_feedback(world, limit=1000).json()["items"] if item["session_id"] == session_id
    ]
    assert len(rows) == 1 and rows[0]["question"] == B_QUESTION


# ------------------------------------------------------------------- reading


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_only_administrators_read_feedback(world: World, who: str) -> None:
    problem(list_feedback(world, who), 403, "forbidden")
    with pytest.raises(ForbiddenError):
        world.engine.feedback.page(caller=Caller.of(who, [f"user:{who}", "public"], "editor"))
    with pytest.raises(ForbiddenError):
        world.engine.feedback.each(caller=Caller.of(who, [f"user:{who}", "public"], "viewer"))
    with pytest.raises(ForbiddenError):
        world.engine.feedback.stats(caller=Caller.of(who, [f"user:{who}", "public"], "editor"))


def test_the_admin_listing_filters_and_pages(world: World) -> None:
    for rating in ("up", "down", "up"):
        session_id = world.ask("alice", PUBLIC_QUESTION)["session_id"]
        assert (
            post_feedback(world, "alice", session_id=session_id, message_index=1, rating=rating).status_code
            == 201
        )
    everything = list_feedback(world, limit=1000).json()
    assert everything["total"] == len(everything["items"]) >= 3
    stamps = [item["created_at"] for item in everything["items"]]
    assert stamps == sorted(stamps, reverse=True)  # newest first
    ups = list_feedback(world, rating="up", limit=1000).json()
    assert ups["items"] and all(item["rating"] == "up" for item in ups["items"])
    downs = list_feedback(world, rating="down", limit=1000).json()
    assert ups["total"] + downs["total"] == everything["total"]
    page = list_feedback(world, limit=2, offset=1).json()
    assert [i["feedback_id"] for i in page["items"]] == [i["feedback_id"] for i in everything["items"][1:3]]
    assert page["total"] == everything["total"] and page["offset"] == 1 and page["limit"] == 2
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert list_feedback(world, since=future).json() == {"items": [], "total": 0, "offset": 0, "limit": 100}
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert list_feedback(world, since=past, limit=1000).json()["total"] == everything["total"]
    problem(list_feedback(world, rating="sideways"), 422, "invalid_request")
    problem(list_feedback(world, limit=0), 422, "invalid_request")


def test_feedback_is_counted_in_prometheus(world: World) -> None:
    labels = {"rating": "down", "reason": "incomplete"}
    before = read_metric(world.live.url, "hanrag_feedback_total", labels) or 0.0
    session_id = world.ask("alice", PUBLIC_QUESTION)["session_id"]
    response = post_feedback(
        world, "alice", session_id=session_id, message_index=1, rating="down", reason="incomplete"
    )
    assert response.status_code == 201
    assert read_metric(world.live.url, "hanrag_feedback_total", labels) == before + 1
    # A refused feedback is not counted.
    post_feedback(world, "bob", session_id=session_id, message_index=1, rating="down", reason="incomplete")
    assert read_metric(world.live.url, "hanrag_feedback_total", labels) == before + 1


# ------------------------------------------------------------------------ CLI


def test_cli_lists_and_exports_an_evaluation_dataset(world: World, tmp_path: Path) -> None:
    up_session = world.ask("alice", PUBLIC_QUESTION)
    post_feedback(world, "alice", session_id=up_session["session_id"], message_index=1, rating="up")
    down_session = world.ask("bob", B_QUESTION)
    post_feedback(
        world,
        "bob",
        session_id=down_session["session_id"],
        message_index=1,
        rating="down",
        reason="wrong_source",
    )
    runner = CliRunner()
    listed = runner.invoke(
        app, ["--data-dir", str(world.data_dir), "feedback", "list", "--json", "--limit", "1000"]
    )
    assert listed.exit_code == 0, listed.output
    listing = json.loads(listed.stdout)
    assert listing["total"] == list_feedback(world).json()["total"]
    only_down = runner.invoke(
        app, ["--data-dir", str(world.data_dir), "feedback", "list", "--rating", "down", "--json"]
    )
    assert {item["rating"] for item in json.loads(only_down.stdout)["items"]} == {"down"}
    table = runner.invoke(app, ["--data-dir", str(world.data_dir), "feedback", "list"])
    assert table.exit_code == 0 and "feedback" in table.output
    bad = runner.invoke(app, ["--data-dir", str(world.data_dir), "feedback", "list", "--rating", "meh"])
    assert bad.exit_code == 2 and "invalid_rating" in bad.output

    out = tmp_path / "eval.jsonl"
    exported = runner.invoke(app, ["--data-dir", str(world.data_dir), "feedback", "export", str(out)])
    assert exported.exit_code == 0, exported.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == listing["total"]
    keys = {
        "question",
        "answer",
        "rating",
        "reason",
        "comment",
        "relevant_chunk_ids",
        "cited_titles",
        "model",
        "created_at",
    }
    assert all(set(record) == keys for record in records)
    stamps = [record["created_at"] for record in records]
    assert stamps == sorted(stamps)  # oldest first
    up = next(r for r in records if r["answer"] == up_session["answer"] and r["rating"] == "up")
    assert up["relevant_chunk_ids"] == [c["chunk_id"] for c in up_session["citations"]]
    assert up["cited_titles"] == ["연차 규정"] * len(up_session["citations"])
    assert up["model"] == "extractive" and up["question"] == PUBLIC_QUESTION
    down = next(r for r in records if r["answer"] == down_session["answer"])
    assert down["rating"] == "down" and down["reason"] == "wrong_source"
    assert down["relevant_chunk_ids"] == [] and down["cited_titles"]  # cited, but not known relevant

    only_up = tmp_path / "up.jsonl"
    runner.invoke(
        app, ["--data-dir", str(world.data_dir), "feedback", "export", str(only_up), "--rating", "up"]
    )
    assert {json.loads(line)["rating"] for line in only_up.read_text(encoding="utf-8").splitlines()} == {"up"}
    assert not list(tmp_path.glob(".*.partial"))


def test_export_reads_in_batches(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    import hanrag.store.feedback as store

    monkeypatch.setattr(store, "EXPORT_BATCH", 2)
    everything = list_feedback(world, limit=1000).json()["items"]
    exported = list(world.engine.feedback.each(caller=SYSTEM))
    assert sorted(row.id for row in exported) == sorted(item["feedback_id"] for item in everything)
    assert len({row.id for row in exported}) == len(exported)


def test_the_implicit_single_user_rates_too(make_engine: Any, tmp_path: Path) -> None:
    """Auth mode none (a laptop): one implicit user, whose feedback is stored without a name."""
    import asyncio

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "연차규정.md").write_text(PUBLIC_TEXT, encoding="utf-8")
    engine = make_engine()
    engine.ingest([docs])
    result = asyncio.run(engine.ask_result(PUBLIC_QUESTION, caller=SYSTEM))
    assert result.session_id is not None
    first = engine.feedback.record(result.session_id, 1, "up", caller=SYSTEM)
    again = engine.feedback.record(result.session_id, 1, "down", reason="other", comment="", caller=SYSTEM)
    assert again.id == first.id
    rows, total = engine.feedback.page(caller=SYSTEM)
    assert total == 1 and rows[0].as_dict()["principal"] is None
    assert rows[0].rating == "down" and rows[0].comment is None  # an empty comment is no comment
    stats = engine.feedback.stats(caller=SYSTEM, days=1)
    assert stats["questions"] == 1 and stats["feedback"] == {"up": 0, "down": 1, "ratio": 0.0}
