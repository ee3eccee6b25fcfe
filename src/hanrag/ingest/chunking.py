"""Korean sentence-aware, token-bounded chunking.

Text is cut only between sentences (Kiwi's sentence splitter), windows hold at
most ``max_tokens`` of the embedding model's tokens and repeat the last sentences
of the previous window up to ``overlap_tokens``; a window that starts in the
middle of a headed section repeats the heading so the chunk still says what it
is about. Tables stay whole up to ``max_table_tokens``, otherwise they are cut
between rows (each row line is self-describing: ``헤더: 값``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from hanrag.ingest.parsers.base import ParsedDocument, Section
from hanrag.korean.analyzer import sentences
from hanrag.settings import ChunkSettings


@dataclass(slots=True)
class ChunkDraft:
    text: str
    page: int | None
    sheet: str | None
    kind: str


@dataclass(slots=True)
class _Unit:
    text: str
    tokens: int
    page: int | None
    sheet: str | None
    heading: str | None
    starts_paragraph: bool
    first_of_section: bool


def chunk_id(document_id: str, position: int, text: str) -> str:
    """Stable id: the same document, place and content always give the same id."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    return f"{document_id}-{position:05d}-{digest}"


class Chunker:
    def __init__(self, settings: ChunkSettings, count_tokens: Callable[[str], int]) -> None:
        self.settings = settings
        self._count_raw = count_tokens
        # Model token counts include special tokens ([CLS], [SEP], a "passage: " prefix);
        # subtract them per piece so the sum over sentences is the window's count. The
        # count of "" may hold one more piece (a lone word-start marker) that any real text
        # absorbs, so the fixed part is also measured as 2*c(w) - c("w w"), and the smaller
        # value is taken: over-subtracting would let windows run past max_tokens.
        probe = "가"
        pair_overhead = 2 * count_tokens(probe) - count_tokens(f"{probe} {probe}")
        self._overhead = max(min(count_tokens(""), pair_overhead), 0)

    def count(self, text: str) -> int:
        return max(self._count_raw(text) - self._overhead, 1)

    # ------------------------------------------------------------ splitting

    def _split_long(self, text: str, limit: int) -> list[str]:
        """Cut one over-long sentence at spaces (or characters) into pieces under the limit."""
        words = text.split(" ")
        pieces: list[str] = []
        current: list[str] = []
        current_tokens = 0
        for word in words:
            word_tokens = self.count(word)
            if word_tokens > limit:  # a single "word" with no spaces (URLs, long CJK runs)
                if current:
                    pieces.append(" ".join(current))
                    current, current_tokens = [], 0
                step = max(int(len(word) * limit / word_tokens), 1)
                pieces.extend(word[i : i + step] for i in range(0, len(word), step))
                continue
            if current and current_tokens + word_tokens > limit:
                pieces.append(" ".join(current))
                current, current_tokens = [], 0
            current.append(word)
            current_tokens += word_tokens
        if current:
            pieces.append(" ".join(current))
        return [p for p in pieces if p.strip()]

    def _units(self, section: Section) -> list[_Unit]:
        units: list[_Unit] = []
        first = True
        for paragraph in section.text.split("\n"):
            paragraph = paragraph.strip()
            if not paragraph:
                continue
            starts_paragraph = True
            for sentence in sentences(paragraph) or [paragraph]:
                tokens = self.count(sentence)
                parts = (
                    [sentence]
                    if tokens <= self.settings.max_tokens
                    else self._split_long(sentence, self.settings.max_tokens)
                )
                for part in parts:
                    units.append(
                        _Unit(
                            text=part,
                            tokens=tokens if len(parts) == 1 else self.count(part),
                            page=section.page,
                            sheet=section.sheet,
                            heading=section.heading,
                            starts_paragraph=starts_paragraph,
                            first_of_section=first,
                        )
                    )
                    starts_paragraph = False
                    first = False
        return units

    def _table_chunks(self, section: Section) -> list[ChunkDraft]:
        text = section.text.strip()
        if not text:
            return []
        # Rows alone do not say what the table is about; the heading above it does.
        if section.heading and not text.startswith(section.heading):
            text = f"{section.heading}\n{text}"
        if self.count(text) <= self.settings.max_table_tokens:
            return [ChunkDraft(text, section.page, section.sheet, "table")]
        limit = self.settings.max_tokens
        all_lines = text.split("\n")
        # Every piece of a split table starts with its heading line (continuations repeat it).
        head = section.heading if section.heading and all_lines[0] == section.heading else None
        head_tokens = self.count(head) if head else 0
        if head_tokens * 2 > limit:  # a heading that long is not worth repeating
            head, head_tokens = None, 0
        start: list[str] = [head] if head else []
        drafts: list[ChunkDraft] = []
        lines, used, rows = list(start), head_tokens, 0

        def piece(body: list[str]) -> ChunkDraft:
            return ChunkDraft("\n".join(body), section.page, section.sheet, "table")

        for line in all_lines[1:] if head else all_lines:
            line_tokens = self.count(line)
            if rows and used + line_tokens > limit:
                drafts.append(piece(lines))
                lines, used, rows = list(start), head_tokens, 0
            if head_tokens + line_tokens > limit:
                drafts.extend(piece([*start, part]) for part in self._split_long(line, limit - head_tokens))
                continue
            lines.append(line)
            used += line_tokens
            rows += 1
        if rows:
            drafts.append(piece(lines))
        return drafts

    # ------------------------------------------------------------- windows

    @staticmethod
    def _join(units: list[_Unit]) -> str:
        out: list[str] = []
        for i, unit in enumerate(units):
            if i > 0:
                out.append("\n" if unit.starts_paragraph else " ")
            out.append(unit.text)
        return "".join(out)

    def _windows(self, units: list[_Unit]) -> list[ChunkDraft]:
        limit = self.settings.max_tokens
        drafts: list[ChunkDraft] = []
        window: list[_Unit] = []
        used = 0
        prefix = ""

        def emit() -> None:
            body = self._join(window)
            text = f"{prefix}\n{body}" if prefix else body
            drafts.append(ChunkDraft(text, window[0].page, window[0].sheet, "text"))

        for unit in units:
            sheet_changed = bool(window) and unit.sheet != window[-1].sheet
            if window and (used + unit.tokens > limit or sheet_changed):
                emit()
                # Overlap: carry the last sentences of the same section forward, no more
                # than leaves room for the repeated heading and this unit.
                carried: list[_Unit] = []
                carried_tokens = 0
                if not sheet_changed and not unit.first_of_section:
                    heading_tokens = self.count(unit.heading) if unit.heading else 0
                    budget = min(self.settings.overlap_tokens, limit - unit.tokens - heading_tokens)
                    for previous in reversed(window):
                        if carried_tokens + previous.tokens > budget:
                            break
                        carried.insert(0, previous)
                        carried_tokens += previous.tokens
                        if previous.first_of_section:  # never reach back into the previous section
                            break
                window, used = carried, carried_tokens
                first = window[0] if window else unit
                prefix = first.heading if first.heading and not first.first_of_section else ""
                if prefix:
                    used += self.count(prefix)
            window.append(unit)
            used += unit.tokens
        if window:
            emit()
        return drafts

    def split(self, document: ParsedDocument) -> list[ChunkDraft]:
        drafts: list[ChunkDraft] = []
        pending: list[_Unit] = []
        for section in document.sections:
            if section.kind == "table":
                drafts.extend(self._windows(pending))
                pending = []
                drafts.extend(self._table_chunks(section))
            else:
                pending.extend(self._units(section))
        drafts.extend(self._windows(pending))
        return [d for d in drafts if d.text.strip()]
