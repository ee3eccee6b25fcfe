"""Helpers of the web app's browser tests (tests/test_web_app.py).

* :data:`CHROMIUM`: Debian's Chromium (``apt-get install chromium``; ``.ci/run`` installs
  it); Playwright drives it by its executable path and never downloads a browser.
* :func:`build_site` writes a few Korean documents (one readable by ``park`` only, one full
  of script and beacon payloads), ingests them into an engine in auth mode ``token`` and
  creates the users of the tests.
* :class:`Watch` records what a page does: console errors, page errors, dialogs (each
  one is a failure: the app never opens one), every request URL and the bodies of the
  API's responses.
"""

from __future__ import annotations

import gzip
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hanrag.embed.cache import EmbeddingCache
from hanrag.engine import Engine
from hanrag.ingest.model import IngestRequest
from hanrag.settings import Settings
from hanrag.web import WEB_DIR

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "correct-horse-battery"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"

# Readable by everyone: the answers of the chat tests come from here.
LEAVE_DOC = """# 연차휴가 규정

## 연차 일수
입사 1년 미만 직원은 1개월 개근 시 1일의 유급휴가를 받는다.
입사 3년차 직원의 연차휴가는 16일이다.
3년 이상 근속한 직원은 2년마다 1일씩 가산한 휴가를 받으며, 총 휴가 일수는 25일을 한도로 한다.

## 연차 이월
사용하지 못한 연차는 다음 해 3월 말까지 최대 5일 이월할 수 있다.
이월 신청은 인사팀 포털에서 12월 20일까지 해야 한다.
"""

# Readable by park only (user:park): nobody else may ever see its title or file name.
SECRET_TITLE = "청룡 인수합병 극비 계획"
SECRET_FILE = "청룡계획_극비.md"
SECRET_DOC = f"""# {SECRET_TITLE}

청룡 프로젝트의 인수 대상은 백호전자이며 인수 가격은 1조 2천억 원이다.
청룡 프로젝트의 연차휴가 관련 인력 재배치는 2025년 3월에 시작한다.
"""

BEACON = "http://127.0.0.1:9/beacon.png"
# Payloads in a document (its title too) that the answer and the citation panel quote.
XSS_FILE = "보안점검_페이로드.md"
XSS_DOC = f"""# 보안 점검 <img src=x onerror="alert('title')">

보안 점검 결과 <script>alert('doc')</script> 스크립트 태그는 실행되면 안 된다.
보안 점검 이미지 <img src=x onerror="alert('img')"> 태그도 실행되면 안 된다.
보안 점검 링크 [여기를 누르세요](javascript:alert('link')) 도 눌러도 실행되면 안 된다.
보안 점검 비콘 ![비콘]({BEACON}) 이미지는 불러오면 안 된다.
"""

USERS = {
    "admin": ("admin", []),
    "kim": ("editor", ["hr"]),
    "lee": ("viewer", ["sales"]),
    "park": ("editor", ["legal"]),
}


def build_site(data_dir: Path, docs_dir: Path, cache_path: Path) -> Engine:
    """An engine in auth mode ``token`` with the test documents ingested and the users made."""
    settings = Settings(data_dir=data_dir, auth={"mode": "token"})
    engine = Engine(settings)
    engine.__dict__["embedding_cache"] = EmbeddingCache(cache_path)
    docs_dir.mkdir(parents=True, exist_ok=True)
    for name, text, acl in (
        ("연차규정.md", LEAVE_DOC, ["public"]),
        (SECRET_FILE, SECRET_DOC, ["user:park"]),
        (XSS_FILE, XSS_DOC, ["public"]),
    ):
        path = docs_dir / name
        path.write_text(text, encoding="utf-8")
        report = engine.ingest(IngestRequest(paths=[path], acl=acl))
        failed = [o for o in report.outcomes if o.status == "failed"]
        assert not failed, failed
    for name, (role, groups) in USERS.items():
        engine.auth.create_user(name, PASSWORD, role=role, groups=groups)
    return engine


@dataclass
class Watch:
    """What one page did (see the module docstring)."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    responses: list[Any] = field(default_factory=list)
    # Browser notes on HTTP errors ("Failed to load resource: ... status of 401"), as
    # (status, url): a test says which ones it expects.
    http_errors: list[tuple[int, str]] = field(default_factory=list)

    def attach(self, page: Any) -> Watch:
        def on_console(message: Any) -> None:
            if message.type != "error":
                return
            text = message.text
            if text.startswith("Failed to load resource: the server responded with a status of"):
                status = int(text.split("status of", 1)[1].split()[0])
                self.http_errors.append((status, (message.location or {}).get("url", "")))
                return
            self.console_errors.append(text)

        def on_dialog(dialog: Any) -> None:
            self.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        def on_response(response: Any) -> None:
            if "/api/" in response.url or "/v1/" in response.url:
                self.responses.append(response)

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("dialog", on_dialog)
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("response", on_response)
        return self

    def api_bodies(self) -> list[tuple[str, str]]:
        """(url, text) of every API response the page got (read once the page is done)."""
        bodies = []
        for response in self.responses:
            try:
                bodies.append((response.url, response.text()))
            except Exception:  # a stream the page aborted: no body to read
                bodies.append((response.url, ""))
        return bodies

    def assert_clean(self, allowed_http: Callable[[int, str], bool] = lambda status, url: False) -> None:
        """No console or page error, no dialog, and only the HTTP errors a test expects."""
        assert not self.dialogs, f"a dialog opened: {self.dialogs}"
        assert not self.page_errors, f"errors in the page: {self.page_errors}"
        assert not self.console_errors, f"console errors: {self.console_errors}"
        unexpected = [(s, u) for s, u in self.http_errors if not allowed_http(s, u)]
        assert not unexpected, f"unexpected HTTP errors: {unexpected}"


def expected_auth_probe(status: int, url: str) -> bool:
    """The start-up probe of a signed-out page: ``/auth/me`` answers 401 in token mode."""
    return status == 401 and url.endswith("/api/v1/auth/me")


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError("the condition did not hold in time")


def shipped_sizes() -> dict[str, int]:
    """Bytes of the web app's JS and CSS, raw and gzip-compressed (level 9, file by file)."""
    raw = gz = 0
    for path in sorted(WEB_DIR.iterdir()):
        if path.suffix in (".js", ".css"):
            data = path.read_bytes()
            raw += len(data)
            gz += len(gzip.compress(data, 9))
    return {"raw": raw, "gzip": gz}
