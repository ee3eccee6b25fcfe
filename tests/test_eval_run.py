"""Evaluation runs end to end (P13): the runner over the bundled samples, a judge speaking
the OpenAI protocol, the ``hanrag eval`` commands over a tiny generated corpus, resume
after ``kill -9`` of a ``hanrag eval run`` subprocess, and the importers.

The sample corpus is the session's read-only ``samples_engine``: answers come from an
engine with its own catalog over that index (``answer_engine``), document lookups from
the sample corpus, joined behind the evaluation's engine port (:class:`SplitEngine`).
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from answer_fixtures import (
    Reply,
    answer_engine,
    close_answer_engine,
    completion,
    provider_config,
    scripted_server,
    sse,
)
from conftest import SampleCorpus
from hanrag.auth.access import SYSTEM
from hanrag.cli.main import app
from hanrag.engine import Engine
from hanrag.errors import InvalidInputError
from hanrag.eval.dataset import Dataset, DatasetError, Item, load_dataset, parse_item
from hanrag.eval.importers import import_dataset, write_imported
from hanrag.eval.judge import Judge, JudgeCache
from hanrag.eval.runner import Runner, RunOptions
from hanrag.eval.runs import RESULTS, RunStore
from hanrag.korean.analyzer import sentences

HANRAG = str(Path(sys.executable).with_name("hanrag"))
USB = "USB 사용 승인은 며칠 동안 유효한가요?"


class SplitEngine:
    """The evaluation port over two engines: search and answers from ``asker`` (its own
    catalog takes the audit rows), document lookups from the read-only sample corpus."""

    def __init__(self, reader: Engine, asker: Engine) -> None:
        self.reader, self.asker = reader, asker
        self.settings = asker.settings
        self.asked = 0

    @property
    def pipeline(self) -> Any:
        return self.asker.pipeline

    @property
    def index(self) -> Any:
        return self.asker.index

    @property
    def generators(self) -> Any:
        return self.asker.generators

    @property
    def llm_registry(self) -> Any:
        return self.asker.llm_registry

    def search(self, query: str, **kwargs: Any) -> Any:
        return self.asker.search(query, **kwargs)

    async def ask_result(self, question: str, **kwargs: Any) -> Any:
        self.asked += 1
        return await self.asker.ask_result(question, **kwargs)

    def get_document(self, key: str, *, caller: Any) -> Any:
        return self.reader.get_document(key, caller=caller)


@pytest.fixture
def split(samples_engine: SampleCorpus, tmp_path: Path, shared_cache_path: Path) -> Iterator[Any]:
    engines: list[Engine] = []

    def build(**overrides: Any) -> SplitEngine:
        asker = answer_engine(
            samples_engine.engine, tmp_path / f"asker{len(engines)}", shared_cache_path, **overrides
        )
        engines.append(asker)
        return SplitEngine(samples_engine.engine, asker)

    yield build
    for engine in engines:
        close_answer_engine(engine)


def chunk_with(samples: SampleCorpus, file: str, text: str) -> Any:
    chunks = samples.engine.document_chunks(samples.ids[file], caller=SYSTEM)
    return next(c for c in chunks if text in c.text)


def run(engine: Any, items: list[Item], store: RunStore, **kwargs: Any) -> dict[str, Any]:
    dataset = Dataset("samples", Path("samples.jsonl"), "file", items)
    options = kwargs.pop("options", RunOptions(k=5))
    return asyncio.run(Runner(engine, dataset, store, options=options, **kwargs).run())


# ------------------------------------------------------------------ the runner


def test_run_over_the_samples(split: Any, samples_engine: SampleCorpus, tmp_path: Path) -> None:
    leave = chunk_with(samples_engine, "인사규정.md", "배우자")
    passage = next(s for s in sentences(leave.text) if "배우자" in s)
    growth = chunk_with(samples_engine, "복리후생안내.hwpx", "자기계발비")
    items = [
        Item("usb", USB, ("30일",), ("정보보안정책.txt",), tags=("보안",)),
        Item("meal", "야근 식대 한도는 얼마인가요?", ("12,000원",), ("경비처리지침.html",)),
        Item("leave", "배우자 출산휴가는 며칠인가요?", ("20일",), gold_passages=(passage,)),
        Item(
            "growth",
            "자기계발비는 1년에 얼마나 지원되나요?",
            ("120만 원",),
            gold_chunk_ids=(growth.chunk_id,),
        ),
        Item("missing", "파리의 인구는 몇 명인가요?", gold_document_ids=("없는문서.pdf",)),
        Item("review", "회의실 예약은 어떻게 하나요?", tags=("review",)),
        Item(
            "filtered",
            USB,
            gold_document_ids=("정보보안정책.txt",),
            filters={"document_ids": ["경비처리지침.html"]},
        ),
    ]
    engine = split()
    store = RunStore(tmp_path / "runs" / "samples-1")
    seen: list[tuple[int, int]] = []
    summary = run(engine, items, store, on_progress=lambda done, total, row: seen.append((done, total)))
    assert seen[0] == (0, 7) and seen[-1] == (7, 7)
    assert summary["complete"] and summary["done"] == 7 and summary["errors"] == 0
    assert summary["units"] == {"document": 4, "passage": 1, "chunk": 1, "none": 1}
    rows = {r["id"]: r for r in store.rows()}

    usb = rows["usb"]
    assert usb["metrics"]["hit@5"] == 1.0 and usb["metrics"]["contained"] == 1.0
    assert usb["metrics"]["citation_hit"] == 1.0 and usb["metrics"]["sources_hit"] == 1.0
    assert "30일" in usb["answer"]["text"]
    security = samples_engine.ids["정보보안정책.txt"]
    first = usb["retrieval"]["hits"][usb["retrieval"]["first_rank"] - 1]
    assert first["document_id"] == security and first["relevant"] == ["정보보안정책.txt"]
    assert {"dense", "bm25", "bigram", "score", "text"} <= set(first)
    # Distinct documents: the gold documents' ranking keeps one chunk per document.
    assert len({h["document_id"] for h in usb["retrieval"]["hits"]}) == len(usb["retrieval"]["hits"])
    assert rows["leave"]["unit"] == "passage" and rows["leave"]["metrics"]["hit@5"] == 1.0
    assert rows["leave"]["metrics"]["contained"] == 1.0
    assert rows["growth"]["unit"] == "chunk" and rows["growth"]["metrics"]["hit@5"] == 1.0
    assert rows["missing"]["unresolved_gold"] == ["없는문서.pdf"]
    assert rows["missing"]["metrics"]["hit@5"] == 0.0 and rows["missing"]["metrics"]["mrr@5"] == 0.0
    assert rows["review"]["unit"] == "none"
    assert not any(name.startswith(("hit@", "exact")) for name in rows["review"]["metrics"])
    # The filter reached the search: only the expense document, so the gold is not found.
    expenses = samples_engine.ids["경비처리지침.html"]
    assert {h["document_id"] for h in rows["filtered"]["retrieval"]["hits"]} == {expenses}
    assert rows["filtered"]["metrics"]["hit@5"] == 0.0

    assert summary["metrics"]["hit@5"]["n"] == 6
    assert summary["metrics"]["hit@5"]["mean"] == pytest.approx(4 / 6)
    assert summary["by_tag"]["보안"]["metrics"]["hit@5"] == 1.0
    assert {"planning", "retrieval", "first_token", "total", "search"} <= set(summary["latency_ms"])
    assert summary["timing"]["engine_s"] > 0 and summary["timing"]["eval_overhead_pct"] is not None
    manifest = store.manifest()
    assert manifest["config"]["llm"]["backend"] == "extractive"
    assert manifest["question_ids"] == [i.id for i in items]
    # No conversation was stored for the evaluation's questions.
    assert engine.asker.list_sessions(caller=SYSTEM) == []

    # The same run again: nothing is asked, the results stay.
    asked = engine.asked
    again = run(engine, items, store)
    assert engine.asked == asked
    assert again["metrics"] == summary["metrics"]
    assert len((store.directory / RESULTS).read_text(encoding="utf-8").splitlines()) == 7


def test_a_changed_dataset_does_not_resume_a_run(split: Any, tmp_path: Path) -> None:
    engine = split()
    store = RunStore(tmp_path / "runs" / "one")
    run(engine, [Item("usb", USB, ("30일",))], store, options=RunOptions(k=5, retrieval_only=True))
    with pytest.raises(InvalidInputError) as raised:
        run(engine, [Item("usb", USB, ("31일",))], store, options=RunOptions(k=5, retrieval_only=True))
    assert raised.value.code == "run_mismatch"


def test_a_torn_last_line_is_cut_on_resume(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "r")
    writer = store.open_results()
    writer.append({"id": "a", "metrics": {}})
    writer.close()
    with (store.directory / RESULTS).open("a", encoding="utf-8") as handle:
        handle.write('{"id": "b", "metr')
    assert [r["id"] for r in store.rows()] == ["a"]
    assert store.repair() > 0
    assert (store.directory / RESULTS).read_text(encoding="utf-8").endswith("}\n")


# ------------------------------------------------------------------ the judge


def judge_reply(handler: Any, body: dict[str, Any]) -> None:
    """Verdicts by task heading: 2 claims (1 supported), first context useful, every
    reference sentence found, relevancy 80, one TP and one FP."""
    user = body["messages"][-1]["content"]
    if user.startswith("[주장 추출]"):
        text = "<claim>USB 승인은 30일간 유효하다.</claim>\n<claim>연장은 자동이다.</claim>"
    elif user.startswith("[주장 검증]"):
        text = '<verdict n="1">예</verdict>\n<verdict n="2">아니오</verdict>'
    elif user.startswith("[문맥 정밀도]"):
        contexts = sum(1 for line in user.splitlines() if line.startswith("[") and "] " in line[:6])
        text = "\n".join(
            f'<verdict n="{n}">{"예" if n == 1 else "아니오"}</verdict>' for n in range(1, contexts + 1)
        )
    elif user.startswith("[문맥 재현율]"):
        section = user.split("참고 답변의 문장:")[1]
        count = sum(1 for line in section.splitlines() if line[:1].isdigit())
        text = "\n".join(f'<verdict n="{n}">예</verdict>' for n in range(1, count + 1))
    elif user.startswith("[답변 관련성]"):
        text = "<score>80</score>"
    elif user.startswith("[답변 정확성]"):
        text = "<tp>30일간 유효하다</tp>\n<fp>연장은 자동이다</fp>"
    else:
        text = "?"
    completion(text)(handler, body)


def test_judge_metrics_against_an_openai_protocol_server(split: Any, tmp_path: Path) -> None:
    script: list[Reply] = [judge_reply]
    with scripted_server(complete=script) as server:
        engine = split(llm={"providers": [provider_config("judge", server.url, roles=["judge"])]})
        generator = engine.generators["judge"]
        assert generator.is_llm and engine.generators["answer"].name == "extractive"
        cache = JudgeCache(tmp_path / "judge-cache.db")
        items = [
            Item("usb", USB, ("30일",), ("정보보안정책.txt",)),
            Item("open", "야근 식대 한도는 얼마인가요?"),
        ]
        try:
            judge = Judge(generator, cache)
            summary = run(engine, items, RunStore(tmp_path / "runs" / "j1"), judge=judge)
            requests = len(server.bodies())
            assert requests == judge.calls > 0
            rows = {r["id"]: r for r in RunStore(tmp_path / "runs" / "j1").rows()}
            usb = rows["usb"]["metrics"]
            assert usb["faithfulness"] == 0.5
            assert usb["answer_relevancy"] == 0.8
            assert usb["context_precision"] == 1.0
            assert usb["context_recall"] == 1.0
            assert usb["answer_correctness"] == pytest.approx(2 / 3)
            claims = rows["usb"]["judge"]["faithfulness"]["claims"]
            assert [c["supported"] for c in claims] == [True, False]
            # No reference answer: no recall, no correctness; precision judged against the answer.
            assert rows["open"]["metrics"]["context_recall"] is None
            assert rows["open"]["metrics"]["answer_correctness"] is None
            assert rows["open"]["metrics"]["context_precision"] == 1.0
            assert summary["judge"] == "judge:judge-model" and summary["judge_calls"] == requests
            # Korean prompts, temperature 0, no streaming.
            body = server.bodies()[0]
            assert body["temperature"] == 0.0 and not body.get("stream")
            assert "검토자" in body["messages"][0]["content"]

            # Another run over the same answers: every judge call comes from the cache.
            again = Judge(generator, cache)
            second = run(engine, items, RunStore(tmp_path / "runs" / "j2"), judge=again)
            assert len(server.bodies()) == requests and again.calls == 0
            assert second["judge_cache_hits"] == requests and second["judge_calls"] == 0
            assert second["metrics"]["faithfulness"] == summary["metrics"]["faithfulness"]
        finally:
            cache.close()


# ------------------------------------------------------------------ the CLI


def write_tiny(directory: Path, questions: int = 4) -> Path:
    """A four-passage corpus and ``questions`` questions about it (a directory dataset)."""
    directory.mkdir(parents=True, exist_ok=True)
    corpus = [
        ("leave", "연차휴가", "입사 1년 이상 직원은 매년 15일의 연차휴가를 받는다."),
        ("trip", "출장비", "국내 출장 숙박비는 1박에 10만 원까지 실비로 지급한다."),
        ("usb", "보안", "USB 저장장치 사용 승인은 30일간 유효하다."),
        ("meal", "식대", "야근 식대는 1인당 12,000원까지 지원한다."),
    ]
    templates = [
        ("연차휴가는 며칠인가요?", "15일", "leave"),
        ("출장 숙박비 한도는 얼마인가요?", "10만 원", "trip"),
        ("USB 승인은 며칠 동안 유효한가요?", "30일", "usb"),
        ("야근 식대는 얼마까지 지원되나요?", "12,000원", "meal"),
    ]
    with (directory / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        for pid, title, text in corpus:
            handle.write(json.dumps({"id": pid, "title": title, "text": text}, ensure_ascii=False) + "\n")
    with (directory / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for n in range(questions):
            question, answer, gold = templates[n % len(templates)]
            prefix = "" if n < len(templates) else f"{n // len(templates) + 1}번째 질문: "
            row = {
                "id": f"t{n:02d}",
                "question": prefix + question,
                "answers": [answer],
                "positive_ids": [gold],
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return directory


@pytest.fixture(scope="module")
def cli_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("eval-cli")
    return base / "data", write_tiny(base / "tiny")


def invoke(data: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["--data-dir", str(data), *args], catch_exceptions=False)


def one_line_error(result: Any, code: str) -> None:
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error [{code}] "), result.stderr


def test_cli_run_show_list_compare_and_the_gate(cli_data: tuple[Path, Path]) -> None:
    data, tiny = cli_data
    first = invoke(data, "eval", "run", str(tiny), "--name", "a", "--json")
    assert first.exit_code == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["complete"] and summary["done"] == 4
    assert summary["metrics"]["recall@1"]["mean"] == 1.0 and summary["metrics"]["contained"]["mean"] == 1.0
    run_dir = Path(summary["run_dir"])
    manifest = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    assert manifest["corpus"]["reused"] is False and manifest["corpus"]["outcomes"] == {"added": 4}
    assert manifest["dataset"]["kind"] == "directory"

    second = invoke(data, "eval", "run", str(tiny), "--name", "b", "--k", "5", "--concurrency", "3", "--json")
    assert second.exit_code == 0, second.stderr
    manifest_b = json.loads((data / "eval" / "runs" / "b" / "run.json").read_text(encoding="utf-8"))
    assert manifest_b["corpus"]["reused"] is True  # the scratch corpus is not ingested again

    shown = invoke(data, "eval", "show", "a", "--json")
    assert json.loads(shown.stdout)["summary"]["metrics"] == summary["metrics"]
    assert "recall@1" in invoke(data, "eval", "show", "a").stdout
    listed = json.loads(invoke(data, "eval", "list", "--json").stdout)
    assert {r["run_id"] for r in listed} == {"a", "b"}
    compared = json.loads(invoke(data, "eval", "compare", "a", "b", "--json").stdout)
    assert compared["questions"]["common"] == 4
    assert compared["metrics"]["recall@1"]["delta"] == 0.0 and compared["worse"] == []
    assert "95% CI" in invoke(data, "eval", "compare", "a", "b").stdout

    # The gate: a baseline whose char F1 was higher makes the run fail.
    summary_a = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    summary_a["metrics"]["char_f1"]["mean"] += 0.5
    (run_dir / "summary.json").write_text(json.dumps(summary_a), encoding="utf-8")
    gated = invoke(data, "eval", "run", str(tiny), "--name", "c", "--baseline", "a", "--fail-on-drop", "0.01")
    # After the run's progress, one error line with the code (and exit 1, not a bad-input 2).
    errors = [line for line in gated.stderr.splitlines() if line.startswith("error")]
    assert errors == [gated.stderr.strip().splitlines()[-1]] and errors[0].startswith(
        "error [metric_dropped] "
    )
    assert gated.exit_code == 1 and "char_f1" in errors[0]
    passed = invoke(
        data, "eval", "run", str(tiny), "--name", "c", "--baseline", "b", "--fail-on-drop", "0.01"
    )
    assert passed.exit_code == 0, passed.stderr


def test_cli_bad_input_is_one_line(cli_data: tuple[Path, Path], tmp_path: Path) -> None:
    data, tiny = cli_data
    one_line_error(invoke(data, "eval", "run", str(tmp_path / "nope.jsonl")), "dataset_not_found")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "연차는?", "answer": "15일"}\n', encoding="utf-8")
    one_line_error(invoke(data, "eval", "run", str(bad)), "dataset_unknown_field")
    one_line_error(invoke(data, "eval", "run", str(tiny), "--fail-on-drop", "0.1"), "invalid_option")
    one_line_error(invoke(data, "eval", "run", str(tiny), "--name", "../x"), "invalid_run_name")
    one_line_error(invoke(data, "eval", "show", "no-such-run"), "run_not_found")
    one_line_error(
        invoke(data, "eval", "import", "nope", str(bad), str(tmp_path / "o.jsonl")), "unknown_format"
    )


# ------------------------------------------------------------------ kill -9


def test_resume_after_kill_9(tmp_path: Path) -> None:
    total = 16
    dataset = write_tiny(tmp_path / "tiny", questions=total)
    data = tmp_path / "data"
    results = data / "eval" / "runs" / "crash" / RESULTS
    usage = {"prompt_tokens": 100, "completion_tokens": 10}
    with scripted_server(stream=[sse(["연차휴가는 15일입니다 [1]"], delay_s=0.25, usage=usage)]) as server:
        # One provider at one currency unit a token, so the cost is the token count.
        provider = provider_config("slow", server.url, cost_per_1m_input=1e6, cost_per_1m_output=1e6)
        env = {
            **os.environ,
            "OMP_WAIT_POLICY": "PASSIVE",
            "HANRAG_LLM__PROVIDERS": json.dumps([provider]),
            "HANRAG_LLM__PLANNER": "false",
        }
        command = [HANRAG, "--data-dir", str(data), "eval", "run", str(dataset), "--name", "crash", "--json"]
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and process.poll() is None:
                if results.is_file() and len(results.read_bytes().splitlines()) >= 3:
                    break
                time.sleep(0.05)
            assert process.poll() is None, process.communicate()[1].decode()[-2000:]
            os.kill(process.pid, signal.SIGKILL)
        finally:
            process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL
        killed_at = len(results.read_bytes().splitlines())
        assert 3 <= killed_at < total
        assert not (results.parent / "summary.json").exists()

        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-2000:]
    summary = json.loads(again.stdout)
    lines = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    ids = [row["id"] for row in lines]
    assert len(ids) == len(set(ids)) == total  # no question done twice, none missing
    assert summary["complete"] and summary["done"] == total and summary["errors"] == 0
    assert summary["metrics"]["recall@1"]["n"] == total
    manifest = json.loads((results.parent / "run.json").read_text(encoding="utf-8"))
    # The killed session left no entry; the resumed one did the rest.
    assert [s["questions"] for s in manifest["sessions"]] == [total - killed_at]
    # Tokens of every stored answer; cost from the provider's prices, of the resumed session.
    assert summary["usage"]["prompt_tokens"] == 100 * total
    assert summary["usage"]["completion_tokens"] == 10 * total
    assert summary["cost"] == pytest.approx(110 * (total - killed_at))
    assert {row["answer"]["generator"] for row in lines} == {"slow-model"}


# ------------------------------------------------------------------ importers


def test_importers(tmp_path: Path) -> None:
    ragas = tmp_path / "ragas.jsonl"
    ragas.write_text(
        json.dumps(
            {
                "question": "연차는 며칠인가요?",
                "answer": "모델의 답",
                "contexts": ["연차휴가는 15일이다."],
                "ground_truth": "15일",
                "evolution_type": "simple",
            },
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    item = import_dataset("ragas", ragas).items[0]
    assert (item.answers, item.gold_passages, item.tags) == (
        ("15일",),
        ("연차휴가는 15일이다.",),
        ("simple",),
    )
    csv_path = tmp_path / "ragas.csv"
    with csv_path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_input", "reference", "reference_contexts"])
        writer.writerow(["식대는?", "12,000원", "['식대는 12,000원이다.', '야근 시에만']"])
    item = import_dataset("ragas", csv_path).items[0]
    assert item.question == "식대는?" and item.gold_passages == ("식대는 12,000원이다.", "야근 시에만")

    korquad = tmp_path / "korquad.json"
    korquad.write_text(
        json.dumps(
            {
                "version": "KorQuAD_v1.0_dev",
                "data": [
                    {
                        "title": "임종석",
                        "paragraphs": [
                            {
                                "context": "1989년 2월 15일 여의도 농민 폭력 시위를 주도한 혐의로 지명수배되었다.",
                                "qas": [
                                    {
                                        "id": "k1",
                                        "question": "지명수배된 날짜는?",
                                        "answers": [{"text": "1989년 2월 15일", "answer_start": 0}],
                                    }
                                ],
                            }
                        ],
                    }
                ],
            },
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    imported = import_dataset("korquad", korquad)
    assert imported.corpus is not None and imported.corpus[0].id == "p0000-00"
    assert imported.items[0].gold_document_ids == ("p0000-00",) and imported.items[0].answers == (
        "1989년 2월 15일",
    )
    # To a directory: a directory dataset that loads back, gold passages left to the corpus.
    write_imported(imported, tmp_path / "kq")
    loaded = load_dataset(tmp_path / "kq")
    assert loaded.kind == "directory" and loaded.corpus is not None and not loaded.items[0].gold_passages

    bench = import_dataset("bench", write_tiny(tmp_path / "bench"))
    assert bench.items[0].gold_passages == ("입사 1년 이상 직원은 매년 15일의 연차휴가를 받는다.",)
    write_imported(bench, tmp_path / "bench.jsonl")
    assert load_dataset(tmp_path / "bench.jsonl").items == bench.items

    feedback = tmp_path / "feedback.jsonl"
    rows = [
        {
            "question": "연차는?",
            "answer": "15일입니다 [1].",
            "rating": "up",
            "relevant_chunk_ids": ["c1"],
            "model": "m",
            "created_at": "2026-12-01T00:00:00Z",
        },
        {
            "question": "식대는?",
            "answer": "모릅니다",
            "rating": "down",
            "reason": "wrong",
            "comment": "틀림",
            "created_at": "2026-12-01T00:00:01Z",
        },
    ]
    feedback.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    up, down = import_dataset("feedback", feedback).items
    assert up.answers == ("15일입니다.",) and up.gold_chunk_ids == ("c1",) and up.tags == ("feedback", "up")
    assert down.tags == ("feedback", "review") and not down.answers and down.meta["reason"] == "wrong"
    assert down.meta["rejected_answer"] == "모릅니다"


def test_autorag_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"doc_id": ["d1", "d2"], "contents": ["연차휴가는 15일이다.", "식대는 12,000원이다."]}),
        tmp_path / "corpus.parquet",
    )
    pq.write_table(
        pa.table(
            {"qid": ["q1"], "query": ["연차는?"], "retrieval_gt": [[["d1"]]], "generation_gt": [["15일"]]}
        ),
        tmp_path / "qa.parquet",
    )
    imported = import_dataset("autorag", tmp_path)
    item = imported.items[0]
    assert (item.id, item.gold_document_ids, item.gold_passages) == ("q1", ("d1",), ("연차휴가는 15일이다.",))
    assert imported.corpus is not None and [p.id for p in imported.corpus] == ["d1", "d2"]


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ('{"question": ""}', "dataset_invalid_item"),
        ('{"question": "q", "answers": [1, {}]}', "dataset_invalid_item"),
        ('{"question": "q", "gold": ["x"]}', "dataset_unknown_field"),
        ('{"question": "q", "filters": {"date_from": "yesterday"}}', "dataset_invalid_item"),
        ('{"question": "q", "filters": {"principal": "x"}}', "dataset_unknown_field"),
        ('{"question": "' + "가" * 2001 + '"}', "dataset_invalid_item"),
        ("[1, 2]", "dataset_invalid_json"),
        ("{not json", "dataset_invalid_json"),
        ('{"id": "a", "question": "q"}\n{"id": "a", "question": "r"}', "dataset_duplicate_id"),
        ("# only a comment", "dataset_empty"),
    ],
)
def test_dataset_validation(tmp_path: Path, line: str, code: str) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(DatasetError) as raised:
        load_dataset(path)
    assert raised.value.code == code
    assert "set.jsonl" in raised.value.message


def test_dataset_defaults_and_aliases() -> None:
    item = parse_item({"question": " 연차는? ", "positive_ids": [7], "answers": "15일"}, "x:1")
    assert item.question == "연차는?" and item.gold_document_ids == ("7",) and item.answers == ("15일",)
    assert item.id.startswith("q-") and item.id == parse_item({"question": "연차는?"}, "x:2").id
