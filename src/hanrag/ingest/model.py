"""What goes into an ingestion and what comes out of it.

An :class:`IngestRequest` says what to ingest (server-side paths or an uploaded batch)
and with which options; it is what the CLI builds from its flags, what an ingestion
job's payload holds (:meth:`IngestRequest.as_payload`), and what
:meth:`hanrag.ingest.pipeline.IngestPipeline.run` takes. A run yields its
:class:`IngestPlan` first, then one :class:`FileOutcome` per planned file;
:meth:`IngestReport.of_run` gathers them for a caller that wants the whole report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from hanrag.errors import InvalidInputError
from hanrag.ingest.uploads import UploadBatch

OutcomeStatus = Literal["added", "updated", "unchanged", "acl_updated", "failed", "removed", "skipped"]


@dataclass(frozen=True, slots=True)
class IngestRequest:
    """One ingestion: server-side ``paths`` (files or folders, recursive) or an ``upload``
    batch, with the options that apply to every file.

    ``include``/``exclude``: globs (None: ``ingest.include``; ``ingest.exclude`` and ACL
    files are always excluded); ``acl``: who may read (None: the nearest ACL file, the
    metadata mapping or ``ingest.default_acl``); ``date_override``: the documents' date;
    ``metadata``: keys given to every document; ``sync`` (one folder): the documents of
    files no longer in it are removed afterwards (a scheduled folder sync's job).
    """

    paths: list[Path] = field(default_factory=list)
    upload: UploadBatch | None = None
    include: list[str] | None = None
    exclude: list[str] | None = None
    acl: list[str] | None = None
    date_override: datetime | None = None
    metadata: dict[str, str] | None = None
    sync: bool = False

    def as_payload(self) -> dict[str, Any]:
        """The request as an ingestion job stores it (and ``GET /jobs/{id}`` shows it)."""
        data: dict[str, Any]
        if self.upload is not None:
            data = {
                "upload_dir": str(self.upload.directory),
                "acl": self.acl,
                "names": dict(self.upload.names),
            }
        else:
            data = {
                "paths": [str(p) for p in self.paths],
                "acl": self.acl,
                "include": self.include,
                "exclude": self.exclude,
            }
        if self.date_override is not None:
            data["date_override"] = self.date_override.isoformat()
        if self.metadata:
            data["metadata"] = dict(self.metadata)
        if self.sync:
            data["sync"] = True
        return data

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> IngestRequest:
        """A job's payload as a request, of this version or an earlier one (an empty list
        of globs or principals is no option, as it always was for jobs)."""
        upload_dir = payload.get("upload_dir")
        if not upload_dir and not payload.get("paths"):
            raise InvalidInputError("the ingestion names no paths and no uploaded files", field="paths")
        when = payload.get("date_override")
        return cls(
            paths=[Path(p) for p in payload.get("paths") or []],
            upload=UploadBatch(Path(upload_dir), dict(payload.get("names") or {})) if upload_dir else None,
            include=list(payload["include"]) if payload.get("include") else None,
            exclude=list(payload["exclude"]) if payload.get("exclude") else None,
            acl=list(payload["acl"]) if payload.get("acl") else None,
            date_override=datetime.fromisoformat(when) if when else None,
            metadata=dict(payload["metadata"]) if payload.get("metadata") else None,
            sync=bool(payload.get("sync", False)) and not upload_dir,
        )


@dataclass(slots=True)
class FileOutcome:
    source: str
    status: OutcomeStatus
    document_id: str | None = None
    chunks: int = 0
    error_code: str | None = None
    error: str | None = None
    seconds: float = 0.0
    # The planned file this outcome answers (``str`` of an :attr:`IngestPlan.files` entry):
    # what a resumed run is told it need not do again. Not part of the report.
    path: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "status": self.status,
            "document_id": self.document_id,
            "chunks": self.chunks,
            "error_code": self.error_code,
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }


def not_found(path: Path) -> FileOutcome:
    """A path that is not there — or that the caller may not hear of: told alike."""
    return FileOutcome(
        str(path), "failed", error_code="not_found", error=f"{path}: no such file or directory"
    )


@dataclass(slots=True)
class IngestPlan:
    """What a run will do, known before its first file: the files to ingest (in this
    order), the files skipped (an unsupported format inside a folder) and the paths
    not found (or hidden from the caller)."""

    files: list[Path]
    skipped: list[Path] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)

    def outcomes(self) -> list[FileOutcome]:
        """The missing and skipped paths as a report lists them, before the files' own."""
        return [
            *(not_found(p) for p in self.missing),
            *(FileOutcome(str(p), "skipped", error_code="unsupported_format") for p in self.skipped),
        ]


ProgressCallback = Callable[[int, int, FileOutcome], None]


@dataclass(slots=True)
class IngestReport:
    outcomes: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0

    @classmethod
    def of_run(
        cls,
        run: Iterable[IngestPlan | FileOutcome],
        *,
        on_start: Callable[[int], None] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> IngestReport:
        """The whole report of a run: ``on_start`` hears the number of files once they are
        known, ``on_progress`` each file's outcome (files done, files in all, outcome)."""
        started = time.perf_counter()
        report = cls()
        total = done = 0
        for event in run:
            if isinstance(event, IngestPlan):
                report.outcomes.extend(event.outcomes())
                total = len(event.files)
                if on_start:
                    on_start(total)
                continue
            done += 1
            report.outcomes.append(event)
            if on_progress:
                on_progress(done, total, event)
        report.seconds = time.perf_counter() - started
        return report

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for outcome in self.outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        return counts

    @property
    def failures(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def as_dict(self) -> dict[str, object]:
        return {
            "counts": self.counts(),
            "chunks": sum(o.chunks for o in self.outcomes),
            "seconds": round(self.seconds, 3),
            "files": [o.as_dict() for o in self.outcomes],
        }
