"""What a server-side ingestion takes, and the ACL its owner configured for each file.

:func:`discover` walks the given paths (include/exclude globs, supported extensions);
:class:`AclResolver` finds the ACL a file gets when nobody names one: the nearest ACL
file in its directory or above, else the metadata mapping, else the default.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from pathlib import Path

from hanrag.auth.access import check_grant, validate_acl
from hanrag.errors import InvalidInputError
from hanrag.ingest.parsers.registry import supported_extensions
from hanrag.settings import IngestSettings


def _matches(path: Path, root: Path, patterns: Iterable[str]) -> bool:
    relative = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    candidates = (relative, path.name, path.as_posix())
    return any(
        fnmatch.fnmatch(candidate, pattern) or fnmatch.fnmatch(candidate, pattern.removeprefix("**/"))
        for pattern in patterns
        for candidate in candidates
    )


def discover(
    paths: Iterable[Path], include: list[str], exclude: list[str]
) -> tuple[list[Path], list[Path], list[Path]]:
    """Files to ingest, files skipped (unsupported extension inside a folder), and missing paths.

    A file named explicitly is always tried (and fails clearly if unsupported);
    inside folders only files with a supported extension are taken.
    """
    extensions = set(supported_extensions())
    found: dict[Path, None] = {}
    skipped: list[Path] = []
    missing: list[Path] = []
    for raw in paths:
        path = raw.expanduser()
        if path.is_file():
            if not exclude or not _matches(path, path.parent, exclude):
                found[path.resolve()] = None
            continue
        if not path.is_dir():
            missing.append(path)
            continue
        root = path.resolve()
        for directory, subdirs, files in os.walk(root):
            subdirs.sort()
            for name in sorted(files):
                file_path = Path(directory) / name
                if exclude and _matches(file_path, root, exclude):
                    continue
                if include and not _matches(file_path, root, include):
                    continue
                if file_path.suffix.lower() not in extensions:
                    skipped.append(file_path)
                    continue
                found[file_path] = None
    return list(found), skipped, missing


class AclResolver:
    """The ACL of a document: explicit, else its owner's configuration. ACL files read are
    remembered until :meth:`clear` (each ingestion run starts afresh)."""

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        # Directory -> ACL from its ACL file (None: no file there).
        self._files: dict[Path, list[str] | None] = {}

    def clear(self) -> None:
        self._files.clear()

    def from_file(self, path: Path) -> list[str] | None:
        """Principals from the nearest ACL file in the file's directory or above it."""
        name = self.settings.acl_file_name
        for directory in path.resolve().parents:
            if directory in self._files:
                found = self._files[directory]
            else:
                candidate = directory / name
                found = None
                if candidate.is_file():
                    lines = candidate.read_text(encoding="utf-8", errors="replace").splitlines()
                    entries = [line.split("#", 1)[0].strip() for line in lines]
                    try:
                        found = validate_acl([e for e in entries if e])
                    except InvalidInputError as exc:
                        raise InvalidInputError(
                            f"{candidate}: {exc.message}", code="invalid_acl", field="acl"
                        ) from exc
                self._files[directory] = found
            if found is not None:
                return found
        return None

    def from_metadata(self, metadata: dict[str, str] | None) -> list[str] | None:
        mapping = self.settings.acl_from_metadata
        principals = [
            template.format(value=metadata[key])
            for key, template in mapping.items()
            if metadata and metadata.get(key)
        ]
        return validate_acl(principals) if principals else None

    def resolve(
        self,
        path: Path | None,
        explicit: list[str] | None,
        metadata: dict[str, str] | None,
        *,
        principals: list[str] | None = None,
    ) -> list[str]:
        """Explicit ACL, else the nearest ACL file, else the metadata mapping, else the default.
        An explicit ACL holds only principals the caller holds (``principals``; None: anyone)."""
        if explicit is not None:
            return check_grant(principals, explicit)
        return self.natural(path, metadata)

    def natural(self, path: Path | None, metadata: dict[str, str] | None = None) -> list[str]:
        """The ACL a document gets when nobody names one: what its owner configured."""
        from_file = self.from_file(path) if path is not None else None
        if from_file is not None:
            return from_file
        return self.from_metadata(metadata) or validate_acl(self.settings.default_acl)
