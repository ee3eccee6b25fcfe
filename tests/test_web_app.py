"""The web app (issue P12) in a real browser: Debian's Chromium driven by Playwright against
a real HTTP server on loopback (uvicorn serving ``create_app`` in auth mode ``token``, the
extractive generator paced so that answers stream), and ``hanrag serve`` itself.

Each test watches the page (tests/web_support.Watch): a console or page error, a dialog
(the app never opens one: an ``alert`` is an injected script running) or an unexpected
HTTP error fails it. Screenshots of every page go to ``test-artifacts/screenshots/``.

Measured and printed (``-s`` not needed):

* first contentful paint of the chat page (Performance API ``paint`` entries);
* SSE delta to screen, two ways: (1) the app's own marks behind ``?perf=1``: the time a
  network chunk holding deltas was read from the fetch stream, to a task queued from the
  animation frame after the DOM update (that frame has been painted by then); (2) from
  outside the app: an init script wraps ``ReadableStreamDefaultReader.read`` to stamp the
  first chunk holding ``event: delta`` and a MutationObserver stamps the first answer text
  in the DOM;
* the shipped JS and CSS, gzip-compressed.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import statistics
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_server import LiveServer, SlowExtractive, start_server
from hanrag.engine import Engine
from hanrag.llm.extractive import ExtractiveGenerator
from web_support import (
    BEACON,
    CHROMIUM,
    PASSWORD,
    SCREENSHOTS,
    SECRET_FILE,
    SECRET_TITLE,
    XSS_FILE,
    Watch,
    build_site,
    expected_auth_probe,
    shipped_sizes,
    wait_until,
)

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)),
    reason="Chromium is not installed (apt-get install chromium; .ci/run installs it)",
)

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
QUESTION = "입사 3년차 연차는 며칠인가요?"


class WordStreamingExtractive(SlowExtractive):
    """The extractive answer streamed word by word, as a language model streams tokens: the
    page must show text growing even when the answer is a single sentence."""

    async def stream(self, request: Any) -> Any:
        import asyncio
        import re

        async for chunk in ExtractiveGenerator.stream(self, request):
            if not chunk.text:
                yield chunk
                continue
            for word in re.findall(r"\S+\s*|\s+", chunk.text):
                await asyncio.sleep(self.delay)
                yield type(chunk)(text=word)
            if chunk.usage is not None or chunk.finish_reason is not None:
                yield type(chunk)(text="", usage=chunk.usage, finish_reason=chunk.finish_reason)


# The targets (first paint 500 ms, delta to screen 50 ms) are printed as measured and
# asserted with this factor of headroom: test machines are shared and sometimes busy.
SLACK = 2

# Stamps, from outside the app, the first SSE chunk holding a delta and the first answer
# text in the DOM (see the module docstring).
PROBE = """
(() => {
  // growth: the answer's text lengths seen while it was still streaming (aria-busy).
  const probe = (window.__probe = { deltaChunk: null, firstText: null, growth: [] });
  const read = ReadableStreamDefaultReader.prototype.read;
  const decoder = new TextDecoder();
  ReadableStreamDefaultReader.prototype.read = function (...args) {
    return read.apply(this, args).then((result) => {
      if (probe.deltaChunk === null && result && result.value) {
        try {
          if (decoder.decode(result.value).includes("event: delta")) probe.deltaChunk = performance.now();
        } catch (e) {}
      }
      return result;
    });
  };
  const observer = new MutationObserver(() => {
    const message = [...document.querySelectorAll(".msg-ai")].pop();
    const body = message && message.querySelector(".answer-body");
    const length = body ? body.textContent.trim().length : 0;
    if (!length) return;
    if (message.getAttribute("aria-busy") === "true" && !probe.growth.includes(length)) probe.growth.push(length);
    if (probe.firstText === null && probe.deltaChunk !== null) probe.firstText = performance.now();
  });
  document.addEventListener("DOMContentLoaded", () =>
    observer.observe(document.body, { subtree: true, childList: true, characterData: true }));
})();
"""


@dataclass
class Site:
    engine: Engine
    live: LiveServer
    docs: Path

    @property
    def url(self) -> str:
        return self.live.url

    def token(self, username: str, password: str = PASSWORD) -> str:
        answer = httpx.post(
            f"{self.url}/api/v1/auth/login", json={"username": username, "password": password}, timeout=30
        )
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    def api(self, username: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token(username)}"}, timeout=60
        )

    def has_route(self, method: str, path: str, param: str | None = None) -> bool:
        """Whether the server has the route (and its query parameter ``param``): routes
        other work adds are used once they exist."""
        paths = httpx.get(f"{self.url}/openapi.json", timeout=30).json()["paths"]
        operation = paths.get(path, {}).get(method.lower())
        if operation is None:
            return False
        return param is None or any(p.get("name") == param for p in operation.get("parameters", []))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, shared_cache_path: Path) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("web")
    engine = build_site(base / "data", base / "docs", shared_cache_path)
    # Answers arrive piece by piece, as from a language model.
    engine.answers.generator = WordStreamingExtractive(0.04, max_sentences=2)
    live = start_server(engine)
    try:
        yield Site(engine, live, base / "docs")
    finally:
        live.stop()
        engine.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Any:
    def say(line: str) -> None:
        with capsys.disabled():
            print(f"\n[web] {line}")

    return say


class Tab:
    """A fresh browser context and page, watched; closed (and checked) by the test."""

    def __init__(self, browser: Any, site: Site, viewport: dict[str, int] = DESKTOP, probe: bool = False):
        self.site = site
        self.context = browser.new_context(viewport=viewport, locale="ko-KR", timezone_id="Asia/Seoul")
        if probe:
            self.context.add_init_script(PROBE)
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.watch = Watch().attach(self.page)

    def open(self, path: str = "/") -> Tab:
        self.page.goto(self.site.url + path)
        return self

    def sign_in(self, username: str, password: str = PASSWORD, path: str = "/") -> Tab:
        self.open(path)
        self.page.wait_for_selector("#login:not([hidden])")
        self.page.fill("#login-user", username)
        self.page.fill("#login-password", password)
        self.page.click("#login-submit")
        self.page.wait_for_selector("#app:not([hidden])")
        return self

    def ask(self, question: str) -> Any:
        """Type and send a question (Enter); the answer element once it is complete."""
        count = self.page.locator(".msg-ai.settled").count()
        self.page.fill("#question", question)
        self.page.press("#question", "Enter")
        self.wait_js(f"document.querySelectorAll('.msg-ai.settled').length > {count}")
        return self.page.locator(".msg-ai").last

    def wait_js(self, expression: str, timeout: float = 20.0) -> None:
        """Until ``expression`` is true in the page (polled with evaluate: the app's
        Content-Security-Policy forbids the string evaluation of wait_for_function)."""
        wait_until(lambda: bool(self.page.evaluate(expression)), timeout=timeout)

    def shot(self, name: str, full_page: bool = False) -> None:
        """A screenshot; ``full_page``: the whole of the page's own scrolling area (its
        views scroll inside the window, so the window is made as tall for the shot)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        viewport = self.page.viewport_size
        if full_page and viewport:
            height = self.page.evaluate(
                "Math.max(...[...document.querySelectorAll('.view:not([hidden])')].map("
                "v => v.scrollHeight + v.getBoundingClientRect().top))"
            )
            self.page.set_viewport_size(
                {"width": viewport["width"], "height": int(max(height, viewport["height"]))}
            )
        try:
            self.page.screenshot(path=str(SCREENSHOTS / name))
        finally:
            if full_page and viewport:
                self.page.set_viewport_size(viewport)

    def close(self, allowed_http: Any = expected_auth_probe) -> None:
        try:
            self.watch.assert_clean(allowed_http)
        finally:
            self.context.close()


def test_sign_in_stream_citation_and_first_paint(site: Site, chromium: Any, report: Any) -> None:
    tab = Tab(chromium, site, probe=True)
    page = tab.page
    tab.open("/?perf=1")
    page.wait_for_selector("#login:not([hidden])")
    tab.shot("login.png")
    assert page.locator("#login-user").evaluate("el => el === document.activeElement")
    # A wrong password is a Korean message in the page, the form stays.
    page.fill("#login-user", "lee")
    page.fill("#login-password", "wrong-password")
    page.click("#login-submit")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "아이디 또는 비밀번호가 올바르지 않습니다" in page.inner_text("#login-error")
    page.fill("#login-password", PASSWORD)
    page.press("#login-password", "Enter")
    page.wait_for_selector("#app:not([hidden])")
    # A viewer: the chat only.
    assert page.is_visible("#nav-chat") and not page.is_visible("#nav-documents")
    assert not page.is_visible("#nav-admin")
    assert page.inner_text("#user-role") == "열람자"

    # The answer streams: its text grows on screen before the answer is complete.
    page.fill("#question", QUESTION)
    page.press("#question", "Enter")
    answer = page.locator(".msg-ai.settled").last
    answer.wait_for()
    growth = page.evaluate("window.__probe.growth")
    assert len(growth) >= 2 and growth == sorted(growth), growth
    assert page.input_value("#question") == ""  # taken by the server, so emptied
    assert "16일" in answer.inner_text()
    cites = answer.locator("button.cite")
    assert cites.count() >= 1
    tab.shot("chat.png")

    # The citation panel: title, file, the passage with the cited sentence highlighted.
    cites.first.focus()
    page.keyboard.press("Enter")
    panel = page.locator("#cite-panel")
    panel.wait_for(state="visible")
    assert "연차휴가 규정" in page.inner_text("#cite-title")
    assert "연차규정.md" in panel.inner_text()
    marked = panel.locator("mark").all_inner_texts()
    assert any("16일" in text for text in marked), marked
    assert panel.locator("a", has_text="원본 파일 내려받기").count() == 1
    tab.shot("citation.png")
    if site.has_route("get", "/api/v1/documents/{document_id}/original"):
        with page.expect_download() as download:
            panel.locator("a", has_text="원본 파일 내려받기").click()
        assert download.value.suggested_filename == "연차규정.md"
    page.keyboard.press("Escape")
    panel.wait_for(state="hidden")
    assert cites.first.evaluate("el => el === document.activeElement")  # focus returns

    # The conversation is listed; rename it.
    item = page.locator(".session").first
    item.wait_for()
    assert QUESTION[:10] in item.inner_text()
    if site.has_route("patch", "/api/v1/sessions/{session_id}"):
        item.locator("button[aria-label$='이름 바꾸기']").click()
        page.fill("dialog input", "연차 문의")
        page.click("dialog button[type=submit]")
        tab.wait_js("document.querySelector('.session .session-title').textContent === '연차 문의'")

    # Delta to screen: the app's marks and the outside probe.
    marks = page.evaluate("window.__hanragPerf")
    assert marks, "no delta was measured"
    delays = [m["shown"] - m["arrived"] for m in marks]
    probe = page.evaluate("window.__probe")
    assert probe["deltaChunk"] is not None and probe["firstText"] is not None
    outside = probe["firstText"] - probe["deltaChunk"]
    report(
        f"delta→screen (app marks, after paint): first {delays[0]:.1f} ms, median "
        f"{statistics.median(delays):.1f} ms, max {max(delays):.1f} ms over {len(delays)} deltas; "
        f"probe (first delta chunk → first text in the DOM): {outside:.1f} ms"
    )
    # Targets: 50 ms (asserted with SLACK: the test machine may be shared and busy).
    assert delays[0] <= 50 * SLACK, delays
    assert outside <= 50 * SLACK, outside

    # First paint of the chat page (signed in: the refresh token brings the session back).
    page.reload()
    page.wait_for_selector("#app:not([hidden])")
    fcp = page.evaluate(
        "performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint')?.startTime"
    )
    nav = page.evaluate("performance.getEntriesByType('navigation')[0].toJSON()")
    report(
        f"first contentful paint of the chat page: {fcp:.0f} ms (DOMContentLoaded "
        f"{nav['domContentLoadedEventEnd']:.0f} ms)"
    )
    assert fcp is not None and fcp <= 500 * SLACK
    assert page.inner_text("#user-name") == "lee"  # still signed in after the reload
    tab.close(lambda status, url: expected_auth_probe(status, url) or url.endswith("/auth/login"))


def test_feedback_is_stored(site: Site, chromium: Any) -> None:
    if not site.has_route("post", "/api/v1/feedback"):
        pytest.skip("POST /api/v1/feedback is not in this server yet")
    tab = Tab(chromium, site).sign_in("lee")
    page = tab.page
    answer = tab.ask("연차는 다음 해로 이월할 수 있나요?")
    answer.locator("button[aria-label='싫어요']").click()
    answer.locator(".fb-status", has_text="평가를 저장했습니다").wait_for()
    answer.locator("select").select_option("outdated")
    answer.locator("textarea").fill("이월 기한이 바뀌었습니다")
    answer.locator("button", has_text="의견 보내기").click()
    answer.locator(".fb-status", has_text="의견을 보냈습니다").wait_for()
    assert answer.locator("button[aria-label='싫어요']").get_attribute("aria-pressed") == "true"
    with site.api("admin") as admin:
        items = admin.get("/api/v1/feedback").raise_for_status().json()["items"]
    mine = [item for item in items if item["principal"] == "user:lee" or item.get("principal") == "lee"]
    assert mine, items
    latest = mine[0]
    assert latest["rating"] == "down" and latest["reason"] == "outdated"
    assert latest["comment"] == "이월 기한이 바뀌었습니다"
    assert "이월" in latest["question"] and latest["answer"]
    assert page.locator(".msg-ai").count() == 1
    tab.close()


def test_upload_then_find_it_by_a_question(site: Site, chromium: Any, tmp_path: Path) -> None:
    tab = Tab(chromium, site).sign_in("kim", path="/#/documents")
    page = tab.page
    assert page.is_visible("#nav-documents") and not page.is_visible("#nav-admin")
    page.wait_for_selector("#view-documents:not([hidden])")
    trip = tmp_path / "출장비규정.md"
    trip.write_text("# 출장비 규정\n\n해외 출장의 일비는 하루 80달러로 정한다.\n", encoding="utf-8")
    broken = tmp_path / "깨진파일.pdf"
    broken.write_bytes(b"%PDF-1.4 this is not a real pdf")
    page.set_input_files("#file-input", [str(trip), str(broken)])
    ok_row = page.locator(".upload-row", has_text="출장비규정.md")
    ok_row.locator(".upload-status", has_text="색인 완료").wait_for()
    bad_row = page.locator(".upload-row", has_text="깨진파일.pdf")
    bad_row.locator(".upload-status", has_text="실패").wait_for()
    assert "실패:" in bad_row.inner_text()  # a Korean reason per file
    page.locator("#doc-rows tr", has_text="출장비 규정").wait_for()
    if not site.has_route("get", "/api/v1/documents", param="q"):
        pytest.skip("GET /api/v1/documents?q= (search) is not in this server yet")
    # Search by file name.
    page.fill("#doc-search", "출장비")
    page.press("#doc-search", "Enter")
    tab.wait_js("document.querySelectorAll('#doc-rows tr').length === 1")
    assert "출장비규정.md" in page.inner_text("#doc-rows")
    page.fill("#doc-search", "")
    page.press("#doc-search", "Enter")
    page.locator("#doc-rows tr", has_text="연차휴가 규정").wait_for()
    # A background job for two more files: its progress reaches the end.
    page.check("#up-background")
    notes = [tmp_path / "회의록1.md", tmp_path / "회의록2.md"]
    for i, path in enumerate(notes, 1):
        path.write_text(f"# 회의록 {i}\n\n제{i}차 회의에서 예산안을 검토했다.\n", encoding="utf-8")
    page.set_input_files("#file-input", [str(p) for p in notes])
    job = page.locator(".job").first
    job.locator(".badge", has_text="완료").wait_for(timeout=60_000)
    assert "파일 2/2" in job.inner_text()
    tab.shot("documents.png", full_page=True)
    # ACL edit, re-index and delete, each through the page's own dialogs.
    row = page.locator("#doc-rows tr", has_text="출장비 규정")
    row.locator("button", has_text="권한").click()
    page.fill("dialog input", "public, group:hr")
    page.click("dialog button[type=submit]")
    page.locator("#doc-rows tr", has_text="출장비 규정").locator("td", has_text="group:hr").wait_for()
    page.locator("#doc-rows tr", has_text="회의록 1").locator("button", has_text="재색인").click()
    page.locator(".toast", has_text="다시 색인").wait_for()
    page.locator("#doc-rows tr", has_text="회의록 2").locator("button", has_text="삭제").click()
    page.click("dialog button[type=submit]")
    page.locator("#doc-rows tr", has_text="회의록 2").wait_for(state="detached")
    # The new document answers a question, with its citation.
    page.click("#nav-chat")
    answer = tab.ask("해외 출장 일비는 얼마인가요?")
    assert "80달러" in answer.inner_text()
    answer.locator("button.cite").first.click()
    assert "출장비규정.md" in page.inner_text("#cite-panel")
    if not site.has_route("get", "/api/v1/documents/{document_id}/original"):
        pytest.skip("GET /api/v1/documents/{id}/original is not in this server yet")
    # Once the document is gone, its original is not offered: a Korean message, no error page.
    with site.api("kim") as kim:
        found = kim.get("/api/v1/documents", params={"q": "출장비"}).raise_for_status().json()["items"]
        kim.delete(f"/api/v1/documents/{found[0]['document_id']}").raise_for_status()
    page.locator("#cite-panel a", has_text="원본 파일 내려받기").click()
    page.locator(".cite-download-msg", has_text="원본 파일을 내려받을 수 없습니다").wait_for()
    # The broken file's refusal (422) and the deleted original (404) are the HTTP errors.
    tab.close(
        lambda status, url: (
            expected_auth_probe(status, url)
            or (status == 422 and url.endswith("/documents"))
            or (status == 404 and url.endswith("/original"))
        )
    )


def test_a_user_never_sees_another_users_document(site: Site, chromium: Any) -> None:
    question = "청룡 프로젝트의 인수 대상과 인력 재배치는?"
    # park may read it: the test's question does find it.
    owner = Tab(chromium, site).sign_in("park")
    answer = owner.ask(question)
    assert "백호전자" in answer.inner_text()
    owner.close()

    # kim (an editor too) never sees its title, file name or text anywhere.
    tab = Tab(chromium, site).sign_in("kim")
    page = tab.page
    tab.ask(question)
    tab.ask("연차 이월 규정과 청룡 프로젝트")
    page.click("#filters summary")  # the document choices of the filter
    tab.wait_js("document.querySelectorAll('#f-docs option').length > 0")
    seen = [page.content()]
    page.press("#f-docs", "Escape")  # closes the filter panel
    assert not page.is_visible("#f-docs")
    page.locator(".msg-ai.settled .cite").first.click()
    seen.append(page.content())
    page.click("#nav-documents")
    page.wait_for_selector("#doc-rows tr")
    seen.append(page.content())
    if site.has_route("get", "/api/v1/documents", param="q"):
        page.fill("#doc-search", "청룡")
        page.press("#doc-search", "Enter")
        tab.wait_js("document.querySelector('#doc-pager-text').textContent.includes('0건')")
        seen.append(page.content())
    page.click("#nav-chat")
    page.locator(".session-open").first.click()
    page.wait_for_selector(".msg-ai.settled")
    seen.append(page.content())
    for secret in (SECRET_TITLE, SECRET_FILE, "백호전자", "1조 2천억"):
        for html in seen:
            assert secret not in html
        for url, body in tab.watch.api_bodies():
            assert secret not in body, url
    tab.close()


def test_scripts_links_and_beacons_render_inert(site: Site, chromium: Any) -> None:
    tab = Tab(chromium, site).sign_in("lee")
    page = tab.page
    question = "보안 점검 <script>alert('q')</script><img src=x onerror=alert('q2')> 결과는?"
    answer = tab.ask(question)
    text = answer.inner_text()
    assert "<script>alert('doc')</script>" in text or "onerror" in text, text
    # The question shows as the characters typed.
    assert "<script>alert('q')</script>" in page.locator(".msg-user").last.inner_text()
    answer.locator("button.cite").first.click()
    panel = page.locator("#cite-panel")
    panel.wait_for(state="visible")
    assert "<img src=x onerror=" in page.inner_text("#cite-title")
    assert XSS_FILE in panel.inner_text()
    tab.ask("보안 점검 링크와 비콘 이미지는?")
    page.wait_for_timeout(300)
    dom = page.evaluate(
        """() => ({
          scripts: [...document.scripts].map(s => s.src),
          images: [...document.querySelectorAll('main img')].map(i => i.src),
          handlers: [...document.querySelectorAll('main *')].filter(
            el => [...el.attributes].some(a => a.name.startsWith('on'))).length,
          links: [...document.querySelectorAll('main a[href]')].map(a => a.getAttribute('href')),
        })"""
    )
    assert all(src.endswith("/app.js") for src in dom["scripts"]), dom
    assert dom["images"] == [] and dom["handlers"] == 0, dom
    assert not [href for href in dom["links"] if href.lower().strip().startswith("javascript")], dom
    assert "[이미지: 비콘]" in page.inner_text("#messages") or "비콘" in page.inner_text("#messages")
    # An answer (as a language model might echo it) full of raw HTML and hostile Markdown.
    hostile = (
        "# 제목 <script>alert('h')</script>\n\n"
        "[누르기](javascript:alert('js')) [데이터](data:text/html,<script>alert(1)</script>) "
        "[안전](https://example.com/a) <img src=x onerror=alert('img')> "
        f"![비콘]({BEACON}) <a href=\"javascript:alert('a')\">a</a> **굵게** `code` [1]\n\n"
        "| 항목 | 값 |\n|---|---|\n| <b>x</b> | [y](javascript:alert('t')) |\n"
    )
    reference = {
        "n": 1,
        "chunk_id": "c1",
        "document_id": "d1",
        "source": "<img src=x onerror=alert('src')>.md",
        "file_name": "<img src=x onerror=alert('file')>.md",
        "title": "<script>alert('ref')</script>",
        "page": None,
        "sheet": None,
        "date": "2024-01-01",
        "score": 1.0,
        "snippet": "<script>alert('snip')</script>",
        "text": f"<script>alert('text')</script> ![b]({BEACON})",
    }
    body = (
        f"event: references\ndata: {json.dumps({'references': [reference], 'plan': {}})}\n\n"
        f"event: delta\ndata: {json.dumps({'text': hostile})}\n\n"
        f"event: done\ndata: {json.dumps({'answer': hostile, 'citations': [], 'session_id': None, 'timings': {}})}\n\n"
    )
    page.route(
        "**/api/v1/ask",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=body),
    )
    answer = tab.ask("마크다운 시험")
    page.unroute("**/api/v1/ask")
    links = answer.locator(".answer-body a").evaluate_all(
        "links => links.map(a => [a.getAttribute('href'), a.rel, a.target, a.textContent])"
    )
    assert links == [["https://example.com/a", "noopener noreferrer", "_blank", "안전"]], links
    assert "[이미지: 비콘]" in answer.inner_text()
    assert "<script>alert('h')</script>" in answer.inner_text()
    assert answer.locator(".answer-body strong").inner_text() == "굵게"
    assert answer.locator(".answer-body table td").count() == 2
    answer.locator("button.cite").click()
    assert "<script>alert('ref')</script>" in page.inner_text("#cite-title")
    assert "<script>alert('text')</script>" in page.inner_text("#cite-panel")
    tab.shot("xss.png")
    handlers = page.evaluate(
        "[...document.querySelectorAll('body *')].filter("
        "el => [...el.attributes].some(a => a.name.startsWith('on'))).length"
    )
    assert handlers == 0
    assert page.evaluate("document.querySelectorAll('main img, main script, main iframe').length") == 0
    assert not [url for url in tab.watch.requests if BEACON in url or url.endswith("/x")]
    assert not [
        url for url in tab.watch.requests if not url.startswith(site.url) and not url.startswith("data:")
    ]
    assert not tab.watch.dialogs
    tab.close()


SSE_CUT = (
    'event: references\ndata: {"references": [], "plan": {}}\n\n'
    'event: delta\ndata: {"text": "연결이 끊기기 전까지 받은 "}\n\n'
    'event: delta\ndata: {"text": "답변입니다."}\n\n'
)
TABLE = {
    "title": "월별 출고 건수",
    "source": "shop",
    "sql": "SELECT month, shipments FROM shipments_by_month",
    "columns": ["month", "shipments"],
    "rows": [["2024-01", 12], ["2024-02", 18], ["2024-03", 9]],
    "truncated": False,
    "row_count": 3,
    "chart": {"type": "line", "title": "월별 출고 건수", "x": "month", "y": ["shipments"]},
}
SSE_TABLE = (
    "event: references\ndata: "
    + json.dumps({"references": [], "plan": {"route": "table"}, "table": TABLE}, ensure_ascii=False)
    + '\n\nevent: delta\ndata: {"text": "조회 결과는 3행입니다. 표를 확인해 주십시오."}\n\n'
    + "event: done\ndata: "
    + json.dumps(
        {
            "answer": "조회 결과는 3행입니다. 표를 확인해 주십시오.",
            "citations": [],
            "session_id": None,
            "timings": {},
            "fallback": None,
            "table": TABLE,
        },
        ensure_ascii=False,
    )
    + "\n\n"
)
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def test_errors_cuts_stop_and_tables_are_shown_plainly(site: Site, chromium: Any, tmp_path: Path) -> None:
    tab = Tab(chromium, site).sign_in("lee")
    page = tab.page

    # A connection dropped mid-stream keeps what arrived and offers a retry.
    page.route(
        "**/api/v1/ask",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=SSE_CUT),
    )
    answer = tab.ask("연결 끊김 시험")
    assert "연결이 끊기기 전까지 받은 답변입니다." in answer.inner_text()
    assert "연결이 중간에 끊겼습니다" in answer.inner_text()
    page.unroute("**/api/v1/ask")
    answer.locator("button", has_text="다시 묻기").click()
    tab.wait_js("document.querySelectorAll('.msg-ai.settled').length === 2")

    # A server error (problem+json) is a Korean message, never a blank page.
    problem = {
        "type": "x",
        "title": "internal error",
        "status": 500,
        "detail": "boom",
        "code": "internal_error",
    }
    page.route(
        "**/api/v1/ask",
        lambda route: route.fulfill(
            status=500, content_type="application/problem+json", body=json.dumps(problem)
        ),
    )
    answer = tab.ask("서버 오류 시험")
    assert "서버 내부 오류가 발생했습니다" in answer.inner_text()
    page.unroute("**/api/v1/ask")

    # The table route: a table and its chart.
    page.route(
        "**/api/v1/ask",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=SSE_TABLE),
    )
    answer = tab.ask("월별 출고 건수 추이")
    assert answer.locator(".answer-table table tbody tr").count() == 3
    assert answer.locator("svg.chart polyline").count() == 1
    page.unroute("**/api/v1/ask")

    # An image question without a vision model: the server's 400, in Korean; the question stays.
    image = tmp_path / "사진.png"
    image.write_bytes(PNG)
    page.set_input_files("#image-input", str(image))
    page.locator("#image-list .chip").wait_for()
    page.fill("#question", "이 사진은 무엇인가요?")
    page.press("#question", "Enter")
    tab.wait_js("document.querySelectorAll('.msg-ai.settled').length === 5")
    assert "이미지 분석 모델이 설정되어 있지 않습니다" in page.locator(".msg-ai").last.inner_text()
    assert page.input_value("#question") == "이 사진은 무엇인가요?"
    page.fill("#question", "")
    page.click("#image-list .chip button")  # the image stays attached until taken off
    assert page.locator("#image-list .chip").count() == 0

    # Stop generation: what arrived stays, with a notice and a retry.
    site.engine.answers.generator = WordStreamingExtractive(0.5, max_sentences=3)
    try:
        page.fill("#question", QUESTION)
        page.press("#question", "Enter")
        page.wait_for_selector("#stop:not([hidden])")
        tab.wait_js(
            "document.querySelector('.msg-ai:last-of-type .answer-body').textContent.trim().length > 0"
        )
        page.click("#stop")
        stopped = page.locator(".msg-ai").last
        stopped.locator(".notice-stopped").wait_for()
        assert stopped.locator("button", has_text="다시 묻기").count() == 1
        assert page.is_visible("#send")
    finally:
        site.engine.answers.generator = WordStreamingExtractive(0.04, max_sentences=2)
    tab.close(lambda status, url: expected_auth_probe(status, url) or status in (400, 500))


SSE_FALLBACK = (
    'event: references\ndata: {"references": [], "plan": {}}\n\n'
    'event: delta\ndata: {"text": "문서에서 찾은 문장입니다."}\n\n'
    'event: done\ndata: {"answer": "문서에서 찾은 문장입니다.", "citations": [], "session_id": null, '
    '"timings": {}, "fallback": "llm_timeout: 언어 모델 서버에 연결할 수 없어 문서에서 직접 찾은 문장으로 답합니다."}\n\n'
)


def test_rag_off_filters_and_notices(site: Site, chromium: Any) -> None:
    tab = Tab(chromium, site).sign_in("lee")
    page = tab.page
    sent: list[Any] = []
    page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/api/v1/ask") else None)
    # Filters go with the question.
    page.click("#filters summary")
    page.fill("#f-date-from", "2020-01-01")
    page.fill("#f-meta", "dept=인사")
    page.press("#f-meta", "Escape")
    answer = tab.ask(QUESTION)
    assert sent[-1]["filters"] == {"date_from": "2020-01-01", "metadata": {"dept": "인사"}}
    # No document has that key: the server's 400, in Korean.
    assert "알 수 없는 메타데이터 항목" in answer.inner_text()
    page.click("#filters summary")
    page.click("#f-clear")
    page.press("#f-meta", "Escape")
    # "Not found" is said plainly.
    answer = tab.ask("화성 탐사선의 연료는 무엇인가요?")
    assert "filters" not in sent[-1]
    assert answer.locator(".notice-notfound").count() == 1
    # RAG off: the question goes without retrieval (the extractive generator says it cannot).
    page.uncheck("#rag")
    answer = tab.ask("안녕하세요?")
    assert sent[-1]["rag"] is False and "filters" not in sent[-1]
    assert answer.locator(".answer-body").inner_text().strip()
    page.check("#rag")
    # A fallback answer says so.
    page.route(
        "**/api/v1/ask",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=SSE_FALLBACK),
    )
    answer = tab.ask("폴백 시험")
    assert "언어 모델 서버에 연결할 수 없어" in answer.locator(".notice-fallback").inner_text()
    page.unroute("**/api/v1/ask")
    tab.close(
        lambda status, url: expected_auth_probe(status, url) or (status == 400 and url.endswith("/ask"))
    )


JOB = {
    "job_id": "0123456789abcdef0123456789abcdef",
    "kind": "ingest",
    "state": "running",
    "progress": {"files_done": 3, "files_total": 10, "counts": {"added": 3}, "failures": []},
    "created_at": "2025-01-01T00:00:00+00:00",
}


def test_job_pause_resume_and_cancel(site: Site, chromium: Any) -> None:
    """The job card's controls (the job's answers are played back: a real ingestion of a
    few files ends before a pause could be clicked)."""
    tab = Tab(chromium, site).sign_in("kim", path="/#/documents")
    page = tab.page
    job = dict(JOB)
    calls: list[str] = []

    def answer(route: Any) -> None:
        action = route.request.url.rsplit("/", 1)[-1]
        calls.append(f"{route.request.method} {action}")
        if route.request.method == "POST":
            job["state"] = {"pause": "paused", "resume": "running", "cancel": "cancelled"}[action]
        route.fulfill(status=200, json={"status": 200, "message": "OK", "data": job})

    page.route(f"**/api/v1/jobs/{JOB['job_id']}**", answer)
    page.fill("#job-id", JOB["job_id"])
    page.press("#job-id", "Enter")
    card = page.locator(".job").first
    card.locator(".badge", has_text="진행 중").wait_for()
    assert "파일 3/10" in card.inner_text()
    card.locator("button", has_text="일시 중지").click()
    card.locator(".badge", has_text="일시 중지").wait_for()
    card.locator("button", has_text="다시 시작").click()
    card.locator(".badge", has_text="진행 중").wait_for()
    card.locator("button", has_text="취소").click()
    card.locator(".badge", has_text="취소됨").wait_for()
    assert card.locator("button").count() == 0
    assert {"POST pause", "POST resume", "POST cancel"} <= set(calls)
    tab.close()


def test_an_expired_sign_in_keeps_the_typed_question(site: Site, chromium: Any) -> None:
    site.engine.auth.create_user("choi", PASSWORD, role="viewer")
    tab = Tab(chromium, site).sign_in("choi")
    page = tab.page
    # An access token that stops working is replaced with the refresh token, and the
    # request retried, without a sign-in.
    login = next(r for r in tab.watch.responses if r.url.endswith("/api/v1/auth/login") and r.ok)
    site.engine.auth.logout(login.json()["access_token"], None)
    answer = tab.ask(QUESTION)
    assert "16일" in answer.inner_text()
    assert page.is_hidden("#login")
    typed = "경력 입사자의 연차는 어떻게 계산하나요?"
    page.fill("#question", typed)
    # A password reset ends every session at once (access and refresh tokens).
    site.engine.auth.reset_password("choi", PASSWORD + "-new")
    page.press("#question", "Enter")
    page.wait_for_selector("#login:not([hidden])")
    assert "로그인이 만료되었습니다" in page.inner_text("#login-note")
    assert page.input_value("#login-user") == "choi"
    page.fill("#login-password", PASSWORD + "-new")
    page.press("#login-password", "Enter")
    page.wait_for_selector("#login", state="hidden")
    assert page.input_value("#question") == typed  # nothing typed was lost
    answer = tab.ask(typed)
    assert answer.locator(".answer-body").inner_text().strip()
    # Logout ends the session; the sign-in form is back.
    page.click("#logout")
    page.wait_for_selector("#login:not([hidden])")
    assert page.is_hidden("#app")
    tab.close(lambda status, url: status == 401)


def test_administration(site: Site, chromium: Any) -> None:
    tab = Tab(chromium, site).sign_in("admin", path="/#/admin")
    page = tab.page
    page.wait_for_selector("#view-admin:not([hidden])")
    if site.has_route("get", "/api/v1/admin/stats"):  # the dashboard's data
        page.wait_for_selector("#admin-panel svg.chart")
        assert page.locator("#admin-panel .stat").count() >= 6
    tab.shot("admin.png", full_page=True)
    # Users: the list, then a new one.
    page.click("#tab-users")
    page.locator("#admin-panel td", has_text="park").wait_for()
    page.fill("#admin-panel form[aria-label='사용자 추가'] input[name=username]", "yoon")
    page.fill("#admin-panel form[aria-label='사용자 추가'] input[name=password]", PASSWORD)
    page.click("#admin-panel form[aria-label='사용자 추가'] button[type=submit]")
    page.locator("#admin-panel td", has_text="yoon").wait_for()
    # Tabs by keyboard.
    page.focus("#tab-users")
    page.keyboard.press("ArrowRight")
    assert page.locator("#tab-groups").get_attribute("aria-selected") == "true"
    page.locator("#admin-panel td", has_text="legal").wait_for()
    # An API key is shown once.
    page.click("#tab-keys")
    form = page.locator("#admin-panel form[aria-label='API 키 만들기']")
    form.wait_for()
    form.locator("input").first.fill("kim")
    form.locator("button[type=submit]").click()
    key = page.locator(".key-once .key-value")
    key.wait_for()
    assert key.inner_text().startswith("hrk_")
    page.click("#tab-audit")
    page.locator("#admin-panel td", has_text="login").first.wait_for()
    page.click("#tab-models")
    page.locator("#admin-panel dl.tree").first.wait_for()
    if site.has_route("get", "/api/v1/feedback"):
        page.click("#tab-feedback")
        page.locator("#admin-panel h2", has_text="답변 평가").wait_for()
    tab.close()


def test_phone_width(site: Site, chromium: Any) -> None:
    tab = Tab(chromium, site, viewport=PHONE).sign_in("lee")
    page = tab.page
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], "the page scrolls sideways"
    assert not page.is_visible("#sessions")  # the conversation list is a drawer
    answer = tab.ask(QUESTION)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    tab.shot("phone.png")
    answer.locator("button.cite").first.click()
    page.locator("#cite-panel").wait_for(state="visible")
    box = page.locator("#cite-panel").bounding_box()
    assert box is not None and box["width"] >= PHONE["width"] - 1
    tab.shot("phone-citation.png")
    page.click(".cite-close")
    page.click("#drawer-toggle")
    page.locator("#sessions").wait_for(state="visible")
    assert page.locator("#drawer-toggle").get_attribute("aria-expanded") == "true"
    page.wait_for_timeout(400)  # the drawer slides in
    tab.shot("phone-conversations.png")
    tab.close()


def test_hanrag_serve_serves_the_app(chromium: Any, report: Any, tmp_path: Path) -> None:
    """``hanrag serve`` itself (auth mode none): the app at /, its headers, the API winning."""
    from socket import socket

    with socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANRAG_")} | {
        "HANRAG_DATA_DIR": str(tmp_path / "data"),
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    command = [sys.executable, "-c", "from hanrag.cli.main import app; app(prog_name='hanrag')"]
    log_path = tmp_path / "serve.log"
    log = log_path.open("w+b")
    server = subprocess.Popen(
        [*command, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if server.poll() is not None:
                raise AssertionError(log_path.read_text(errors="replace")[-3000:])
            try:
                return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=180, step=0.5)
        index = httpx.get(f"{url}/", timeout=30)
        assert index.status_code == 200 and "text/html" in index.headers["content-type"]
        csp = index.headers["content-security-policy"]
        for directive in (
            "default-src 'self'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ):
            assert directive in csp
        assert index.headers["x-content-type-options"] == "nosniff"
        script = httpx.get(f"{url}/app.js", timeout=30)
        assert "javascript" in script.headers["content-type"]
        assert script.headers["content-encoding"] == "gzip"  # httpx asks for it; and decodes it
        served = 0
        for name in ("app.js", "api.js", "chat.js", "answer.js", "markdown.js", "styles.css"):
            with httpx.stream("GET", f"{url}/{name}", timeout=30) as answer:
                answer.read()
                served += answer.num_bytes_downloaded
        assert httpx.get(f"{url}/__init__.py", timeout=30).status_code == 404
        # The API, OpenAI-compatible and legacy routes win over the app.
        wrong = httpx.get(f"{url}/api/v1/ask", timeout=30)
        assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"
        missing = httpx.post(f"{url}/v2/chat/completions", json={}, timeout=30)
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"
        assert httpx.get(f"{url}/v1/models", timeout=30).status_code == 200

        # No sign-in in auth mode none; the implicit user administers.
        paints = []
        for _ in range(2):  # a just-started server, then a warm one; each time an empty cache
            context = chromium.new_context(viewport=DESKTOP, locale="ko-KR")
            page = context.new_page()
            watch = Watch().attach(page)
            page.goto(f"{url}/")
            page.wait_for_selector("#app:not([hidden])")
            assert page.is_hidden("#login") and page.is_hidden("#logout")
            assert page.is_visible("#nav-documents") and page.is_visible("#nav-admin")
            paints.append(
                page.evaluate(
                    "performance.getEntriesByType('paint')"
                    ".find(e => e.name === 'first-contentful-paint')?.startTime"
                )
            )
            watch.assert_clean()
            context.close()
        sizes = shipped_sizes()
        report(
            f"hanrag serve: first contentful paint of the chat page {paints[1]:.0f} ms "
            f"(target 500 ms; {paints[0]:.0f} ms on the first load after the server started)"
        )
        report(
            f"shipped JS+CSS: {sizes['raw'] / 1024:.1f} KiB raw, {sizes['gzip'] / 1024:.1f} KiB gzip "
            f"(all files, each compressed as served; the chat page's core modules: {served / 1024:.1f} KiB "
            "on the wire)"
        )
        assert paints[1] <= 500 * SLACK
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        log.close()


MARKDOWN_CASES = [
    (
        "# 제목\n\n본문 **굵게** *기울임* `코드`",
        '<h3 class="md-heading">제목</h3><p>본문 <strong>굵게</strong> <em>기울임</em> <code>코드</code></p>',
    ),
    (
        "- 가\n- 나\n  - 다\n\n1. 첫째\n2. 둘째",
        "<ul><li>가</li><li><div>나</div><ul><li>다</li></ul></li></ul><ol><li>첫째</li><li>둘째</li></ol>",
    ),
    ("```\n<b>그대로</b>\n```", "<pre><code>&lt;b&gt;그대로&lt;/b&gt;</code></pre>"),
    (
        "| 가 | 나 |\n|:--|--:|\n| 1 | 2 |",
        '<div class="table-wrap"><table><thead><tr><th scope="col" style="text-align: left;">가</th><th scope="col" style="text-align: right;">나</th></tr></thead><tbody><tr><td style="text-align: left;">1</td><td style="text-align: right;">2</td></tr></tbody></table></div>',
    ),
    ("<script>alert(1)</script>", "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"),
    (
        "[a](javascript:alert(1)) [b](JaVaScRiPt:alert(1)) [c](java\tscript:x) [d](/relative) [e](mailto:a@b.kr)",
        '<p>a b [c](java	script:x) d <a href="mailto:a@b.kr" target="_blank" rel="noopener noreferrer">e</a></p>',
    ),
    ("![x](https://evil.example/p.png)", '<p><span class="md-image">[이미지: x]</span></p>'),
    (
        "출처 [1, 2] 참고 https://example.com/a.",
        '<p>출처 <span class="cite-group"><b>1</b><b>2</b></span> 참고 <a href="https://example.com/a" target="_blank" rel="noopener noreferrer">https://example.com/a</a>.</p>',
    ),
    ("> 인용 <i>x</i>", "<blockquote><p>인용 &lt;i&gt;x&lt;/i&gt;</p></blockquote>"),
]


def test_markdown_renderer(site: Site, chromium: Any) -> None:
    """The renderer itself, in the page (its module imported as the app imports it)."""
    tab = Tab(chromium, site).open("/")
    rendered = tab.page.evaluate(
        """async (cases) => {
          const { renderMarkdown } = await import('/markdown.js');
          const cite = (n) => { const b = document.createElement('b'); b.textContent = String(n); return b; };
          return cases.map((source) => {
            const box = document.createElement('div');
            box.appendChild(renderMarkdown(source, { cite }));
            return box.innerHTML;
          });
        }""",
        [source for source, _ in MARKDOWN_CASES],
    )
    for (source, expected), html in zip(MARKDOWN_CASES, rendered, strict=True):
        assert html == expected, source
    tab.close()


def test_modules_stay_small() -> None:
    from hanrag.web import WEB_DIR

    for path in WEB_DIR.glob("*.js"):
        assert len(path.read_text(encoding="utf-8").splitlines()) < 600, path.name
