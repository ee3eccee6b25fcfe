"""JSON and JSON Lines, flattened into ``key: value`` text.

Nested keys are joined with ``.`` (``contact.phone: 02-123-4567``) so each line
says what its value is without the surrounding braces. A list of records (the
top level of an export, a JSONL file, or a list-valued field) becomes one line
per record in table sections, like spreadsheet rows.

Limits (see :mod:`hanrag.ingest.parsers.budget`): the values (``{``, ``[`` and
``,``) are counted against ``ingest.max_document_nodes`` before ``json`` builds
its objects, and the lines made are charged as text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from hanrag.errors import ParseError
from hanrag.ingest.parsers.base import ParsedDocument, Section
from hanrag.ingest.parsers.budget import active_budget, file_budget
from hanrag.ingest.parsers.dates import parse_date
from hanrag.ingest.parsers.tabular import chunk_lines, format_cell
from hanrag.ingest.parsers.text import decode_text

_TITLE_KEYS = ("title", "제목")
_DATE_KEYS = ("updated_at", "modified", "date", "created_at", "created")


def _flatten(value: Any, prefix: str) -> Iterator[tuple[str, str]]:
    """``(dotted key, text)`` for each scalar under ``value``; a list of scalars is one joined value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        if all(not isinstance(item, dict | list) for item in value):
            joined = ", ".join(text for text in (format_cell(item) for item in value) if text)
            if joined:
                yield prefix, joined
        else:
            for index, item in enumerate(value, start=1):
                yield from _flatten(item, f"{prefix}.{index}" if prefix else str(index))
    else:
        text = format_cell(value)
        if text:
            yield prefix, text


def _record_line(record: Any) -> str:
    return ", ".join(f"{key}: {text}" if key else text for key, text in _flatten(record, ""))


def _is_record_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _charged(lines: Iterator[str]) -> Iterator[str]:
    budget = active_budget()
    for line in lines:
        if budget is not None:
            budget.add_text(len(line))
            budget.check_time()
        yield line


def _record_sections(records: list[Any], heading: str | None) -> list[Section]:
    lines = _charged(line for line in (_record_line(record) for record in records) if line)
    return [Section(text="\n".join(group), kind="table", heading=heading) for group in chunk_lines(lines)]


class JsonParser:
    format = "json"
    extensions: tuple[str, ...] = (".json", ".jsonl", ".ndjson")

    def sniff(self, head: bytes, filename: str) -> bool:
        # Only an object key or an array of objects, arrays or strings counts: text files start
        # with "[1] 참고 문헌" or "[링크](url)" too, and those must not be parsed as JSON.
        start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:64]
        if start[:1] not in (b"{", b"["):
            return False
        rest = start[1:].lstrip()
        if start.startswith(b"{"):
            return rest[:1] in (b'"', b"}")
        return rest[:1] in (b"{", b"[", b'"')

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        with file_budget(filename) as budget:
            text, encoding = decode_text(data, filename)
            # Each value becomes a Python object of 50-200 bytes.
            budget.add_nodes(text.count("{") + text.count("[") + text.count(","), "JSON values")
            return self._read(text, encoding, filename)

    def _read(self, text: str, encoding: str, filename: str) -> ParsedDocument:
        value = self._load(text, filename)
        sections: list[Section] = []
        title: str | None = None
        date = None
        if isinstance(value, dict):
            title = next(
                (format_cell(value[key]) for key in _TITLE_KEYS if isinstance(value.get(key), str)), None
            )
            date = next(
                (parsed for key in _DATE_KEYS if (parsed := parse_date(_as_str(value.get(key)))) is not None),
                None,
            )
            plain = {key: item for key, item in value.items() if not _is_record_list(item)}
            lines = list(_charged(f"{key}: {text}" for key, text in _flatten(plain, "")))
            if lines:
                sections.append(Section(text="\n".join(lines)))
            for key, item in value.items():
                if _is_record_list(item):
                    sections.extend(_record_sections(item, heading=str(key)))
        elif isinstance(value, list):
            sections.extend(_record_sections(value, heading=None))
        else:
            scalar = format_cell(value)
            if scalar:
                sections.append(Section(text=scalar))
        if not sections:
            raise ParseError(f"{filename}: JSON document has no values", code="no_text")
        return ParsedDocument(
            sections=sections,
            format=self.format,
            title=title or None,
            date=date,
            metadata={"encoding": encoding},
        )

    @staticmethod
    def _load(text: str, filename: str) -> Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            document_error = exc
        except RecursionError as exc:
            raise ParseError(f"{filename}: JSON is nested too deeply", code="corrupt_file") from exc
        # Not one JSON document: perhaps JSON Lines, one document per line.
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) < 2:
            raise ParseError(
                f"{filename}: invalid JSON ({document_error})", code="corrupt_file"
            ) from document_error
        records: list[Any] = []
        for number, line in enumerate(lines, start=1):
            try:
                records.append(json.loads(line))
            except (json.JSONDecodeError, RecursionError) as exc:
                raise ParseError(
                    f"{filename}: invalid JSON ({document_error}) and not JSON Lines (line {number}: {exc})",
                    code="corrupt_file",
                ) from exc
        return records


def _as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
