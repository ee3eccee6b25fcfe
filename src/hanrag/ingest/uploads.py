"""Uploaded bytes in the data directory: the one place that writes, finds and removes them.

Two folders, whose layout existing data directories already have:

* ``upload-batches/<job id>/``: a batch of uploaded files staged for an ingestion job,
  under names the filesystem takes (the uploaded names travel in the job's payload);
  removed once the job has ended.
* ``uploads/<document id>/``: the original bytes of each uploaded document, one file,
  kept so that the document can be re-indexed; written before the document is indexed
  (through ``uploads/.incoming-<uuid>``), so that a write that fails (disk full, a name
  the filesystem refuses) leaves no document without its bytes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import unicodedata
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hanrag.errors import InvalidInputError

UPLOAD_BATCHES = "upload-batches"
ORIGINALS = "uploads"

# Uploaded file names longer than this are refused; the stored copy's name is shortened
# further when needed, since filesystems allow 255 bytes (85 Korean characters in UTF-8).
UPLOAD_NAME_MAX_CHARS = 255
_STORED_NAME_MAX_BYTES = 200


def upload_file_name(filename: str) -> str:
    """An uploaded file's name as shown and kept in its source: the last path part
    (of '/' or '\\' paths), NFC, with no control characters."""
    name = unicodedata.normalize("NFC", filename or "").replace("\\", "/").rpartition("/")[2].strip()
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise InvalidInputError(
            "the file name contains control characters", code="invalid_filename", field="file"
        )
    if len(name) > UPLOAD_NAME_MAX_CHARS:
        raise InvalidInputError(
            f"the file name has {len(name)} characters; the limit is {UPLOAD_NAME_MAX_CHARS}",
            code="invalid_filename",
            field="file",
        )
    if name in (".", ".."):
        raise InvalidInputError(f"invalid file name {filename!r}", code="invalid_filename", field="file")
    return name or "upload"


def stored_file_name(name: str) -> str:
    """The name of an upload's kept copy: the uploaded name when the filesystem takes it,
    else a digest of it with the (short) extension the parsers sniff by."""
    if len(name.encode("utf-8")) <= _STORED_NAME_MAX_BYTES:
        return name
    suffix = Path(name).suffix
    suffix = suffix if len(suffix.encode("utf-8")) <= 16 else ""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:32] + suffix


def upload_source(owner: str | None, name: str) -> str:
    """An uploaded document's source: each signed-in user has their own namespace, so
    nobody can overwrite (or detect) a document they cannot read by uploading its name."""
    return f"upload:{owner}/{name}" if owner else f"upload:{name}"


def uploaded_name(source: str) -> str:
    """The uploaded file name of an upload's source (the kept file's name may be shortened)."""
    return source.rpartition("/")[2] if "/" in source else source.removeprefix("upload:")


@dataclass(slots=True)
class UploadBatch:
    """Uploaded files staged for one ingestion job: their folder, and the uploaded name
    of each staged file (staged name -> uploaded name)."""

    directory: Path
    names: dict[str, str] = field(default_factory=dict)


class UploadStore:
    def __init__(self, data_dir: Path) -> None:
        self.batches = data_dir / UPLOAD_BATCHES
        self.originals = data_dir / ORIGINALS

    # ---------------------------------------------------------- job batches

    def open_batch(self, batch_id: str) -> UploadBatch:
        directory = self.batches / batch_id
        directory.mkdir(parents=True, exist_ok=True)
        return UploadBatch(directory)

    def stage(self, batch: UploadBatch, name: str, data: bytes) -> None:
        """Add one uploaded file (``name`` as :func:`upload_file_name` gives it) to a batch."""
        stored = stored_file_name(name)
        batch.names[stored] = name
        (batch.directory / stored).write_bytes(data)

    @staticmethod
    def batch_files(batch: UploadBatch) -> list[Path]:
        """The staged files, in a stable order (none once the batch is gone)."""
        directory = batch.directory
        return sorted(p for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []

    def discard_batch(self, directory: str | Path | None) -> None:
        """Remove a batch's staging folder: only a folder directly under the batches
        folder is ever removed, whatever a job's payload says."""
        if not directory:
            return
        path = Path(directory).resolve()
        if path.parent == self.batches.resolve():
            shutil.rmtree(path, ignore_errors=True)

    # -------------------------------------------------- kept original bytes

    @contextmanager
    def incoming(self, data: bytes) -> Iterator[Path]:
        """The bytes written to a temporary file before anything is indexed; :meth:`keep`
        makes it a document's original, otherwise it is removed when the block ends."""
        self.originals.mkdir(parents=True, exist_ok=True)
        staged = self.originals / f".incoming-{uuid.uuid4().hex}"
        staged.write_bytes(data)
        try:
            yield staged
        finally:
            staged.unlink(missing_ok=True)

    def keep(self, staged: Path, document_id: str, name: str) -> None:
        """Make staged bytes the kept original of a document (replacing an older one)."""
        folder = self.originals / document_id
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        os.replace(staged, folder / stored_file_name(name))

    def original(self, document_id: str) -> Path | None:
        """The kept original bytes of an uploaded document, if they are kept."""
        folder = self.originals / document_id
        files = sorted(folder.iterdir()) if folder.is_dir() else []
        return files[0] if files else None

    def discard_original(self, document_id: str) -> None:
        folder = self.originals / document_id
        if folder.is_dir():
            for old in folder.iterdir():
                old.unlink()
            folder.rmdir()
