"""``hanrag eval``: run a dataset through the engine, list, show and compare stored runs,
gate on a baseline, import other evaluation-set formats, write a run's HTML report, sweep
retrieval settings and synthesise test sets from the indexed documents (issue P13).

Runs live under ``<data_dir>/eval/runs/<run id>/`` (see :mod:`hanrag.eval.runs`), sweeps
under ``<data_dir>/eval/sweeps/<sweep id>/``; a directory dataset's corpus is ingested
into ``<data_dir>/eval/corpora/<key>/`` first.
Bad input ends with one line (a stable code) and exit 2; ``--fail-on-drop`` exits 1 when a
metric fell by more than the threshold against ``--baseline``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from hanrag.cli.common import (
    app,
    console,
    engine_session,
    err_console,
    fail,
    print_json,
    run,
    settings,
    state,
)
from hanrag.engine import Engine
from hanrag.errors import HanragError, InvalidInputError
from hanrag.eval.corpus import ingest_corpus, ready, scratch_dir, scratch_settings
from hanrag.eval.dataset import load_dataset
from hanrag.eval.importers import FORMATS, import_dataset, write_imported
from hanrag.eval.judge import Judge, JudgeCache
from hanrag.eval.report import write_report
from hanrag.eval.runner import Runner, RunOptions, run_dir
from hanrag.eval.runs import check_run_id, compare, drops, find_run, list_runs, new_run_id, summarise
from hanrag.eval.sweep import (
    SweepStore,
    build_grid,
    check_chunks,
    new_sweep_id,
    parse_list,
    run_sweep,
    sweeps_root,
)
from hanrag.eval.sweep import tables as sweep_tables
from hanrag.eval.synth import SynthOptions, synthesize, write_synth
from hanrag.settings import Settings

eval_app = typer.Typer(
    help="Evaluate retrieval and answers on a dataset; list, show and compare runs.", no_args_is_help=True
)
app.add_typer(eval_app, name="eval")


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}", style="dim"),
        console=err_console,
    )


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


# ------------------------------------------------------------------ run


@eval_app.command("run")
def eval_run(
    dataset_path: Annotated[
        Path,
        typer.Argument(
            metavar="DATASET", help="A dataset .jsonl, or a directory with corpus.jsonl and queries.jsonl."
        ),
    ],
    config: Annotated[Path | None, typer.Option("--config", help="YAML settings file.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Run id (an existing one resumes).")] = None,
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="Retrieval cut-off.")] = 10,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=64, help="Questions at a time.")
    ] = 1,
    baseline: Annotated[str | None, typer.Option("--baseline", help="A run to compare with.")] = None,
    fail_on_drop: Annotated[
        float | None,
        typer.Option(
            "--fail-on-drop", min=0.0, help="Exit 1 when a metric drops more than this vs --baseline."
        ),
    ] = None,
    retrieval_only: Annotated[
        bool, typer.Option("--retrieval-only", help="Search only; no answers.")
    ] = False,
    no_judge: Annotated[
        bool, typer.Option("--no-judge", help="Skip the judge even when one is configured.")
    ] = False,
    retry_errors: Annotated[
        bool, typer.Option("--retry-errors", help="Ask again the questions that failed.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run the engine over DATASET and store the results (resumable: same --name)."""
    if config is not None:
        state.config_file = config
    if fail_on_drop is not None and baseline is None:
        fail(
            InvalidInputError("--fail-on-drop needs --baseline", code="invalid_option", field="fail_on_drop")
        )

    def work() -> tuple[dict[str, Any], Path, dict[str, Any] | None]:
        dataset = load_dataset(dataset_path)
        base = settings()
        store = run_dir(base.data_dir, name or new_run_id(dataset.name))
        reference = find_run(base.data_dir, baseline).summary() if baseline else None
        if baseline and reference is None:
            raise InvalidInputError(f"the baseline run {baseline!r} has no summary", code="run_incomplete")
        engine_settings, scratch = base, None
        if dataset.corpus is not None and dataset.corpus_fingerprint is not None:
            scratch = scratch_dir(base.data_dir, dataset.corpus_fingerprint, base)
            engine_settings = scratch_settings(base, scratch)
        engine = Engine(engine_settings)
        cache: JudgeCache | None = None
        try:
            extra: dict[str, Any] = {"operator_data_dir": str(base.data_dir.resolve())}
            if scratch is not None and dataset.corpus is not None:
                fresh = ready(scratch, dataset.corpus_fingerprint or "") is None
                with _progress() if fresh else nullcontext(None) as progress:
                    task = (
                        progress.add_task("corpus", total=len(dataset.corpus), status="")
                        if progress
                        else None
                    )

                    def ingested(done: int, total: int, counts: dict[str, int]) -> None:
                        if progress is not None and task is not None:
                            status = " ".join(f"{key}={value}" for key, value in sorted(counts.items()))
                            progress.update(task, completed=done, status=status)

                    marker = ingest_corpus(engine, dataset.corpus, scratch, on_progress=ingested)
                extra["corpus"] = {**marker, "scratch_data_dir": str(scratch)}
            judge = None
            generator = None if no_judge or retrieval_only else engine.generators.get("judge")
            if generator is not None and generator.is_llm:
                cache = JudgeCache(base.data_dir / "eval" / "judge-cache.db")
                judge = Judge(generator, cache)
            options = RunOptions(
                k=k, concurrency=concurrency, retrieval_only=retrieval_only, retry_errors=retry_errors
            )
            with _progress() as progress:
                task = progress.add_task(store.run_id, total=len(dataset.items), status="")
                errors = 0

                def advanced(done: int, total: int, row: dict[str, Any] | None) -> None:
                    nonlocal errors
                    if row is not None and row.get("error"):
                        errors += 1
                    progress.update(
                        task, completed=done, total=total, status=f"errors {errors}" if errors else ""
                    )

                runner = Runner(engine, dataset, store, options=options, judge=judge, on_progress=advanced)
                summary = asyncio.run(runner.run(extra))
        finally:
            engine.close()
            if cache is not None:
                cache.close()
        return summary, store.directory, reference

    summary, directory, reference = run(work)
    dropped = drops(reference, summary, fail_on_drop or 0.0) if reference is not None else []
    if as_json:
        print_json(
            {**summary, "run_dir": str(directory), "drops": dropped if reference is not None else None}
        )
    else:
        _print_summary(summary, directory)
        if reference is not None:
            _print_deltas(reference, summary)
    if fail_on_drop is not None and dropped:
        worst = max(dropped, key=lambda d: d["drop"])
        fail(
            HanragError(
                f"{len(dropped)} metric(s) dropped more than {fail_on_drop} vs {baseline}: "
                + ", ".join(f"{d['metric']} {d['baseline']:.4f} -> {d['current']:.4f}" for d in dropped[:6])
                + (f" (worst: {worst['metric']})" if len(dropped) > 1 else ""),
                code="metric_dropped",
            )
        )


def _print_summary(summary: dict[str, Any], directory: Path | None = None) -> None:
    dataset = summary.get("dataset") or {}
    console.print(
        f"[bold]{escape(str(summary.get('run_id')))}[/]  {escape(str(dataset.get('name')))}: "
        f"{summary.get('done')}/{summary.get('questions')} questions"
        + (f", [red]{summary.get('errors')} errors[/]" if summary.get("errors") else "")
        + f"  generator {escape(str(summary.get('generator')))}"
        + (f"  judge {escape(str(summary.get('judge')))}" if summary.get("judge") else "")
    )
    table = Table("metric", "mean", "n", title="metrics")
    for name, entry in (summary.get("metrics") or {}).items():
        table.add_row(name, _fmt(entry.get("mean"), 4), str(entry.get("n")))
    console.print(table)
    latency = Table("stage", "p50 ms", "p95 ms", "mean ms", title="latency")
    for stage, entry in (summary.get("latency_ms") or {}).items():
        latency.add_row(
            stage, _fmt(entry.get("p50"), 1), _fmt(entry.get("p95"), 1), _fmt(entry.get("mean"), 1)
        )
    console.print(latency)
    timing = summary.get("timing") or {}
    usage = summary.get("usage") or {}
    console.print(
        f"wall {_fmt(timing.get('wall_s'), 1)} s, engine {_fmt(timing.get('engine_s'), 1)} s, "
        f"judge {_fmt(timing.get('judge_s'), 1)} s, eval overhead {_fmt(timing.get('eval_overhead_pct'), 2)} % "
        f"(wall {_fmt(timing.get('wall_overhead_pct'), 2)} %); tokens {usage.get('prompt_tokens', 0)} in / "
        f"{usage.get('completion_tokens', 0)} out, cost {summary.get('cost', 0)}"
        + (
            f"; judge calls {summary.get('judge_calls')} (cached {summary.get('judge_cache_hits')})"
            if summary.get("judge")
            else ""
        )
    )
    if directory is not None:
        console.print(f"[dim]{escape(str(directory))}[/]")


def _print_deltas(reference: dict[str, Any], summary: dict[str, Any]) -> None:
    table = Table("metric", "baseline", "this run", "delta", title=f"vs baseline {reference.get('run_id')}")
    before = reference.get("metrics") or {}
    for name, entry in (summary.get("metrics") or {}).items():
        old, new = (before.get(name) or {}).get("mean"), entry.get("mean")
        delta = new - old if isinstance(old, float | int) and isinstance(new, float | int) else None
        style = "red" if delta is not None and delta < 0 else ""
        table.add_row(
            name, _fmt(old, 4), _fmt(new, 4), f"[{style}]{_fmt(delta, 4)}[/]" if style else _fmt(delta, 4)
        )
    console.print(table)


# ------------------------------------------------------------ list/show


def _data_dir() -> Path:
    return run(settings).data_dir


@eval_app.command("list")
def eval_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The stored runs, newest first."""
    runs = run(lambda: list_runs(_data_dir()))
    if as_json:
        print_json(runs)
        return
    table = Table(
        "run", "created", "dataset", "done", "generator", "judge", "headline", title="evaluation runs"
    )
    for entry in runs:
        metrics = entry["metrics"]
        headline = "  ".join(
            f"{name} {_fmt(metrics[name])}"
            for name in metrics
            if name.startswith(("mrr@", "char_f1", "contained", "faithfulness"))
        )
        table.add_row(
            entry["run_id"],
            str(entry.get("created_at") or ""),
            str(entry.get("dataset") or ""),
            f"{entry.get('done')}/{entry.get('questions')}",
            str(entry.get("generator") or ""),
            str(entry.get("judge") or ""),
            headline,
        )
    console.print(table)
    if not runs:
        console.print("[yellow]no runs yet: hanrag eval run DATASET[/]")


@eval_app.command("show")
def eval_show(
    run_key: Annotated[
        str, typer.Argument(metavar="RUN", help="Run id (or a unique prefix, or its directory).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest and summary as JSON.")] = False,
) -> None:
    """One run's metrics, latency, tokens and cost."""

    def work() -> tuple[dict[str, Any], dict[str, Any], Path]:
        store = find_run(_data_dir(), run_key)
        manifest = store.manifest()
        summary = store.summary() or summarise(manifest, store.rows())
        return manifest, summary, store.directory

    manifest, summary, directory = run(work)
    if as_json:
        print_json({"run": manifest, "summary": summary, "run_dir": str(directory)})
        return
    _print_summary(summary, directory)


@eval_app.command("compare")
def eval_compare(
    run_a: Annotated[str, typer.Argument(metavar="RUN_A", help="The reference run.")],
    run_b: Annotated[str, typer.Argument(metavar="RUN_B", help="The run compared with it.")],
    worst: Annotated[int, typer.Option("--worst", min=0, help="Questions that got worse to list.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Per-metric deltas (B − A) with a paired bootstrap 95 % CI, and the questions that got worse."""

    def work() -> dict[str, Any]:
        data_dir = _data_dir()
        a, b = find_run(data_dir, run_a), find_run(data_dir, run_b)
        result = compare(a.rows(), b.rows(), worst=worst)
        return {"a": a.run_id, "b": b.run_id, **result}

    result = run(work)
    if as_json:
        print_json(result)
        return
    q = result["questions"]
    table = Table(
        "metric",
        "A",
        "B",
        "delta",
        "95% CI",
        "P(worse)",
        title=f"{result['a']} → {result['b']} ({q['common']} questions)",
    )
    for name, m in result["metrics"].items():
        delta = m.get("delta")
        style = "red" if delta is not None and m.get("high") is not None and m["high"] < 0 else ""
        cell = _fmt(delta, 4)
        table.add_row(
            name,
            _fmt(m.get("a"), 4),
            _fmt(m.get("b"), 4),
            f"[{style}]{cell}[/]" if style else cell,
            f"[{_fmt(m.get('low'), 4)}, {_fmt(m.get('high'), 4)}]",
            _fmt(m.get("p_worse"), 3),
        )
    console.print(table)
    if result["worse"]:
        worse = Table(
            "id", "question", "drop", "metrics", "rank A→B", title=f"worse ({result['worse_count']})"
        )
        for entry in result["worse"]:
            question = str(entry.get("question") or "")
            worse.add_row(
                entry["id"],
                escape(question[:60] + ("…" if len(question) > 60 else "")),
                _fmt(entry["drop"], 3),
                ", ".join(f"{k} {v:+.3f}" for k, v in list(entry["metrics"].items())[:4]),
                f"{_fmt(entry['rank'][0])}→{_fmt(entry['rank'][1])}",
            )
        console.print(worse)


@eval_app.command("import")
def eval_import(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help=f"One of: {', '.join(FORMATS)}.")],
    source: Annotated[Path, typer.Argument(metavar="SRC", help="The file or directory to import.")],
    out: Annotated[
        Path,
        typer.Argument(metavar="OUT", help="OUT.jsonl (a dataset file) or a directory (queries + corpus)."),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Convert a RAGAS, AutoRAG, KorQuAD, bench or feedback export into the dataset format."""
    result = run(
        lambda: {"format": fmt, "source": str(source), **write_imported(import_dataset(fmt, source), out)}
    )
    if as_json:
        print_json(result)
        return
    passages = f" and {result['passages']} passages" if result.get("passages") is not None else ""
    console.print(f"[green]wrote {result['questions']} questions{passages}[/] to {escape(result['out'])}")
    for note in result.get("notes") or []:
        console.print(f"[yellow]{escape(note)}[/]")


# ------------------------------------------------------------------ report


@eval_app.command("report")
def eval_report(
    run_key: Annotated[
        str, typer.Argument(metavar="RUN", help="Run id (or a unique prefix, or its directory).")
    ],
    out: Annotated[Path | None, typer.Option("--out", help="The HTML file to write.")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also (or only) write the data as JSON.")
    ] = None,
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="A run to compare with (deltas, worse questions).")
    ] = None,
) -> None:
    """A self-contained HTML report of RUN (opens offline), and/or its data as JSON."""

    def work() -> int:
        if out is None and json_out is None:
            raise InvalidInputError("give --out FILE.html and/or --json FILE.json", code="invalid_option")
        data_dir = _data_dir()
        store = find_run(data_dir, run_key)
        reference = find_run(data_dir, baseline) if baseline else None
        return len(write_report(store, out, baseline=reference, json_out=json_out)["questions"])

    questions = run(work)
    for path in (p for p in (out, json_out) if p is not None):
        console.print(f"[green]wrote[/] {escape(str(path))} ({questions} questions)")


# ------------------------------------------------------------------- sweep


@eval_app.command("sweep")
def eval_sweep(
    dataset_path: Annotated[
        Path,
        typer.Argument(metavar="DATASET", help="A dataset .jsonl, or a directory with corpus and queries."),
    ],
    fusion: Annotated[str | None, typer.Option("--fusion", help="weighted,rrf")] = None,
    dense: Annotated[str | None, typer.Option("--dense-weight", help="e.g. 0.3,0.4,0.5")] = None,
    bm25: Annotated[str | None, typer.Option("--bm25-weight", help="Kiwi BM25 weights.")] = None,
    bigram: Annotated[str | None, typer.Option("--bigram-weight", help="Bigram BM25 weights.")] = None,
    k: Annotated[str | None, typer.Option("--k", help="Cut-offs, e.g. 5,10 (default 10).")] = None,
    chunk_tokens: Annotated[
        str | None, typer.Option("--chunk-tokens", help="Chunk sizes (re-ingests a directory dataset).")
    ] = None,
    chunk_overlap: Annotated[str | None, typer.Option("--chunk-overlap", help="Chunk overlaps.")] = None,
    tolerance: Annotated[
        float, typer.Option("--tolerance", min=0.0, help="Plateau: within this of the best value.")
    ] = 0.005,
    name: Annotated[str | None, typer.Option("--name", help="Sweep id (an existing one resumes).")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=64)] = 1,
    config: Annotated[Path | None, typer.Option("--config", help="YAML settings file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print sweep.json.")] = False,
) -> None:
    """Retrieval-only runs over a grid of retrieval settings: every configuration's metrics,
    the best per metric and the plateau around it (stored under eval/sweeps/)."""
    if config is not None:
        state.config_file = config

    @contextmanager
    def open_engine(engine_settings: Settings) -> Iterator[Engine]:
        engine = Engine(engine_settings)
        try:
            yield engine
        finally:
            engine.close()

    def work() -> dict[str, Any]:
        dataset = load_dataset(dataset_path)
        base = settings()
        configs, notes = build_grid(
            base,
            fusion=parse_list(fusion, "fusion", str),
            dense=parse_list(dense, "dense-weight", float),
            bm25=parse_list(bm25, "bm25-weight", float),
            bigram=parse_list(bigram, "bigram-weight", float),
            k=parse_list(k, "k", int),
            chunk_tokens=parse_list(chunk_tokens, "chunk-tokens", int),
            chunk_overlap=parse_list(chunk_overlap, "chunk-overlap", int),
        )
        check_chunks(dataset, configs, base)
        store = SweepStore(sweeps_root(base.data_dir) / check_run_id(name or new_sweep_id(dataset.name)))
        with _progress() as progress:
            task = progress.add_task(store.sweep_id, total=len(configs) * len(dataset.items), status="")

            def advanced(done: int, total: int, count: int, questions: int, config_id: str) -> None:
                status = f"{done + 1}/{total} {config_id}"
                progress.update(task, completed=done * questions + count, status=status)

            def ingested(done: int, total: int, counts: dict[str, int]) -> None:
                progress.update(task, status=f"ingesting the corpus {done}/{total}")

            options: dict[str, Any] = {"tolerance": tolerance, "concurrency": concurrency, "notes": notes}
            return run_sweep(
                dataset,
                configs,
                store,
                base,
                open_engine,
                on_progress=advanced,
                on_ingest=ingested,
                **options,
            )

    data = run(work)
    if as_json:
        print_json(data)
        return
    _print_sweep(data)


def _print_sweep(data: dict[str, Any]) -> None:
    headers, rows, best_headers, best_rows = sweep_tables(data)
    title = f"sweep {data['sweep_id']}: {len(rows)} configurations (* best)"
    for table in (
        Table(*headers, title=title),
        Table(*best_headers, title="best per metric, and its plateau"),
    ):
        for row in rows if table.title == title else best_rows:
            table.add_row(*(escape(cell) for cell in row))
        console.print(table)
    for note in data.get("notes") or []:
        console.print(f"[yellow]{escape(note)}[/]")


# ------------------------------------------------------------------- synth


@eval_app.command("synth")
def eval_synth(
    out: Annotated[Path, typer.Option("--out", help="The dataset file to write (.jsonl).")],
    count: Annotated[int, typer.Option("--count", min=1, max=100_000, help="Questions wanted.")] = 50,
    per_document: Annotated[
        int, typer.Option("--per-document", min=1, help="At most this many a document.")
    ] = 5,
    llm: Annotated[
        bool | None,
        typer.Option(
            "--llm/--rules",
            help="A language model's questions, or rule-based cloze (default: llm if one is configured).",
        ),
    ] = None,
    role: Annotated[str, typer.Option("--generator", help="The model role: judge or answer.")] = "judge",
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 13,
    dedup: Annotated[float, typer.Option("--dedup", min=0.0, max=1.0, help="Near-duplicate Jaccard.")] = 0.7,
    as_json: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON.")] = False,
) -> None:
    """A synthetic test set from the indexed documents: questions with their gold chunk."""

    def work() -> dict[str, Any]:
        if role not in ("judge", "answer"):
            raise InvalidInputError("--generator: judge or answer", code="invalid_option", field="generator")
        with engine_session() as engine:
            order = (
                engine.generators.get(role),
                engine.generators.get("judge"),
                engine.generators.get("answer"),
            )
            generator = next((g for g in order if g is not None and g.is_llm), None)
            if llm and generator is None:
                message = (
                    "--llm needs a language model (llm.backend, or a provider with the judge or answer role)"
                )
                raise InvalidInputError(message, code="no_llm", field="llm")
            options = SynthOptions(count=count, per_document=per_document, seed=seed, dedup=dedup)
            with _progress() as progress:
                task = progress.add_task("synth", total=count, status="")
                done = lambda kept, total: progress.update(task, completed=kept)  # noqa: E731
                result = asyncio.run(synthesize(engine, None if llm is False else generator, options, done))
            write_synth(result, out)
            return {"out": str(out), "mode": result.mode, "generator": result.generator, **result.stats}

    stats = run(work)
    if as_json:
        print_json(stats)
        return
    rules = stats["mode"] == "rules"
    kind = (
        "rule-based cloze (WEAKER; tag synthetic-rules)"
        if rules
        else f"{stats['generator']} (tag synthetic-llm)"
    )
    console.print(
        f"[{'yellow' if rules else 'green'}]wrote {stats['kept']} questions by {escape(kind)}[/] to "
        f"{escape(stats['out'])}; dropped {escape(json.dumps(stats['dropped']))}"
    )
