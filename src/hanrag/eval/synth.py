"""Synthetic test sets from the operator's own documents (``hanrag eval synth``).

Chunks are sampled from the indexed documents the caller may read: documents in a seeded
random order, one chunk of each in turn (a second round only when every document gave
one), at most ``per_document`` per document, until ``count`` questions are kept. Each kept
question becomes a dataset item (:mod:`hanrag.eval.dataset`) whose gold is the chunk it was
written from (``gold_chunk_ids``; the document too) and its answer, tagged with the
generator kind and carrying the generator's name and the source in ``meta``.

With a language model (``synthetic-llm``; the ``judge`` or ``answer`` role's generator):

1. ``synth_question`` (:mod:`hanrag.eval.prompts`, Korean) asks for one question whose
   short answer is in the chunk, and that answer (``<question>``, ``<answer>``); a question
   that refers to "the passage" or "this document" instead of naming its subject is
   dropped (``self_reference``);
2. near-duplicates are dropped: a question whose character-bigram Jaccard similarity with
   a kept one is at least ``dedup`` (0.7) (``duplicate``);
3. answerability: ``synth_check`` asks the model to answer the question from the chunk
   alone; the question is kept only when that answer agrees with the generated one (one
   contains the other after Korean normalisation, or their character F1 is at least 0.6)
   and is not "없음" (``unanswerable``).

With no language model, a clearly weaker rule-based generator (``synthetic-rules``,
generator ``rules-cloze-1``): cloze questions. In each sampled chunk, the sentences (Kiwi)
that occur in no other chunk of the document (so the gold chunk is the only right one) are
scanned for salient noun phrases — runs of Kiwi NNP/NNG/SN/SL/SH/NR tokens (a counter NNB
after a number joins: "30일", "12,000원") — scored numbers first, then proper nouns, then
length; generic nouns (경우, 사항, 기준...) never stand alone. The best phrase of the best
sentence is blanked: the question is the sentence with ``____`` in its place (and the
document title), the answer the phrase. These test lexical retrieval more than
understanding: use them to catch regressions, not to state quality.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hanrag.auth.access import SYSTEM, Caller
from hanrag.domain import Chunk
from hanrag.errors import HanragError
from hanrag.eval import prompts
from hanrag.eval.dataset import Item, parse_item
from hanrag.eval.judge import judge_model_id
from hanrag.eval.metrics import best_char_f1, contained, squash
from hanrag.eval.port import DocumentReader
from hanrag.korean.analyzer import char_bigrams, normalize, sentences, tagged
from hanrag.llm.base import GenerationOptions, Generator

TAG_LLM = "synthetic-llm"
TAG_RULES = "synthetic-rules"
RULES_GENERATOR = "rules-cloze-1"
BLANK = "____"
MAX_PASSAGE_CHARS = 4000
MAX_QUESTION_CHARS = 500
AGREEMENT_F1 = 0.6

_PHRASE_TAGS = frozenset({"NNG", "NNP", "SN", "SL", "SH", "NR"})
# Nouns too generic to be an answer on their own.
_GENERIC = frozenset(
    [
        "경우",
        "사항",
        "기준",
        "관련",
        "해당",
        "내용",
        "규정",
        "다음",
        "이후",
        "이전",
        "이상",
        "이하",
        "이내",
        "미만",
        "초과",
        "등",
        "및",
        "것",
        "때",
        "수",
        "중",
        "전",
        "후",
        "각",
        "모든",
        "위",
        "아래",
        "본",
        "해",
        "날",
        "방법",
        "방식",
        "대상",
        "범위",
        "목적",
        "정도",
        "부분",
        "기타",
        "사용",
        "시",
        "간",
        "외",
        "내",
    ]
)
_LIST_MARK = re.compile(r"^\s*(?:#{1,6}\s+|[-*•·]\s+|\d{1,3}[.)]\s+|[가-하][.)]\s+|>\s*)")
_CUT_WORD = re.compile(r"[A-Za-z0-9]|[-./][A-Za-z0-9]")
_QUESTION = re.compile(r"<question>(.*?)</question>", re.DOTALL | re.IGNORECASE)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
# "위 자료", "이 문서", "본문에서"... (a space is required: 위자료 is a word of its own)
_SELF_REFERENCE = re.compile(
    r"(?:^|\s)(?:위|이|다음|해당|주어진|제시된)\s+(?:자료|문서|글|본문|지문|내용|문단)|본문에서|(?:^|\s)자료에서"
)
_NONE_ANSWERS = frozenset({"", "없음", "none", "없습니다", "답할수없음", "알수없음"})

Progress = Callable[[int, int], None]


@dataclass(slots=True)
class SynthOptions:
    count: int = 50
    per_document: int = 5
    seed: int = 13
    # Character-bigram Jaccard at or above which a question is a near-duplicate.
    dedup: float = 0.7
    min_chunk_chars: int = 40
    caller: Caller = SYSTEM
    max_tokens: int = 512
    # Chunks tried per question wanted before the language-model generator gives up.
    attempts_per_item: int = 4


@dataclass(slots=True)
class Sample:
    document_id: str
    source: str
    title: str
    chunk: Chunk
    squashed: list[str]  # the squashed texts of all the document's chunks (shared)
    index: int  # this chunk's place in ``squashed``

    def elsewhere(self, text: str) -> bool:
        """Whether the squashed ``text`` occurs in another chunk of the document."""
        return any(text in other for n, other in enumerate(self.squashed) if n != self.index)


@dataclass(slots=True)
class SynthResult:
    mode: str  # "llm" | "rules"
    generator: str
    items: list[Item]
    stats: dict[str, Any] = field(default_factory=dict)


def sample_chunks(
    reader: DocumentReader, options: SynthOptions, *, kinds: set[str] | None = None
) -> Iterator[Sample]:
    """Chunks of the indexed documents, round-robin over the documents in a seeded order
    (a document's chunks are read when it is first visited)."""
    rng = random.Random(options.seed)
    documents = []
    offset = 0
    while True:
        page = reader.list_documents(caller=options.caller, offset=offset, limit=500, status="indexed")
        documents.extend(page)
        offset += len(page)
        if len(page) < 500:
            break
    rng.shuffle(documents)
    queues: dict[str, list[Sample]] = {}
    for round_ in range(options.per_document):
        for document in documents:
            if document.id not in queues:
                if round_ > 0:
                    continue
                chunks = reader.document_chunks(document.id, caller=options.caller)
                squashed = [squash(c.text) for c in chunks]
                usable = [
                    Sample(
                        document.id,
                        document.source,
                        document.title or "",
                        c,
                        squashed,
                        i,
                    )
                    for i, c in enumerate(chunks)
                    if len(c.text.strip()) >= options.min_chunk_chars and (kinds is None or c.kind in kinds)
                ]
                rng.shuffle(usable)
                queues[document.id] = usable
            queue = queues[document.id]
            if queue:
                yield queue.pop()


def bigram_set(text: str) -> frozenset[str]:
    return frozenset(char_bigrams(text))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class _Dedup:
    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.kept: list[frozenset[str]] = []

    def duplicate(self, text: str) -> bool:
        grams = bigram_set(text)
        return any(jaccard(grams, other) >= self.threshold for other in self.kept)

    def add(self, text: str) -> None:
        self.kept.append(bigram_set(text))


def _item(question: str, answer: str, sample: Sample, tag: str, meta: dict[str, Any]) -> Item | None:
    """The dataset item, checked as a dataset line is (None when it would not load)."""
    obj = {
        "id": "syn-" + hashlib.sha256(f"{sample.chunk.chunk_id}\n{question}".encode()).hexdigest()[:12],
        "question": question,
        "answers": [answer],
        "gold_chunk_ids": [sample.chunk.chunk_id],
        "gold_document_ids": [sample.document_id],
        "tags": [tag],
        "meta": {
            **meta,
            "document_id": sample.document_id,
            "source": sample.source,
            "title": sample.title,
            "chunk_position": sample.chunk.position,
        },
    }
    try:
        return parse_item(obj, "synthetic item")
    except HanragError:
        return None


# ---------------------------------------------------------------- rules (cloze)


def _clean_lines(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        if line.lstrip().startswith("|"):  # table rows are not sentences
            continue
        line = normalize(_LIST_MARK.sub("", line))
        if line:
            out.append(line)
    return out


def phrases(sentence: str) -> list[tuple[int, int, float]]:
    """Salient noun phrases of a (normalised) sentence: (start, end, score), best first."""
    located: list[tuple[str, int | None, int]] = []  # tag, start, end
    cursor = 0
    for form, tag in tagged(sentence):
        at = sentence.find(form, cursor)
        if at < 0 or at - cursor > 2:
            located.append((tag, None, cursor))
            continue
        located.append((tag, at, at + len(form)))
        cursor = at + len(form)
    spans: list[list[tuple[str, int, int]]] = []
    run: list[tuple[str, int, int]] = []
    for tag, start, end in located:
        generic = start is not None and sentence[start:end] in _GENERIC
        joins = (tag in _PHRASE_TAGS and not generic) or (tag == "NNB" and bool(run) and run[-1][0] == "SN")
        if start is None or not joins:
            if run:
                spans.append(run)
            run = []
            continue
        if run and not (start == run[-1][2] or (start == run[-1][2] + 1 and sentence[run[-1][2]] == " ")):
            spans.append(run)
            run = []
        run.append((tag, start, end))
    if run:
        spans.append(run)
    scored: list[tuple[int, int, float]] = []
    for span in spans:
        start, end = span[0][1], span[-1][2]
        text = sentence[start:end]
        tags = {t for t, _, _ in span}
        if len(text) < 2 or (len(span) == 1 and text in _GENERIC) or (text.isdigit() and len(text) < 2):
            continue
        if len(sentence) - len(text) < 10 or len(text) > 0.5 * len(sentence) or sentence.count(text) > 1:
            continue
        if _CUT_WORD.match(sentence[end : end + 2]) or _CUT_WORD.match(
            sentence[max(0, start - 2) : start][::-1]
        ):
            continue  # a Latin or numeric word cut in two ("Wi" of "Wi-Fi")
        score = 3.0 * ("SN" in tags) + 2.0 * ("NNP" in tags) + 1.0 * ("SL" in tags)
        score += 0.5 * min(len(span), 3) + len(text) / 100
        scored.append((start, end, score))
    scored.sort(key=lambda s: -s[2])
    return scored


def cloze(sample: Sample) -> tuple[str, str, str] | None:
    """(blanked sentence, answer, sentence) of the chunk's best key sentence, or None."""
    best: tuple[float, str, str, str] | None = None
    for line in _clean_lines(sample.chunk.text):
        for sentence in sentences(line):
            sentence = normalize(sentence)
            if not 15 <= len(sentence) <= 200 or "?" in sentence:
                continue
            if sample.elsewhere(squash(sentence)):
                continue  # also in another chunk (an overlap): the gold would be ambiguous
            found = phrases(sentence)
            if not found:
                continue
            start, end, score = found[0]
            if best is None or score > best[0]:
                best = (score, sentence[:start] + BLANK + sentence[end:], sentence[start:end], sentence)
    return None if best is None else best[1:]


def rules_items(
    samples: Iterator[Sample], options: SynthOptions, on_progress: Progress | None = None
) -> SynthResult:
    dedup = _Dedup(options.dedup)
    items: list[Item] = []
    dropped = {"no_sentence": 0, "duplicate": 0, "invalid": 0}
    tried = 0
    for sample in samples:
        if len(items) >= options.count:
            break
        tried += 1
        made = cloze(sample)
        if made is None:
            dropped["no_sentence"] += 1
            continue
        blanked, answer, sentence = made
        if dedup.duplicate(blanked):
            dropped["duplicate"] += 1
            continue
        title = f" ({sample.title})" if sample.title else ""
        question = f"빈칸에 들어갈 말은 무엇인가요? “{blanked}”{title}"
        item = _item(
            question, answer, sample, TAG_RULES, {"generator": RULES_GENERATOR, "sentence": sentence}
        )
        if item is None:
            dropped["invalid"] += 1
            continue
        dedup.add(blanked)
        items.append(item)
        if on_progress is not None:
            on_progress(len(items), options.count)
    stats = {"requested": options.count, "kept": len(items), "chunks_tried": tried, "dropped": dropped}
    return SynthResult("rules", RULES_GENERATOR, items, stats)


# ---------------------------------------------------------------- language model


def parse_question(reply: str) -> tuple[str, str] | None:
    question, answer = _QUESTION.search(reply), _ANSWER.search(reply)
    if question is None or answer is None:
        return None
    q, a = " ".join(question.group(1).split()), " ".join(answer.group(1).split())
    if not q or not a or len(q) > MAX_QUESTION_CHARS or squash(a) in _NONE_ANSWERS:
        return None
    return q, a


def parse_check(reply: str) -> str | None:
    """The checking answer, or None when the model said it cannot answer (or no tag)."""
    match = _ANSWER.search(reply)
    if match is None:
        return None
    answer = " ".join(match.group(1).split())
    return None if squash(answer) in _NONE_ANSWERS else answer


def agrees(check: str, answer: str) -> bool:
    return bool(
        contained(check, [answer])
        or contained(answer, [check])
        or best_char_f1(check, [answer]) >= AGREEMENT_F1
    )


async def llm_items(
    samples: Iterator[Sample],
    generator: Generator,
    options: SynthOptions,
    on_progress: Progress | None = None,
) -> SynthResult:
    name = judge_model_id(generator)
    settings = GenerationOptions(max_tokens=options.max_tokens, temperature=0.0, top_p=1.0)
    dedup = _Dedup(options.dedup)
    items: list[Item] = []
    dropped = {
        "unparsable": 0,
        "self_reference": 0,
        "duplicate": 0,
        "unanswerable": 0,
        "invalid": 0,
        "error": 0,
    }
    attempts = calls = 0
    last_error: HanragError | None = None
    for sample in samples:
        if len(items) >= options.count or attempts >= options.count * options.attempts_per_item:
            break
        attempts += 1
        passage = sample.chunk.text[:MAX_PASSAGE_CHARS]
        try:
            calls += 1
            reply = await generator.complete(
                prompts.messages("synth_question", title=sample.title, passage=passage), settings
            )
            parsed = parse_question(reply)
            if parsed is None:
                dropped["unparsable"] += 1
                continue
            question, answer = parsed
            if _SELF_REFERENCE.search(question):
                dropped["self_reference"] += 1
                continue
            if dedup.duplicate(question):
                dropped["duplicate"] += 1
                continue
            calls += 1
            check = parse_check(
                await generator.complete(
                    prompts.messages("synth_check", passage=passage, question=question), settings
                )
            )
        except HanragError as exc:
            dropped["error"] += 1
            last_error = exc
            if not items and dropped["error"] >= 3 and dropped["error"] == attempts:
                raise  # the model is not answering at all
            continue
        if check is None or not agrees(check, answer):
            dropped["unanswerable"] += 1
            continue
        meta = {
            "generator": name,
            "check_answer": check,
            "grounded": bool(contained(sample.chunk.text, [answer])),
        }
        item = _item(question, answer, sample, TAG_LLM, meta)
        if item is None:
            dropped["invalid"] += 1
            continue
        dedup.add(question)
        items.append(item)
        if on_progress is not None:
            on_progress(len(items), options.count)
    stats: dict[str, Any] = {
        "requested": options.count,
        "kept": len(items),
        "chunks_tried": attempts,
        "model_calls": calls,
        "dropped": dropped,
    }
    if last_error is not None:
        stats["last_error"] = {"code": last_error.code, "message": last_error.message}
    return SynthResult("llm", name, items, stats)


async def synthesize(
    reader: DocumentReader,
    generator: Generator | None,
    options: SynthOptions,
    on_progress: Progress | None = None,
) -> SynthResult:
    """A language model's questions when ``generator`` is given, else cloze questions."""
    if generator is None:
        return rules_items(sample_chunks(reader, options, kinds={"text"}), options, on_progress)
    return await llm_items(sample_chunks(reader, options), generator, options, on_progress)


def write_synth(result: SynthResult, out: Path) -> None:
    """The items as a dataset file, after comment lines saying how they were made."""
    if result.mode == "rules":
        label = (
            f"rule-based cloze questions ({RULES_GENERATOR}, tag {TAG_RULES}): a WEAKER stand-in for real "
            "questions that mostly tests lexical retrieval; prefer --llm when a model is configured"
        )
    else:
        label = f"questions written by {result.generator} (tag {TAG_LLM}), answerability-checked"
    lines = [
        f"# hanrag eval synth: {len(result.items)} {label}",
        "# gold: the chunk each question was written from (gold_chunk_ids) and its document",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")
        for item in result.items:
            handle.write(json.dumps(item.as_dict(), ensure_ascii=False) + "\n")
    partial.replace(out)
