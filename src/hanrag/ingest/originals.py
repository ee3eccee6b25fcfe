"""A document's original bytes, for download (issue P12).

The caller's right to read the document is checked before this module is reached
(:meth:`hanrag.engine.Engine.document_original`); what is read here comes from the
document's catalog row, never from the request, and is never more than what was indexed
under the document's ACL:

* **uploads**: the kept original (``uploads/<document id>/``);
* **server-side files**: read again from the path recorded at ingest (absolute, with
  symlinks already resolved) only while that path still resolves to itself (no symlink
  put in its way since) and names a regular file, within ``ingest.max_file_mb``, and only
  when the bytes are the very ones indexed (their SHA-256 is the document's
  ``content_hash``). A file changed since it was indexed is refused with 409
  ``original_changed`` (re-index it first), so a download can show neither newer content
  nor another file behind a swapped path. The catalog does not record whether a file came
  in through the CLI or the API's ``ingest.server_roots``, and the check does not need
  to: the bytes sent are the bytes any reader of the document could already search;
* **SQL rows**: the row's text as indexed, as UTF-8 text.

Media types come from a short allow-list of document formats; everything else, HTML,
SVG and XML included, is ``application/octet-stream``, so a browser never renders what
it downloads (the route also sends ``Content-Disposition: attachment`` and ``nosniff``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hanrag.domain import Chunk
from hanrag.errors import HanragError, NotFoundError
from hanrag.ingest.parsers.registry import read_limited
from hanrag.ingest.uploads import UploadStore, uploaded_name
from hanrag.store.models import DocumentRow

# Formats a browser shows or saves but never runs; anything else is sent as bytes to save.
MEDIA_TYPES = {
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".hwp": "application/x-hwp",
    ".hwpx": "application/hwp+zip",
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".csv": "text/csv",
    ".json": "application/json",
}
DEFAULT_MEDIA_TYPE = "application/octet-stream"
TEXT_UTF8 = "text/plain; charset=utf-8"


class OriginalChangedError(HanragError):
    """The file on disk is no longer the one that was indexed."""

    code = "original_changed"
    http_status = 409


@dataclass(frozen=True, slots=True)
class Original:
    data: bytes
    filename: str
    media_type: str


def media_type_of(filename: str) -> str:
    return MEDIA_TYPES.get(Path(filename).suffix.lower(), DEFAULT_MEDIA_TYPE)


def _missing(row: DocumentRow) -> NotFoundError:
    return NotFoundError(
        f"the original of document {row.id} is no longer available", code="source_missing", field="document"
    )


def _changed(row: DocumentRow) -> OriginalChangedError:
    return OriginalChangedError(
        f"the file of document {row.id} changed since it was indexed; re-index it first", field="document"
    )


def file_original(row: DocumentRow, *, max_bytes: int) -> Original:
    """A server-side file's bytes, when they are still the ones indexed (see the module)."""
    recorded = Path(row.source)
    if not recorded.is_absolute() or row.content_hash is None:
        raise _missing(row)
    try:
        real = recorded.resolve(strict=True)
    except (OSError, RuntimeError):
        raise _missing(row) from None
    if real != recorded:
        raise _changed(row)  # a symlink now stands somewhere along the path
    if not real.is_file():
        raise _missing(row)
    data = read_limited(real, max_bytes=max_bytes)
    if hashlib.sha256(data).hexdigest() != row.content_hash:
        raise _changed(row)
    return Original(data, real.name, media_type_of(real.name))


def upload_original(row: DocumentRow, uploads: UploadStore) -> Original:
    path = uploads.original(row.id)
    if path is None:
        raise _missing(row)
    name = uploaded_name(row.source)
    return Original(path.read_bytes(), name, media_type_of(name))


# Shorter repeats are taken for chance (a chunk may begin with the word the last one ended with).
_MIN_OVERLAP_CHARS = 16


def _joined(texts: list[str]) -> str:
    """Chunk texts in order as one text, dropping the overlap a chunk repeats from the last."""
    joined = ""
    for text in texts:
        overlap = 0
        for size in range(min(len(text), len(joined), 4000), _MIN_OVERLAP_CHARS - 1, -1):
            if joined.endswith(text[:size]):
                overlap = size
                break
        joined += ("" if overlap or not joined else "\n") + text[overlap:]
    return joined


def _text_name(row: DocumentRow) -> str:
    stem = re.sub(r'[\\/:*?"<>|\x00-\x1f\x7f]+', "_", row.title or "").strip(" ._")[:150]
    return f"{stem or row.id}.txt"


def row_original(row: DocumentRow, chunks: Callable[[], list[Chunk]]) -> Original:
    """A SQL row's text as indexed (its chunks, in order)."""
    texts = [chunk.text for chunk in sorted(chunks(), key=lambda c: c.position)]
    if not texts:
        raise _missing(row)
    return Original(_joined(texts).encode("utf-8"), _text_name(row), TEXT_UTF8)


def original_of(
    row: DocumentRow, uploads: UploadStore, chunks: Callable[[], list[Chunk]], *, max_bytes: int
) -> Original:
    """The original of a document the caller may read (see the module for each kind)."""
    if row.source_type == "upload":
        return upload_original(row, uploads)
    if row.source_type == "file":
        return file_original(row, max_bytes=max_bytes)
    return row_original(row, chunks)
