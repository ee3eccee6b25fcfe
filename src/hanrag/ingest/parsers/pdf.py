"""PDF via pypdfium2 (PDFium, the engine in Chrome): one section per page with text.

PDFium is not safe to call from several threads at once, and ingestion may run
parsers in a thread pool, so every use of it here holds one module-wide lock.

Limits (see :mod:`hanrag.ingest.parsers.budget`): before PDFium sees the file,
every stream in it is unpacked once with a bound
(:mod:`~hanrag.ingest.parsers.pdf_guard`), so a compression bomb fails the file
instead of filling memory; then the deadline is checked and the text charged
page by page. A page's own content is PDFium's to decode and cannot be
interrupted half-way.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime
from typing import TYPE_CHECKING

from hanrag.errors import ParseError
from hanrag.ingest.parsers.base import ParsedDocument, Section
from hanrag.ingest.parsers.budget import file_budget
from hanrag.ingest.parsers.dates import parse_pdf_date
from hanrag.ingest.parsers.pdf_guard import inspect_pdf
from hanrag.ingest.parsers.sections import clean_text

if TYPE_CHECKING:
    import pypdfium2 as pdfium

_PDFIUM_LOCK = threading.Lock()
# PDFium's FPDF_GetLastError() codes (fpdfview.h).
_FPDF_ERR_PASSWORD = 4
_FPDF_ERR_SECURITY = 5
# Titles that producers fill in when the author gave none.
_PLACEHOLDER_TITLES = frozenset({"untitled", "제목 없음", "none", "unknown"})
# A PDF stores visual lines; a line that runs to (almost) the full text width and
# does not end a sentence was wrapped by the layout, not by the author.
_SENTENCE_END = re.compile(r"[.?!。:;)\]」』”\"]$")
_LIST_START = re.compile(r"^(?:[•·▪○●□■◆◇※\-*]|\d+[.)]|[가-하][.)]|\(\d+\)|제\s*\d+\s*[장절조])")
_WRAPPED_WIDTH = 0.7
# Office's "Save as PDF" prefixes the title with the application's name.
_APPLICATION_TITLE_PREFIX = re.compile(r"^Microsoft (?:Word|PowerPoint|Excel) - ", re.IGNORECASE)


class PdfParser:
    format = "pdf"
    extensions: tuple[str, ...] = (".pdf",)

    def sniff(self, head: bytes, filename: str) -> bool:
        # Readers also accept a header after up to 1 KiB of junk, but a text file that merely
        # mentions "%PDF-" near its start must stay text; such PDFs still come here by extension.
        return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"%PDF-")

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        import pypdfium2 as pdfium

        inspect_pdf(data, filename)
        with _PDFIUM_LOCK:
            try:
                document = pdfium.PdfDocument(data)
            except pdfium.PdfiumError as exc:
                code = getattr(exc, "err_code", None)
                if code in (_FPDF_ERR_PASSWORD, _FPDF_ERR_SECURITY):
                    raise ParseError(
                        f"{filename}: PDF is password-protected; remove the password and upload it again",
                        code="encrypted_file",
                    ) from exc
                raise ParseError(f"{filename}: not a readable PDF ({exc})", code="corrupt_file") from exc
            try:
                page_count = len(document)
                sections = self._pages(document, filename)
                metadata = {key: value for key, value in document.get_metadata_dict().items() if value}
            finally:
                document.close()
        if not sections:
            raise ParseError(
                f"{filename}: PDF has no extractable text (a scanned document needs OCR first)",
                code="no_text",
            )
        return ParsedDocument(
            sections=sections,
            format=self.format,
            title=_clean_title(metadata.get("Title")),
            date=_metadata_date(metadata),
            metadata={"pages": str(page_count)},
        )

    @staticmethod
    def _pages(document: pdfium.PdfDocument, filename: str) -> list[Section]:
        import pypdfium2 as pdfium

        sections: list[Section] = []
        with file_budget(filename) as budget:
            for index in range(len(document)):
                budget.check_time()
                try:
                    page = document[index]
                    try:
                        text_page = page.get_textpage()
                        try:
                            text = unwrap_lines(clean_text(text_page.get_text_range()))
                        finally:
                            text_page.close()
                    finally:
                        page.close()
                except pdfium.PdfiumError as exc:
                    raise ParseError(
                        f"{filename}: page {index + 1} is damaged ({exc})", code="corrupt_file"
                    ) from exc
                if text:
                    budget.add_text(len(text))
                    sections.append(Section(text=text, page=index + 1))
        return sections


def unwrap_lines(text: str) -> str:
    """Join lines the layout wrapped, so sentences are whole again."""
    lines = text.split("\n")
    widest = max((len(line) for line in lines), default=0)
    out: list[str] = []
    for line in lines:
        previous = out[-1] if out else ""
        wrapped = (
            previous
            and line
            and len(previous) >= _WRAPPED_WIDTH * widest
            and not _SENTENCE_END.search(previous)
            and not _LIST_START.match(line)
        )
        if wrapped:
            out[-1] = f"{previous} {line}"
        else:
            out.append(line)
    return "\n".join(out)


def _clean_title(raw: str | None) -> str | None:
    if not raw:
        return None
    title = _APPLICATION_TITLE_PREFIX.sub("", clean_text(raw).replace("\n", " "))
    if not title or title.lower() in _PLACEHOLDER_TITLES:
        return None
    return title


def _metadata_date(metadata: dict[str, str]) -> datetime | None:
    # The last change is what tells a reader how current the document is.
    return parse_pdf_date(metadata.get("ModDate")) or parse_pdf_date(metadata.get("CreationDate"))
