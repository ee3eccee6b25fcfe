"""Sweeps over retrieval settings: one retrieval-only run per configuration, the best
configuration per metric and the plateau around it.

The grid is the product of the fusion methods, the three signal weights (dense, Kiwi BM25,
character-bigram BM25), the cut-offs k and, for a directory dataset, the chunk sizes and
overlaps; a list not given is the settings' own value. Combinations whose weights are all
zero, or whose overlap is not below the chunk size, are left out (each with a note).

Each configuration is a run of :class:`~hanrag.eval.runner.Runner` (``retrieval_only``)
through :class:`TunedEngine`, which passes its fusion and weights to every search and shows
them in the settings the run records. A chunk setting needs its own index: the corpus of a
directory dataset is ingested into a scratch data directory per chunk setting
(:mod:`hanrag.eval.corpus` keys them on the chunk settings, so a directory is reused by
every later sweep or run with that setting); a dataset file has no corpus to re-chunk and a
chunk grid over it is refused (``sweep_needs_corpus``).

Stored under ``<data_dir>/eval/sweeps/<sweep id>/``: ``sweep.json`` (the grid, every
configuration with its metrics, the best per metric, the plateaus) and ``runs/<config
id>/`` (each configuration's run, in the format of :mod:`hanrag.eval.runs`, so ``hanrag
eval show|report|compare`` take its directory). ``sweep.json`` is rewritten after every
configuration; the same sweep id resumes (finished configurations ask nothing again).

The plateau of a metric is every configuration within ``tolerance`` (absolute, default
0.005) of the best value: when it is large and spans a wide range of a parameter, the
optimum is flat in that parameter and the choice hardly matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hanrag.auth.access import SYSTEM, Caller
from hanrag.domain import AnswerResult, SearchFilters, SearchResult
from hanrag.errors import HanragError, InvalidInputError
from hanrag.eval import corpus as corpus_mod
from hanrag.eval.dataset import Dataset
from hanrag.eval.port import EvalEngine, PassageIngestor, Refreshable, StatusSource
from hanrag.eval.runner import Runner, RunOptions
from hanrag.eval.runs import RunStore, check_run_id, metric_order
from hanrag.settings import Settings

SCHEMA = 1
SWEEP_FILE = "sweep.json"
FUSIONS = ("weighted", "rrf")
DEFAULT_TOLERANCE = 0.005
MAX_CONFIGS = 500
WARM_LIMIT = 2000  # questions; the engine keeps 2,048 recent query vectors
PARAMS = ("fusion", "dense", "bm25", "bigram", "k", "chunk_tokens", "chunk_overlap")

# Opens an engine over the given settings for the configurations that share them.
EngineOpener = Callable[[Settings], AbstractContextManager[EvalEngine]]
# (configurations done, configurations, questions done in this one, questions, config id)
SweepProgress = Callable[[int, int, int, int, str], None]


def sweeps_root(data_dir: Path) -> Path:
    return data_dir / "eval" / "sweeps"


@dataclass(frozen=True, slots=True)
class SweepConfig:
    fusion: str
    dense: float
    bm25: float
    bigram: float
    k: int
    chunk_tokens: int
    chunk_overlap: int

    @property
    def weights(self) -> dict[str, float]:
        return {"dense": self.dense, "bm25": self.bm25, "bigram": self.bigram}

    def id(self, number: int) -> str:
        return (
            f"{number:03d}-{self.fusion}-d{self.dense:g}-b{self.bm25:g}-g{self.bigram:g}"
            f"-k{self.k}-c{self.chunk_tokens}o{self.chunk_overlap}"
        )

    def label(self) -> str:
        return (
            f"{self.fusion} d={self.dense:g} b={self.bm25:g} g={self.bigram:g} k={self.k} "
            f"chunk {self.chunk_tokens}/{self.chunk_overlap}"
        )


def parse_list(value: str | None, name: str, kind: type[float] | type[int] | type[str]) -> list[Any] | None:
    """``"0.3,0.4"`` -> [0.3, 0.4] (None for no option); a bad entry is ``invalid_option``."""
    if value is None:
        return None
    out: list[Any] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        try:
            parsed = kind(part)
        except ValueError:
            raise InvalidInputError(
                f"--{name}: {part!r} is not a {kind.__name__}", code="invalid_option", field=name
            ) from None
        if isinstance(parsed, float | int) and (parsed != parsed or parsed < 0):
            raise InvalidInputError(
                f"--{name}: {part!r} must not be negative", code="invalid_option", field=name
            )
        if parsed not in out:
            out.append(parsed)
    if not out:
        raise InvalidInputError(f"--{name} is empty", code="invalid_option", field=name)
    return out


def build_grid(
    settings: Settings,
    *,
    fusion: list[str] | None = None,
    dense: list[float] | None = None,
    bm25: list[float] | None = None,
    bigram: list[float] | None = None,
    k: list[int] | None = None,
    chunk_tokens: list[int] | None = None,
    chunk_overlap: list[int] | None = None,
) -> tuple[list[SweepConfig], list[str]]:
    """Every combination (settings' values for what is not given) and notes on those left out."""
    r, c = settings.retrieval, settings.chunk
    for name in fusion or []:
        if name not in FUSIONS:
            raise InvalidInputError(
                f"--fusion: {name!r} is not one of {', '.join(FUSIONS)}",
                code="invalid_option",
                field="fusion",
            )
    for value in k or []:
        if not 1 <= value <= 100:
            raise InvalidInputError(
                "--k: each cut-off must be between 1 and 100", code="invalid_option", field="k"
            )
    for value in chunk_tokens or []:
        if not 32 <= value <= 4096:
            raise InvalidInputError(
                "--chunk-tokens: each size must be between 32 and 4096",
                code="invalid_option",
                field="chunk_tokens",
            )
    axes = (
        fusion or [r.fusion],
        dense or [r.dense_weight],
        bm25 or [r.bm25_weight],
        bigram or [r.bigram_weight],
        k or [10],
        chunk_tokens or [c.max_tokens],
        chunk_overlap or [c.overlap_tokens],
    )
    configs: list[SweepConfig] = []
    notes: list[str] = []
    for f, d, b, g, cut, tokens, overlap in itertools.product(*axes):
        if d <= 0 and b <= 0 and g <= 0:
            notes.append(f"{f} d={d:g} b={b:g} g={g:g}: every weight is zero; left out")
            continue
        if overlap >= tokens:
            note = f"chunk {tokens}/{overlap}: the overlap must be below the size; left out"
            if note not in notes:
                notes.append(note)
            continue
        configs.append(SweepConfig(str(f), float(d), float(b), float(g), int(cut), int(tokens), int(overlap)))
    if not configs:
        raise InvalidInputError(
            "the sweep grid has no valid configuration", code="invalid_option", field="grid"
        )
    if len(configs) > MAX_CONFIGS:
        raise InvalidInputError(
            f"the sweep grid has {len(configs)} configurations; the limit is {MAX_CONFIGS}",
            code="invalid_option",
            field="grid",
        )
    return configs, notes


def tuned_settings(settings: Settings, config: SweepConfig) -> Settings:
    retrieval = settings.retrieval.model_copy(
        update={
            "fusion": config.fusion,
            "dense_weight": config.dense,
            "bm25_weight": config.bm25,
            "bigram_weight": config.bigram,
        }
    )
    return settings.model_copy(update={"retrieval": retrieval})


def chunked_settings(settings: Settings, tokens: int, overlap: int) -> Settings:
    chunk = settings.chunk.model_copy(update={"max_tokens": tokens, "overlap_tokens": overlap})
    return settings.model_copy(update={"chunk": chunk})


class TunedEngine:
    """An engine whose searches use one fusion method and weights (unless a call names its
    own); its ``settings`` show them, so a run's manifest and fingerprint record them.
    Answers are the engine's own (the answer flow reads its settings): sweeps are
    retrieval-only."""

    def __init__(
        self, engine: EvalEngine, fusion: str | None = None, weights: dict[str, float] | None = None
    ) -> None:
        self.engine = engine
        self.fusion = fusion
        self.weights = dict(weights) if weights is not None else None
        update: dict[str, Any] = {}
        if fusion is not None:
            update["fusion"] = fusion
        for name, value in (weights or {}).items():
            update[f"{name}_weight"] = value
        base = engine.settings
        self.settings = (
            base.model_copy(update={"retrieval": base.retrieval.model_copy(update=update)})
            if update
            else base
        )

    @property
    def pipeline(self) -> PassageIngestor:
        return self.engine.pipeline

    @property
    def index(self) -> Refreshable:
        return self.engine.index

    @property
    def generators(self) -> Any:
        return self.engine.generators

    @property
    def llm_registry(self) -> StatusSource:
        return self.engine.llm_registry

    def search(
        self,
        query: str,
        *,
        caller: Caller,
        k: int | None = None,
        filters: SearchFilters | None = None,
        fusion: str | None = None,
        weights: dict[str, float] | None = None,
    ) -> SearchResult:
        return self.engine.search(
            query,
            caller=caller,
            k=k,
            filters=filters,
            fusion=fusion or self.fusion,
            weights=weights if weights is not None else self.weights,
        )

    async def ask_result(self, question: str, **kwargs: Any) -> AnswerResult:
        return await self.engine.ask_result(question, **kwargs)

    def get_document(self, key: str, *, caller: Caller) -> Any:
        return self.engine.get_document(key, caller=caller)


# ---------------------------------------------------------------- the sweep


def best_and_plateaus(
    entries: list[dict[str, Any]], tolerance: float = DEFAULT_TOLERANCE
) -> dict[str, dict[str, Any]]:
    """metric -> the best configuration, its value, and the plateau (every configuration
    within ``tolerance`` of it) with the range each parameter spans on the plateau."""
    names = metric_order({n for e in entries for n, v in (e.get("metrics") or {}).items() if v is not None})
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        scored = [(e["metrics"][name], e) for e in entries if e.get("metrics", {}).get(name) is not None]
        if not scored:
            continue
        # Ties: the first configuration of the grid wins (a stable answer).
        value, best = max(scored, key=lambda pair: pair[0])
        plateau = [e for v, e in scored if v >= value - tolerance - 1e-12]
        ranges: dict[str, Any] = {}
        for param in PARAMS:
            values = sorted({e["params"][param] for e in plateau})
            ranges[param] = values if param == "fusion" else [values[0], values[-1]]
        out[name] = {
            "best": best["id"],
            "value": value,
            "plateau": [e["id"] for e in plateau],
            "plateau_size": len(plateau),
            "of": len(scored),
            "ranges": ranges,
        }
    return out


class SweepStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.sweep_id = directory.name

    @property
    def path(self) -> Path:
        return self.directory / SWEEP_FILE

    def run_dir(self, config_id: str) -> Path:
        return self.directory / "runs" / check_run_id(config_id)

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InvalidInputError(f"{self.path} is not JSON ({exc})", code="run_corrupt") from None
        if not isinstance(data, dict):
            raise InvalidInputError(f"{self.path} is not a JSON object", code="run_corrupt")
        return data

    def save(self, data: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(SWEEP_FILE + ".partial")
        partial.write_text(json.dumps(data, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
        partial.replace(self.path)


def new_sweep_id(dataset_name: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9_.\-]+", "-", dataset_name).strip("-.")[:40] or "dataset"
    return f"sweep-{stamp}-{slug}"


def _entry(config: SweepConfig, config_id: str, directory: Path, summary: dict[str, Any]) -> dict[str, Any]:
    latency = (summary.get("latency_ms") or {}).get("search") or {}
    return {
        "id": config_id,
        "label": config.label(),
        "params": asdict(config),
        "run_dir": str(directory),
        "questions": summary.get("done"),
        "errors": summary.get("errors"),
        "metrics": {name: entry.get("mean") for name, entry in (summary.get("metrics") or {}).items()},
        "search_p50_ms": latency.get("p50"),
    }


def check_chunks(dataset: Dataset, configs: list[SweepConfig], settings: Settings) -> list[tuple[int, int]]:
    """The grid's chunk settings; other than the settings' own only for a directory dataset."""
    groups = sorted({(c.chunk_tokens, c.chunk_overlap) for c in configs})
    if dataset.corpus is None and groups != [(settings.chunk.max_tokens, settings.chunk.overlap_tokens)]:
        raise InvalidInputError(
            "a chunk-size sweep re-ingests the corpus: give a directory dataset (corpus.jsonl and "
            "queries.jsonl); a dataset file's documents are the operator's own index",
            code="sweep_needs_corpus",
            field="chunk_tokens",
        )
    return groups


def _warm(engine: EvalEngine, dataset: Dataset, caller: Caller) -> None:
    """One search per question first, so that every configuration finds the query vectors
    in the engine's cache and their latencies compare (as ``bench/retrieval.py`` does)."""
    if len(dataset.items) > WARM_LIMIT:
        return  # more questions than the cache keeps: each configuration embeds them anyway
    for item in dataset.items:
        with contextlib.suppress(HanragError):  # the runs report it
            engine.search(item.question, caller=caller, k=1)


def run_sweep(
    dataset: Dataset,
    configs: list[SweepConfig],
    store: SweepStore,
    settings: Settings,
    open_engine: EngineOpener,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    concurrency: int = 1,
    caller: Caller = SYSTEM,
    notes: list[str] | None = None,
    on_progress: SweepProgress | None = None,
    on_ingest: Callable[[int, int, dict[str, int]], None] | None = None,
) -> dict[str, Any]:
    """Run every configuration (grouped by chunk setting, one engine per group) and store
    the sweep; returns ``sweep.json``'s content."""
    chunk_groups = check_chunks(dataset, configs, settings)
    ids = {config: config.id(n) for n, config in enumerate(configs, start=1)}
    grid = [{"id": ids[c], **asdict(c)} for c in configs]
    stored = store.load()
    if stored is not None and (
        stored.get("grid") != grid or (stored.get("dataset") or {}).get("fingerprint") != dataset.fingerprint
    ):
        raise InvalidInputError(
            f"sweep {store.sweep_id!r} exists with another grid or dataset; use another --name",
            code="run_mismatch",
            field="name",
        )
    data: dict[str, Any] = stored or {
        "schema": SCHEMA,
        "sweep_id": store.sweep_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": dataset.describe(),
        "grid": grid,
    }
    data.update({"tolerance": tolerance, "notes": list(notes or []), "complete": False})
    entries: dict[str, dict[str, Any]] = {e["id"]: e for e in data.get("configs") or []}
    done = 0
    for tokens, overlap in chunk_groups:
        group_settings = chunked_settings(settings, tokens, overlap)
        scratch: Path | None = None
        if dataset.corpus is not None and dataset.corpus_fingerprint is not None:
            scratch = corpus_mod.scratch_dir(settings.data_dir, dataset.corpus_fingerprint, group_settings)
            group_settings = corpus_mod.scratch_settings(group_settings, scratch)
        with open_engine(group_settings) as engine:
            if scratch is not None and dataset.corpus is not None:
                marker = corpus_mod.ingest_corpus(engine, dataset.corpus, scratch, on_progress=on_ingest)
                data.setdefault("corpora", {})[f"{tokens}/{overlap}"] = {
                    "scratch_data_dir": str(scratch),
                    "reused": marker.get("reused"),
                    "outcomes": marker.get("outcomes"),
                }
            _warm(engine, dataset, caller)
            for config in (c for c in configs if (c.chunk_tokens, c.chunk_overlap) == (tokens, overlap)):
                config_id = ids[config]
                directory = store.run_dir(config_id)

                def progress(
                    count: int, total: int, row: Any, _id: str = config_id, _done: int = done
                ) -> None:
                    if on_progress is not None:
                        on_progress(_done, len(configs), count, total, _id)

                runner = Runner(
                    TunedEngine(engine, config.fusion, config.weights),
                    dataset,
                    RunStore(directory),
                    options=RunOptions(
                        k=config.k, concurrency=concurrency, retrieval_only=True, caller=caller
                    ),
                    on_progress=progress,
                )
                summary = asyncio.run(runner.run({"sweep": {"sweep_id": store.sweep_id, **asdict(config)}}))
                entries[config_id] = _entry(config, config_id, directory, summary)
                done += 1
                data["configs"] = [entries[ids[c]] for c in configs if ids[c] in entries]
                data["best"] = best_and_plateaus(data["configs"], tolerance)
                data["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
                store.save(data)
    data["complete"] = True
    store.save(data)
    return data


# ---------------------------------------------------------------- tables


def _span(param: str, values: list[Any]) -> str:
    if param == "fusion":
        return "/".join(map(str, values))
    low, high = values
    return f"{low:g}" if low == high else f"{low:g}–{high:g}"


def tables(data: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    """The sweep as text: (headers, a row per configuration with ``*`` on the best value of
    each metric column), and (headers, a row per metric: best, value, plateau, spans)."""
    entries = data.get("configs") or []
    best = data.get("best") or {}
    many_k = len({e["params"]["k"] for e in entries}) > 1
    chunked = len({(e["params"]["chunk_tokens"], e["params"]["chunk_overlap"]) for e in entries}) > 1
    columns = [("R@1", "recall@1"), ("R@5", "recall@5"), ("R@k", "recall@{k}")]
    columns += [("MRR@k", "mrr@{k}"), ("nDCG@k", "ndcg@{k}")]
    headers = ["#", "fusion", "d/b/g", *(["k"] if many_k else []), *(["chunk"] if chunked else [])]
    headers += [label for label, _ in columns] + ["search p50 ms"]
    rows = []
    for n, e in enumerate(entries, start=1):
        p, m = e["params"], e["metrics"]
        row = [str(n), p["fusion"], f"{p['dense']:g}/{p['bm25']:g}/{p['bigram']:g}"]
        row += [str(p["k"])] if many_k else []
        row += [f"{p['chunk_tokens']}/{p['chunk_overlap']}"] if chunked else []
        for _, pattern in columns:
            metric = pattern.format(k=p["k"])
            value = m.get(metric)
            mark = "*" if (best.get(metric) or {}).get("best") == e["id"] else ""
            row.append("—" if value is None else f"{value:.3f}{mark}")
        latency = e.get("search_p50_ms")
        row.append("—" if latency is None else f"{latency:.1f}")
        rows.append(row)
    number = {e["id"]: n for n, e in enumerate(entries, start=1)}
    varying = [param for param in PARAMS if len({e["params"][param] for e in entries}) > 1]
    best_headers = ["metric", "best", "value", "plateau", "plateau spans"]
    best_rows = [
        [
            metric,
            f"#{number.get(b['best'], '?')}",
            f"{b['value']:.4f}",
            f"{b['plateau_size']}/{b['of']} within {data.get('tolerance')}",
            ", ".join(f"{param} {_span(param, b['ranges'][param])}" for param in varying) or "—",
        ]
        for metric, b in best.items()
    ]
    return headers, rows, best_headers, best_rows
