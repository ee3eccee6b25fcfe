"""Stored evaluation runs: ``<data_dir>/eval/runs/<run_id>/``.

* ``run.json`` — the manifest: run id, dataset (path, kind, fingerprints, counts), options
  (k, concurrency, retrieval only), the effective settings with secrets masked
  (``Settings.masked()``), the generator and judge, and one entry per session (a run
  resumed after a crash has several) with its wall time, engine time, tokens and cost.
* ``results.jsonl`` — one JSON object per question, appended (and flushed) as each
  question completes, in completion order; the last object of an id wins. A line torn by a
  kill is cut off when the run resumes. Row schema (``"schema": 1``): ``id``, ``question``,
  ``tags``, ``gold`` (answers, document_ids, chunk_ids, passages), ``unit`` (document,
  chunk, passage or none), ``retrieval`` (k, first_rank, hits with chunk/document ids,
  title, source, fused and per-signal scores, the units each matches, a text snippet),
  ``answer`` (text, citations and references with the units they match, generator,
  fallback, plan), ``judge`` (per metric: score and the verdicts behind it), ``metrics``
  (flat name -> value or null), ``latency_ms``, ``usage``, ``error``, ``finished_at``.
* ``summary.json`` — the aggregate: per metric mean and count, the same per tag, latency
  percentiles per stage, tokens, cost, judge calls, timing and the eval overhead.

A report, a sweep or the web app read these three files; nothing else is needed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hanrag.errors import InvalidInputError, NotFoundError
from hanrag.eval.metrics import mean, paired_bootstrap, percentile

SCHEMA = 1
MANIFEST = "run.json"
RESULTS = "results.jsonl"
SUMMARY = "summary.json"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,79}$")

LATENCY_STAGES = (
    "planning",
    "retrieval",
    "first_token",
    "generation",
    "total",
    "ask_wall",
    "search",
    "judge",
)
# Display order of the metric families (anything else follows, sorted).
_ORDER = (
    "hit@",
    "recall@",
    "mrr@",
    "ndcg@",
    "sources_",
    "exact_match",
    "char_f1",
    "contained",
    "citation_",
    "faithfulness",
    "answer_relevancy",
    "context_precision",
    "context_recall",
    "answer_correctness",
)


def runs_root(data_dir: Path) -> Path:
    return data_dir / "eval" / "runs"


def check_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise InvalidInputError(
            f"run name {run_id!r}: use letters, digits, '.', '_' or '-' (at most 80, first a letter or digit)",
            code="invalid_run_name",
            field="name",
        )
    return run_id


def new_run_id(dataset_name: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9_.\-]+", "-", dataset_name).strip("-.")[:40] or "dataset"
    return f"{stamp}-{slug}"


def metric_order(names: Iterable[str]) -> list[str]:
    def key(name: str) -> tuple[int, str]:
        for index, prefix in enumerate(_ORDER):
            if name.startswith(prefix):
                # hit@1 before hit@10: order the cut-off numerically
                suffix = name[len(prefix) :]
                return index, suffix.zfill(6) if suffix.isdigit() else suffix
        return len(_ORDER), name

    return sorted(set(names), key=key)


class RunStore:
    """One run's directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.run_id = directory.name

    @property
    def exists(self) -> bool:
        return (self.directory / MANIFEST).is_file()

    def manifest(self) -> dict[str, Any]:
        return _read_json(self.directory / MANIFEST)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        _write_json(self.directory / MANIFEST, manifest)

    def summary(self) -> dict[str, Any] | None:
        path = self.directory / SUMMARY
        return _read_json(path) if path.is_file() else None

    def write_summary(self, summary: dict[str, Any]) -> None:
        _write_json(self.directory / SUMMARY, summary)

    def repair(self) -> int:
        """Cut a torn last line (a kill mid-write); returns the bytes cut."""
        path = self.directory / RESULTS
        if not path.is_file():
            return 0
        data = path.read_bytes()
        if not data or data.endswith(b"\n"):
            return 0
        keep = data.rfind(b"\n") + 1
        with path.open("r+b") as handle:
            handle.truncate(keep)
        return len(data) - keep

    def rows(self) -> list[dict[str, Any]]:
        """Every stored row (the last one of an id wins); torn or foreign lines are skipped."""
        path = self.directory / RESULTS
        if not path.is_file():
            return []
        rows: dict[str, dict[str, Any]] = {}
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and isinstance(row.get("id"), str):
                    rows.pop(row["id"], None)
                    rows[row["id"]] = row
        return list(rows.values())

    def open_results(self) -> ResultWriter:
        return ResultWriter(self.directory / RESULTS)


class ResultWriter:
    """Appends one row per question: one ``write`` of the whole line, flushed to the OS,
    so a kill -9 loses at most the line being written (cut off on resume)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, row: dict[str, Any]) -> None:
        data = (json.dumps(row, ensure_ascii=False, default=str) + "\n").encode()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def close(self) -> None:
        os.close(self._fd)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"{path} does not exist", code="run_not_found") from None
    except ValueError as exc:
        raise InvalidInputError(f"{path} is not JSON ({exc})", code="run_corrupt") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path} is not a JSON object", code="run_corrupt")
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    partial.replace(path)


def find_run(data_dir: Path, key: str) -> RunStore:
    """A run by id, by a unique id prefix, or by the path of its directory."""
    candidate = Path(key).expanduser()
    if (candidate / MANIFEST).is_file():
        return RunStore(candidate.resolve())
    root = runs_root(data_dir)
    exact = root / key
    if _RUN_ID.match(key) and (exact / MANIFEST).is_file():
        return RunStore(exact)
    matches = sorted(p for p in root.glob("*") if p.name.startswith(key) and (p / MANIFEST).is_file())
    if len(matches) == 1:
        return RunStore(matches[0])
    if len(matches) > 1:
        raise InvalidInputError(
            f"{key!r} names {len(matches)} runs ({', '.join(p.name for p in matches[:5])}...); give more of the id",
            code="run_ambiguous",
            field="run",
        )
    raise NotFoundError(f"no evaluation run {key!r} under {root}", code="run_not_found", field="run")


def list_runs(data_dir: Path) -> list[dict[str, Any]]:
    """Every run, newest first: its manifest's essentials and summary's headline."""
    root = runs_root(data_dir)
    out: list[dict[str, Any]] = []
    for directory in sorted(root.glob("*")) if root.is_dir() else []:
        store = RunStore(directory)
        if not store.exists:
            continue
        try:
            manifest = store.manifest()
            summary = store.summary() or {}
        except (InvalidInputError, NotFoundError):
            continue
        out.append(
            {
                "run_id": store.run_id,
                "created_at": manifest.get("created_at"),
                "dataset": (manifest.get("dataset") or {}).get("name"),
                "questions": (manifest.get("dataset") or {}).get("questions"),
                "done": summary.get("done", 0),
                "complete": summary.get("complete", False),
                "generator": manifest.get("generator"),
                "judge": manifest.get("judge"),
                "metrics": {k: v.get("mean") for k, v in (summary.get("metrics") or {}).items()},
            }
        )
    out.sort(key=lambda r: str(r.get("created_at") or ""), reverse=True)
    return out


# ---------------------------------------------------------------- summary


def _metric_table(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    values: dict[str, list[float]] = {}
    for row in rows:
        for name, value in (row.get("metrics") or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                values.setdefault(name, []).append(float(value))
    return {name: {"mean": mean(values[name]), "n": len(values[name])} for name in metric_order(values)}


def summarise(manifest: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's aggregate (rows in dataset order when the manifest lists the ids)."""
    order = {qid: n for n, qid in enumerate(manifest.get("question_ids") or [])}
    rows = sorted(rows, key=lambda r: order.get(r["id"], len(order)))
    answered = [r for r in rows if not r.get("error")]
    latency: dict[str, dict[str, float | int | None]] = {}
    for stage in LATENCY_STAGES:
        values = [
            float(v)
            for r in answered
            if isinstance(v := (r.get("latency_ms") or {}).get(stage), int | float)
            and not isinstance(v, bool)
        ]
        if values:
            latency[stage] = {
                "p50": percentile(values, 50),
                "p95": percentile(values, 95),
                "mean": mean(values),
                "n": len(values),
            }
    tags: dict[str, list[dict[str, Any]]] = {}
    for row in answered:
        for tag in row.get("tags") or []:
            tags.setdefault(tag, []).append(row)
    sessions = manifest.get("sessions") or []

    def total(key: str) -> float:
        return float(sum(float(s.get(key) or 0.0) for s in sessions))

    engine_s, eval_s = total("engine_s"), total("eval_s")
    ask_s, search_s = total("ask_s"), total("search_s")
    questions = int((manifest.get("dataset") or {}).get("questions") or len(rows))
    return {
        "schema": SCHEMA,
        "run_id": manifest.get("run_id"),
        "dataset": manifest.get("dataset"),
        "k": (manifest.get("options") or {}).get("k"),
        "generator": manifest.get("generator"),
        "judge": manifest.get("judge"),
        "questions": questions,
        "done": len(rows),
        "complete": len(rows) >= questions,
        "errors": sum(1 for r in rows if r.get("error")),
        "error_codes": _counts((r.get("error") or {}).get("code") for r in rows if r.get("error")),
        "units": _counts(r.get("unit") for r in rows),
        "metrics": _metric_table(answered),
        "by_tag": {
            tag: {
                "questions": len(tagged),
                "metrics": {k: v["mean"] for k, v in _metric_table(tagged).items()},
            }
            for tag, tagged in sorted(tags.items())
        },
        "latency_ms": latency,
        "usage": {
            "prompt_tokens": sum(int((r.get("usage") or {}).get("prompt_tokens") or 0) for r in answered),
            "completion_tokens": sum(
                int((r.get("usage") or {}).get("completion_tokens") or 0) for r in answered
            ),
            "provider_tokens_in": int(total("tokens_in")),
            "provider_tokens_out": int(total("tokens_out")),
        },
        "cost": round(total("cost"), 6),
        "judge_calls": int(total("judge_calls")),
        "judge_cache_hits": int(total("judge_cache_hits")),
        "timing": {
            "sessions": len(sessions),
            "wall_s": round(total("wall_s"), 3),
            "engine_s": round(engine_s, 3),
            "ask_s": round(ask_s, 3),
            "search_s": round(search_s, 3),
            "judge_s": round(total("judge_s"), 3),
            "eval_s": round(eval_s, 3),
            # The harness's own work (metrics, result rows, writes) over the engine's time.
            "eval_overhead_pct": round(100 * eval_s / engine_s, 3) if engine_s else None,
            # Everything but the engine and the judge over the engine's time (thread hops,
            # scheduling, the harness): meaningful at concurrency 1.
            "wall_overhead_pct": round(100 * (total("wall_s") - engine_s - total("judge_s")) / engine_s, 3)
            if engine_s
            else None,
            # The retrieval measure's own search over the answers' time.
            "search_over_ask_pct": round(100 * search_s / ask_s, 3) if ask_s else None,
        },
        "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _counts(values: Iterable[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts


# ---------------------------------------------------------------- comparison


def compare(
    rows_a: list[dict[str, Any]],
    rows_b: list[dict[str, Any]],
    *,
    resamples: int = 2000,
    seed: int = 13,
    worst: int = 20,
) -> dict[str, Any]:
    """Per metric: both means over the questions both runs scored, the paired delta (B − A)
    with its bootstrap CI; and the questions that got worse (largest summed drop first)."""
    a = {r["id"]: r for r in rows_a if not r.get("error")}
    b = {r["id"]: r for r in rows_b if not r.get("error")}
    common = [qid for qid in a if qid in b]
    names = metric_order({n for qid in common for n in (a[qid].get("metrics") or {})})
    metrics: dict[str, Any] = {}
    for name in names:
        pairs = [
            (float(va), float(vb))
            for qid in common
            if isinstance(va := a[qid]["metrics"].get(name), int | float)
            and isinstance(vb := b[qid]["metrics"].get(name), int | float)
        ]
        if not pairs:
            continue
        before, after = [p[0] for p in pairs], [p[1] for p in pairs]
        metrics[name] = {
            "a": mean(before),
            "b": mean(after),
            **paired_bootstrap(before, after, resamples=resamples, seed=seed),
        }
    worse: list[dict[str, Any]] = []
    for qid in common:
        drops = {
            name: float(vb) - float(va)
            for name in names
            if isinstance(va := a[qid]["metrics"].get(name), int | float)
            and isinstance(vb := b[qid]["metrics"].get(name), int | float)
            and float(vb) < float(va)
        }
        if drops:
            worse.append(
                {
                    "id": qid,
                    "question": b[qid].get("question"),
                    "drop": round(sum(drops.values()), 6),
                    "metrics": {k: round(v, 6) for k, v in drops.items()},
                    "rank": [
                        a[qid].get("retrieval", {}).get("first_rank"),
                        b[qid].get("retrieval", {}).get("first_rank"),
                    ],
                }
            )
    worse.sort(key=lambda w: (w["drop"], w["id"]))
    return {
        "questions": {"a": len(rows_a), "b": len(rows_b), "common": len(common)},
        "metrics": metrics,
        "worse": worse[:worst],
        "worse_count": len(worse),
        "seed": seed,
        "resamples": resamples,
    }


def drops(baseline: dict[str, Any], current: dict[str, Any], threshold: float) -> list[dict[str, Any]]:
    """Metrics whose mean fell by more than ``threshold`` (absolute) from the baseline summary."""
    found: list[dict[str, Any]] = []
    before = baseline.get("metrics") or {}
    for name, entry in (current.get("metrics") or {}).items():
        old = (before.get(name) or {}).get("mean")
        new = entry.get("mean")
        if isinstance(old, int | float) and isinstance(new, int | float) and old - new > threshold:
            found.append({"metric": name, "baseline": old, "current": new, "drop": old - new})
    return found
