"""Evaluation runs in the web app (P13 item 7): the admin-only API over a stored run (list,
show, the sandboxed HTML report), refusals for a viewer and for bad run ids, and the
administration's "평가" tab listing the run in headless Chromium."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from api_server import LiveServer, start_server
from hanrag.engine import Engine
from hanrag.eval.runs import RESULTS, RunStore, runs_root, summarise
from hanrag.settings import Settings
from web_support import CHROMIUM, PASSWORD

RUN_ID = "20260101-000000-tiny"
QUESTION = "USB 사용 승인은 며칠 동안 유효한가요?"
XSS_QUESTION = "<script>window.__pwned = 1</script> 야근 식대 한도는?"


def write_run(data_dir: Path) -> RunStore:
    """A two-question run in the stored format (run.json, results.jsonl, summary.json)."""
    store = RunStore(runs_root(data_dir) / RUN_ID)
    manifest = {
        "run_id": RUN_ID,
        "created_at": "2026-01-01T00:00:00+00:00",
        "dataset": {"name": "tiny", "questions": 2},
        "question_ids": ["usb", "meal"],
        "options": {"k": 5},
        "generator": "extractive",
        "judge": None,
        "sessions": [],
    }
    rows = []
    for qid, question, rank in (("usb", QUESTION, 1), ("meal", XSS_QUESTION, None)):
        hit = 1.0 if rank else 0.0
        rows.append(
            {
                "schema": 1,
                "id": qid,
                "question": question,
                "tags": ["보안"],
                "gold": {"answers": ["30일"], "document_ids": ["d1"]},
                "unit": "document",
                "retrieval": {"k": 5, "first_rank": rank, "hits": []},
                "answer": {"text": "30일입니다.", "citations": []},
                "metrics": {
                    "recall@1": hit,
                    "recall@5": hit,
                    "mrr@5": hit,
                    "contained": hit,
                    "char_f1": 0.5 + hit / 4,
                },
                "latency_ms": {"total": 12.0},
            }
        )
    store.write_manifest(manifest)
    (store.directory / RESULTS).write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    store.write_summary(summarise(manifest, rows))
    return store


@dataclass
class Site:
    server: LiveServer

    def token(self, username: str) -> str:
        response = httpx.post(
            f"{self.server.url}/api/v1/auth/login",
            json={"username": username, "password": PASSWORD},
            timeout=30,
        )
        return str(response.raise_for_status().json()["access_token"])

    def client(self, username: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url, headers={"authorization": f"Bearer {self.token(username)}"}, timeout=30
        )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data_dir = tmp_path_factory.mktemp("eval-web")
    write_run(data_dir)
    # Something outside the runs root that a traversal would reach.
    (data_dir / "eval" / "run.json").write_text("{}", encoding="utf-8")
    engine = Engine(Settings(data_dir=data_dir, auth={"mode": "token"}))
    engine.auth.create_user("admin", PASSWORD, role="admin")
    engine.auth.create_user("lee", PASSWORD, role="viewer")
    server = start_server(engine)
    try:
        yield Site(server)
    finally:
        server.stop()
        engine.close()


def test_admin_lists_shows_and_opens_the_report(site: Site) -> None:
    with site.client("admin") as admin:
        runs = admin.get("/api/v1/admin/eval/runs").raise_for_status().json()
        assert [r["run_id"] for r in runs] == [RUN_ID]
        assert runs[0]["questions"] == 2 and runs[0]["metrics"]["recall@1"] == 0.5

        shown = admin.get(f"/api/v1/admin/eval/runs/{RUN_ID}").raise_for_status().json()
        assert shown["manifest"]["dataset"]["name"] == "tiny"
        assert shown["summary"]["metrics"]["char_f1"]["n"] == 2

        response = admin.get(f"/api/v1/admin/eval/runs/{RUN_ID}/report").raise_for_status()
        assert response.headers["content-type"].startswith("text/html")
        csp = response.headers["content-security-policy"]
        assert csp.startswith("sandbox allow-scripts;") and "allow-same-origin" not in csp
        assert "default-src 'none'" in csp and "'sha256-" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "content-disposition" not in response.headers
        assert QUESTION in response.text
        assert "<script>window.__pwned" not in response.text  # escaped by the report

        saved = admin.get(f"/api/v1/admin/eval/runs/{RUN_ID}/report", params={"download": "true"})
        assert saved.headers["content-disposition"].startswith("attachment;")


def test_viewer_and_bad_ids_are_refused(site: Site) -> None:
    with site.client("lee") as viewer:
        for path in ("", f"/{RUN_ID}", f"/{RUN_ID}/report"):
            assert viewer.get(f"/api/v1/admin/eval/runs{path}").status_code == 403
    with httpx.Client(base_url=site.server.url, timeout=30) as anonymous:
        assert anonymous.get("/api/v1/admin/eval/runs").status_code == 401
    with site.client("admin") as admin:
        for bad in ("..", ".hidden", "a%2F..%2F..", "..%2Feval", "%2E%2E", "x%00y", "no-such-run", "a" * 81):
            status = admin.get(f"/api/v1/admin/eval/runs/{bad}/report").status_code
            assert status in (400, 404), (bad, status)
            assert admin.get(f"/api/v1/admin/eval/runs/{bad}").status_code in (400, 404), bad


def test_the_evaluation_tab_lists_the_run(site: Site) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            context = browser.new_context()
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{site.server.url}/#/admin")
            page.wait_for_selector("#login:not([hidden])")
            page.fill("#login-user", "admin")
            page.fill("#login-password", PASSWORD)
            page.click("#login-submit")
            page.wait_for_selector("#view-admin:not([hidden])")
            page.click("#tab-eval")
            row = page.locator(f"#admin-panel tr[data-run='{RUN_ID}']")
            row.wait_for()
            cells = row.locator("td").all_inner_texts()
            assert RUN_ID in cells[0] and "tiny" in cells[0]
            assert cells[2] == "2/2"
            assert cells[3:8] == ["0.500", "0.500", "0.500", "0.500", "0.625"]
            with context.expect_page() as opened:
                row.locator("button.eval-open").click()
            report = opened.value
            report.wait_for_load_state()
            assert report.url.startswith("blob:")
            assert QUESTION in report.inner_text("body")
            assert report.evaluate("() => window.__pwned === undefined")
            assert not errors, errors
        finally:
            browser.close()
