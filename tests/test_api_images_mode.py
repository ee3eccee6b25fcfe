"""Image questions and ensemble mode on every API face (P11), over real HTTP on loopback.

The native ``images``, the legacy ``image_data`` and the OpenAI-compatible ``image_url``
content parts are checked before the answer starts and reach the engine as
``AskOptions.images``; the vision provider (a scripted OpenAI-compatible server) gets the
image as a ``data:`` URL content part. ``mode``/``candidates`` are accepted on the native,
OpenAI-compatible and job faces. Without a vision provider an image question is a 400
``vision_unavailable`` (native, OpenAI) or, on the legacy routes, the unchanged Korean
refusal (``status_code`` 400 with HTTP 200).
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from answer_fixtures import (
    ScriptedLLMServer,
    answer_engine,
    close_answer_engine,
    completion,
    provider_config,
    sse,
)
from api_server import LiveServer, parse_sse, start_server
from conftest import SampleCorpus
from hanrag.answer.engine import AskOptions
from hanrag.api.routers.legacy import NO_VISION
from hanrag.api.schemas import MAX_IMAGES
from hanrag.engine import Engine
from hanrag.llm.base import ImageInput
from hanrag.settings import ImageSettings

PROBLEM_JSON = "application/problem+json"
USB = "USB 사용 승인은 며칠 동안 유효한가요?"
DESCRIPTION = "USB 저장장치 사용 승인 신청 화면입니다."
ANSWER = "USB 사용 승인은 최대 30일 동안 유효합니다 [1]."
OTHER = "USB 사용 승인은 30일 동안 유효하며 다시 신청해야 합니다 [1]."
ERROR_KEYS = {"status_code", "result", "qry_id", "detail", "evt_time"}


def image_bytes(color: tuple[int, int, int] = (0, 90, 200), kind: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, kind)
    return buffer.getvalue()


PNG = image_bytes()
PNG_B64 = base64.b64encode(PNG).decode("ascii")
PNG_URL = "data:image/png;base64," + PNG_B64
OTHER_PNG = image_bytes((250, 200, 0))
BMP_B64 = base64.b64encode(image_bytes(kind="BMP")).decode("ascii")


@dataclass
class Site:
    """One app whose engine has a vision provider (``eye``) and two answer providers
    (``first`` answers in single mode), one whose engine has no vision provider
    (``blind``), and the ``AskOptions`` each engine was asked with."""

    live: LiveServer
    client: httpx.Client
    asked: list[AskOptions]
    eye: ScriptedLLMServer
    first: ScriptedLLMServer
    second: ScriptedLLMServer
    blind_live: LiveServer
    blind_client: httpx.Client
    blind_asked: list[AskOptions]
    blind: ScriptedLLMServer

    def vision_requests(self) -> list[dict[str, Any]]:
        return self.eye.bodies(stream=False)


def record_options(engine: Engine) -> list[AskOptions]:
    """The options of every question the engine is asked (through any API face)."""
    asked: list[AskOptions] = []
    original = engine.ask

    def ask(question: str, **kwargs: Any) -> Any:
        asked.append(kwargs.get("options") or AskOptions())
        return original(question, **kwargs)

    engine.__dict__["ask"] = ask
    return asked


@pytest.fixture(scope="module")
def site(
    samples_engine: SampleCorpus, shared_cache_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    eye = ScriptedLLMServer(complete=[completion(DESCRIPTION)]).start()
    first = ScriptedLLMServer(stream=[sse([ANSWER])]).start()
    second = ScriptedLLMServer(stream=[sse([OTHER])]).start()
    blind = ScriptedLLMServer(stream=[sse([ANSWER])]).start()
    providers = [
        provider_config("eye", eye.url, roles=["vision"]),
        provider_config("first", first.url, roles=["answer"], priority=1),
        provider_config("second", second.url, roles=["answer"], priority=2),
    ]
    base = tmp_path_factory.mktemp("api-images")
    engine = answer_engine(
        samples_engine.engine,
        base / "seeing",
        shared_cache_path,
        llm={"providers": providers, "planner": False},
    )
    blind_engine = answer_engine(
        samples_engine.engine,
        base / "blind",
        shared_cache_path,
        llm={"providers": [provider_config("blind", blind.url, roles=["answer"])], "planner": False},
    )
    asked, blind_asked = record_options(engine), record_options(blind_engine)
    live, blind_live = start_server(engine), start_server(blind_engine)
    client = httpx.Client(base_url=live.url, timeout=60)
    blind_client = httpx.Client(base_url=blind_live.url, timeout=60)
    try:
        yield Site(live, client, asked, eye, first, second, blind_live, blind_client, blind_asked, blind)
    finally:
        client.close()
        blind_client.close()
        live.stop()
        blind_live.stop()
        close_answer_engine(engine)
        close_answer_engine(blind_engine)
        for server in (eye, first, second, blind):
            server.stop()


def seen_images(body: dict[str, Any]) -> list[bytes]:
    """The images of the last message of a chat request sent to a provider."""
    content = body["messages"][-1]["content"]
    parts = content if isinstance(content, list) else []
    urls = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
    assert all(url.startswith("data:image/png;base64,") for url in urls)
    return [base64.b64decode(url.split(",", 1)[1]) for url in urls]


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


def legacy_error(response: httpx.Response, status: int, qry_id: str) -> dict[str, Any]:
    """The legacy error object (HTTP 200, the status in ``status_code``)."""
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == ERROR_KEYS and body["status_code"] == status and body["qry_id"] == qry_id, body
    return body


def legacy_request(qry_id: str, **extra: Any) -> dict[str, Any]:
    return {"qry_id": qry_id, "user_id": "u", "page_id": f"page-{qry_id}", "qry_contents": USB, **extra}


def test_the_schema_cap_is_the_settings_bound() -> None:
    bound = next(m.le for m in ImageSettings.model_fields["max_images"].metadata if hasattr(m, "le"))
    assert bound == MAX_IMAGES


# ------------------------------------------------------------------ native


@pytest.mark.parametrize("value", [PNG_B64, PNG_URL], ids=["base64", "data-url"])
def test_native_ask_with_an_image(site: Site, value: str) -> None:
    before = len(site.vision_requests())
    response = site.client.post("/api/v1/ask", json={"question": USB, "images": [value]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["answer"] == ANSWER and "ensemble" not in body and "table" not in body
    assert site.asked[-1].images == [ImageInput("image/png", PNG)]
    vision = site.vision_requests()[before:]
    assert len(vision) == 1 and seen_images(vision[0]) == [PNG]
    assert "vision_ms" in body["timings"]


def test_native_stream_with_an_image(site: Site) -> None:
    response = site.client.post("/api/v1/ask", json={"question": USB, "images": [PNG_B64], "stream": True})
    assert response.status_code == 200, response.text
    events = parse_sse(response.text)
    assert events[0].event == "references" and events[-1].event == "done"
    assert site.asked[-1].images == [ImageInput("image/png", PNG)]


@pytest.mark.parametrize(
    ("images", "code"),
    [
        (["not an image!"], "image_invalid"),
        ([base64.b64encode(b"just some text").decode()], "image_invalid"),
        ([BMP_B64], "image_unsupported_type"),
        (["https://images.example.com/a.png"], "image_url_not_allowed"),  # no url_allow: no fetch
        ([PNG_B64] * 3, "too_many_images"),  # images.max_images is 2
    ],
    ids=["garbage", "not-an-image", "bmp", "url", "three"],
)
def test_native_bad_images_are_400_with_their_code(site: Site, images: list[str], code: str) -> None:
    asked = len(site.asked)
    for stream in (False, True):
        response = site.client.post("/api/v1/ask", json={"question": USB, "images": images, "stream": stream})
        assert assert_problem(response, 400, code)["field"] == "image"
    assert len(site.asked) == asked  # refused before the answer started


def test_native_more_images_than_any_setting_allows_is_a_validation_error(site: Site) -> None:
    response = site.client.post("/api/v1/ask", json={"question": USB, "images": [PNG_B64] * (MAX_IMAGES + 1)})
    body = assert_problem(response, 422, "invalid_request")
    assert body["errors"][0]["field"] == "images"


def test_native_image_without_a_vision_provider(site: Site) -> None:
    before = len(site.blind.requests)
    response = site.blind_client.post("/api/v1/ask", json={"question": USB, "images": [PNG_B64]})
    assert_problem(response, 400, "vision_unavailable")
    assert len(site.blind.requests) == before  # no model was asked
    # A question without images is answered as ever.
    plain = site.blind_client.post("/api/v1/ask", json={"question": USB, "images": []})
    assert plain.status_code == 200 and plain.json()["answer"] == ANSWER


def test_native_mode_and_candidates(site: Site) -> None:
    response = site.client.post("/api/v1/ask", json={"question": USB, "mode": "ensemble", "candidates": True})
    assert response.status_code == 200, response.text
    assert (site.asked[-1].mode, site.asked[-1].candidates) == ("ensemble", True)
    ensemble = response.json()["ensemble"]
    assert ensemble["chosen"] in ("first", "second") and len(ensemble["candidates"]) == 2
    single = site.client.post("/api/v1/ask", json={"question": USB, "mode": "single"})
    assert single.status_code == 200 and "ensemble" not in single.json()
    assert (site.asked[-1].mode, site.asked[-1].candidates) == ("single", False)
    assert site.client.post("/api/v1/ask", json={"question": USB}).status_code == 200
    assert site.asked[-1].mode is None  # the llm.mode setting decides


def test_native_bad_mode_is_refused(site: Site) -> None:
    response = site.client.post("/api/v1/ask", json={"question": USB, "mode": "committee"})
    assert assert_problem(response, 422, "invalid_request")["errors"][0]["field"] == "mode"


# ------------------------------------------------------------------ legacy


@pytest.mark.parametrize("path", ["/query", "/query_stream", "/queryToSLLM"])
def test_legacy_image_without_a_vision_provider_keeps_the_korean_refusal(site: Site, path: str) -> None:
    before = len(site.blind.requests)
    response = site.blind_client.post(path, json=legacy_request("Q-noeye", image_data=PNG_URL))
    assert legacy_error(response, 400, "Q-noeye")["result"] == NO_VISION
    assert len(site.blind.requests) == before


@pytest.mark.parametrize("image_data", [PNG_B64, PNG_URL, [PNG_B64]], ids=["base64", "data-url", "list"])
def test_legacy_query_with_an_image(site: Site, image_data: Any) -> None:
    before = len(site.vision_requests())
    response = site.client.post("/query", json=legacy_request("Q-eye", image_data=image_data))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status_code"] == 200 and [i["rsp_type"] for i in body["data_list"]] == ["R", "A"]
    assert site.asked[-1].images == [ImageInput("image/png", PNG)]
    vision = site.vision_requests()[before:]
    assert len(vision) == 1 and seen_images(vision[0]) == [PNG]


def test_legacy_stream_with_an_image(site: Site) -> None:
    response = site.client.post("/query_stream", json=legacy_request("Q-eye-s", image_data=PNG_B64))
    assert response.status_code == 200, response.text
    types = [event.json()["type"] for event in parse_sse(response.text)]
    assert types[0] == "reference" and "answer" in types and "error" not in types
    assert site.asked[-1].images == [ImageInput("image/png", PNG)]


@pytest.mark.parametrize(
    "image_data",
    ["no image here", BMP_B64, {"type": "png", "data": PNG_B64}, [PNG_B64] * 3],
    ids=["garbage", "bmp", "object", "three"],
)
@pytest.mark.parametrize("path", ["/query", "/query_stream", "/queryToSLLM"])
def test_legacy_bad_image_is_status_400(site: Site, path: str, image_data: Any) -> None:
    asked = len(site.asked)
    response = site.client.post(path, json=legacy_request("Q-bad", image_data=image_data))
    body = legacy_error(response, 400, "Q-bad")
    assert body["result"] != NO_VISION and body["result"]
    assert len(site.asked) == asked


# ------------------------------------------------------------------ OpenAI-compatible


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "hanrag", "messages": list(messages), **extra}


def user(text: str, *urls: str, detail: bool = False) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    for url in urls:
        image_url: dict[str, Any] = {"url": url, **({"detail": "high"} if detail else {})}
        parts.append({"type": "image_url", "image_url": image_url})
    return {"role": "user", "content": parts}


def test_openai_image_parts_of_the_last_user_message_are_forwarded(site: Site) -> None:
    before = len(site.vision_requests())
    earlier = "data:image/png;base64," + base64.b64encode(OTHER_PNG).decode()
    body = chat(
        user("예전 사진입니다.", earlier),
        {"role": "assistant", "content": "네, 보았습니다."},
        user(USB, PNG_URL, detail=True),
    )
    response = site.client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["choices"][0]["message"]["content"] == ANSWER and "ensemble" not in reply
    options = site.asked[-1]
    assert options.images == [ImageInput("image/png", PNG)]  # the earlier turn's image is not read
    assert options.history is not None and [t.content for t in options.history] == [
        "예전 사진입니다.",
        "네, 보았습니다.",
    ]
    vision = site.vision_requests()[before:]
    assert len(vision) == 1 and seen_images(vision[0]) == [PNG]


def test_openai_stream_with_an_image(site: Site) -> None:
    response = site.client.post("/v1/chat/completions", json=chat(user(USB, PNG_URL), stream=True))
    assert response.status_code == 200, response.text
    assert response.text.rstrip().endswith("data: [DONE]")
    assert site.asked[-1].images == [ImageInput("image/png", PNG)]


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("data:image/png;base64,@@@", "image_invalid"),
        ("data:image/bmp;base64," + BMP_B64, "image_unsupported_type"),
        ("https://images.example.com/a.png", "image_url_not_allowed"),
    ],
    ids=["garbage", "bmp", "url"],
)
def test_openai_bad_images_are_400_in_openai_shape(site: Site, url: str, code: str) -> None:
    asked = len(site.asked)
    response = site.client.post("/v1/chat/completions", json=chat(user(USB, url)))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["param"] == "messages" and error["type"] == "invalid_request_error"
    assert len(site.asked) == asked


def test_openai_image_without_a_vision_provider(site: Site) -> None:
    response = site.blind_client.post("/v1/chat/completions", json=chat(user(USB, PNG_URL)))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "vision_unavailable"
    # An image in an earlier turn only is no image question.
    earlier = chat(user("사진", PNG_URL), {"role": "assistant", "content": "네."}, user(USB))
    assert site.blind_client.post("/v1/chat/completions", json=earlier).status_code == 200


def test_openai_mode_and_candidates(site: Site) -> None:
    response = site.client.post(
        "/v1/chat/completions", json=chat(user(USB), mode="ensemble", candidates=True, seed=7)
    )
    assert response.status_code == 200, response.text
    assert (site.asked[-1].mode, site.asked[-1].candidates) == ("ensemble", True)
    ensemble = response.json()["ensemble"]
    assert ensemble["chosen"] in ("first", "second") and len(ensemble["candidates"]) == 2
    stream = site.client.post("/v1/chat/completions", json=chat(user(USB), mode="ensemble", stream=True))
    assert stream.status_code == 200, stream.text
    finals = [e.json() for e in parse_sse(stream.text) if e.data != "[DONE]" and "ensemble" in e.json()]
    assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == "stop"
    bad = site.client.post("/v1/chat/completions", json=chat(user(USB), mode="committee"))
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"


# ------------------------------------------------------------------ jobs


def test_ask_jobs_carry_the_mode_and_refuse_images(site: Site) -> None:
    refused = site.client.post("/api/v1/jobs/ask", json={"question": USB, "images": [PNG_B64]})
    assert refused.status_code == 400, refused.text
    assert refused.json()["data"]["code"] == "images_not_supported_in_jobs"
    bad = site.client.post("/api/v1/jobs/ask", json={"question": USB, "mode": "committee"})
    assert bad.status_code == 400 and bad.json()["data"]["errors"][0]["field"] == "mode"
    accepted = site.client.post("/api/v1/jobs/ask", json={"question": USB, "mode": "single", "images": []})
    assert accepted.status_code == 202, accepted.text
    assert finished_job(site, accepted.json()["data"]["job_id"])["state"] == "succeeded"


def finished_job(site: Site, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = site.client.get(f"/api/v1/jobs/{job_id}").json()["data"]
        if job["state"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_an_ask_job_answers_in_its_mode(site: Site) -> None:
    body = {"question": USB, "mode": "ensemble", "candidates": True}
    accepted = site.client.post("/api/v1/jobs/ask", json=body)
    assert accepted.status_code == 202, accepted.text
    job = finished_job(site, accepted.json()["data"]["job_id"])
    assert job["state"] == "succeeded", job
    assert job["result"]["ensemble"]["chosen"] in ("first", "second")
    assert len(job["result"]["ensemble"]["candidates"]) == 2
