"""``hanrag model list|test|benchmark`` through Typer's runner, against local scripted
OpenAI-protocol servers configured through ``HANRAG_LLM__PROVIDERS`` (JSON in the
environment): API keys never reach the output, a provider that is down fails its check
(non-zero exit, one line naming it), the benchmark calls each provider directly (no
fallback to another), and an unknown provider is one line with a stable code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from answer_fixtures import completion, down_url, provider_config, scripted_server, sse, status
from hanrag.cli.main import app
from hanrag.cli.models import estimate_tokens, percentile

API_KEY = "sk-model-cli-SECRET-4242"


def invoke(data_dir: Path, providers: list[dict[str, Any]], *args: str) -> Result:
    env = {"HANRAG_LLM__PROVIDERS": json.dumps(providers), "COLUMNS": "200"}
    return CliRunner().invoke(app, ["--data-dir", str(data_dir), *args], env=env, catch_exceptions=False)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def one_line_error(result: Result, code: str) -> str:
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error [{code}] "), lines[0]
    return lines[0]


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_list_shows_every_provider_with_its_state_and_never_a_key(data_dir: Path) -> None:
    providers = [
        provider_config("main", "http://127.0.0.1:9/v1", api_key=API_KEY, priority=1, vision=True),
        provider_config("spare", "http://user:pw@127.0.0.1:9/v1?key=x", roles=["planner"], priority=5),
    ]
    listed = as_json(invoke(data_dir, providers, "model", "list", "--json"))
    assert [p["name"] for p in listed["providers"]] == ["main", "spare"]
    main, spare = listed["providers"]
    assert (main["kind"], main["model"], main["priority"], main["vision"]) == (
        "openai",
        "main-model",
        1,
        True,
    )
    assert spare["roles"] == ["planner"] and spare["base_url"] == "http://127.0.0.1:9/v1"
    assert main["state"] == "closed" and (main["requests"], main["errors"], main["latency_ms"]) == (
        0,
        0,
        None,
    )
    assert listed["embedder"]["name"] and listed["roles"]["planner"] == ["main", "spare"]
    table = invoke(data_dir, providers, "model", "list")
    assert table.exit_code == 0, table.stderr
    text = flat(table.stdout)
    assert "main" in text and "spare" in text and "main-model" in text and "embedding model:" in text
    for output in (json.dumps(listed), table.stdout, table.stderr):
        assert API_KEY not in output and "pw@" not in output
    only = as_json(invoke(data_dir, providers, "model", "list", "--provider", "spare", "--json"))
    assert [p["name"] for p in only["providers"]] == ["spare"]


def test_test_passes_for_healthy_providers_with_an_image_and_an_embedding(data_dir: Path) -> None:
    with scripted_server(complete=[completion("안녕하세요, 저는 한국어 도우미입니다.")]) as server:
        providers = [
            provider_config("good", server.url, api_key=API_KEY, vision=True),
            {"name": "quote", "kind": "extractive", "roles": ["answer"]},
        ]
        result = as_json(invoke(data_dir, providers, "model", "test", "--embedding", "--json"))
        bodies = server.bodies(stream=False)
        table = invoke(data_dir, providers, "model", "test", "--no-embedding")
    assert result["ok"] is True
    checks = {(r["provider"], r["check"]): r for r in result["results"]}
    assert set(checks) == {
        ("good", "chat"),
        ("good", "vision"),
        ("quote", "stream"),
        ("embedding", "embedding"),
    }
    assert (
        checks["good", "chat"]["reply"].startswith("안녕하세요") and checks["good", "chat"]["latency_ms"] > 0
    )
    assert "연차휴가" in checks["quote", "stream"]["reply"] and "[1]" in checks["quote", "stream"]["reply"]
    assert checks["embedding", "embedding"]["dimension"] > 0
    # The vision check sent a PNG in the provider's own message format.
    assert len(bodies) == 2 and "data:image/png;base64," in json.dumps(bodies[1])
    assert API_KEY not in json.dumps(result)
    assert table.exit_code == 0 and "model checks" in table.stdout and not table.stderr.strip()


def test_test_fails_naming_the_provider_that_is_down(data_dir: Path) -> None:
    with scripted_server(complete=[completion("네, 잘 들립니다.")]) as server:
        providers = [
            provider_config("good", server.url),
            provider_config("down", down_url(), api_key=API_KEY),
        ]
        result = invoke(data_dir, providers, "model", "test", "--no-embedding")
    line = one_line_error(result, "model_test_failed")
    assert "down chat (llm_unavailable)" in line and "good" not in line
    text = flat(result.stdout)
    assert "llm_unavailable" in text and "ok" in text and API_KEY not in result.stdout + result.stderr
    # A 500 from a named provider: its check alone, with the code named.
    with scripted_server(complete=[status(500)]) as broken:
        named = invoke(
            data_dir, [provider_config("broken", broken.url)], "model", "test", "--provider", "broken"
        )
    assert "broken chat (llm_http_error)" in one_line_error(named, "model_test_failed")


def test_benchmark_reports_time_to_first_token_per_provider_without_fallback(data_dir: Path) -> None:
    answer = sse(
        ["3년차 직원의 연차휴가는 ", "16일입니다 [1]."], usage={"prompt_tokens": 90, "completion_tokens": 12}
    )
    with scripted_server([answer]) as fast, scripted_server([status(503)]) as failing:
        providers = [
            provider_config("fast", fast.url, priority=2),
            provider_config("failing", failing.url, priority=1),
        ]
        data = as_json(invoke(data_dir, providers, "model", "benchmark", "--runs", "3", "--json"))
        assert len(fast.bodies(stream=True)) == 3 and len(failing.bodies(stream=True)) == 3
        table = invoke(data_dir, providers, "model", "benchmark", "--runs", "2", "--provider", "fast")
    rows = {row["provider"]: row for row in data["providers"]}
    good, bad = rows["fast"], rows["failing"]
    assert (good["runs"], good["ok"], good["error_rate"]) == (3, 3, 0.0)
    assert good["ttft_ms"]["p50"] is not None and good["ttft_ms"]["p95"] >= good["ttft_ms"]["p50"]
    assert good["tokens_source"] == "usage" and good["tokens_out"] == 36 and good["tokens_per_s"] > 0
    assert (bad["ok"], bad["error_rate"], bad["error_codes"]) == (0, 1.0, {"llm_http_error": 3})
    assert bad["ttft_ms"]["p50"] is None
    # The grounded prompt: the operator's answer prompt with the made-up passage as [1].
    body = fast.bodies(stream=True)[0]
    assert "16일이다" in json.dumps(body["messages"], ensure_ascii=False)
    assert table.exit_code == 0, table.stderr
    text = flat(table.stdout)
    assert "TTFT p50 ms" in text and "fast" in text and "2/2" in text and "failing" not in text


@pytest.mark.parametrize("command", ["list", "test", "benchmark"])
def test_an_unknown_provider_is_one_line_with_a_stable_code(data_dir: Path, command: str) -> None:
    providers = [provider_config("main", down_url())]
    line = one_line_error(
        invoke(data_dir, providers, "model", command, "--provider", "nope"), "provider_not_found"
    )
    assert "'nope'" in line and "main" in line


def test_estimates_and_percentiles() -> None:
    assert estimate_tokens("연차 16일") == 3 + 1 and estimate_tokens("") == 0
    assert percentile([], 0.5) is None and percentile([3.0], 0.95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.95) == pytest.approx(4.8)
