"""Zip and OLE container helpers shared by the DOCX, XLSX, HWP and HWPX parsers and the registry.

A password-protected .docx/.xlsx is not a zip at all: Office wraps the encrypted
package in an OLE compound file (streams ``EncryptionInfo`` and
``EncryptedPackage``). The same OLE magic also starts the legacy binary .doc and
.xls formats, and HWP 5.0. Telling these apart before a library sees the bytes
gives people an error that says what to do, where the libraries would only say
"not a zip file".

Every zip goes through :func:`~hanrag.ingest.parsers.archive_guard.inspect_zip`
(the zip-bomb checks) before a library sees it; :func:`check_ooxml_package` does
that for DOCX and XLSX.
"""

from __future__ import annotations

import io
import zipfile

from hanrag.errors import ParseError
from hanrag.ingest.parsers.archive_guard import ZIP_ERRORS, ArchiveReport, inspect_zip

__all__ = ["OLE_MAGIC", "ZIP_ERRORS", "check_ooxml_package"]

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def check_ooxml_package(data: bytes, filename: str, *, kind: str, main_part: str) -> ArchiveReport:
    """Raise a ParseError unless ``data`` is a zip package holding ``main_part`` and no zip bomb.

    ``kind`` is the format's display name (``DOCX``) used in messages. Returns
    what the archive guard found in it (markup sizes, for the parser's budget).
    """
    if data.startswith(OLE_MAGIC):
        _raise_for_ole(data, filename, kind=kind)
    report = inspect_zip(data, filename, kind=kind)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except ZIP_ERRORS as exc:
        raise ParseError(
            f"{filename}: not a valid {kind} file (damaged zip: {exc})", code="corrupt_file"
        ) from exc
    if main_part not in names:
        raise ParseError(f"{filename}: not a valid {kind} file ({main_part} is missing)", code="corrupt_file")
    return report


def _raise_for_ole(data: bytes, filename: str, *, kind: str) -> None:
    import olefile

    try:
        with olefile.OleFileIO(data) as ole:
            streams = {"/".join(entry) for entry in ole.listdir()}
    except (OSError, ValueError, IndexError, TypeError) as exc:
        raise ParseError(f"{filename}: not a valid {kind} file ({exc})", code="corrupt_file") from exc
    if "EncryptedPackage" in streams:
        raise ParseError(
            f"{filename}: {kind} file is password-protected; remove the password and upload it again",
            code="encrypted_file",
        )
    if "WordDocument" in streams or "Workbook" in streams or "Book" in streams:
        raise ParseError(
            f"{filename}: legacy Office 97-2003 binary format is not supported; save it as .docx or .xlsx",
            code="unsupported_format",
        )
    raise ParseError(f"{filename}: not a valid {kind} file (an OLE compound file)", code="corrupt_file")
