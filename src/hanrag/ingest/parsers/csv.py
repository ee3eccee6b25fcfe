"""CSV and TSV: the same row rendering as XLSX, after encoding detection and delimiter sniffing.

Korean Excel saves "CSV" in CP949 by default, so the text goes through the same
:func:`~hanrag.ingest.parsers.text.decode_text` as plain text files.
"""

from __future__ import annotations

import csv
import io

from hanrag.errors import ParseError
from hanrag.ingest.parsers.base import ParsedDocument
from hanrag.ingest.parsers.tabular import table_sections
from hanrag.ingest.parsers.text import decode_text

_CANDIDATE_DELIMITERS = ",\t;|"
_SNIFF_CHARS = 64 * 1024


def sniff_delimiter(text: str, filename: str) -> str:
    """The delimiter of a CSV text: ``csv.Sniffer`` first, then the most regular candidate."""
    if filename.lower().endswith(".tsv"):
        return "\t"
    sample = text[:_SNIFF_CHARS]
    # Cut at a line end so a half line does not confuse the sniffer.
    if len(text) > _SNIFF_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n")]
    try:
        return csv.Sniffer().sniff(sample, delimiters=_CANDIDATE_DELIMITERS).delimiter
    except csv.Error:
        pass
    # The Sniffer gives up on quoted fields with line breaks and on ragged rows; a delimiter that
    # appears on most lines is the next best guess.
    lines = [line for line in sample.split("\n")[:50] if line.strip()]
    best, best_lines = ",", 0
    for candidate in _CANDIDATE_DELIMITERS:
        count = sum(1 for line in lines if candidate in line)
        if count > best_lines:
            best, best_lines = candidate, count
    return best


class CsvParser:
    format = "csv"
    extensions: tuple[str, ...] = (".csv", ".tsv")

    def sniff(self, head: bytes, filename: str) -> bool:
        # Comma-separated text has no signature; the registry picks it by extension.
        return False

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        text, encoding = decode_text(data, filename)
        delimiter = sniff_delimiter(text, filename)
        # A NUL byte is never in real CSV text; the csv module refuses it with a confusing error.
        reader = csv.reader(io.StringIO(text.replace("\x00", ""), newline=""), delimiter=delimiter)
        try:
            sections = table_sections(reader)
        except csv.Error as exc:
            raise ParseError(f"{filename}: malformed CSV ({exc})", code="corrupt_file") from exc
        if not sections:
            raise ParseError(f"{filename}: CSV file has no values", code="no_text")
        return ParsedDocument(
            sections=sections,
            format=self.format,
            metadata={"encoding": encoding, "delimiter": delimiter},
        )
