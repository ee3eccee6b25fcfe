"""Errors with stable codes.

Every error a user, operator or integrator can see carries a ``code`` that never
changes between releases (HTTP maps it to problem+json, the CLI prints it on one
line), plus a human message that names the offending file or field.
"""

from __future__ import annotations


class HanragError(Exception):
    """Base class: ``code`` is stable, ``message`` is for people."""

    code: str = "internal_error"
    http_status: int = 500

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class InvalidInputError(HanragError):
    """The caller sent something we cannot use (empty query, unknown filter field...)."""

    code = "invalid_input"
    http_status = 400


class NotFoundError(HanragError):
    code = "not_found"
    http_status = 404


class ConfigError(HanragError):
    code = "config_error"
    http_status = 500


class ParseError(HanragError):
    """A single file could not be turned into text.

    Codes: ``unsupported_format``, ``corrupt_file``, ``encrypted_file``,
    ``empty_file``, ``file_too_large``, ``encoding_error``, ``no_text``.
    """

    code = "parse_error"
    http_status = 422


class BackendError(HanragError):
    """A dependency (embedding server, index, database) failed."""

    code = "backend_error"
    http_status = 503
