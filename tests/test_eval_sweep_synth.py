"""Sweeps over retrieval settings and synthetic test sets (P13).

* a sweep over two fusion methods on the samples (the fusion reaches every search and the
  run records it; best and plateau per metric; a second call resumes without searching);
* ``hanrag eval sweep`` over a chunk grid on a tiny directory dataset (one scratch corpus
  per chunk setting), and its refusals;
* rule-based synthesis: answerable cloze items whose gold chunk is retrievable;
* language-model synthesis against a scripted OpenAI-protocol server: near-duplicates,
  self-referring, unparsable and unanswerable questions are dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from answer_fixtures import completion, provider_config, scripted_server
from conftest import SampleCorpus
from hanrag.auth.access import SYSTEM
from hanrag.cli.main import app
from hanrag.eval.dataset import Dataset, Item, load_dataset
from hanrag.eval.runner import Runner, RunOptions
from hanrag.eval.runs import RunStore
from hanrag.eval.sweep import SweepStore, best_and_plateaus, build_grid, run_sweep, tables
from hanrag.eval.synth import (
    BLANK,
    RULES_GENERATOR,
    TAG_LLM,
    TAG_RULES,
    SynthOptions,
    bigram_set,
    jaccard,
    synthesize,
    write_synth,
)
from test_eval_run import USB, split, write_tiny  # noqa: F401  (split: the fixture)

# ------------------------------------------------------------------ sweeps


def test_sweep_over_two_fusions_on_the_samples(split: Any, tmp_path: Path) -> None:  # noqa: F811
    engine = split()
    searches: list[dict[str, Any]] = []
    original = engine.search

    def search(query: str, **kwargs: Any) -> Any:
        searches.append(kwargs)
        return original(query, **kwargs)

    engine.search = search

    @contextmanager
    def open_engine(settings: Any) -> Iterator[Any]:
        assert settings.chunk == engine.settings.chunk
        yield engine

    items = [
        Item("usb", USB, ("30일",), ("정보보안정책.txt",)),
        Item("meal", "야근 식대 한도는 얼마인가요?", ("12,000원",), ("경비처리지침.html",)),
        Item("growth", "자기계발비는 1년에 얼마나 지원되나요?", gold_document_ids=("복리후생안내.hwpx",)),
    ]
    dataset = Dataset("samples", Path("samples.jsonl"), "file", items)
    configs, notes = build_grid(engine.settings, fusion=["weighted", "rrf"], k=[5])
    assert [c.fusion for c in configs] == ["weighted", "rrf"] and notes == []
    store = SweepStore(tmp_path / "sweeps" / "s1")
    data = run_sweep(dataset, configs, store, engine.settings, open_engine)

    assert data["complete"] and json.loads(store.path.read_text(encoding="utf-8")) == data
    assert [e["params"]["fusion"] for e in data["configs"]] == ["weighted", "rrf"]
    measured = [s for s in searches if s.get("k") == 10]  # 2·k chunks: the runs' searches
    assert len(measured) == 6 and {s["fusion"] for s in measured} == {"weighted", "rrf"}
    for entry in data["configs"]:
        run = RunStore(Path(entry["run_dir"]))
        assert run.manifest()["config"]["retrieval"]["fusion"] == entry["params"]["fusion"]
        assert run.manifest()["options"]["retrieval_only"] is True
        assert entry["metrics"]["hit@5"] == 1.0 and entry["questions"] == 3
        top = max(h["score"] for r in run.rows() for h in r["retrieval"]["hits"])
        # Min-max weighted fusion puts the best chunk at 1; RRF scores are sums of 1/(60 + rank).
        assert top > 0.9 if entry["params"]["fusion"] == "weighted" else top < 0.1
    best = data["best"]
    assert best["hit@5"]["value"] == 1.0 and best["hit@5"]["plateau_size"] == 2
    assert best["hit@5"]["ranges"]["fusion"] == ["rrf", "weighted"]
    assert set(best["mrr@5"]["plateau"]) <= {e["id"] for e in data["configs"]}
    headers, rows, _, best_rows = tables(data)
    assert len(rows) == 2 and "MRR@k" in headers and any("*" in cell for cell in rows[0] + rows[1])
    assert [r[0] for r in best_rows][:2] == ["hit@1", "hit@5"] and "fusion" in best_rows[0][-1]

    # The same sweep again resumes: every configuration is complete, nothing is searched
    # but the warm-up pass; another grid under the same name is refused.
    searches.clear()
    again = run_sweep(dataset, configs, store, engine.settings, open_engine)
    assert [e["metrics"] for e in again["configs"]] == [e["metrics"] for e in data["configs"]]
    assert all(s.get("k") == 1 for s in searches)
    other, _ = build_grid(engine.settings, fusion=["rrf"], k=[5])
    with pytest.raises(Exception) as raised:
        run_sweep(dataset, other, store, engine.settings, open_engine)
    assert getattr(raised.value, "code", None) == "run_mismatch"


def test_plateau_arithmetic() -> None:
    def entry(name: str, dense: float, value: float) -> dict[str, Any]:
        params = {"fusion": "weighted", "dense": dense, "bm25": 0.4, "bigram": 0.2, "k": 10}
        return {
            "id": name,
            "params": {**params, "chunk_tokens": 320, "chunk_overlap": 48},
            "metrics": {"mrr@10": value},
        }

    best = best_and_plateaus(
        [entry("a", 0.2, 0.90), entry("b", 0.3, 0.952), entry("c", 0.4, 0.955), entry("d", 0.5, 0.949)]
    )["mrr@10"]
    assert best["best"] == "c" and best["plateau"] == ["b", "c"] and best["ranges"]["dense"] == [0.3, 0.4]


def test_sweep_cli_with_a_chunk_grid(tmp_path: Path) -> None:
    data, tiny = tmp_path / "data", write_tiny(tmp_path / "tiny", questions=4)

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(app, ["--data-dir", str(data), *args], catch_exceptions=False)

    grid = ["--fusion", "weighted,rrf", "--k", "3", "--chunk-tokens", "64,128", "--chunk-overlap", "8"]
    result = invoke("eval", "sweep", str(tiny), *grid, "--name", "s", "--json")
    assert result.exit_code == 0, result.stderr
    sweep = json.loads(result.stdout)
    assert len(sweep["configs"]) == 4 and sweep["complete"]
    corpora = sweep["corpora"]
    assert set(corpora) == {"64/8", "128/8"}
    assert len({c["scratch_data_dir"] for c in corpora.values()}) == 2  # one index per chunk setting
    assert all(c["outcomes"] == {"added": 4} for c in corpora.values())
    assert all(e["metrics"]["recall@1"] == 1.0 for e in sweep["configs"])
    stored = data / "eval" / "sweeps" / "s"
    assert json.loads((stored / "sweep.json").read_text(encoding="utf-8"))["configs"] == sweep["configs"]
    assert len(list((stored / "runs").iterdir())) == 4

    table = invoke("eval", "sweep", str(tiny), *grid, "--name", "s")  # resumed: the tables only
    assert table.exit_code == 0, table.stderr
    assert "best per metric" in table.stdout and "chunk" in table.stdout and "plateau" in table.stdout
    shown = invoke("eval", "show", str(stored / "runs" / sweep["configs"][0]["id"]), "--json")
    assert json.loads(shown.stdout)["summary"]["done"] == 4

    queries = tiny / "queries.jsonl"
    refused = invoke("eval", "sweep", str(queries), "--chunk-tokens", "64")
    assert refused.exit_code == 2 and refused.stderr.startswith("error [sweep_needs_corpus] ")
    bad = invoke("eval", "sweep", str(tiny), "--fusion", "weighted,max")
    assert bad.exit_code == 2 and bad.stderr.startswith("error [invalid_option] ")


# ------------------------------------------------------------------ rule-based synthesis


def test_rules_synth_is_answerable_and_retrievable(samples_engine: SampleCorpus, tmp_path: Path) -> None:
    engine = samples_engine.engine
    options = SynthOptions(count=6, per_document=2, seed=7)
    result = asyncio.run(synthesize(engine, None, options))
    assert result.mode == "rules" and result.generator == RULES_GENERATOR
    assert len(result.items) == 6
    assert len({i.meta["document_id"] for i in result.items}) >= 3  # spread over the documents
    for item in result.items:
        assert item.tags == (TAG_RULES,) and item.meta["generator"] == RULES_GENERATOR
        assert BLANK in item.question and item.answers[0] not in item.question
        chunks = engine.document_chunks(item.gold_document_ids[0], caller=SYSTEM)
        gold = next(c for c in chunks if c.chunk_id == item.gold_chunk_ids[0])
        # Answerable: the blanked sentence, filled in, is in the gold chunk and in no other.
        sentence = item.meta["sentence"]
        assert item.answers[0] in sentence
        assert sentence.replace(item.answers[0], BLANK, 1) in item.question
        assert " ".join(gold.text.split()).find(sentence[:10]) >= 0 or sentence[:10] in gold.text
    grams = [bigram_set(i.question) for i in result.items]
    assert all(jaccard(a, b) < 0.9 for a, b in itertools.combinations(grams, 2))

    # The gold chunk is retrievable: a retrieval-only run over the written dataset.
    out = tmp_path / "synth.jsonl"
    write_synth(result, out)
    assert out.read_text(encoding="utf-8").startswith("# hanrag eval synth: 6 rule-based cloze")
    dataset = load_dataset(out)
    assert [i.id for i in dataset.items] == [i.id for i in result.items]
    store = RunStore(tmp_path / "runs" / "synth")
    summary = asyncio.run(Runner(engine, dataset, store, options=RunOptions(k=5, retrieval_only=True)).run())
    assert summary["units"] == {"chunk": 6}
    assert summary["metrics"]["hit@5"]["mean"] == 1.0

    # The same seed gives the same set.
    assert [i.id for i in asyncio.run(synthesize(engine, None, options)).items] == [
        i.id for i in result.items
    ]


# ------------------------------------------------------------------ language-model synthesis


def test_llm_synth_dedups_and_checks_answerability(
    split: Any,  # noqa: F811
    samples_engine: SampleCorpus,
    tmp_path: Path,
) -> None:
    questions = iter(
        [
            ("USB 저장장치 사용 승인은 며칠 동안 유효한가요?", "30일"),
            ("USB 저장장치의 사용 승인은 며칠 동안 유효한가요?", "30일"),  # a near-duplicate
            ("화성 탐사선의 이름은 무엇인가요?", "큐리오시티"),  # the check cannot answer it
            ("위 자료에서 말하는 기간은 얼마인가요?", "3개월"),  # refers to "the passage"
            (None, None),  # no tags: unparsable
            ("야근 식대는 1인당 얼마까지 지원되나요?", "12,000원"),
            ("신규 입사자의 수습 기간은 얼마인가요?", "3개월"),
        ]
    )
    answers: dict[str, str] = {}
    passages: list[str] = []

    def reply(handler: Any, body: dict[str, Any]) -> None:
        user = body["messages"][-1]["content"]
        if user.startswith("[질문 생성]"):
            passages.append(user.split("자료:\n", 1)[1])
            question, answer = next(questions, ("남은 질문은 무엇인가요?", "없음"))
            if question is None:
                text = "질문을 만들 수 없습니다."
            else:
                answers[question] = answer
                text = f"<question>{question}</question>\n<answer>{answer}</answer>"
        elif user.startswith("[답변 확인]"):
            question = re.search(r"질문: (.*)", user).group(1)  # type: ignore[union-attr]
            text = (
                "<answer>없음</answer>"
                if "화성" in question
                else f"<answer>{answers[question]}입니다</answer>"
            )
        else:
            text = "?"
        completion(text)(handler, body)

    with scripted_server(complete=[reply]) as server:
        engine = split(llm={"providers": [provider_config("judge", server.url, roles=["judge"])]})
        generator = engine.generators["judge"]
        result = asyncio.run(
            synthesize(samples_engine.engine, generator, SynthOptions(count=3, per_document=3, seed=5))
        )
        bodies = server.bodies()
    assert result.mode == "llm" and result.generator == "judge:judge-model"
    assert [i.question for i in result.items] == [
        "USB 저장장치 사용 승인은 며칠 동안 유효한가요?",
        "야근 식대는 1인당 얼마까지 지원되나요?",
        "신규 입사자의 수습 기간은 얼마인가요?",
    ]
    assert result.stats["dropped"] == {
        "unparsable": 1,
        "self_reference": 1,
        "duplicate": 1,
        "unanswerable": 1,
        "invalid": 0,
        "error": 0,
    }
    # 7 questions asked for; 4 checked (not the duplicate, self-referring or unparsable one).
    assert result.stats["model_calls"] == len(bodies) == 11
    assert sum(1 for b in bodies if b["messages"][-1]["content"].startswith("[답변 확인]")) == 4
    assert "출제자" in bodies[0]["messages"][0]["content"] and bodies[0]["temperature"] == 0.0
    for item in result.items:
        assert item.tags == (TAG_LLM,) and item.meta["generator"] == "judge:judge-model"
        assert item.meta["check_answer"] == f"{item.answers[0]}입니다"
        chunks = samples_engine.engine.document_chunks(item.gold_document_ids[0], caller=SYSTEM)
        gold = next(c for c in chunks if c.chunk_id == item.gold_chunk_ids[0])
        assert any(gold.text[:200] in passage for passage in passages)  # written from its chunk

    out = tmp_path / "llm.jsonl"
    write_synth(result, out)
    assert "answerability-checked" in out.read_text(encoding="utf-8").splitlines()[0]
    assert len(load_dataset(out).items) == 3
