"""The HTML report of an evaluation run (P13): it renders the run (metrics, distributions,
drill-down with per-signal scores, baseline deltas), escapes every text from the data (a
``<script>`` in a question or passage stays text), fetches nothing (no ``http`` in any
``src``/``href``, a CSP that allows only its own script), and its filters work offline in
Chromium."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import SampleCorpus
from hanrag.cli.main import app
from hanrag.eval.dataset import Item
from hanrag.eval.report import SCRIPT, report_data, write_report
from hanrag.eval.runs import RESULTS, RunStore
from test_eval_run import USB, run, split, write_tiny  # noqa: F401  (split: the fixture)

XSS = '<script>window.__pwned = 1; alert("x")</script>'
CHROMIUM = os.environ.get("HANRAG_TEST_CHROMIUM", "/usr/bin/chromium")


class Page(HTMLParser):
    """Every element, every script's text, every attribute and the visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.scripts: list[str] = []
        self.attributes: list[tuple[str, str, str]] = []
        self.text: list[str] = []
        self._in_script = False
        self.meta: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            self.attributes.append((tag, name, value or ""))
        if tag == "meta":
            self.meta.append({k: v or "" for k, v in attrs})
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data
        else:
            self.text.append(data)


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


@pytest.fixture
def runs(split: Any, samples_engine: SampleCorpus, tmp_path: Path) -> tuple[RunStore, RunStore]:  # noqa: F811
    """A run over the samples with markup in a question, a tag and a gold passage, and a
    baseline that scored one question higher."""
    items = [
        Item("xss", f"{XSS} {USB}", ("30일",), ("정보보안정책.txt",), tags=("<b>보안</b>",)),
        Item("meal", "야근 식대 한도는 얼마인가요?", ("12,000원",), ("경비처리지침.html",), tags=("경비",)),
        Item(
            "nowhere",
            "회의실 예약은 어떻게 하나요?",
            gold_passages=("</details><img src=https://evil.example/x.png onerror=alert(1)>",),
        ),
    ]
    current = RunStore(tmp_path / "runs" / "current")
    run(split(), items, current)
    baseline = RunStore(tmp_path / "runs" / "baseline")
    shutil.copytree(current.directory, baseline.directory)
    rows = baseline.rows()
    for row in rows:
        if row["id"] == "meal":
            row["metrics"]["char_f1"] = min(1.0, row["metrics"]["char_f1"] + 0.5)
    (baseline.directory / RESULTS).write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    baseline.write_summary({**(baseline.summary() or {}), "run_id": "baseline"})
    return current, baseline


def test_report_renders_escapes_and_fetches_nothing(runs: tuple[RunStore, RunStore], tmp_path: Path) -> None:
    current, baseline = runs
    out, json_out = tmp_path / "report" / "r.html", tmp_path / "report" / "r.json"
    data = write_report(current, out, baseline=baseline, json_out=json_out)
    html = out.read_text(encoding="utf-8")
    page = parse(html)

    # The one script is the report's own; the question's script is text, not an element.
    assert page.scripts == [SCRIPT]
    assert not any("__pwned" in script or "alert" in script for script in page.scripts)
    assert XSS not in html and "&lt;script&gt;window.__pwned" in html
    visible = "".join(page.text)
    assert XSS in visible  # shown to the reader as it was written
    assert "<img src=https://evil.example/x.png onerror=alert(1)>" in visible
    assert "img" not in page.tags and "iframe" not in page.tags and "link" not in page.tags
    # Nothing is fetched: no src or href at all, no url() or @import in the style.
    assert not [a for a in page.attributes if a[1] in ("src", "href", "srcset", "action", "formaction")]
    assert not [a for a in page.attributes if a[1].startswith("on")]  # no event handler attributes
    assert "url(" not in html.split("</style>")[0] and "@import" not in html
    csp = next(m["content"] for m in page.meta if m.get("http-equiv") == "Content-Security-Policy")
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    assert "default-src 'none'" in csp and f"'sha256-{digest}'" in csp

    # The header, the metric table with the baseline, the charts and the drill-down.
    assert current.manifest()["dataset"]["fingerprint"] in visible
    assert "paired delta" in visible and "95% CI" in visible
    assert page.tags.count("svg") == 3  # latency, char F1, rank of the first gold hit
    views = {a[2] for a in page.attributes if a[0] == "details" and a[1] == "data-view"}
    assert any("worse" in v for v in views) and any("miss" in v for v in views)
    options = [a[2] for a in page.attributes if a[0] == "option" and a[1] == "value"]
    assert "<b>보안</b>" in options and "worse" in options
    for column in ("fused", "dense", "bm25", "bigram"):
        assert f"<th>{column}</th>" in html

    # The JSON: the same data.
    saved = json.loads(json_out.read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(data, default=str))
    by_id = {q["id"]: q for q in saved["questions"]}
    assert by_id["meal"]["worse"]["metrics"]["char_f1"] < 0 and by_id["xss"]["worse"] is None
    assert by_id["xss"]["question"].startswith(XSS)
    hit = by_id["xss"]["retrieval"]["hits"][0]
    assert {"score", "dense", "bm25", "bigram"} <= set(hit)
    assert saved["baseline"]["run_id"] == "baseline" and saved["config"]["fusion"] == "weighted"
    ranks = saved["distributions"]["first_rank"]
    assert ranks["n"] == 3 and [b["label"] for b in ranks["bars"]][-1] == "miss"
    assert saved["distributions"]["char_f1"]["n"] == 2


def test_report_without_baseline(runs: tuple[RunStore, RunStore]) -> None:
    data = report_data(runs[0])
    assert data["baseline"] is None and all(q["worse"] is None for q in data["questions"])
    assert [q["id"] for q in data["questions"]] == ["xss", "meal", "nowhere"]  # dataset order


@pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)), reason="Chromium is not installed"
)
def test_report_opens_offline_in_a_browser(runs: tuple[RunStore, RunStore], tmp_path: Path) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api")
    out = tmp_path / "r.html"
    write_report(runs[0], out, baseline=runs[1])
    requests: list[str] = []
    errors: list[str] = []
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            page = browser.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on(
                "console", lambda message: errors.append(message.text) if message.type == "error" else None
            )
            page.goto(out.as_uri())
            assert page.evaluate("window.__pwned") is None  # the question's script never ran
            count = page.locator("#f-count")
            assert count.text_content() == "3"
            page.select_option("#f-view", "worse")
            assert count.text_content() == "1"
            assert page.locator("details.q:not([hidden])").count() == 1
            page.select_option("#f-view", "")
            page.select_option("#f-tag", "<b>보안</b>")
            assert count.text_content() == "1"
            page.select_option("#f-tag", "")
            page.fill("#f-text", "식대 한도")  # searches the questions (and ids)
            assert count.text_content() == "1"
            page.fill("#f-text", "")
            page.click("#f-open")
            assert page.locator("details.q[open]").count() == 3
        finally:
            browser.close()
    assert requests == [out.as_uri()]  # the file itself, nothing else
    assert errors == []


def test_report_cli(tmp_path: Path) -> None:
    data, tiny = tmp_path / "data", write_tiny(tmp_path / "tiny", questions=2)

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(app, ["--data-dir", str(data), *args], catch_exceptions=False)

    assert invoke("eval", "run", str(tiny), "--name", "a", "--retrieval-only").exit_code == 0
    html, js = tmp_path / "a.html", tmp_path / "a.json"
    result = invoke("eval", "report", "a", "--out", str(html), "--json", str(js))
    assert result.exit_code == 0, result.stderr
    assert "<svg" in html.read_text(encoding="utf-8")
    assert json.loads(js.read_text(encoding="utf-8"))["run_id"] == "a"
    missing = invoke("eval", "report", "a")
    assert missing.exit_code == 2 and missing.stderr.startswith("error [invalid_option] ")
    unknown = invoke("eval", "report", "nope", "--out", str(html))
    assert unknown.exit_code != 0 and "run_not_found" in unknown.stderr
