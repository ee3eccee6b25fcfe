"""One run as a self-contained HTML report (and the same data as JSON).

The report is one file that opens offline: inline CSS, charts as inline SVG, a few lines
of inline JavaScript for the filters; nothing is fetched (no CDN, font, image or link to
another origin). A Content-Security-Policy meta tag allows only that one script (by its
sha256) and no network at all, so even a question or passage that carries markup could
not run or load anything — and every text from the data (questions, passages, answers,
titles, tags, judge verdicts, ids) is HTML-escaped on its way in anyway.

Contents: the run's header (dataset and its fingerprint, date, generator, judge, a
summary of the configuration), the metric table (with the baseline's means, the paired
deltas and their bootstrap CI when ``baseline`` is given), the metrics per tag, the
latency per stage, histograms (per-question latency, character F1, rank of the first gold
hit), and a drill-down per question: the question, its gold (answers, ids, passages),
the retrieved passages with the fused and per-signal scores and the gold units each
matches, the answer, its citations and references, the judge's verdicts, the metrics
(and the baseline's), timings and usage. Filters: tag, text in the question or id, and a view (worse than
the baseline, retrieval misses, errors, char F1 below 0.5).

:func:`report_data` is the JSON (``hanrag eval report RUN --json OUT``);
:func:`render_html` turns it into the page.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from html import escape
from pathlib import Path
from typing import Any

from hanrag.eval.runs import RunStore, compare, metric_order, summarise

SCHEMA = 1
CHART_W, CHART_H = 360, 150


def _ordered_rows(manifest: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {qid: n for n, qid in enumerate(manifest.get("question_ids") or [])}
    return sorted(rows, key=lambda r: order.get(r["id"], len(order)))


def config_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The settings that shape the figures, from the run's masked configuration."""
    config = manifest.get("config") or {}
    retrieval, chunk, embed = (
        config.get("retrieval") or {},
        config.get("chunk") or {},
        config.get("embed") or {},
    )
    llm = config.get("llm") or {}
    providers = [
        f"{p.get('name')}:{p.get('model')}" for p in llm.get("providers") or [] if isinstance(p, dict)
    ]
    options = manifest.get("options") or {}
    return {
        "k": options.get("k"),
        "retrieval_only": options.get("retrieval_only"),
        "concurrency": options.get("concurrency"),
        "fusion": retrieval.get("fusion"),
        "weights": {
            "dense": retrieval.get("dense_weight"),
            "bm25": retrieval.get("bm25_weight"),
            "bigram": retrieval.get("bigram_weight"),
        },
        "rrf_k": retrieval.get("rrf_k"),
        "candidates": retrieval.get("candidates"),
        "chunk": {"max_tokens": chunk.get("max_tokens"), "overlap_tokens": chunk.get("overlap_tokens")},
        "embed": f"{embed.get('backend')}:{embed.get('model')}" if embed else None,
        "index": (config.get("index") or {}).get("backend"),
        "llm": llm.get("backend"),
        "providers": providers,
        "generator": manifest.get("generator"),
        "judge": manifest.get("judge"),
        "hanrag_version": manifest.get("hanrag_version"),
        "sweep": manifest.get("sweep"),
    }


def histogram(values: list[float], bins: int, low: float, high: float) -> dict[str, Any]:
    """Equal-width bins over [low, high] (the top edge in the last bin)."""
    width = (high - low) / bins if high > low else 1.0
    counts = [0] * bins
    for value in values:
        index = min(bins - 1, max(0, int((value - low) / width))) if high > low else 0
        counts[index] += 1
    edges = [round(low + i * width, 6) for i in range(bins + 1)]
    return {"edges": edges, "counts": counts, "n": len(values)}


def distributions(rows: list[dict[str, Any]], k: int | None) -> dict[str, Any]:
    answered = [r for r in rows if not r.get("error")]
    latency: list[float] = []
    stage = "total" if any("total" in (r.get("latency_ms") or {}) for r in answered) else "search"
    for row in answered:
        value = (row.get("latency_ms") or {}).get(stage)
        if isinstance(value, int | float):
            latency.append(float(value))
    f1 = [float(v) for r in answered if isinstance(v := (r.get("metrics") or {}).get("char_f1"), int | float)]
    ranks: dict[str, int] = {}
    cut = int(k or 10)
    for row in answered:
        if row.get("unit") in (None, "none") or "retrieval" not in row:
            continue
        first = row["retrieval"].get("first_rank")
        key = str(first) if isinstance(first, int) else "miss"
        ranks[key] = ranks.get(key, 0) + 1
    rank_bars = [{"label": str(n), "count": ranks.get(str(n), 0)} for n in range(1, cut + 1)]
    rank_bars.append({"label": "miss", "count": ranks.get("miss", 0)})
    top = max(latency) if latency else 0.0
    return {
        "latency": {"stage": stage, **histogram(latency, 20, 0.0, top or 1.0)} if latency else None,
        "char_f1": histogram(f1, 10, 0.0, 1.0) if f1 else None,
        "first_rank": {"bars": rank_bars, "n": sum(b["count"] for b in rank_bars)} if ranks else None,
    }


def report_data(store: RunStore, baseline: RunStore | None = None) -> dict[str, Any]:
    """Everything the report shows, as JSON-ready data."""
    manifest = store.manifest()
    rows = _ordered_rows(manifest, store.rows())
    summary = store.summary() or summarise(manifest, rows)
    base: dict[str, Any] | None = None
    worse: dict[str, dict[str, Any]] = {}
    baseline_rows: dict[str, dict[str, Any]] = {}
    if baseline is not None:
        before = baseline.rows()
        result = compare(before, rows, worst=max(len(rows), 1))
        worse = {w["id"]: w for w in result["worse"]}
        baseline_rows = {r["id"]: r for r in before}
        base = {
            "run_id": baseline.run_id,
            "summary": baseline.summary() or summarise(baseline.manifest(), before),
            "comparison": result,
        }
    questions = []
    for row in rows:
        entry = dict(row)
        entry["worse"] = worse.get(row["id"])
        old = baseline_rows.get(row["id"])
        entry["baseline_metrics"] = None if old is None else old.get("metrics")
        questions.append(entry)
    return {
        "schema": SCHEMA,
        "run_id": store.run_id,
        "run_dir": str(store.directory),
        "created_at": manifest.get("created_at"),
        "updated_at": summary.get("updated_at"),
        "dataset": manifest.get("dataset"),
        "config": config_summary(manifest),
        "corpus": manifest.get("corpus"),
        "summary": summary,
        "baseline": base,
        "distributions": distributions(rows, summary.get("k")),
        "questions": questions,
    }


# ---------------------------------------------------------------- HTML


def _e(value: Any) -> str:
    """Escaped text of anything (None as an em dash)."""
    return "—" if value is None else escape(str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _e(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<div class="tw"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _bars_svg(
    title: str, labels: list[str], counts: list[int], x_caption: str, tips: list[str] | None = None
) -> str:
    """A bar chart as inline SVG (every label escaped; a tooltip per bar)."""
    top = max(counts) if counts else 0
    n = max(len(counts), 1)
    left, bottom, plot_h = 30, 28, CHART_H - 40
    bar_w = (CHART_W - left - 6) / n
    parts = [
        f'<svg class="chart" viewBox="0 0 {CHART_W} {CHART_H}" width="{CHART_W}" height="{CHART_H}" '
        f'role="img" aria-label="{_e(title)}">',
        f'<text x="{left}" y="11" class="ct">{_e(title)}</text>',
        f'<line x1="{left}" y1="{CHART_H - bottom}" x2="{CHART_W - 4}" y2="{CHART_H - bottom}" class="ax"/>',
        f'<text x="2" y="{CHART_H - bottom}" class="cl">0</text>',
        f'<text x="2" y="{CHART_H - bottom - plot_h + 8}" class="cl">{top}</text>',
    ]
    for i, (label, count) in enumerate(zip(labels, counts, strict=True)):
        tip = tips[i] if tips else label
        h = 0 if not top else plot_h * count / top
        x = left + i * bar_w
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{CHART_H - bottom - h:.1f}" width="{max(bar_w - 2, 1):.1f}" '
            f'height="{h:.1f}" class="bar"><title>{_e(tip)}: {count}</title></rect>'
        )
        if n <= 12 or i % max(1, n // 6) == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{CHART_H - bottom + 11}" class="cl" '
                f'text-anchor="middle">{_e(label)}</text>'
            )
    parts.append(
        f'<text x="{CHART_W / 2:.0f}" y="{CHART_H - 3}" class="cl" text-anchor="middle">{_e(x_caption)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _charts(dist: dict[str, Any]) -> str:
    out = []
    latency = dist.get("latency")
    if latency:
        edges = latency["edges"]
        bins = range(len(latency["counts"]))
        out.append(
            _bars_svg(
                f"latency ({latency['stage']}), n={latency['n']}",
                [f"{edges[i]:.0f}" for i in bins],
                latency["counts"],
                "ms (bin start)",
                [f"{edges[i]:.1f}–{edges[i + 1]:.1f} ms" for i in bins],
            )
        )
    f1 = dist.get("char_f1")
    if f1:
        edges = f1["edges"]
        labels = [f"{edges[i]:.1f}" for i in range(len(f1["counts"]))]
        out.append(_bars_svg(f"char F1, n={f1['n']}", labels, f1["counts"], "char F1 (bin start)"))
    ranks = dist.get("first_rank")
    if ranks:
        bars = ranks["bars"]
        out.append(
            _bars_svg(
                f"rank of the first gold hit, n={ranks['n']}",
                [b["label"] for b in bars],
                [b["count"] for b in bars],
                "rank",
            )
        )
    return f'<div class="charts">{"".join(out)}</div>' if out else "<p>no distributions</p>"


def _metric_rows(data: dict[str, Any]) -> str:
    metrics = data["summary"].get("metrics") or {}
    base = data.get("baseline")
    if base is None:
        rows = [[_e(n), _num(m.get("mean"), 4), _e(m.get("n"))] for n, m in metrics.items()]
        return _table(["metric", "mean", "n"], rows, "metrics")
    old = base["summary"].get("metrics") or {}
    paired = base["comparison"].get("metrics") or {}
    rows = []
    for name in metric_order(set(metrics) | set(old)):
        p = paired.get(name) or {}
        delta = p.get("delta")
        cls = "neg" if isinstance(delta, float) and delta < 0 else "pos" if delta else ""
        rows.append(
            [
                _e(name),
                _num((metrics.get(name) or {}).get("mean"), 4),
                _e((metrics.get(name) or {}).get("n")),
                _num((old.get(name) or {}).get("mean"), 4),
                f'<span class="{cls}">{_num(delta, 4)}</span>',
                f"[{_num(p.get('low'), 4)}, {_num(p.get('high'), 4)}]",
                _num(p.get("p_worse"), 3),
            ]
        )
    headers = ["metric", "mean", "n", f"baseline {base['run_id']}", "paired delta", "95% CI", "P(worse)"]
    return _table(headers, rows, "metrics")


def _header(data: dict[str, Any]) -> str:
    s, c, d = data["summary"], data["config"], data.get("dataset") or {}
    weights = c.get("weights") or {}
    facts = [
        ("dataset", f"{_e(d.get('name'))} ({_e(d.get('kind'))}, {_e(d.get('questions'))} questions)"),
        ("dataset fingerprint", f"<code>{_e(d.get('fingerprint'))}</code>"),
        ("corpus fingerprint", f"<code>{_e(d.get('corpus_fingerprint'))}</code>"),
        ("created", _e(data.get("created_at"))),
        ("updated", _e(data.get("updated_at"))),
        ("done", f"{_e(s.get('done'))}/{_e(s.get('questions'))}, errors {_e(s.get('errors'))}"),
        ("k", _e(c.get("k")) + (" (retrieval only)" if c.get("retrieval_only") else "")),
        (
            "retrieval",
            f"{_e(c.get('fusion'))}, weights d/b/g {_e(weights.get('dense'))}/{_e(weights.get('bm25'))}/"
            f"{_e(weights.get('bigram'))}, rrf_k {_e(c.get('rrf_k'))}, candidates {_e(c.get('candidates'))}",
        ),
        (
            "chunks",
            f"{_e(c['chunk'].get('max_tokens'))} tokens, overlap {_e(c['chunk'].get('overlap_tokens'))}",
        ),
        ("embedding", _e(c.get("embed"))),
        ("index", _e(c.get("index"))),
        ("generator", _e(c.get("generator")) + f" (llm {_e(c.get('llm'))})"),
        ("providers", _e(", ".join(c.get("providers") or []) or None)),
        ("judge", _e(c.get("judge"))),
        ("hanrag", _e(c.get("hanrag_version"))),
    ]
    timing = s.get("timing") or {}
    facts.append(
        (
            "time",
            f"wall {_num(timing.get('wall_s'), 1)} s, engine {_num(timing.get('engine_s'), 1)} s, "
            f"eval overhead {_num(timing.get('eval_overhead_pct'), 2)} %, tokens "
            f"{_e((s.get('usage') or {}).get('prompt_tokens'))}/{_e((s.get('usage') or {}).get('completion_tokens'))}, "
            f"cost {_e(s.get('cost'))}",
        )
    )
    items = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in facts)
    return f"<dl class='facts'>{items}</dl>"


def _list(values: list[Any], limit: int = 600) -> str:
    if not values:
        return "—"
    return "<ul>" + "".join(f"<li>{_e(str(v)[:limit])}</li>" for v in values) + "</ul>"


def _mark(entry: dict[str, Any]) -> str:
    """The gold units a hit, citation or reference matches."""
    return "✓ " + _e(", ".join(entry["relevant"])) if entry.get("relevant") else ""


def _judge(judged: dict[str, Any] | None) -> str:
    if not judged:
        return ""
    parts = []
    for name, entry in judged.items():
        details: list[str] = []
        for claim in entry.get("claims") or []:
            mark = "✓" if claim.get("supported") else "✗"
            details.append(f"{mark} {_e(claim.get('claim'))}")
        for statement in entry.get("statements") or []:
            mark = "✓" if statement.get("found") else "✗"
            details.append(f"{mark} {_e(statement.get('statement'))}")
        if entry.get("useful"):
            details.append("useful contexts: " + " ".join("✓" if u else "✗" for u in entry["useful"]))
        if any(key in entry for key in ("tp", "fp", "fn")):
            details.append(f"TP {_e(entry.get('tp'))}, FP {_e(entry.get('fp'))}, FN {_e(entry.get('fn'))}")
        if entry.get("error"):
            details.append(f"error {_e(entry['error'].get('code'))}: {_e(entry['error'].get('message'))}")
        inner = "".join(f"<li>{d}</li>" for d in details)
        parts.append(f"<li><b>{_e(name)}</b> {_num(entry.get('score'))}<ul>{inner}</ul></li>")
    return "<h4>judge</h4><ul class='judge'>" + "".join(parts) + "</ul>"


def _question(q: dict[str, Any], k: int | None) -> str:
    metrics = q.get("metrics") or {}
    retrieval = q.get("retrieval") or {}
    first = retrieval.get("first_rank")
    has_gold = q.get("unit") not in (None, "none")
    miss = has_gold and "retrieval" in q and first is None
    f1 = metrics.get("char_f1")
    badges = []
    if has_gold and "retrieval" in q:
        badges.append(
            f'<span class="b {"bad" if miss else "ok"}">{"miss" if miss else f"rank {_e(first)}"}</span>'
        )
    if isinstance(f1, int | float):
        badges.append(f'<span class="b">F1 {_num(f1, 2)}</span>')
    if q.get("error"):
        badges.append(f'<span class="b bad">error {_e(q["error"].get("code"))}</span>')
    if q.get("worse"):
        badges.append(f'<span class="b bad">worse {_num(q["worse"].get("drop"), 3)}</span>')
    gold = q.get("gold") or {}
    hits = [
        [
            _e(h.get("rank")),
            _mark(h),
            _e(h.get("title")),
            _e(h.get("source")) + (f" p.{_e(h.get('page'))}" if h.get("page") else ""),
            _num(h.get("score"), 4),
            _num(h.get("dense"), 4),
            _num(h.get("bm25"), 4),
            _num(h.get("bigram"), 4),
            f"<div class='snip'>{_e(h.get('text'))}</div>",
        ]
        for h in retrieval.get("hits") or []
    ]
    body = [
        f"<p class='qt'>{_e(q.get('question'))}</p>",
        f"<p>tags: {_e(', '.join(q.get('tags') or []) or None)} · unit: {_e(q.get('unit'))}"
        + (f" · unresolved gold: {_e(', '.join(q['unresolved_gold']))}" if q.get("unresolved_gold") else "")
        + "</p>",
        "<h4>gold</h4><div class='gold'>"
        f"<div>answers {_list(gold.get('answers') or [])}</div>"
        f"<div>document ids {_list(gold.get('document_ids') or [])}</div>"
        f"<div>chunk ids {_list(gold.get('chunk_ids') or [])}</div>"
        f"<div>passages {_list(gold.get('passages') or [])}</div></div>",
    ]
    if q.get("error"):
        body.append(f"<p class='neg'>error {_e(q['error'].get('code'))}: {_e(q['error'].get('message'))}</p>")
    if hits:
        body.append(f"<h4>retrieved (k={_e(retrieval.get('k', k))})</h4>")
        body.append(
            _table(["#", "gold", "title", "source", "fused", "dense", "bm25", "bigram", "text"], hits, "hits")
        )
    answer = q.get("answer")
    if answer:
        body.append(
            f"<h4>answer</h4><div class='ans'>{_e(answer.get('text'))}</div>"
            f"<p>generator {_e(answer.get('generator'))}"
            + (f" · fallback {_e(answer.get('fallback'))}" if answer.get("fallback") else "")
            + "</p>"
        )
        cites = [
            [_e(c.get("n")), _e(c.get("title")), _e(c.get("source")), _e(c.get("page")), _mark(c)]
            for c in answer.get("citations") or []
        ]
        body.append(
            "<h4>citations</h4>"
            + (_table(["n", "title", "source", "page", "gold"], cites) if cites else "<p>none</p>")
        )
        refs = [
            [_e(r.get("n")), _e(r.get("title")), _e(r.get("source")), _num(r.get("score"), 4), _mark(r)]
            for r in answer.get("references") or []
        ]
        if refs:
            body.append(
                "<h4>references given to the generator</h4>"
                + _table(["n", "title", "source", "score", "gold"], refs)
            )
        if answer.get("plan"):
            body.append(
                f"<p class='small'>plan: <code>{_e(json.dumps(answer['plan'], ensure_ascii=False))}</code></p>"
            )
    body.append(_judge(q.get("judge")))
    old = q.get("baseline_metrics") or {}
    metric_rows = [
        [_e(n), _num(metrics.get(n), 4), _num(old.get(n), 4) if old else ""]
        for n in metric_order(set(metrics) | set(old))
    ]
    if metric_rows:
        body.append(
            "<h4>metrics</h4>" + _table(["metric", "this run", "baseline" if old else ""], metric_rows)
        )
    latency = q.get("latency_ms") or {}
    timings = ", ".join(f"{n} {v:.1f}" for n, v in latency.items() if isinstance(v, int | float))
    usage = f" · usage {_e(json.dumps(q['usage']))}" if q.get("usage") else ""
    meta = json.dumps(q["meta"], ensure_ascii=False)[:500] if q.get("meta") else ""
    body.append(
        f"<p class='small'>timings (ms): {_e(timings)}{usage}"
        + (f" · meta <code>{_e(meta)}</code>" if meta else "")
        + "</p>"
    )
    flags = {
        "worse": bool(q.get("worse")),
        "miss": bool(miss),
        "error": bool(q.get("error")),
        "lowf1": isinstance(f1, int | float) and f1 < 0.5,
    }
    view = " ".join(name for name, on in flags.items() if on)
    question = str(q.get("question") or "")
    short = question[:160] + ("…" if len(question) > 160 else "")
    return (
        f'<details class="q" data-tags="{_e(json.dumps(q.get("tags") or [], ensure_ascii=False))}" '
        f'data-view="{_e(view)}"><summary><code>{_e(q.get("id"))}</code> {_e(short)} {"".join(badges)}</summary>'
        f'<div class="qb">{"".join(body)}</div></details>'
    )


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Noto Sans KR","Malgun Gothic",sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#1d1d1f}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}h4{margin:.8em 0 .3em}
table{border-collapse:collapse;margin:.4em 0}th,td{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f6}table.metrics td:nth-child(n+2){text-align:right;font-variant-numeric:tabular-nums}
table.hits td{font-size:12px}.snip{max-height:5.5em;overflow:auto;max-width:420px;white-space:pre-wrap}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px}dt{color:#666}dd{margin:0}
code{font-size:12px;word-break:break-all}.charts{display:flex;flex-wrap:wrap;gap:12px}
svg.chart{border:1px solid #eee;background:#fcfcfd}.bar{fill:#4a78c2}.ax{stroke:#999}.ct{font-size:11px;font-weight:600}.cl{font-size:9px;fill:#555}
details.q{border:1px solid #e2e2e6;border-radius:4px;margin:4px 0;padding:3px 8px}details.q[open]{background:#fafafc}
summary{cursor:pointer}.qb{padding:.3em 0 .6em}.qt{font-weight:600;white-space:pre-wrap}
.ans{white-space:pre-wrap;border-left:3px solid #4a78c2;padding-left:8px}
.b{display:inline-block;font-size:11px;border-radius:3px;padding:0 5px;margin-left:4px;background:#eceef3}
.b.ok{background:#dff3e4}.b.bad,.neg{color:#a1121a}.b.bad{background:#fbe3e4}.pos{color:#17692c}
.small{font-size:12px;color:#555}.filters{position:sticky;top:0;background:#fff;padding:6px 0;border-bottom:1px solid #eee}
.tw{overflow-x:auto}.gold{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:4px 16px}.gold ul{margin:0;padding-left:1.2em}
"""

SCRIPT = """
(function(){
var tag=document.getElementById('f-tag'),view=document.getElementById('f-view'),text=document.getElementById('f-text');
var count=document.getElementById('f-count'),qs=document.querySelectorAll('details.q');
function apply(){var t=tag.value,v=view.value,s=text.value.toLowerCase(),shown=0;
qs.forEach(function(q){var tags=JSON.parse(q.getAttribute('data-tags')||'[]');
var views=(q.getAttribute('data-view')||'').split(' ');
var ok=(!t||tags.indexOf(t)>=0)&&(!v||views.indexOf(v)>=0)&&(!s||q.querySelector('summary').textContent.toLowerCase().indexOf(s)>=0);
q.hidden=!ok;if(ok){shown++;}});count.textContent=String(shown);}
[tag,view].forEach(function(e){e.addEventListener('change',apply);});text.addEventListener('input',apply);
document.getElementById('f-open').addEventListener('click',function(){qs.forEach(function(q){if(!q.hidden){q.open=true;}});});
document.getElementById('f-close').addEventListener('click',function(){qs.forEach(function(q){q.open=false;});});
apply();})();
"""


def render_html(data: dict[str, Any]) -> str:
    summary = data["summary"]
    k = summary.get("k")
    tags = sorted(
        (summary.get("by_tag") or {}).keys() | {t for q in data["questions"] for t in q.get("tags") or []}
    )
    by_tag = summary.get("by_tag") or {}
    tag_names = metric_order({n for t in by_tag.values() for n in t.get("metrics") or {}})
    tag_rows = [
        [_e(tag), _e(entry.get("questions"))]
        + [_num((entry.get("metrics") or {}).get(n), 3) for n in tag_names]
        for tag, entry in by_tag.items()
    ]
    latency_rows = [
        [_e(stage), _num(e.get("p50"), 1), _num(e.get("p95"), 1), _num(e.get("mean"), 1), _e(e.get("n"))]
        for stage, e in (summary.get("latency_ms") or {}).items()
    ]
    views = [
        ("", "all questions"),
        ("miss", "retrieval misses"),
        ("error", "errors"),
        ("lowf1", "char F1 < 0.5"),
    ]
    if data.get("baseline"):
        views.insert(1, ("worse", f"worse than baseline {data['baseline']['run_id']}"))
    options_tag = '<option value="">all tags</option>' + "".join(
        f'<option value="{_e(t)}">{_e(t)}</option>' for t in tags
    )
    options_view = "".join(f'<option value="{_e(v)}">{_e(label)}</option>' for v, label in views)
    questions = "".join(_question(q, k) for q in data["questions"])
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    csp = f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; img-src data:"
    worse_note = ""
    if data.get("baseline"):
        comparison = data["baseline"]["comparison"]
        worse_note = (
            f"<p>{_e(comparison.get('worse_count'))} questions scored lower on some metric than in "
            f"{_e(data['baseline']['run_id'])} ({_e(comparison['questions']['common'])} in common).</p>"
        )
    return f"""<!DOCTYPE html>
<html lang="ko"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hanrag eval · {_e(data["run_id"])}</title><style>{CSS}</style></head>
<body>
<h1>hanrag evaluation · <code>{_e(data["run_id"])}</code></h1>
{_header(data)}
<h2>metrics</h2>
{_metric_rows(data)}{worse_note}
{"<h2>by tag</h2>" + _table(["tag", "questions", *tag_names], tag_rows, "metrics") if tag_rows else ""}
<h2>latency (ms)</h2>
{_table(["stage", "p50", "p95", "mean", "n"], latency_rows, "metrics") if latency_rows else "<p>none</p>"}
<h2>distributions</h2>
{_charts(data["distributions"])}
<h2>questions</h2>
<div class="filters">tag <select id="f-tag">{options_tag}</select>
view <select id="f-view">{options_view}</select>
question <input id="f-text" type="search" size="24">
<button id="f-open" type="button">open all</button> <button id="f-close" type="button">close all</button>
· <span id="f-count">{len(data["questions"])}</span> shown</div>
{questions}
<p class="small">generated by hanrag from {_e(data["run_dir"])}</p>
<script>{SCRIPT}</script>
</body></html>
"""


def write_report(
    store: RunStore, out: Path | None, *, baseline: RunStore | None = None, json_out: Path | None = None
) -> dict[str, Any]:
    """Write the HTML (and/or the JSON); returns the data."""
    data = report_data(store, baseline)
    for path, text in (
        (out, render_html(data) if out is not None else ""),
        (json_out, json.dumps(data, ensure_ascii=False, indent=1, default=str)),
    ):
        if path is None:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    return data
