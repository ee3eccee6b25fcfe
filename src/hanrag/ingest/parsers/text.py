"""Plain text and Markdown, with the encoding detection every text-based parser shares.

Korean text files in the wild are UTF-8, CP949 (Windows' Korean code page, a
superset of EUC-KR), or UTF-16 with a byte order mark (Notepad's "Unicode").
:func:`decode_text` tries those in that order before asking charset-normalizer,
because a statistical guess on short Korean text sometimes picks a wrong
double-byte code page where a strict CP949 decode is both cheap and certain.
"""

from __future__ import annotations

import codecs
import re
import unicodedata

from hanrag.errors import ParseError
from hanrag.ingest.parsers.base import ParsedDocument, Section
from hanrag.ingest.parsers.sections import SectionBuilder, clean_text

# UTF-32 first: its little-endian mark begins with UTF-16's.
_BYTE_ORDER_MARKS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_TITLE_MAX_CHARS = 100
_READABLE_SAMPLE_CHARS = 100_000
# The share of characters that may come out as U+FFFD for otherwise UTF-8 or CP949 text to be
# read anyway; one damaged byte can spoil up to three characters around it.
_MAX_REPLACED_SHARE = 0.01


def decode_text(data: bytes, filename: str) -> tuple[str, str]:
    """The text of ``data`` and the name of the encoding it was read with.

    Raises ``ParseError(code="encoding_error")`` when no encoding gives readable text.
    """
    for mark, encoding in _BYTE_ORDER_MARKS:
        if data.startswith(mark):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError as exc:
                raise ParseError(
                    f"{filename}: starts with a {encoding} byte order mark but is not valid {encoding}",
                    code="encoding_error",
                ) from exc
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("cp949")
    except UnicodeDecodeError:
        pass
    else:
        if _mostly_hangul(text):
            return text, "cp949"
    # A file that is UTF-8 or CP949 but for a stray damaged byte or two (a cut-off last character,
    # two files glued together) loses those bytes, not the whole file. This must come before
    # charset-normalizer, which would read such a file as Latin mojibake without complaint.
    for encoding in ("utf-8", "cp949"):
        text = data.decode(encoding, errors="replace")
        replaced = text.count("\ufffd")
        if replaced <= len(text) * _MAX_REPLACED_SHARE and (encoding == "utf-8" or _mostly_hangul(text)):
            return text, encoding
    return _detect_with_charset_normalizer(data, filename)


def _mostly_hangul(text: str) -> bool:
    """True when most non-ASCII letters are Hangul: then a clean CP949 decode is Korean text.

    CP949 maps almost every byte pair to some character, so a clean decode alone
    proves little; Latin-1 text read as CP949 comes out as scattered Hanja instead.
    """
    non_ascii = [ch for ch in text if ord(ch) > 0x7F and not ch.isspace()]
    if not non_ascii:
        return False
    hangul = sum(1 for ch in non_ascii if "\uac00" <= ch <= "\ud7a3" or "\u3131" <= ch <= "\u318e")
    return hangul / len(non_ascii) >= 0.5


def _detect_with_charset_normalizer(data: bytes, filename: str) -> tuple[str, str]:
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise ParseError(f"{filename}: text encoding could not be detected", code="encoding_error")
    text = str(best)
    if not _readable(text):
        raise ParseError(
            f"{filename}: does not decode to readable text in any known encoding", code="encoding_error"
        )
    return text, best.encoding


def _readable(text: str) -> bool:
    """Few control or unassigned characters: what a text file, not binary data, decodes to."""
    # The start of the text decides; counting categories over megabytes would only cost time.
    sample = text[:_READABLE_SAMPLE_CHARS]
    if not sample:
        return True
    bad = sum(
        1 for ch in sample if ch not in "\t\n\r\f" and unicodedata.category(ch) in ("Cc", "Cn", "Co", "Cs")
    )
    return bad / len(sample) < 0.01 and "\ufffd" not in sample


def _first_line_title(text: str) -> str | None:
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped:
            return stripped if len(stripped) <= _TITLE_MAX_CHARS else None
    return None


# ``제3장 휴가``, ``제 2 절 보안 사고``: how Korean rules and policies mark their parts.
# Articles (제N조) are left inside their chapter: they are often a single sentence.
_KOREAN_PART_HEADING = re.compile(r"^\s*제\s*\d+\s*[편장절](?:\s|$|\(|\.)")
_PART_HEADING_MAX_CHARS = 60


class TextParser:
    """Plain text: one section per chapter (``제N장``) where the text has them."""

    format = "text"
    extensions: tuple[str, ...] = (".txt", ".text")

    def sniff(self, head: bytes, filename: str) -> bool:
        # Plain text has no signature; the registry picks it by extension.
        return False

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        raw, encoding = decode_text(data, filename)
        text = clean_text(raw)
        builder = SectionBuilder()
        paragraph: list[str] = []
        for line in text.split("\n"):
            if len(line) <= _PART_HEADING_MAX_CHARS and _KOREAN_PART_HEADING.match(line):
                builder.add_text("\n".join(paragraph))
                paragraph = []
                builder.add_heading(line)
            else:
                paragraph.append(line)
        builder.add_text("\n".join(paragraph))
        sections = builder.build()
        if not sections:
            raise ParseError(f"{filename}: text file has no text", code="no_text")
        return ParsedDocument(
            sections=sections,
            format=self.format,
            title=_first_line_title(text),
            metadata={"encoding": encoding},
        )


_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_TABLE_DELIMITER_ROW = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
_FRONT_MATTER_TITLE = re.compile(r"^title\s*:\s*(.+?)\s*$", re.IGNORECASE)


def _split_table_row(line: str) -> list[str]:
    stripped = line.strip()
    if stripped.startswith("|"):
        stripped = stripped[1:]
    if stripped.endswith("|") and not stripped.endswith("\\|"):
        stripped = stripped[:-1]
    # ``\|`` is a literal pipe inside a cell.
    cells = re.split(r"(?<!\\)\|", stripped)
    return [cell.strip().replace("\\|", "|") for cell in cells]


class MarkdownParser:
    """Markdown: text kept as written, headings start sections, pipe tables become table sections."""

    format = "markdown"
    extensions: tuple[str, ...] = (".md", ".markdown")

    def sniff(self, head: bytes, filename: str) -> bool:
        return False

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        raw, encoding = decode_text(data, filename)
        lines = raw.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        front_matter_title, start = self._front_matter(lines)
        builder = SectionBuilder()
        title: str | None = None
        paragraph: list[str] = []
        fence: str | None = None
        index = start

        def flush_paragraph() -> None:
            builder.add_text("\n".join(paragraph))
            paragraph.clear()

        while index < len(lines):
            line = lines[index]
            fence_match = _FENCE.match(line)
            if fence is not None:
                # Inside a code block nothing is a heading or a table.
                paragraph.append(line)
                if (
                    fence_match
                    and fence_match.group(1)[0] == fence[0]
                    and len(fence_match.group(1)) >= len(fence)
                ):
                    fence = None
                index += 1
                continue
            if fence_match:
                fence = fence_match.group(1)
                paragraph.append(line)
                index += 1
                continue
            heading = _ATX_HEADING.match(line)
            if heading and heading.group(2):
                flush_paragraph()
                text = heading.group(2).strip()
                if title is None and len(heading.group(1)) == 1:
                    title = text
                builder.add_heading(text)
                index += 1
                continue
            next_line = lines[index + 1] if index + 1 < len(lines) else ""
            if "|" in line and _TABLE_DELIMITER_ROW.match(next_line) and "-" in next_line:
                flush_paragraph()
                rows = [_split_table_row(line)]
                index += 2
                while index < len(lines) and "|" in lines[index] and lines[index].strip():
                    rows.append(_split_table_row(lines[index]))
                    index += 1
                builder.add_table(rows)
                continue
            underline = _SETEXT_UNDERLINE.match(next_line)
            if underline and line.strip() and not paragraph and not _SETEXT_UNDERLINE.match(line):
                # ``Title\n=====`` is a level-1 heading, ``Title\n-----`` level 2.
                text = line.strip()
                if title is None and underline.group(1)[0] == "=":
                    title = text
                builder.add_heading(text)
                index += 2
                continue
            if not line.strip():
                flush_paragraph()
            else:
                paragraph.append(line)
            index += 1
        flush_paragraph()
        sections: list[Section] = builder.build()
        if not sections:
            raise ParseError(f"{filename}: Markdown file has no text", code="no_text")
        return ParsedDocument(
            sections=sections,
            format=self.format,
            title=title or front_matter_title or _first_line_title(clean_text(raw)),
            metadata={"encoding": encoding},
        )

    @staticmethod
    def _front_matter(lines: list[str]) -> tuple[str | None, int]:
        """A YAML front matter block's ``title`` and the index of the first line after it."""
        if not lines or lines[0].strip() != "---":
            return None, 0
        for end in range(1, min(len(lines), 200)):
            if lines[end].strip() in ("---", "..."):
                title = None
                for line in lines[1:end]:
                    match = _FRONT_MATTER_TITLE.match(line)
                    if match:
                        title = match.group(1).strip("\"'")
                        break
                return title, end + 1
        return None, 0
