"""Evaluation datasets: one JSONL format, checked on load, and a corpus beside it.

The format (one JSON object a line, UTF-8; ``#`` lines and blank lines are skipped)::

    {"id": "q1",                                  # optional; default "q-" + a hash of the question
     "question": "입사 3년차 연차는 며칠인가요?",     # required, 1..2000 characters
     "answers": ["16일"],                         # gold answers (optional)
     "gold_document_ids": ["인사규정.md"],         # gold documents: hanrag document id, source
                                                  #   path, file name, or a corpus passage id
     "gold_chunk_ids": ["..."],                   # gold chunks (hanrag chunk ids)
     "gold_passages": ["연차휴가는 ..."],          # gold passage texts (when ids are unknown)
     "tags": ["hr"],                              # free labels, for slicing the results
     "filters": {"date_from": "2024-01-01", "date_to": null,
                 "document_ids": null, "metadata": {"dept": "법무"}},   # optional search filters
     "meta": {"source": "feedback"}}              # free provenance, kept with the results

``positive_ids`` is accepted for ``gold_document_ids`` (the corpus/queries layout of the
KorQuAD bench set). Any other field is refused (``dataset_unknown_field``), so that a typo
("answer" for "answers") does not silently drop the gold.

A dataset is either such a file, or a directory holding ``queries.jsonl`` (this format)
and ``corpus.jsonl`` (one passage a line: ``{"id", "text", "title"?, "metadata"?,
"date"?}``): the corpus is then ingested into a scratch data directory before the run,
and gold document ids name its passages.

Every problem is an :class:`DatasetError` (``InvalidInputError``, exit code 2 in the CLI)
with a stable code naming the file, the line and the field: ``dataset_not_found``,
``dataset_unreadable``, ``dataset_invalid_json``, ``dataset_invalid_item``,
``dataset_unknown_field``, ``dataset_duplicate_id``, ``dataset_empty``,
``dataset_too_large``. Limits: :data:`LIMITS`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from hanrag.errors import InvalidInputError

QUERIES_FILE = "queries.jsonl"
CORPUS_FILE = "corpus.jsonl"

LIMITS = {
    "file_bytes": 512 * 2**20,
    "line_bytes": 4 * 2**20,
    "items": 200_000,
    "passages": 500_000,
    "question_chars": 2000,
    "answers": 50,
    "answer_chars": 10_000,
    "gold_ids": 1000,
    "gold_passages": 100,
    "passage_chars": 200_000,
    "tags": 32,
    "tag_chars": 64,
    "id_chars": 200,
    "meta_bytes": 16_384,
}

ITEM_FIELDS = (
    "id",
    "question",
    "answers",
    "gold_document_ids",
    "gold_chunk_ids",
    "gold_passages",
    "tags",
    "filters",
    "meta",
)
ALIASES = {"positive_ids": "gold_document_ids"}
PASSAGE_FIELDS = ("id", "text", "title", "metadata", "date")
FILTER_FIELDS = ("date_from", "date_to", "document_ids", "metadata")


class DatasetError(InvalidInputError):
    code = "dataset_invalid_item"


@dataclass(frozen=True, slots=True)
class Item:
    """One question of a dataset with whatever gold it has."""

    id: str
    question: str
    answers: tuple[str, ...] = ()
    gold_document_ids: tuple[str, ...] = ()
    gold_chunk_ids: tuple[str, ...] = ()
    gold_passages: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    filters: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def has_retrieval_gold(self) -> bool:
        return bool(self.gold_document_ids or self.gold_chunk_ids or self.gold_passages)

    def as_dict(self) -> dict[str, Any]:
        """The JSONL object (empty fields left out)."""
        data: dict[str, Any] = {"id": self.id, "question": self.question}
        for name in ("answers", "gold_document_ids", "gold_chunk_ids", "gold_passages", "tags"):
            value = getattr(self, name)
            if value:
                data[name] = list(value)
        if self.filters:
            data["filters"] = self.filters
        if self.meta:
            data["meta"] = self.meta
        return data


@dataclass(frozen=True, slots=True)
class Passage:
    """One corpus passage (a directory dataset's ``corpus.jsonl``)."""

    id: str
    text: str
    title: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    date: str | None = None  # YYYY-MM-DD

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "title": self.title, "text": self.text}
        if self.metadata:
            data["metadata"] = self.metadata
        if self.date:
            data["date"] = self.date
        return data


@dataclass(slots=True)
class Dataset:
    name: str
    path: Path
    kind: str  # "file" | "directory"
    items: list[Item]
    corpus: list[Passage] | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(item.as_dict() for item in self.items)

    @property
    def corpus_fingerprint(self) -> str | None:
        return None if self.corpus is None else fingerprint(p.as_dict() for p in self.corpus)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "kind": self.kind,
            "questions": len(self.items),
            "fingerprint": self.fingerprint,
            "passages": None if self.corpus is None else len(self.corpus),
            "corpus_fingerprint": self.corpus_fingerprint,
        }


def fingerprint(objects: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> str:
    """sha256 of the canonical JSON of the objects, in order (formatting does not count)."""
    digest = hashlib.sha256()
    for obj in objects:
        digest.update(json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode())
        digest.update(b"\n")
    return digest.hexdigest()


# ---------------------------------------------------------------- reading


def _error(code: str, where: str, message: str, field_name: str | None = None) -> DatasetError:
    return DatasetError(f"{where}: {message}", code=code, field=field_name)


def read_jsonl(path: Path, *, limit_key: str = "items") -> Iterator[tuple[str, dict[str, Any]]]:
    """(``file:line``, object) for every non-blank, non-comment line, within the limits."""
    if not path.is_file():
        raise _error("dataset_not_found", str(path), "no such file")
    size = path.stat().st_size
    if size > LIMITS["file_bytes"]:
        raise _error("dataset_too_large", str(path), f"{size} bytes; the limit is {LIMITS['file_bytes']}")
    count = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path.name}:{number}"
            if len(raw) > LIMITS["line_bytes"]:
                raise _error(
                    "dataset_too_large", where, f"the line is longer than {LIMITS['line_bytes']} bytes"
                )
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
            except UnicodeDecodeError:
                raise _error("dataset_unreadable", where, "not UTF-8 text") from None
            if not line or line.startswith("#"):
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _error(
                    "dataset_invalid_json", where, f"not JSON ({exc.msg}, column {exc.colno})"
                ) from None
            if not isinstance(obj, dict):
                raise _error("dataset_invalid_json", where, "each line must be a JSON object")
            count += 1
            if count > LIMITS[limit_key]:
                raise _error("dataset_too_large", str(path), f"more than {LIMITS[limit_key]} {limit_key}")
            yield where, obj


def _text(value: Any, where: str, name: str, max_chars: int, *, required: bool = True) -> str:
    if not isinstance(value, str) or (required and not value.strip()):
        raise _error("dataset_invalid_item", where, f"{name!r} must be a non-empty string", name)
    if len(value) > max_chars:
        raise _error(
            "dataset_invalid_item",
            where,
            f"{name!r} has {len(value)} characters; the limit is {max_chars}",
            name,
        )
    return value.strip()


def _texts(value: Any, where: str, name: str, max_items: int, max_chars: int) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise _error("dataset_invalid_item", where, f"{name!r} must be a list of strings", name)
    if len(value) > max_items:
        raise _error(
            "dataset_invalid_item",
            where,
            f"{name!r} has {len(value)} entries; the limit is {max_items}",
            name,
        )
    out: list[str] = []
    for entry in value:
        if isinstance(entry, int | float) and not isinstance(entry, bool) and name != "gold_passages":
            entry = str(entry)  # numeric ids
        text = _text(entry, where, name, max_chars)
        if text not in out:
            out.append(text)
    return tuple(out)


def _day(value: Any, where: str, name: str) -> str | None:
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        return (datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value)).isoformat()
    except ValueError:
        raise _error("dataset_invalid_item", where, f"{name!r} must be a date (YYYY-MM-DD)", name) from None


def _filters(value: Any, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _error("dataset_invalid_item", where, "'filters' must be an object", "filters")
    unknown = sorted(set(value) - set(FILTER_FIELDS))
    if unknown:
        raise _error(
            "dataset_unknown_field",
            where,
            f"unknown filter {unknown[0]!r} (filters: {', '.join(FILTER_FIELDS)})",
            "filters",
        )
    out: dict[str, Any] = {}
    for name in ("date_from", "date_to"):
        day = _day(value.get(name), where, f"filters.{name}")
        if day is not None:
            out[name] = day
    ids = _texts(
        value.get("document_ids"), where, "filters.document_ids", LIMITS["gold_ids"], LIMITS["id_chars"]
    )
    if ids:
        out["document_ids"] = list(ids)
    metadata = _metadata(value.get("metadata"), where, "filters.metadata")
    if metadata:
        out["metadata"] = metadata
    return out or None


def _metadata(value: Any, where: str, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int | float) and not isinstance(v, bool)
        for k, v in value.items()
    ):
        raise _error("dataset_invalid_item", where, f"{name!r} must map names to strings", name)
    return {k: str(v) for k, v in value.items()}


def _meta(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _error("dataset_invalid_item", where, "'meta' must be an object", "meta")
    if len(json.dumps(value, ensure_ascii=False)) > LIMITS["meta_bytes"]:
        raise _error(
            "dataset_invalid_item", where, f"'meta' is larger than {LIMITS['meta_bytes']} bytes", "meta"
        )
    return value


def default_id(question: str) -> str:
    return "q-" + hashlib.sha256(question.encode()).hexdigest()[:12]


def parse_item(obj: dict[str, Any], where: str) -> Item:
    """One checked item (``where`` names the file and line in errors)."""
    obj = {ALIASES.get(key, key): value for key, value in obj.items()}
    unknown = sorted(set(obj) - set(ITEM_FIELDS))
    if unknown:
        raise _error(
            "dataset_unknown_field",
            where,
            f"unknown field {unknown[0]!r} (fields: {', '.join(ITEM_FIELDS)})",
            unknown[0],
        )
    if "question" not in obj:
        raise _error("dataset_invalid_item", where, "'question' is missing", "question")
    question = _text(obj["question"], where, "question", LIMITS["question_chars"])
    raw_id = obj.get("id")
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        raw_id = str(raw_id)
    item_id = default_id(question) if raw_id is None else _text(raw_id, where, "id", LIMITS["id_chars"])
    return Item(
        id=item_id,
        question=question,
        answers=_texts(obj.get("answers"), where, "answers", LIMITS["answers"], LIMITS["answer_chars"]),
        gold_document_ids=_texts(
            obj.get("gold_document_ids"), where, "gold_document_ids", LIMITS["gold_ids"], LIMITS["id_chars"]
        ),
        gold_chunk_ids=_texts(
            obj.get("gold_chunk_ids"), where, "gold_chunk_ids", LIMITS["gold_ids"], LIMITS["id_chars"]
        ),
        gold_passages=_texts(
            obj.get("gold_passages"), where, "gold_passages", LIMITS["gold_passages"], LIMITS["passage_chars"]
        ),
        tags=_texts(obj.get("tags"), where, "tags", LIMITS["tags"], LIMITS["tag_chars"]),
        filters=_filters(obj.get("filters"), where),
        meta=_meta(obj.get("meta"), where),
    )


def parse_passage(obj: dict[str, Any], where: str) -> Passage:
    unknown = sorted(set(obj) - set(PASSAGE_FIELDS))
    if unknown:
        raise _error(
            "dataset_unknown_field",
            where,
            f"unknown passage field {unknown[0]!r} (fields: {', '.join(PASSAGE_FIELDS)})",
            unknown[0],
        )
    raw_id = obj.get("id")
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        raw_id = str(raw_id)
    return Passage(
        id=_text(raw_id, where, "id", LIMITS["id_chars"]),
        text=_text(obj.get("text"), where, "text", LIMITS["passage_chars"]),
        title=" ".join(str(obj.get("title") or "").split())[:500],
        metadata=_metadata(obj.get("metadata"), where, "metadata"),
        date=_day(obj.get("date"), where, "date"),
    )


def check_items(items: list[Item], where: str) -> list[Item]:
    """No duplicate ids, at least one item."""
    if not items:
        raise _error("dataset_empty", where, "no questions")
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise _error("dataset_duplicate_id", where, f"the id {item.id!r} appears twice", "id")
        seen.add(item.id)
    return items


def load_items(path: Path) -> list[Item]:
    return check_items([parse_item(obj, where) for where, obj in read_jsonl(path)], str(path))


def load_corpus(path: Path) -> list[Passage]:
    passages = [parse_passage(obj, where) for where, obj in read_jsonl(path, limit_key="passages")]
    if not passages:
        raise _error("dataset_empty", str(path), "no passages")
    seen: set[str] = set()
    for passage in passages:
        if passage.id in seen:
            raise _error(
                "dataset_duplicate_id", str(path), f"the passage id {passage.id!r} appears twice", "id"
            )
        seen.add(passage.id)
    return passages


def load_dataset(path: Path) -> Dataset:
    """A dataset file, or a directory with ``queries.jsonl`` and ``corpus.jsonl``."""
    path = path.expanduser()
    if path.is_dir():
        queries, corpus = path / QUERIES_FILE, path / CORPUS_FILE
        for needed in (queries, corpus):
            if not needed.is_file():
                raise _error(
                    "dataset_not_found",
                    str(path),
                    f"a dataset directory needs {QUERIES_FILE} and {CORPUS_FILE}; {needed.name} is missing",
                )
        passages = load_corpus(corpus)
        return Dataset(path.resolve().name, path.resolve(), "directory", load_items(queries), passages)
    if not path.exists():
        raise _error("dataset_not_found", str(path), "no such file or directory")
    return Dataset(path.stem, path.resolve(), "file", load_items(path))


def write_jsonl(objects: list[dict[str, Any]], path: Path) -> None:
    """One object a line (UTF-8, Korean as is), written to a temporary file then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        for obj in objects:
            handle.write(json.dumps(obj, ensure_ascii=False) + "\n")
    partial.replace(path)
