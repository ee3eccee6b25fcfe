"""Structured logging: one JSON object per line (or a compact text line).

Log records carry fields through ``extra={...}``; messages never include
document text or secrets — callers pass ids, sources and codes only.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
# Keys whose values are never written, whatever a caller passes.
_SECRET_KEYS = ("password", "secret", "token", "api_key", "authorization")


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields: dict[str, object] = {}
    for key, value in record.__dict__.items():
        if key in _STANDARD or key.startswith("_"):
            continue
        fields[key] = "***" if any(s in key.lower() for s in _SECRET_KEYS) else value
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info and record.exc_info[0] is not None:
            payload["error_type"] = record.exc_info[0].__name__
        return json.dumps(payload, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        return f"{record.levelname.lower():7} {record.name}: {record.getMessage()}" + (
            f" {extras}" if extras else ""
        )


class CurrentStderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record is emitted, not as it was when
    logging was set up: a stderr replaced later (a test's capture, a redirect) must not
    leave worker threads writing to a closed stream."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass  # always the current sys.stderr


def configure_logging(
    level: str = "INFO",
    json_lines: bool = False,
    *,
    file: Path | None = None,
    max_mb: float = 50.0,
    backups: int = 5,
) -> None:
    """Log hanrag's records to stderr and, with ``file``, to a file rotated at ``max_mb``
    (``backups`` old files kept: ``name.1`` is the newest). Calling it again replaces the
    handlers it set before (their files are closed)."""
    formatter: logging.Formatter = JsonFormatter() if json_lines else TextFormatter()
    handlers: list[logging.Handler] = [CurrentStderrHandler()]
    if file is not None:
        path = Path(os.path.expanduser(file))
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            RotatingFileHandler(
                path, maxBytes=max(int(max_mb * 2**20), 1), backupCount=backups, encoding="utf-8"
            )
        )
    for handler in handlers:
        handler.setFormatter(formatter)
    root = logging.getLogger("hanrag")
    for old in root.handlers:
        if old not in handlers:
            old.close()
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    root.propagate = False
