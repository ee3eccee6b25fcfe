"""The legacy push mode (/queryToSLLM) and the conversation memory of every legacy route,
over real HTTP on loopback (the fixtures and checks of test_api_legacy.py).

Push mode POSTs to a real HTTP receiver on loopback that records what it gets.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest

import test_api_legacy
from api_server import SlowExtractive
from test_api_legacy import (
    BATCH_SECONDS,
    ENVELOPE_KEYS,
    ERROR_KEYS,
    LOCKOUT,
    PASSWORD,
    PUSHED_REFERENCE_KEYS,
    Legacy,
    assert_legacy_error,
    assert_local_iso,
    assert_timestamp,
    check_a_item,
    check_r_item,
    history,
    page,
    request,
)

# The fixtures of test_api_legacy.py (this module gets a server of its own).
legacy = test_api_legacy.legacy
slow_generator = test_api_legacy.slow_generator

# --------------------------------------------------------------- push mode


def wait_until_finished(legacy: Legacy, qry_id: str) -> list[Any]:
    posts = legacy.receiver.wait_for(qry_id, lambda ps: any(p.body.get("continue") == "E" for p in ps))
    return posts


def check_push(legacy: Legacy, posts: list[Any], qry_id: str, page_id: str) -> list[str]:
    reference = posts[0].body
    assert set(reference) == PUSHED_REFERENCE_KEYS
    assert (
        reference["type"] == "reference" and reference["status_code"] == 200 and reference["result"] == "OK"
    )
    assert reference["detail"] == "Reference data" and reference["rsp_tit"] == "Reference"
    assert reference["qry_id"] == qry_id and reference["continue"] == "C"
    assert_timestamp(reference["rsp_time"])
    assert_local_iso(reference["evt_time"])
    retrieved = check_r_item(legacy, reference["data_list"][0])

    batches = [p.body for p in posts[1:]]
    assert batches and [b["continue"] for b in batches] == ["C"] * (len(batches) - 1) + ["E"]
    texts = []
    for n, batch in enumerate(batches, start=1):
        assert set(batch) == ENVELOPE_KEYS
        assert batch["status_code"] == 200 and batch["result"] == "OK" and batch["detail"] == ""
        assert batch["qry_id"] == qry_id
        assert_timestamp(batch["rsp_time"])
        assert len(batch["data_list"]) == 1
        texts.append(check_a_item(batch["data_list"][0], n))
    answer = "".join(texts)
    stored = history(legacy, page_id)
    assert stored[-1] == {"role": "ai", "content": answer, "references": [r["chunk_id"] for r in retrieved]}
    return texts


def test_push_mode(legacy: Legacy, slow_generator: None) -> None:
    page_id = page()
    qry_id = f"Q-push-{uuid.uuid4().hex[:6]}"
    response = legacy.client.post("/queryToSLLM", json=request(LOCKOUT, page_id, qry_id))
    assert response.status_code == 200
    ack = response.json()
    assert set(ack) == ERROR_KEYS
    assert (ack["status_code"], ack["result"], ack["qry_id"], ack["detail"]) == (200, "수신양호", qry_id, "")
    assert_timestamp(ack["evt_time"])
    # The acknowledgement comes at once, before the (paced) answer is complete.
    assert not any(p.body.get("continue") == "E" for p in legacy.receiver.received(qry_id))

    posts = wait_until_finished(legacy, qry_id)
    texts = check_push(legacy, posts, qry_id, page_id)
    assert len([t for t in texts if t]) >= 2, texts  # the paced answer spans several batches
    # At most one batch per legacy_batch_seconds (the last one is sent when the answer is done).
    arrivals = [p.at for p in posts[1:-1]]
    assert all(b - a >= BATCH_SECONDS - 0.02 for a, b in itertools.pairwise(arrivals)), arrivals
    assert len(legacy.receiver.received(qry_id)) == len(posts)  # every POST accepted at once


def test_push_retries_a_failed_post(legacy: Legacy) -> None:
    page_id = page()
    qry_id = f"Q-retry-{uuid.uuid4().hex[:6]}"
    legacy.receiver.fail_next = 1
    response = legacy.client.post("/queryToSLLM", json=request(PASSWORD, page_id, qry_id))
    assert response.status_code == 200 and response.json()["result"] == "수신양호"
    posts = wait_until_finished(legacy, qry_id)
    every = legacy.receiver.received(qry_id)
    assert [p.status for p in every][:2] == [500, 200]
    assert every[0].body == every[1].body  # the same reference, sent again
    assert every[1].at - every[0].at >= 0.4  # after a back-off
    texts = check_push(legacy, posts, qry_id, page_id)
    assert "10자" in "".join(texts)


def test_push_failure_still_ends_with_e(legacy: Legacy) -> None:
    """An answer that fails (a blank question here) still ends the receiver's wait."""
    qry_id = f"Q-fail-{uuid.uuid4().hex[:6]}"
    response = legacy.client.post("/queryToSLLM", json=request("   ", page(), qry_id))
    assert response.json()["result"] == "수신양호"
    posts = wait_until_finished(legacy, qry_id)
    last = posts[-1].body
    assert set(last) == ENVELOPE_KEYS and last["continue"] == "E" and last["status_code"] == 500
    assert last["qry_id"] == qry_id
    assert check_a_item(last["data_list"][0]) == last["result"] and last["result"]


def test_push_idle_timeout_ends_with_e(legacy: Legacy) -> None:
    qry_id = f"Q-idle-{uuid.uuid4().hex[:6]}"
    answers = legacy.engine.answers
    original = answers.generator
    answers.generator = SlowExtractive(1.0, max_sentences=3)
    legacy.configure(legacy_idle_timeout_s=0.3)
    try:
        legacy.client.post("/queryToSLLM", json=request(LOCKOUT, page(), qry_id))
        posts = wait_until_finished(legacy, qry_id)
    finally:
        legacy.configure(legacy_idle_timeout_s=120.0)
        answers.generator = original
    assert posts[0].body["type"] == "reference"
    assert posts[-1].body["continue"] == "E" and posts[-1].body["status_code"] == 500
    assert "0.3초" in posts[-1].body["result"]


def test_push_without_response_url(legacy: Legacy) -> None:
    legacy.configure(legacy_response_url="")
    try:
        response = legacy.client.post("/queryToSLLM", json=request(PASSWORD, page(), "Q-nourl"))
    finally:
        legacy.configure(legacy_response_url=legacy.receiver.url)
    assert_legacy_error(response, 500, "Q-nourl")
    assert legacy.receiver.received("Q-nourl") == []


# ------------------------------------------------------------------ memory


@pytest.mark.parametrize("path", ["/query", "/query_stream", "/queryToSLLM"])
def test_memory_on_every_route(legacy: Legacy, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's earlier messages reach the planner (and so the generator) on every route."""
    page_id = page()
    assert legacy.client.post("/query", json=request(PASSWORD, page_id)).json()["status_code"] == 200
    planner = legacy.engine.answers.planner
    original = planner.plan
    seen: list[list[str]] = []

    async def spy(question: str, turns: list[Any], today: Any) -> Any:
        seen.append([t.content for t in turns])
        return await original(question, turns, today)

    monkeypatch.setattr(planner, "plan", spy)
    qry_id = f"Q-mem-{uuid.uuid4().hex[:6]}"
    response = legacy.client.post(path, json=request("그럼 그건 언제 바꿔야 하나요?", page_id, qry_id))
    assert response.status_code == 200
    if path == "/queryToSLLM":
        wait_until_finished(legacy, qry_id)
    assert seen and seen[0][0] == PASSWORD and len(seen[0]) == 2, seen


def test_llm_keywords_join_the_retrieval_query() -> None:
    """As the earlier service searched on its model's keywords; rule plans (whose keywords
    are the question's own morphemes) search on the question alone (measured: see planner)."""
    from hanrag.answer.planner import Plan, retrieval_query

    llm = Plan("VPN 접속 방법은?", ["VPN", "원격 접속", "방법", "OTP"], None, planner="llm")
    assert retrieval_query(llm) == "VPN 접속 방법은? 원격 접속 OTP"
    rules = Plan("VPN은 어떻게 사용하나요?", ["vpn", "어떻다", "사용"], None, planner="rules")
    assert retrieval_query(rules) == "VPN은 어떻게 사용하나요?"
