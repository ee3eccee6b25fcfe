"""Checksum manifests of offline bundles and backups: ``MANIFEST.sha256``.

One line per file, ``<SHA-256 hex>  <path relative to the folder>``, sorted by path — the
format of ``sha256sum``, so that ``sha256sum -c MANIFEST.sha256`` checks a folder on a
machine without hanrag. :func:`verify` (``hanrag offline verify``) finds what ``-c`` does
not: files missing, files changed, and files that are not in the manifest. A folder may be
packed as a ``.tar`` (one top folder inside); :func:`verify` reads a tar without unpacking it.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from hanrag.errors import InvalidInputError

MANIFEST = "MANIFEST.sha256"
_CHUNK = 1 << 20


def sha256_of(handle: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while block := handle.read(_CHUNK):
        digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return sha256_of(handle)


def _files(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            relative = path.relative_to(root).as_posix()
            if relative != MANIFEST:
                yield relative, path


def write_manifest(root: Path) -> dict[str, str]:
    """Write ``MANIFEST.sha256`` of every file under ``root``; path -> digest."""
    digests: dict[str, str] = {}
    for relative, path in _files(root):
        if "\n" in relative or "\\" in relative:
            raise InvalidInputError(f"{relative!r}: a file name a manifest cannot hold", code="invalid_path")
        digests[relative] = sha256_file(path)
    lines = "".join(f"{digest}  {relative}\n" for relative, digest in sorted(digests.items()))
    (root / MANIFEST).write_text(lines, encoding="utf-8")
    return digests


def parse_manifest(text: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, relative = line.partition("  ")
        relative = relative.removeprefix("*")
        if not sep or len(digest) != 64 or not relative:
            raise InvalidInputError(
                f"{MANIFEST} line {number} is not '<sha256>  <path>'", code="bad_manifest"
            )
        entries[relative] = digest.lower()
    return entries


@dataclass(slots=True)
class Verification:
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.changed or self.extra)

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "missing": self.missing,
            "changed": self.changed,
            "extra": self.extra,
        }


def _compare(expected: dict[str, str], found: Iterable[tuple[str, str]], ignore: set[str]) -> Verification:
    result = Verification()
    seen: set[str] = set()
    for relative, digest in found:
        if relative == MANIFEST:
            continue
        seen.add(relative)
        if relative not in expected:
            if relative not in ignore:
                result.extra.append(relative)
            continue
        result.checked += 1
        if digest != expected[relative]:
            result.changed.append(relative)
    result.missing = sorted(set(expected) - seen)
    result.changed.sort()
    result.extra.sort()
    return result


def _tar_top(archive: tarfile.TarFile) -> str:
    """The tar's one top folder ("" when its files lie at its top)."""
    names = [PurePosixPath(m.name) for m in archive.getmembers() if m.isfile()]
    tops = {n.parts[0] for n in names if len(n.parts) > 1}
    return next(iter(tops)) if len(tops) == 1 and all(len(n.parts) > 1 for n in names) else ""


def read_text(source: Path, relative: str) -> str | None:
    """A file of a folder or of a tar made by :func:`pack` (None: not there)."""
    if source.is_dir():
        path = source / relative
        return path.read_text(encoding="utf-8") if path.is_file() else None
    with tarfile.open(source, "r:*") as archive:
        top = _tar_top(archive)
        try:
            member = archive.getmember(f"{top}/{relative}" if top else relative)
        except KeyError:
            return None
        handle = archive.extractfile(member)
        return None if handle is None else io.TextIOWrapper(handle, encoding="utf-8").read()


def verify(source: Path, *, ignore: Iterable[str] = ()) -> Verification:
    """Check a folder (or a tar of one) against its ``MANIFEST.sha256``: files missing,
    changed, or not listed (except ``ignore``)."""
    if not source.exists():
        raise InvalidInputError(f"{source}: no such folder or file", code="not_found", field="path")
    text = read_text(source, MANIFEST)
    if text is None:
        raise InvalidInputError(f"{source} has no {MANIFEST}", code="bad_manifest", field="path")
    expected = parse_manifest(text)
    skip = set(ignore)
    if source.is_dir():
        return _compare(expected, ((rel, sha256_file(path)) for rel, path in _files(source)), skip)
    with tarfile.open(source, "r:*") as archive:
        top = _tar_top(archive)

        def members() -> Iterator[tuple[str, str]]:
            for member in archive:
                if not member.isfile():
                    continue
                name = PurePosixPath(member.name)
                relative = name.relative_to(top).as_posix() if top else name.as_posix()
                handle = archive.extractfile(member)
                if handle is not None:
                    yield relative, sha256_of(handle)

        return _compare(expected, members(), skip)


def pack(folder: Path, out: Path) -> None:
    """``folder`` as an uncompressed tar at ``out`` (its files under ``out``'s stem); the
    wheels and databases inside compress little."""
    with tarfile.open(out, "w") as archive:
        archive.add(folder, arcname=out.name.removesuffix(".tar"))


def unpack(archive_path: Path, into: Path) -> Path:
    """Unpack a tar made by :func:`pack` into ``into`` (safely: no links out, no absolute
    paths); the folder of its files."""
    with tarfile.open(archive_path, "r:*") as archive:
        archive.extractall(into, filter="data")
    entries = [p for p in into.iterdir()]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else into
