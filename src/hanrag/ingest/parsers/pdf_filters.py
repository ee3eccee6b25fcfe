"""The PDF filters PDFium decodes in memory, rewritten to stream, for :mod:`~hanrag.ingest.parsers.pdf_guard`.

Each decoder takes the stream's data as an iterator of pieces (raw bytes, or
the previous filter's output) and yields its output in pieces of at most
:data:`OUT_CHUNK` bytes (FlateDecode) or about that (the others), so that a
chain of them never holds a stream whole. They read what PDFium's decoders
read (``core/fxcodec/flate/flatemodule.cpp``, ``fpdf_parser_decode.cpp``) and
stop where they stop; where PDFium would produce less (a damaged code, a
truncated run), they may produce a little more, never less. Only sizes and the
bytes passed to a next filter matter here: nothing decoded is kept.

FlateDecode and LZWDecode are what make a bomb (zlib packs up to about
1,000:1, PDFium's LZW about 2,500:1); ASCIIHex, ASCII85 and RunLength are here
so that a Flate or LZW stream behind them is reached.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from collections.abc import Callable, Iterator

OUT_CHUNK = 1024 * 1024
# PDFium's filter names, abbreviations included, and the decoder each one runs here.
FILTER_KINDS = {
    "FlateDecode": "flate",
    "Fl": "flate",
    "LZWDecode": "lzw",
    "LZW": "lzw",
    "ASCIIHexDecode": "ahx",
    "AHx": "ahx",
    "ASCII85Decode": "a85",
    "A85": "a85",
    "RunLengthDecode": "rl",
    "RL": "rl",
}
_NOT_HEX = re.compile(rb"[^0-9A-Fa-f]+")
_NOT_A85 = re.compile(rb"[^!-uz]")
_A85_SKIPPED = re.compile(rb"[\t\n\r ]+")

Decoder = Callable[[Iterator[bytes], bool], Iterator[bytes]]


def zlib_header(head: bytes) -> bool:
    """Whether two bytes start a zlib stream (deflate, a window zlib accepts, a valid check)."""
    return len(head) == 2 and head[0] & 0x0F == 8 and head[0] >> 4 <= 7 and (head[0] << 8 | head[1]) % 31 == 0


def inflate(chunks: Iterator[bytes], early_change: bool = True) -> Iterator[bytes]:
    """FlateDecode: zlib, to its end or its first error (PDFium keeps what came before an error)."""
    decompressor = zlib.decompressobj()
    for chunk in chunks:
        pending = chunk
        while pending:
            try:
                out = decompressor.decompress(pending, OUT_CHUNK)
            except zlib.error:
                return
            if out:
                yield out
            if decompressor.eof:
                return
            pending = decompressor.unconsumed_tail
    # What zlib still holds when the input ran out just as the output reached its bound.
    while not decompressor.eof and (out := decompressor.decompress(b"", OUT_CHUNK)):
        yield out


def lzw(chunks: Iterator[bytes], early_change: bool = True) -> Iterator[bytes]:
    """LZWDecode as PDFium's ``CLZWDecoder`` reads it; PDFium rejects no code, so neither does this."""
    state = _LzwState(early_change)
    for chunk in chunks:
        data = bytes(chunk)
        # 256 bytes make at most 227 codes of at most 4,096 bytes each: under 1 MB at a time.
        for start in range(0, len(data), 256):
            out = state.feed(data[start : start + 256])
            if out:
                yield out
            if state.done:
                return


class _LzwState:
    """Codes of 9-12 bits; ``table`` holds the 256 single bytes, then the string of code ``258 + i`` at ``256 + i``."""

    def __init__(self, early_change: bool) -> None:
        self.early = 1 if early_change else 0
        self.table = [bytes([code]) for code in range(256)]
        self.code_len = 9
        self.old: int | None = None
        self.last = b""  # the first byte of the last string written
        self.accumulator = 0
        self.bits = 0
        self.done = False

    def _string(self, code: int) -> bytes:
        if code < 256:
            return self.table[code]
        # PDFium's DecodeString of a code past the table is that code's low byte.
        return self.table[code - 2] if code - 2 < len(self.table) else bytes([code & 0xFF])

    def _add(self, string: bytes) -> None:
        if len(self.table) - 256 + self.early == 4094:
            return  # full: PDFium adds nothing more until a clear code
        self.table.append(string)
        self.code_len = {254: 10, 766: 11, 1790: 12}.get(len(self.table) - 256 + self.early, self.code_len)

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        table = self.table
        for byte in chunk:
            self.accumulator = (self.accumulator << 8 | byte) & 0xFFFFFF
            self.bits += 8
            if self.bits < self.code_len:
                continue
            self.bits -= self.code_len
            code = self.accumulator >> self.bits & ((1 << self.code_len) - 1)
            old = self.old
            if code < 256:
                if old is not None:
                    self._add(self._string(old) + table[code])
                out.append(table[code])
                self.last = table[code]
            elif code == 256:
                del table[256:]
                self.code_len, old = 9, None
            elif code == 257 or old is None:
                self.done = True
                break
            else:
                string = table[code - 2] if code - 2 < len(table) else self._string(old) + self.last
                out.append(string)
                self.last = string[:1]
                if old >= 258 and old - 2 >= len(table):
                    self.done = True
                    break
                self._add(self._string(old) + self.last)
            self.old = code if code != 256 else None
        return b"".join(out)


def ascii_hex(chunks: Iterator[bytes], early_change: bool = True) -> Iterator[bytes]:
    """ASCIIHexDecode as PDFium reads it: hex digits up to ``>``, anything else skipped."""
    pending = b""
    for chunk in chunks:
        text = bytes(chunk)
        end = text.find(b">")
        digits = pending + _NOT_HEX.sub(b"", text if end < 0 else text[:end])
        even = len(digits) & ~1
        if even:
            yield binascii.unhexlify(digits[:even])
        pending = digits[even:]
        if end >= 0:
            break
    if pending:
        yield binascii.unhexlify(pending + b"0")


def ascii85(chunks: Iterator[bytes], early_change: bool = True) -> Iterator[bytes]:
    """ASCII85Decode as PDFium reads it: up to the first character other than ``!``-``u``, ``z`` and blanks."""
    pending = b""
    for chunk in chunks:
        text = _A85_SKIPPED.sub(b"", bytes(chunk))
        stop = _NOT_A85.search(text)
        text = pending + (text if stop is None else text[: stop.start()])
        # A "z" is four zero bytes, and drops an unfinished group before it (as in PDFium).
        pieces = text.split(b"z")
        out = [_a85_groups(piece[: len(piece) // 5 * 5]) + b"\0\0\0\0" for piece in pieces[:-1]]
        last = pieces[-1]
        out.append(_a85_groups(last[: len(last) // 5 * 5]))
        pending = last[len(last) // 5 * 5 :]
        yield b"".join(out)
        if stop is not None:
            break
    if len(pending) > 1:
        yield _a85_groups(pending + b"u" * (5 - len(pending)))[: len(pending) - 1]


def _a85_groups(text: bytes) -> bytes:
    try:
        return base64.a85decode(text)
    except ValueError:  # a group past 2**32: PDFium keeps its low 32 bits
        out = bytearray()
        for index in range(0, len(text), 5):
            value = 0
            for char in text[index : index + 5]:
                value = value * 85 + char - 33
            out += (value & 0xFFFFFFFF).to_bytes(4, "big")
        return bytes(out)


def run_length(chunks: Iterator[bytes], early_change: bool = True) -> Iterator[bytes]:
    """RunLengthDecode: n < 128 copies n + 1 bytes, n > 128 repeats one byte 257 - n times, 128 ends."""
    pending = b""
    for piece in _pieces(chunks, 16 * 1024):  # at most 64 times as much out: 1 MB
        data = pending + piece
        out: list[bytes] = []
        position = 0
        while position < len(data):
            length = data[position]
            if length == 128:
                yield b"".join(out)
                return
            need = length + 2 if length < 128 else 2
            if position + need > len(data):
                break
            if length < 128:
                out.append(data[position + 1 : position + need])
            else:
                out.append(data[position + 1 : position + 2] * (257 - length))
            position += need
        pending = data[position:]
        yield b"".join(out)


def _pieces(chunks: Iterator[bytes], size: int) -> Iterator[bytes]:
    for chunk in chunks:
        data = bytes(chunk)
        for start in range(0, len(data), size):
            yield data[start : start + size]


DECODERS: dict[str, Decoder] = {
    "flate": inflate,
    "lzw": lzw,
    "ahx": ascii_hex,
    "a85": ascii85,
    "rl": run_length,
}
