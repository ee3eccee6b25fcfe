"""Judge-model metrics: the RAGAS definitions, implemented directly with Korean prompts
(:mod:`hanrag.eval.prompts`; no ragas package, nothing fetched).

The judge is the generator of the ``judge`` role (P11: ``engine.generators.get("judge")``,
a language model; the extractive generator cannot judge). Per question, with ``contexts``
the passages the answer was given (its references, in rank order) and ``reference`` the
first gold answer:

* **faithfulness** — the answer split into claims (one call), each claim judged supported
  by the contexts or not (one call); the share supported. None when the answer makes no
  claim (a "not found" reply).
* **answer relevancy** — judge-rated: a 0–100 score of how directly and completely the
  answer answers the question, divided by 100. (RAGAS regenerates questions from the
  answer and averages their embedding similarity to the question; a direct rating needs
  no embedding model in the judge path and is what the Korean judges we target do well.)
* **context precision** — each context judged useful for reaching the reference (the
  answer when there is no reference); the mean of precision@i over the useful ranks i
  (average precision); 0 when none is useful.
* **context recall** — the reference split into sentences (Kiwi), each judged found in
  the contexts; the share found. None without a reference.
* **answer correctness** — the answer's and the reference's statements classified as TP
  (in both), FP (answer only), FN (reference only); the factual F1
  TP / (TP + (FP + FN) / 2). (RAGAS adds 0.25 × embedding similarity; we report the
  factual part alone.) None without a reference.

Every judge reply that parses is cached on disk (:class:`JudgeCache`, SQLite) under the
sha256 of (judge model, the messages): a re-run, or another run over the same answers,
asks the judge nothing again. A reply that does not parse is not cached; its metric is
None with the reason.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hanrag.answer.prompts import judge_score
from hanrag.errors import HanragError
from hanrag.eval import prompts
from hanrag.korean.analyzer import sentences
from hanrag.llm.base import GenerationOptions, Generator, Turn

T = TypeVar("T")

METRICS = ("faithfulness", "answer_relevancy", "context_precision", "context_recall", "answer_correctness")
MAX_CLAIMS = 40
MAX_CONTEXT_CHARS = 4000  # per context given to the judge

_CLAIM = re.compile(r"<claim>(.*?)</claim>", re.DOTALL)
_VERDICT = re.compile(
    r'<verdict\s+n\s*=\s*"?(\d+)"?\s*>\s*(예|아니오|아니요|yes|no)\s*</verdict>', re.IGNORECASE
)
_STATEMENT = re.compile(r"<(tp|fp|fn)>(.*?)</\1>", re.DOTALL | re.IGNORECASE)


class JudgeCache:
    """(model, messages) -> reply, in one SQLite file (safe across threads and processes)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS judge_replies "
            "(key TEXT PRIMARY KEY, model TEXT NOT NULL, reply TEXT NOT NULL, created REAL NOT NULL)"
        )
        self._db.commit()

    @staticmethod
    def key(model: str, messages: list[Turn]) -> str:
        payload = json.dumps([model, [[m.role, m.content] for m in messages]], ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM judge_replies WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, model: str, reply: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO judge_replies (key, model, reply, created) VALUES (?, ?, ?, ?)",
                (key, model, reply, time.time()),
            )
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()


def judge_model_id(generator: Generator) -> str:
    """The judge's identity in cache keys: its providers' names and models."""
    status = generator.status()
    providers = status.get("providers")
    if isinstance(providers, list) and providers:
        return "+".join(f"{p.get('name')}:{p.get('model')}" for p in providers if isinstance(p, dict))
    return str(status.get("model") or generator.name)


def verdicts(reply: str, count: int) -> list[bool] | None:
    """One yes/no per numbered entry, or None when some entry has no verdict."""
    found: dict[int, bool] = {}
    for number, word in _VERDICT.findall(reply):
        found.setdefault(int(number), word.lower() in ("예", "yes"))
    if any(n not in found for n in range(1, count + 1)):
        return None
    return [found[n] for n in range(1, count + 1)]


def claims_of(reply: str) -> list[str] | None:
    found = [" ".join(c.split()) for c in _CLAIM.findall(reply)]
    if not found:
        return None
    return [c for c in found if c and c.lower() != "none"][:MAX_CLAIMS]


def statement_counts(reply: str) -> dict[str, int] | None:
    found = _STATEMENT.findall(reply)
    if not found and "<tp>" not in reply.lower() and "<fp>" not in reply.lower():
        return None
    counts = {"tp": 0, "fp": 0, "fn": 0}
    for kind, text in found:
        if text.strip() and text.strip().lower() != "none":
            counts[kind.lower()] += 1
    return counts


def average_precision(useful: list[bool]) -> float:
    hits = 0
    total = 0.0
    for rank, ok in enumerate(useful, start=1):
        if ok:
            hits += 1
            total += hits / rank
    return total / hits if hits else 0.0


class Judge:
    """Scores one answer at a time; ``calls``/``cache_hits``/``failures`` count judge use."""

    def __init__(self, generator: Generator, cache: JudgeCache, *, max_tokens: int = 1024) -> None:
        self.generator = generator
        self.cache = cache
        self.model = judge_model_id(generator)
        self.options = GenerationOptions(max_tokens=max_tokens, temperature=0.0, top_p=1.0)
        self.calls = 0
        self.cache_hits = 0
        self.failures = 0

    async def _ask(self, messages: list[Turn], parse: Callable[[str], T | None]) -> T:
        key = JudgeCache.key(self.model, messages)
        cached = self.cache.get(key)
        if cached is not None:
            parsed = parse(cached)
            if parsed is not None:
                self.cache_hits += 1
                return parsed
        self.calls += 1
        reply = await self.generator.complete(messages, self.options)
        parsed = parse(reply)
        if parsed is None:
            raise ValueError(f"the judge's reply does not follow the format: {reply[:200]!r}")
        self.cache.put(key, self.model, reply)
        return parsed

    async def evaluate(
        self, question: str, answer: str, contexts: list[str], references: list[str]
    ) -> dict[str, dict[str, Any]]:
        """metric -> {"score": float | None, details...}; a failed metric has "error"."""
        contexts = [c[:MAX_CONTEXT_CHARS] for c in contexts if c.strip()]
        reference = references[0] if references else ""
        out: dict[str, dict[str, Any]] = {}
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("faithfulness", lambda: self.faithfulness(question, answer, contexts)),
            ("answer_relevancy", lambda: self.answer_relevancy(question, answer)),
            ("context_precision", lambda: self.context_precision(question, reference or answer, contexts)),
            ("context_recall", lambda: self.context_recall(question, reference, contexts)),
            ("answer_correctness", lambda: self.answer_correctness(question, reference, answer)),
        ]
        for name, step in steps:
            started = time.perf_counter()
            try:
                out[name] = await step()
            except (HanragError, ValueError) as exc:
                self.failures += 1
                code = exc.code if isinstance(exc, HanragError) else "judge_unparsable"
                out[name] = {"score": None, "error": {"code": code, "message": str(exc)[:300]}}
            out[name]["ms"] = round((time.perf_counter() - started) * 1000, 2)
        return out

    async def faithfulness(self, question: str, answer: str, contexts: list[str]) -> dict[str, Any]:
        if not answer.strip():
            return {"score": None, "claims": []}
        claims = await self._ask(prompts.messages("eval_claims", question=question, answer=answer), claims_of)
        if not claims:
            return {"score": None, "claims": []}
        if not contexts:
            return {"score": 0.0, "claims": [{"claim": c, "supported": False} for c in claims]}
        supported = await self._ask(
            prompts.messages(
                "eval_faithfulness",
                contexts=prompts.numbered_contexts(contexts),
                claims=prompts.numbered_lines(claims),
            ),
            lambda reply: verdicts(reply, len(claims)),
        )
        return {
            "score": sum(supported) / len(claims),
            "claims": [{"claim": c, "supported": s} for c, s in zip(claims, supported, strict=True)],
        }

    async def answer_relevancy(self, question: str, answer: str) -> dict[str, Any]:
        if not answer.strip():
            return {"score": 0.0}
        score = await self._ask(
            prompts.messages("eval_answer_relevancy", question=question, answer=answer), judge_score
        )
        return {"score": score}

    async def context_precision(self, question: str, reference: str, contexts: list[str]) -> dict[str, Any]:
        if not contexts:
            return {"score": None, "useful": []}
        useful = await self._ask(
            prompts.messages(
                "eval_context_precision",
                question=question,
                reference=reference,
                contexts=prompts.numbered_contexts(contexts),
            ),
            lambda reply: verdicts(reply, len(contexts)),
        )
        return {"score": average_precision(useful), "useful": useful}

    async def context_recall(self, question: str, reference: str, contexts: list[str]) -> dict[str, Any]:
        statements = sentences(reference)[:MAX_CLAIMS] if reference else []
        if not statements:
            return {"score": None, "statements": []}
        if not contexts:
            return {"score": 0.0, "statements": [{"statement": s, "found": False} for s in statements]}
        found = await self._ask(
            prompts.messages(
                "eval_context_recall",
                question=question,
                contexts=prompts.numbered_contexts(contexts),
                statements=prompts.numbered_lines(statements),
            ),
            lambda reply: verdicts(reply, len(statements)),
        )
        return {
            "score": sum(found) / len(statements),
            "statements": [{"statement": s, "found": f} for s, f in zip(statements, found, strict=True)],
        }

    async def answer_correctness(self, question: str, reference: str, answer: str) -> dict[str, Any]:
        if not reference:
            return {"score": None}
        counts = await self._ask(
            prompts.messages(
                "eval_answer_correctness", question=question, reference=reference, answer=answer
            ),
            statement_counts,
        )
        tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
        score = tp / (tp + 0.5 * (fp + fn)) if tp + fp + fn else None
        return {"score": score, **counts}
