"""``GET /api/v1/models/status`` and the providers' Prometheus metrics, over real HTTP:
any authenticated caller reads the breaker states and statistics, never a key or a
credential in a base URL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from answer_fixtures import ScriptedLLMServer, down_url, sse
from api_server import LiveServer, metric_value, start_server
from hanrag.engine import Engine
from hanrag.llm.base import GenerationRequest, Turn
from hanrag.settings import Settings

PASSWORD = "correct horse battery"
SECRETS = ("sk-status-secret", "hunter2", "qsecret")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, LiveServer, str, str]]:
    base = tmp_path_factory.mktemp("models-status")
    llm = ScriptedLLMServer([sse(["답"], usage={"prompt_tokens": 7, "completion_tokens": 3})]).start()
    port = down_url().split(":")[2]
    settings = Settings(
        data_dir=base / "data",
        auth={"mode": "token"},
        llm={
            "providers": [
                {
                    "name": "status-gone",
                    "base_url": f"http://admin:hunter2@127.0.0.1:{port}?key=qsecret",
                    "api_key": "sk-status-secret",
                    "priority": 1,
                },
                {"name": "status-up", "base_url": llm.url, "model": "up-model", "priority": 2},
            ],
            "breaker_failures": 1,
            "retries": 0,
        },
    )
    engine = Engine(settings)
    engine.auth.create_user("vic", PASSWORD, role="viewer")
    live = start_server(engine)
    try:
        response = httpx.post(
            f"{live.url}/api/v1/auth/login", json={"username": "vic", "password": PASSWORD}, timeout=30
        )
        assert response.status_code == 200, response.text
        yield engine, live, response.json()["access_token"], llm.url
    finally:
        live.stop()
        engine.close()
        llm.stop()


def _answer(engine: Engine) -> str:
    async def read() -> str:
        request = GenerationRequest(question="q", sources=[], messages=[Turn("user", "q")])
        return "".join([c.text async for c in engine.generators["answer"].stream(request)])

    return asyncio.run(read())


def test_status_shows_breaker_states_and_statistics_without_secrets(
    site: tuple[Engine, LiveServer, str, str],
) -> None:
    engine, live, token, up_url = site
    assert _answer(engine) == "답"  # status-gone refused the connection: its breaker opened
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{live.url}/api/v1/models/status", timeout=30).status_code == 401
    response = httpx.get(f"{live.url}/api/v1/models/status", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    for secret in SECRETS:
        assert secret not in response.text
    body = response.json()
    assert body["strategy"] == "priority" and body["legacy"] is False
    assert body["roles"]["answer"] == ["status-gone", "status-up"] and body["roles"]["vision"] == []
    gone, up = body["providers"]
    assert gone["state"] == "open" and gone["retry_in_s"] > 0
    assert gone["last_error"]["code"] == "llm_unavailable" and gone["errors"] == 1
    assert gone["base_url"].startswith("http://127.0.0.1:") and "@" not in gone["base_url"]
    assert up["state"] == "closed" and up["model"] == "up-model" and up["base_url"] == up_url
    assert up["requests"] == 1 and up["tokens_in"] == 7 and up["tokens_out"] == 3

    metrics = httpx.get(f"{live.url}/metrics", headers=headers, timeout=30).text
    assert metric_value(metrics, "hanrag_llm_provider_state", {"provider": "status-gone"}) == 2
    assert metric_value(metrics, "hanrag_llm_provider_state", {"provider": "status-up"}) == 0
    errors = metric_value(
        metrics, "hanrag_llm_provider_errors_total", {"provider": "status-gone", "code": "llm_unavailable"}
    )
    assert errors is not None and errors >= 1
    for secret in SECRETS:
        assert secret not in metrics


def test_the_legacy_provider_is_listed_as_default(tmp_path: Path) -> None:
    engine = Engine(Settings(data_dir=tmp_path))
    try:
        status = engine.model_status()
    finally:
        engine.close()
    assert status["legacy"] is True
    assert [(p["name"], p["kind"], p["max_concurrency"]) for p in status["providers"]] == [
        ("default", "extractive", None)
    ]
    assert status["roles"]["planner"] == ["default"]
