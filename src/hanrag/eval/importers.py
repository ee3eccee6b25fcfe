"""Importers from other evaluation-set shapes into the dataset format (:mod:`.dataset`).

========== ================================================================================
format     source
========== ================================================================================
ragas      JSONL, JSON (a list) or CSV with ``question`` (or ``user_input``), gold answers in
           ``ground_truths`` / ``ground_truth`` / ``reference``, gold passages in
           ``reference_contexts`` or else ``contexts`` (RAGAS test sets keep the source
           contexts there), ``evolution_type`` / ``synthesizer_name`` as a tag. ``answer`` /
           ``response`` is some system's answer, not gold: ignored. CSV list cells may be
           JSON or Python literals.
autorag    a directory with ``qa.parquet`` (``qid``, ``query``, ``retrieval_gt`` — lists of
           lists of ``doc_id`` —, ``generation_gt``) and ``corpus.parquet`` (``doc_id``,
           ``contents``, ``metadata``); or the ``qa.parquet`` path with the corpus beside it.
           Needs pyarrow (``pip install 'hanrag[eval]'``).
korquad    KorQuAD 1.0 / SQuAD JSON: ``data[].paragraphs[].qas[]``; every paragraph becomes a
           passage ``p<doc>-<paragraph>``; unanswerable questions are tagged so.
bench      the corpus/queries JSONL layout of ``../shared/bench`` (a directory with
           ``corpus.jsonl`` and ``queries.jsonl`` holding ``positive_ids``).
feedback   ``hanrag feedback export`` JSONL (question, answer, rating, reason, comment,
           relevant_chunk_ids, cited_titles, model, created_at): a thumbs-up answer becomes a
           gold answer (citation marks removed) with its relevant chunks as gold chunks,
           tagged ``feedback``; a thumbs-down row becomes a question without gold, tagged
           ``review``, the rejected answer and the reason kept in ``meta``.
========== ================================================================================

An importer gives items and, for formats that carry one, a corpus. Written to a
``.jsonl`` file, the items carry their gold passage texts (the set stands alone, scored
by passage text on any index); written to a directory, the corpus goes to
``corpus.jsonl`` beside ``queries.jsonl`` (a directory dataset, ingested into a scratch
data directory by ``hanrag eval run``).
"""

from __future__ import annotations

import ast
import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from hanrag.eval.dataset import (
    CORPUS_FILE,
    LIMITS,
    QUERIES_FILE,
    DatasetError,
    Item,
    Passage,
    check_items,
    load_corpus,
    parse_item,
    parse_passage,
    read_jsonl,
    write_jsonl,
)

FORMATS = ("ragas", "autorag", "korquad", "bench", "feedback")
_CITATION_MARK = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")
UP = {"up", "+1", "1", "positive", "good", "thumbs_up", "like"}
DOWN = {"down", "-1", "negative", "bad", "thumbs_down", "dislike"}


@dataclass(slots=True)
class Imported:
    items: list[Item]
    corpus: list[Passage] | None = None
    notes: list[str] = field(default_factory=list)


def _fail(where: str, message: str, code: str = "dataset_invalid_item") -> DatasetError:
    return DatasetError(f"{where}: {message}", code=code)


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise _fail(str(path), "no such file", "dataset_not_found")
    if path.stat().st_size > LIMITS["file_bytes"]:
        raise _fail(str(path), f"larger than {LIMITS['file_bytes']} bytes", "dataset_too_large")
    return path.read_bytes()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_bytes(path).decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise _fail(str(path), "not UTF-8 text", "dataset_unreadable") from None
    except json.JSONDecodeError as exc:
        raise _fail(str(path), f"not JSON ({exc.msg}, line {exc.lineno})", "dataset_invalid_json") from None


def _list(value: Any) -> list[Any]:
    """A list cell: a list, a JSON or Python-literal list in a string, or one value."""
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            for parse in (json.loads, ast.literal_eval):
                try:
                    parsed = parse(text)
                except (ValueError, SyntaxError):
                    continue
                if isinstance(parsed, list):
                    return parsed
        return [value]
    if hasattr(value, "tolist"):  # numpy arrays from parquet
        return list(value.tolist())
    return [value]


def _flatten(value: Any) -> list[Any]:
    out: list[Any] = []
    for entry in _list(value):
        if isinstance(entry, list | tuple) or hasattr(entry, "tolist"):
            out.extend(_flatten(entry))
        else:
            out.append(entry)
    return out


def _texts(values: list[Any]) -> list[str]:
    return [str(v) for v in values if v is not None and str(v).strip()]


def _item(obj: dict[str, Any], where: str) -> Item:
    return parse_item({k: v for k, v in obj.items() if v not in (None, [], "", {})}, where)


# ---------------------------------------------------------------- ragas


def _ragas_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            text = _read_bytes(path).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise _fail(str(path), "not UTF-8 text", "dataset_unreadable") from None
        for number, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
            yield f"{path.name}:{number}", dict(row)
    elif suffix == ".json":
        data = _read_json(path)
        rows = data.get("data") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise _fail(
                str(path), "expected a JSON list of objects (or {data: [...]})", "dataset_invalid_json"
            )
        for number, row in enumerate(rows, start=1):
            if not isinstance(row, dict):
                raise _fail(f"{path.name}[{number - 1}]", "not an object", "dataset_invalid_json")
            yield f"{path.name}[{number - 1}]", row
    else:
        yield from read_jsonl(path)


def import_ragas(path: Path) -> Imported:
    items: list[Item] = []
    for where, row in _ragas_rows(path):
        question = row.get("question") or row.get("user_input")
        answers = _texts(_list(row.get("ground_truths"))) or _texts(
            [row.get("ground_truth") or row.get("reference")]
        )
        passages = _texts(_list(row.get("reference_contexts"))) or _texts(_list(row.get("contexts")))
        tag = row.get("evolution_type") or row.get("synthesizer_name")
        items.append(
            _item(
                {
                    "id": row.get("id") or row.get("question_id"),
                    "question": question,
                    "answers": answers,
                    "gold_passages": passages,
                    "tags": [str(tag)] if tag else None,
                },
                where,
            )
        )
    return Imported(check_items(items, str(path)))


# -------------------------------------------------------------- autorag


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError(
            "reading parquet needs pyarrow: pip install 'hanrag[eval]'", code="missing_extra"
        ) from None
    if not path.is_file():
        raise _fail(str(path), "no such file", "dataset_not_found")
    try:
        rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow's ArrowInvalid and friends
        raise _fail(
            str(path), f"not a readable parquet file ({type(exc).__name__})", "dataset_unreadable"
        ) from None
    return rows


def _day(value: Any) -> str | None:
    if isinstance(value, datetime | date):
        return value.isoformat()[:10]
    if isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}", value):
        return value[:10]
    return None


def import_autorag(path: Path) -> Imported:
    directory = path if path.is_dir() else path.parent
    qa_path = directory / "qa.parquet" if path.is_dir() else path
    corpus_path = directory / "corpus.parquet"
    corpus: list[Passage] = []
    for number, row in enumerate(_parquet_rows(corpus_path), start=1):
        raw = row.get("metadata")
        metadata: dict[str, Any] = raw if isinstance(raw, dict) else {}
        corpus.append(
            parse_passage(
                {
                    "id": row.get("doc_id"),
                    "text": row.get("contents"),
                    "title": metadata.get("title") if isinstance(metadata.get("title"), str) else None,
                    "date": _day(metadata.get("last_modified_datetime")),
                },
                f"{corpus_path.name}:{number}",
            )
        )
    texts = {p.id: p.text for p in corpus}
    items: list[Item] = []
    missing = 0
    for number, row in enumerate(_parquet_rows(qa_path), start=1):
        ids = _texts(_flatten(row.get("retrieval_gt")))
        missing += sum(1 for i in ids if i not in texts)
        items.append(
            _item(
                {
                    "id": row.get("qid"),
                    "question": row.get("query"),
                    "answers": _texts(_flatten(row.get("generation_gt"))),
                    "gold_document_ids": ids,
                    "gold_passages": [texts[i] for i in ids if i in texts],
                },
                f"{qa_path.name}:{number}",
            )
        )
    notes = [f"{missing} gold doc_ids are not in corpus.parquet"] if missing else []
    return Imported(check_items(items, str(qa_path)), corpus, notes)


# -------------------------------------------------------------- korquad


def import_korquad(path: Path) -> Imported:
    data = _read_json(path)
    articles = data.get("data") if isinstance(data, dict) else None
    if not isinstance(articles, list):
        raise _fail(
            str(path),
            "expected KorQuAD/SQuAD JSON: {data: [{title, paragraphs: [...]}]}",
            "dataset_invalid_json",
        )
    items: list[Item] = []
    corpus: list[Passage] = []
    for d, article in enumerate(articles):
        if not isinstance(article, dict):
            raise _fail(f"{path.name}: data[{d}]", "not an object", "dataset_invalid_json")
        title = str(article.get("title") or "")
        for p, paragraph in enumerate(article.get("paragraphs") or []):
            where = f"{path.name}: data[{d}].paragraphs[{p}]"
            if not isinstance(paragraph, dict):
                raise _fail(where, "not an object", "dataset_invalid_json")
            passage = parse_passage(
                {"id": f"p{d:04d}-{p:02d}", "title": title, "text": paragraph.get("context")}, where
            )
            corpus.append(passage)
            for q, qa in enumerate(paragraph.get("qas") or []):
                if not isinstance(qa, dict):
                    raise _fail(f"{where}.qas[{q}]", "not an object", "dataset_invalid_json")
                answers = [a.get("text") for a in qa.get("answers") or [] if isinstance(a, dict)]
                impossible = bool(qa.get("is_impossible")) or not answers
                items.append(
                    _item(
                        {
                            "id": qa.get("id"),
                            "question": qa.get("question"),
                            "answers": _texts(answers),
                            "gold_document_ids": [passage.id],
                            "gold_passages": [passage.text],
                            "tags": ["unanswerable"] if impossible else None,
                        },
                        f"{where}.qas[{q}]",
                    )
                )
    return Imported(check_items(items, str(path)), corpus)


# ---------------------------------------------------------------- bench


def import_bench(path: Path) -> Imported:
    if not path.is_dir():
        raise _fail(
            str(path), f"expected a directory with {CORPUS_FILE} and {QUERIES_FILE}", "dataset_not_found"
        )
    corpus = load_corpus(path / CORPUS_FILE)
    texts = {p.id: p.text for p in corpus}
    items: list[Item] = []
    for where, row in read_jsonl(path / QUERIES_FILE):
        item = parse_item(row, where)
        passages = [texts[i] for i in item.gold_document_ids if i in texts]
        items.append(_item({**item.as_dict(), "gold_passages": passages or None}, where))
    return Imported(check_items(items, str(path)), corpus)


# ------------------------------------------------------------- feedback


def import_feedback(path: Path) -> Imported:
    items: list[Item] = []
    for where, row in read_jsonl(path):
        rating = str(row.get("rating") if row.get("rating") is not None else "").strip().lower()
        question, answer = row.get("question"), str(row.get("answer") or "")
        identity = json.dumps([question, answer, row.get("created_at")], ensure_ascii=False)
        item_id = "fb-" + hashlib.sha256(identity.encode()).hexdigest()[:12]
        provenance = {
            key: row.get(key)
            for key in ("model", "created_at", "cited_titles")
            if row.get(key) not in (None, [], "")
        }
        if rating in UP:
            gold = _CITATION_MARK.sub("", answer).strip()
            items.append(
                _item(
                    {
                        "id": item_id,
                        "question": question,
                        "answers": [gold] if gold else None,
                        "gold_chunk_ids": _texts(_list(row.get("relevant_chunk_ids"))),
                        "tags": ["feedback", "up"],
                        "meta": {"source": "feedback", **provenance},
                    },
                    where,
                )
            )
        elif rating in DOWN:
            review = {key: row.get(key) for key in ("reason", "comment") if row.get(key) not in (None, "")}
            items.append(
                _item(
                    {
                        "id": item_id,
                        "question": question,
                        "tags": ["feedback", "review"],
                        "meta": {
                            "source": "feedback",
                            "rejected_answer": answer[:4000],
                            **review,
                            **provenance,
                        },
                    },
                    where,
                )
            )
        else:
            raise _fail(where, f"rating {row.get('rating')!r} is neither up nor down", "dataset_invalid_item")
    return Imported(check_items(items, str(path)))


IMPORTERS = {
    "ragas": import_ragas,
    "autorag": import_autorag,
    "korquad": import_korquad,
    "bench": import_bench,
    "feedback": import_feedback,
}


def import_dataset(fmt: str, source: Path) -> Imported:
    importer = IMPORTERS.get(fmt)
    if importer is None:
        raise DatasetError(
            f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}", code="unknown_format", field="format"
        )
    return importer(source.expanduser())


def write_imported(imported: Imported, out: Path) -> dict[str, Any]:
    """``OUT.jsonl``: the items with their gold passages; a directory: ``queries.jsonl``
    (gold passages left to the corpus) and ``corpus.jsonl``."""
    out = out.expanduser()
    if out.suffix.lower() == ".jsonl":
        write_jsonl([item.as_dict() for item in imported.items], out)
        notes = list(imported.notes)
        if imported.corpus is not None:
            notes.append(
                f"{len(imported.corpus)} corpus passages not written (the questions carry their gold "
                "passage texts); give a directory as OUT to keep the corpus"
            )
        return {"out": str(out), "questions": len(imported.items), "passages": None, "notes": notes}
    if imported.corpus is None:
        raise DatasetError(
            "this format has no corpus: give a file name ending in .jsonl", code="invalid_output", field="out"
        )
    queries = [{k: v for k, v in item.as_dict().items() if k != "gold_passages"} for item in imported.items]
    write_jsonl(queries, out / QUERIES_FILE)
    write_jsonl([p.as_dict() for p in imported.corpus], out / CORPUS_FILE)
    return {
        "out": str(out),
        "questions": len(imported.items),
        "passages": len(imported.corpus),
        "notes": imported.notes,
    }
