"""Turning a stream of headings, paragraphs and tables into :class:`Section` objects.

Structured formats (Markdown, HTML, DOCX, HWP, HWPX) all walk their document in
order and meet the same three kinds of block; :class:`SectionBuilder` groups
them the same way for all of them: a heading starts a new text section, a table
becomes its own ``kind="table"`` section under the heading it appears beneath.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from hanrag.ingest.parsers.base import Section
from hanrag.ingest.parsers.budget import active_budget
from hanrag.ingest.parsers.tabular import table_sections

# C0/C1 control characters other than tab and newline: they come from binary
# formats' field codes and from broken encodings, and mean nothing to a reader.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t\u00a0\u3000\u200b\ufeff]+")
_BLANK_RUNS = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """Uniform newlines, no control characters, single spaces, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


class SectionBuilder:
    """Collects blocks in document order and hands back the sections they make.

    Text added is charged to the parse's budget (and the deadline checked), so a
    parser that feeds a builder need not count its own text.

    A heading with no body before the next heading stays in the next section's
    text (``제4장 휴가`` followed at once by ``제20조``), so no section is a bare
    heading and the outer heading's words are not lost.
    """

    def __init__(self) -> None:
        self._budget = active_budget()
        self._heading: str | None = None
        self._lines: list[str] = []
        self._has_body = False
        self._sections: list[Section] = []

    def add_heading(self, text: str) -> None:
        heading = clean_text(text).replace("\n", " ")
        if not heading:
            return
        self._charge(len(heading))
        if self._has_body:
            self._flush()
        self._heading = heading
        self._lines.append(heading)

    def add_text(self, text: str) -> None:
        cleaned = clean_text(text)
        if cleaned:
            self._charge(len(cleaned))
            self._lines.append(cleaned)
            self._has_body = True

    def add_table(self, rows: Iterable[Sequence[object]], *, caption: str | None = None) -> None:
        caption_text = clean_text(caption) if caption else ""
        sections = table_sections(rows, heading=caption_text or self._heading)
        if not sections:
            return
        # Headings with no body yet belong to the table: they say what it is about.
        lead = [] if self._has_body else self._lines
        if lead:
            self._lines = []
        else:
            self._flush()
        if caption_text:
            lead = [*lead, caption_text]
        if lead:
            sections[0].text = "\n".join([*lead, sections[0].text])
        self._sections.extend(sections)

    def _charge(self, chars: int) -> None:
        if self._budget is not None:
            self._budget.add_text(chars)
            self._budget.check_time()

    def build(self) -> list[Section]:
        self._flush()
        sections, self._sections = self._sections, []
        return sections

    def _flush(self) -> None:
        if self._lines:
            text = "\n".join(self._lines).strip()
            if text:
                self._sections.append(Section(text=text, heading=self._heading))
        self._lines = []
        self._has_body = False
