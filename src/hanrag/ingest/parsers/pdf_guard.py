"""The PDF stream-bomb guard: every stream of a PDF is unpacked once, with a bound, before PDFium opens it.

PDFium decodes a stream whole, into one buffer, when it needs it, and nothing
can interrupt it half-way: a 306 KB PDF whose page content stream inflates to
300 MB took it to +600 MB of resident memory. :func:`inspect_pdf` runs first,
on the file's bytes, and fails the file when a stream unpacks more than
``ingest.max_compression_ratio`` times its size (``file_too_complex``; streams
under :data:`~hanrag.ingest.parsers.archive_guard.RATIO_FLOOR_BYTES` unpacked
are exempt, as zip entries are) or when the streams together unpack to more
than ``ingest.max_unpacked_mb`` (``file_too_large``, as for zip entries and HWP
streams). The output is counted in pieces of at most 1 MiB and dropped; the
deadline (and cancellation) is checked between pieces.

Finding streams. PDFium reads a stream where a dictionary is followed by the
keyword ``stream``; its data starts after the end of that line. Every such
keyword in the file is a candidate (streams of damaged files and streams no
cross-reference table points at included), and its data is fed to the decoders
until *they* stop, up to the end of the file: ``/Length`` (direct, indirect or
wrong) is not trusted and ``endstream`` only delimits the data for the ratio,
so a stream that hides a false ``endstream`` or lies about its length is still
measured whole. What PDFium decodes from any cut of the data is a prefix of it.

Which filters. The dictionary is read from the object header (``N G obj``)
with a small tokenizer: ``/Filter`` as a name or an array, ``#xx`` escapes
decoded, abbreviations (``/Fl``) expanded, references resolved in the file. Its
leading filters that PDFium decodes in memory run as a chain, each stage feeding
the next in pieces (:mod:`~hanrag.ingest.parsers.pdf_filters`): FlateDecode and
LZWDecode, which expand (zlib about 1,000:1, LZW about 2,500:1; chained they
multiply), and ASCIIHex, ASCII85 and RunLength, which only pass a Flate or LZW
stream on. Image codecs (DCT, JPX, CCITT, JBIG2) end the chain unread. Data (or
a stage's output) that starts with a zlib header is inflated whatever the
dictionary says, so a dictionary misread here or by PDFium costs nothing; when
the dictionary cannot be read at all, each filter named in it is tried too.
Every stage's output counts towards the stream's total.

Images. The pixels of an image XObject (``/Subtype /Image``) count towards
``max_unpacked_mb`` but are not held to the ratio: a blank page or a white
background packs 1,000:1 as a bomb does, and PDFium decodes images only to draw
them. A content stream labelled as an image gains an attacker nothing: memory
is bounded by ``max_unpacked_mb`` either way, the ratio only names bombs early.

Cost on ordinary files: one inflate of every Flate stream (content streams,
fonts, Flate images: zlib gives several hundred MB/s) and some microseconds of
Python per stream: about 2 ms for the bundled sample, 11 ms for a 20 MB scan of
JPEG pages (JPEG and JPEG 2000 data is never unpacked: it starts with no zlib
header). LZW is decoded in Python, about 1 MB/s of LZW data; it is rare since 2001.

Not covered. Encrypted PDFs (an empty user password opens them) keep their
streams encrypted here, so they are not measured. A filter named by a reference
into an object stream is not resolved (zlib sniffing still applies, and LZW,
ASCIIHex and ASCII85 are tried). Within the limits PDFium needs about twice the
decoded size of a page's content streams (it joins them into one buffer), so
``max_unpacked_mb`` bounds its memory only to about twice that; and a content
stream of many small operators makes many page objects.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from hanrag.ingest.parsers.archive_guard import RATIO_FLOOR_BYTES
from hanrag.ingest.parsers.budget import ParseBudget, file_budget
from hanrag.ingest.parsers.pdf_filters import DECODERS, FILTER_KINDS, zlib_header

_IN_CHUNK = 64 * 1024
# How much of a stream dictionary is read (they are small; a larger one is read by its names only).
_DICT_WINDOW = 64 * 1024
# Stages of one stream's filter chain run here at most (PDFium has no limit; a bomb needs two).
_MAX_STAGES = 8
# Arrays and dictionaries nested deeper are not read (PDFium stops at 64 too).
_MAX_DEPTH = 64
_WHITESPACE = b"\x00\t\n\x0c\r "
_BOUNDARY = frozenset(_WHITESPACE + b"()<>[]{}/%")
_REGULAR = rb"[^\x00\t\n\x0c\r ()<>\[\]{}/%]"
_TOKEN = re.compile(
    rb"[\x00\t\n\x0c\r ]+|%[^\r\n]*|(<<|>>|[\[\]{}(]|<[^>]*>|/" + _REGULAR + rb"*|" + _REGULAR + rb"+)"
)
_HEADER_BEFORE = re.compile(rb"(?<![0-9])([0-9]{1,10})[\x00\t\n\x0c\r ]+([0-9]{1,5})[\x00\t\n\x0c\r ]+\Z")
_NAME_ESCAPE = re.compile(rb"#([0-9A-Fa-f]{2})")
_NAME_IN_TEXT = re.compile(rb"/(" + _REGULAR + rb"+)")
# Filters tried on a stream whose /Filter is a reference this guard cannot resolve.
_UNRESOLVED_TRIES = ("lzw", "ahx", "a85")


class _Unreadable(Exception):
    """A dictionary this guard's tokenizer cannot read (PDFium may still)."""


@dataclass(frozen=True, slots=True)
class _Ref:
    number: int
    generation: int


@dataclass(slots=True)
class _Stage:
    kind: str
    early_change: bool = True


@dataclass(slots=True)
class _Candidate:
    """What one ``stream`` keyword's dictionary says: the filter chain, or None if it cannot be read."""

    label: str
    stages: list[_Stage] | None
    named: list[str] = field(default_factory=list)
    image: bool = False  # an image XObject: its pixels are held to the unpacked size, not the ratio


def inspect_pdf(data: bytes, filename: str) -> None:
    """Measure every stream of ``data`` against the parse's limits; raise ``ParseError`` past one."""
    with file_budget(filename) as budget:
        objects = _Objects(data)
        scanner = _Scanner(data)
        position = 0
        while (keyword := data.find(b"stream", position)) >= 0:
            position = keyword + 6
            if keyword > 0 and data[keyword - 1] not in _BOUNDARY:
                continue  # endstream, or a longer word
            if position < len(data) and data[position] not in _BOUNDARY:
                continue
            budget.check_time()
            candidate = _read_candidate(data, keyword, scanner.header(keyword), objects)
            start = scanner.line_end(position)
            if candidate.stages is not None:
                passes = [candidate.stages]
            else:
                # Not known: inflate zlib data, and try each other filter the dictionary names alone.
                tries = dict.fromkeys(kind for kind in candidate.named if kind != "flate")
                passes = [[], *([_Stage(kind)] for kind in tries)]
            for stages in passes:
                _measure(data, start, stages, budget, candidate)


class _Scanner:
    """Object headers and line ends found going forward, so that a file of keywords costs linear time."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.searched = 0  # "obj" was looked for up to here
        self.last_obj = -1
        self.eol = {b"\n": (-1, -1), b"\r": (-1, -1)}  # byte: (searched from, found at)

    def header(self, keyword: int) -> tuple[int, int] | None:
        """Number and end of the ``N G obj`` header the keyword belongs to (None after an ``endobj``)."""
        data = self.data
        if (found := data.rfind(b"obj", self.searched, keyword)) >= 0:
            self.last_obj = found
        self.searched = keyword
        position = self.last_obj  # however far back: a dictionary may be padded
        for _ in range(32):
            if position < 0 or data[position - 3 : position] == b"end":
                return None
            after = position + 3
            if after >= len(data) or data[after] in _BOUNDARY:
                match = _HEADER_BEFORE.search(data, max(0, position - 64), position)
                if match is not None:
                    return int(match[1]), after
            position = data.rfind(b"obj", max(0, position - _DICT_WINDOW), position)
        return None

    def line_end(self, position: int) -> int:
        """Where PDFium starts a stream's data: after the end of the keyword's line (CR, LF or CR LF)."""
        found = {}
        for byte, (since, at) in self.eol.items():
            if not since <= position <= at:
                at = self.data.find(byte, position)
                self.eol[byte] = (position, at if at >= 0 else len(self.data))
            found[byte] = self.eol[byte][1]
        if found[b"\r"] < found[b"\n"]:
            return found[b"\r"] + (2 if self.data[found[b"\r"] + 1 : found[b"\r"] + 2] == b"\n" else 1)
        return min(found[b"\n"] + 1, len(self.data))


# --- the stream's dictionary ------------------------------------------------------------------


def _read_candidate(
    data: bytes, keyword: int, header: tuple[int, int] | None, objects: _Objects
) -> _Candidate:
    if header is None:
        return _Candidate("a stream", None, _named_filters(data[max(0, keyword - 4096) : keyword]))
    label = f"stream object {header[0]}"
    text_end = min(keyword, header[1] + _DICT_WINDOW)
    try:
        value, end = _parse_object(data, header[1], text_end)
    except _Unreadable:
        return _Candidate(label, None, _named_filters(data[header[1] : text_end]))
    if not isinstance(value, dict) or _skip_blank(data, end, keyword) != keyword:
        # The keyword lies in another stream's data (or after no dictionary): not a stream to PDFium.
        return _Candidate(label, [])
    stages = _chain(value, objects)
    image = objects.resolve(value.get("Subtype")) == "Image"
    return _Candidate(label, stages, list(_UNRESOLVED_TRIES) if stages is None else [], image)


def _skip_blank(data: bytes, position: int, end: int) -> int:
    while position < end:
        match = _TOKEN.match(data, position, end)
        if match is None or match[1] is not None:
            break
        position = match.end()
    return position


def _named_filters(text: bytes) -> list[str]:
    """The decodable filters named anywhere in ``text`` (for dictionaries that cannot be read)."""
    kinds = (FILTER_KINDS.get(_name(raw)) for raw in _NAME_IN_TEXT.findall(text))
    return [kind for kind in kinds if kind is not None]


def _name(raw: bytes) -> str:
    if b"#" in raw:
        raw = _NAME_ESCAPE.sub(lambda match: bytes([int(match[1], 16)]), raw)
    return raw.decode("latin-1")


def _chain(dictionary: dict[str, Any], objects: _Objects) -> list[_Stage] | None:
    """The leading filters PDFium decodes in memory, as stages; None when a reference cannot be resolved."""
    filters = objects.resolve(dictionary.get("Filter"))
    params = objects.resolve(dictionary.get("DecodeParms"))
    if isinstance(filters, str):
        filters, params = [filters], [params]
    elif not isinstance(params, list):
        params = []  # PDFium gives the filters of an array their parameters only from an array
    if not isinstance(filters, list):
        return [] if filters is not _UNRESOLVED else None
    stages: list[_Stage] = []
    for index, item in enumerate(filters):
        name = objects.resolve(item)
        if name is _UNRESOLVED:
            return None
        if name == "Crypt":
            continue
        kind = FILTER_KINDS.get(name) if isinstance(name, str) else None
        if kind is None:
            break
        param = objects.resolve(params[index]) if index < len(params) else None
        early = objects.resolve(param.get("EarlyChange", b"1")) if isinstance(param, dict) else b"1"
        stages.append(_Stage(kind, early_change=_number(early) != 0))
    return stages


_UNRESOLVED: Any = object()


def _number(value: Any) -> int:
    """An integer as PDFium's ``GetInteger`` reads one (anything else is 0)."""
    try:
        return int(float(value)) if isinstance(value, bytes) else 0
    except ValueError:
        return 0


class _Objects:
    """Indirect objects looked up by their ``N G obj`` headers in the file.

    An object defined more than once, differently (an incremental update), counts as unresolved:
    which one PDFium takes depends on the cross-reference data.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._cache: dict[_Ref, Any] = {}

    def resolve(self, value: Any) -> Any:
        """``value``, or what the reference ``value`` points at (``_UNRESOLVED`` if nowhere in the file)."""
        if not isinstance(value, _Ref):
            return value
        if value not in self._cache:
            pattern = re.compile(
                rb"(?<![0-9])%d[\x00\t\n\x0c\r ]+%d[\x00\t\n\x0c\r ]+obj" % (value.number, value.generation)
            )
            found: list[Any] = []
            for match in pattern.finditer(self._data):
                try:
                    end = min(len(self._data), match.end() + _DICT_WINDOW)
                    found.append(_parse_object(self._data, match.end(), end)[0])
                except _Unreadable:
                    found.append(_UNRESOLVED)
            # Two definitions that differ (an incremental update) cannot be told apart here.
            agreed = found and all(item == found[0] for item in found) and not isinstance(found[0], _Ref)
            self._cache[value] = found[0] if agreed else _UNRESOLVED
        return self._cache[value]


def _parse_object(data: bytes, position: int, end: int) -> tuple[Any, int]:
    """The object at ``position``: dicts (str keys), lists, names (str), references, other tokens as bytes."""
    items, position = _parse_items(data, position, end, closing=None)
    if not items:
        raise _Unreadable
    return items[0], position


def _parse_items(
    data: bytes, position: int, end: int, closing: bytes | None, depth: int = 0
) -> tuple[list[Any], int]:
    if depth > _MAX_DEPTH:
        raise _Unreadable
    items: list[Any] = []
    while True:
        match = _TOKEN.match(data, position, end)
        if match is None:
            raise _Unreadable
        position = match.end()
        token = match[1]
        if token is None:
            continue
        if token == closing:
            return _references(items), position
        if token in (b">>", b"]", b"{", b"}"):
            raise _Unreadable
        if token == b"<<":
            inner, position = _parse_items(data, position, end, b">>", depth + 1)
            if len(inner) % 2 or not all(isinstance(key, str) for key in inner[::2]):
                raise _Unreadable
            items.append(dict(zip(inner[::2], inner[1::2], strict=True)))
        elif token == b"[":
            inner, position = _parse_items(data, position, end, b"]", depth + 1)
            items.append(inner)
        elif token == b"(":
            position = _string_end(data, position, end)
            items.append(b"()")
        elif token.startswith(b"/"):
            items.append(_name(token[1:]))
        else:
            items.append(token)
        if closing is None and len(items) == 1:
            if not isinstance(items[0], bytes) or not items[0].isdigit():
                return items, position
            # A number may start a reference ("5 0 R"): look at the next two tokens.
            after = _parse_reference_tail(data, position, end)
            if after is not None:
                return [_Ref(int(items[0]), after[0])], after[1]
            return items, position


def _parse_reference_tail(data: bytes, position: int, end: int) -> tuple[int, int] | None:
    words: list[bytes] = []
    while len(words) < 2:
        match = _TOKEN.match(data, position, end)
        if match is None:
            return None
        position = match.end()
        if match[1] is not None:
            words.append(match[1])
    if words[0].isdigit() and words[1] == b"R":
        return int(words[0]), position
    return None


def _references(items: list[Any]) -> list[Any]:
    """``N G R`` token triples as references."""
    out: list[Any] = []
    for item in items:
        if (
            item == b"R"
            and len(out) >= 2
            and isinstance(out[-1], bytes)
            and isinstance(out[-2], bytes)
            and out[-1].isdigit()
            and out[-2].isdigit()
        ):
            generation = int(out.pop())
            out[-1] = _Ref(int(out[-1]), generation)
        else:
            out.append(item)
    return out


def _string_end(data: bytes, position: int, end: int) -> int:
    """Just past the ``)`` closing a literal string whose ``(`` ends before ``position``."""
    depth = 1
    while position < end:
        byte = data[position]
        position += 1
        if byte == 0x5C:  # backslash: the next byte is escaped
            position += 1
        elif byte == 0x28:
            depth += 1
        elif byte == 0x29:
            depth -= 1
            if depth == 0:
                return position
    raise _Unreadable


# --- measuring --------------------------------------------------------------------------------


class _Meter:
    """One stream's unpacked bytes, checked against the ratio and the file's budget as they come.

    Its packed size is what the decoders took from the file, or (when larger) the distance to the
    first ``endstream`` or ``endobj`` after its start: where PDFium ends it when /Length is wrong.
    """

    def __init__(self, budget: ParseBudget, data: bytes, start: int, candidate: _Candidate) -> None:
        self.budget = budget
        self.data = data
        self.start = start
        self.label = candidate.label
        self.ratio_applies = not candidate.image
        self.taken = 0
        self.extent: int | None = None  # looked for once the stream is past the ratio floor
        self.unpacked = 0

    def raw(self) -> Iterator[bytes]:
        view = memoryview(self.data)
        for position in range(self.start, len(self.data), _IN_CHUNK):
            chunk = view[position : position + _IN_CHUNK]
            self.taken += len(chunk)
            yield chunk  # type: ignore[misc]  # a memoryview is a bytes-like object for every decoder

    def counted(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.charge(len(chunk))
            yield chunk

    def charge(self, size: int) -> None:
        budget = self.budget
        budget.check_time()
        self.unpacked += size
        if self.ratio_applies and self.unpacked > RATIO_FLOOR_BYTES:
            if self.extent is None:
                ends = [self.data.find(word, self.start) for word in (b"endstream", b"endobj")]
                self.extent = min((end for end in ends if end >= 0), default=len(self.data)) - self.start
            ratio = budget.limits.max_compression_ratio
            if self.unpacked > ratio * max(1, self.extent, self.taken):
                raise budget.too_complex(
                    f"PDF {self.label} unpacks more than {ratio:g} times its size "
                    "(ingest.max_compression_ratio): a compression bomb"
                )
        budget.add_unpacked(size)  # file_too_large past ingest.max_unpacked_mb


def _measure(
    data: bytes, start: int, stages: list[_Stage], budget: ParseBudget, candidate: _Candidate
) -> None:
    meter = _Meter(budget, data, start, candidate)
    stream: Iterator[bytes] = meter.raw()
    decoding = False
    for index in range(_MAX_STAGES):
        stage = stages[index] if index < len(stages) else None
        if stage is None:
            # Past the filters the dictionary names, zlib data is inflated all the same.
            head, stream = _peek(stream, 2)
            if not zlib_header(head):
                break
            stage = _Stage("flate")
        stream = meter.counted(DECODERS[stage.kind](stream, stage.early_change))
        decoding = True
    if decoding:  # pull the last stage's output through (the raw data alone is not read to the end)
        for _ in stream:
            pass


def _peek(chunks: Iterator[bytes], size: int) -> tuple[bytes, Iterator[bytes]]:
    taken: list[bytes] = []
    head = b""
    for chunk in chunks:
        taken.append(chunk)
        head += bytes(chunk[:size])
        if len(head) >= size:
            break
    return head[:size], chain(taken, chunks)
