"""Company vocabulary (issue 18 item 1): Kiwi user words, query-time synonyms and stop-words,
the lexical-only re-index, ``hanrag vocab`` and ``/api/v1/admin/vocab`` (admins only).

"누리온패스" (a made-up product name) is split by Kiwi into 누리 / 온 / 패스 when it stands
alone, but kept whole before a particle (누리온패스를 …): a BM25-only search for it misses
the document that names it until the word is in the dictionary and the chunks are
re-analysed. "법카" is split into 법 / 카, "법인카드" into 법인 / 카드: only the synonym
group joins them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from api_server import start_server
from hanrag.auth.access import SYSTEM
from hanrag.cli.main import app
from hanrag.engine import Engine
from hanrag.korean import analyzer, vocabulary
from hanrag.korean.analyzer import char_bigrams, morpheme_tokens
from hanrag.korean.vocabulary import Vocabulary, VocabularyFile

BM25_ONLY = {"dense": 0.0, "bm25": 1.0, "bigram": 0.0}
PRODUCT = "누리온패스"
DOCS = {
    "product.md": "# 사내 앱 안내\n\n누리온패스를 설치하면 출입과 식권 결제를 한 번에 처리할 수 있습니다.\n",
    "travel.md": "# 출장 패스 규정\n\n누리 센터 방문 시 온라인 패스를 발급받아 출입합니다. 패스는 하루만 유효합니다.\n",
    "card.md": "# 비용 처리 지침\n\n법인카드는 업무 목적의 식대와 교통비에만 사용할 수 있습니다.\n",
    "leave.md": "# 휴가 규정\n\n연차휴가는 입사 1년 후 15일이 부여됩니다.\n",
    "pay.md": "# 결제 안내\n\n구내식당에서는 다온페이로 결제할 수 있습니다.\n",
}
PAY = "다온페이"  # whole alone, split into 온 / 페이 in pay.md until it is a user word


@pytest.fixture(autouse=True)
def _restore_vocabulary() -> Iterator[None]:
    """The analyser is process-wide: put back the vocabulary other tests run with."""
    before = vocabulary._active
    yield
    vocabulary._active = before
    analyzer.set_refresh_hook(before.check if before else None)
    if before is not None:
        before.check(force=True)
    else:
        analyzer.set_user_words(())


class Recording:
    """Counts the calls that reach the embedding model."""

    def __init__(self, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        shared = engine.shared_embedder
        for name in ("embed_passages", "embed_queries"):
            original = getattr(shared, name)

            def record(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
                self.calls.append(_name)
                return _original(*args, **kwargs)

            monkeypatch.setattr(shared, name, record)


@pytest.fixture
def corpus(make_engine: Any, tmp_path: Path) -> Engine:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    engine: Engine = make_engine()
    report = engine.ingest([docs])
    assert all(o.document_id for o in report.outcomes), report
    return engine


def top_source(engine: Engine, query: str, weights: dict[str, float] = BM25_ONLY) -> str | None:
    hits = engine.search(query, caller=SYSTEM, k=3, weights=weights).hits
    return Path(hits[0].chunk.source).name if hits and hits[0].score > 0 else None


def test_user_word_is_found_only_after_it_is_added_and_reindex_embeds_nothing(
    corpus: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert morpheme_tokens(PRODUCT) == ["누리", "온", "패스"]  # split by default
    assert top_source(corpus, PRODUCT) != "product.md"
    assert top_source(corpus, PAY) != "pay.md"

    from hanrag.jobs.vocab_reindex import reindex

    VocabularyFile(corpus.settings.data_dir).replace(Vocabulary(words={PRODUCT: "NNP", PAY: "NNP"}))
    assert morpheme_tokens(PRODUCT) == [PRODUCT]
    assert top_source(corpus, PRODUCT) == "product.md"  # the query is now analysed as the text was
    assert top_source(corpus, PAY) != "pay.md"  # the chunk still holds 온 / 페이 until re-indexed
    recording = Recording(corpus, monkeypatch)
    hits_before = corpus.embedder.cache.hits if corpus.embedder.cache else None
    progress: list[tuple[int, int, int]] = []
    report = reindex(corpus, on_progress=lambda *p: progress.append(p))
    assert recording.calls == []  # nothing embedded: the stored vectors are kept
    assert (corpus.embedder.cache.hits if corpus.embedder.cache else None) == hits_before
    assert report["documents"] == len(DOCS) and report["documents_changed"] >= 1
    assert progress and progress[-1][:2] == (len(DOCS), len(DOCS))
    assert top_source(corpus, PAY) == "pay.md"
    assert top_source(corpus, PRODUCT) == "product.md"
    # The dense signal still answers with the vectors it had.
    assert corpus.search("법인카드 사용 범위", caller=SYSTEM, k=1).hits


def test_synonym_finds_the_other_word_with_dense_weight_zero(corpus: Engine) -> None:
    assert top_source(corpus, "법카 어디에 쓰나요") != "card.md"
    file = VocabularyFile(corpus.settings.data_dir)
    with file.changing() as vocab:
        vocab.add_synonyms(["법카", "법인카드"])
        vocab.add_synonyms(["연차", "연차휴가"])
    for weights in (BM25_ONLY, {"dense": 0.0, "bm25": 0.0, "bigram": 1.0}):
        assert top_source(corpus, "법카 어디에 쓰나요", weights) == "card.md"
    assert file.load().synonyms == [["법카", "법인카드"], ["연차", "연차휴가"]]


def test_stopwords_are_dropped_and_synonym_groups_merge() -> None:
    vocab = Vocabulary()
    vocab.add_stopwords(["규정"])
    text = "휴가 규정"
    morphemes, bigrams = vocab.expand_query(text, morpheme_tokens(text), char_bigrams(text))
    assert "규정" not in morphemes and "휴가" in morphemes
    assert "규정" not in bigrams and "휴가" in bigrams
    vocab.add_synonyms(["법카", "법인카드"])
    vocab.add_synonyms(["법인카드", "corporate card"])
    assert vocab.synonyms == [["법인카드", "corporate card", "법카"]]
    morphemes, _ = vocab.expand_query("Corporate Card 한도", ["corporate", "card", "한도"], [])
    assert {"법인", "카드"} <= set(morphemes)
    vocab.remove_synonyms(["corporate card", "법카"])
    assert vocab.synonyms == []


def test_cli_word_synonym_stopword_list_export_import(
    make_engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "cli-data"
    make_engine(data_dir)
    monkeypatch.setenv("HANRAG_DATA_DIR", str(data_dir))
    runner = CliRunner()

    def invoke(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    invoke("vocab", "word", "add", PRODUCT, "한빛스마트패스")
    invoke("vocab", "synonym", "add", "법카", "법인카드")
    invoke("vocab", "stopword", "add", "관련")
    listed = json.loads(invoke("vocab", "list", "--json"))
    assert [w["term"] for w in listed["words"]] == sorted([PRODUCT, "한빛스마트패스"])
    assert listed["synonyms"] == [["법카", "법인카드"]] and listed["stopwords"] == ["관련"]
    assert listed["version"] == 3
    exported = tmp_path / "vocab.json"
    invoke("vocab", "export", str(exported))
    invoke("vocab", "word", "remove", "한빛스마트패스")
    invoke("vocab", "stopword", "remove", "관련")
    assert json.loads(invoke("vocab", "list", "--json"))["stopwords"] == []
    invoke("vocab", "import", str(exported))
    assert json.loads(invoke("vocab", "list", "--json"))["words"] == listed["words"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"words": [{"term": "x", "tag": "BOGUS"}]}), encoding="utf-8")
    assert runner.invoke(app, ["vocab", "import", str(bad)]).exit_code != 0
    assert "re-analysed" in invoke("vocab", "reindex")


def test_api_is_admin_only_and_a_word_change_queues_a_reindex_job(
    tmp_path: Path, shared_cache_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hanrag.embed.cache import EmbeddingCache
    from hanrag.settings import Settings

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "product.md").write_text(DOCS["product.md"], encoding="utf-8")
    (docs / "travel.md").write_text(DOCS["travel.md"], encoding="utf-8")
    engine = Engine(Settings(data_dir=tmp_path / "data", auth={"mode": "token"}))
    engine.__dict__["embedding_cache"] = EmbeddingCache(shared_cache_path)
    engine.ingest([docs])
    engine.auth.create_user("admin", "correct-horse-battery", role="admin")
    engine.auth.create_user("alice", "correct-horse-battery", role="viewer")
    tokens = {n: engine.auth.login(n, "correct-horse-battery")["access_token"] for n in ("admin", "alice")}
    live = start_server(engine)
    try:
        recording = Recording(engine, monkeypatch)

        def client(who: str) -> httpx.Client:
            return httpx.Client(
                base_url=live.url, headers={"Authorization": f"Bearer {tokens[who]}"}, timeout=60
            )

        with client("alice") as viewer:
            assert viewer.get("/api/v1/admin/vocab").status_code == 403
            assert viewer.post("/api/v1/admin/vocab/words", json={"terms": [PRODUCT]}).status_code == 403
            assert viewer.delete("/api/v1/admin/vocab/words", params={"term": PRODUCT}).status_code == 403
        with client("admin") as admin:
            response = admin.post("/api/v1/admin/vocab/words", json={"terms": [PRODUCT]})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["changed"] and body["words"] == [{"term": PRODUCT, "tag": "NNP"}]
            job_id = body["reindex_job_id"]
            assert job_id
            deadline = time.monotonic() + 60
            while True:
                job = admin.get(f"/api/v1/jobs/{job_id}").json()
                state = job.get("state") or job.get("data", {}).get("state")
                if state in ("succeeded", "failed", "dead") or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert state == "succeeded", job
            assert recording.calls == []
            assert top_source(engine, PRODUCT) == "product.md"
            response = admin.post("/api/v1/admin/vocab/synonyms", json={"terms": ["법카", "법인카드"]})
            assert response.json()["reindex_job_id"] is None  # query time only
            assert (
                admin.post("/api/v1/admin/vocab/words", json={"terms": ["x"], "tag": "BOGUS"}).status_code
                == 400
            )
            response = admin.delete("/api/v1/admin/vocab/synonyms", params={"term": "법카"})
            assert response.json()["synonyms"] == []
            assert admin.get("/api/v1/admin/vocab").json()["version"] == 3
    finally:
        live.stop()
        engine.close()
