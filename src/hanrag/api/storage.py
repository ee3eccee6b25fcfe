"""Free space where the server writes, and its memory of having run out of it.

``/readyz`` reports not ready (so a load balancer sends writes elsewhere and an
operator is alerted) while the data directory's filesystem has less free space than
``api.min_free_mb``, and after a write failed for lack of space (a full database
server's disk is not visible here) until ``api.storage_full_hold_s`` has passed or
the local free space has come back.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from hanrag.settings import Settings

MIB = 2**20


def watched_dirs(settings: Settings) -> list[Path]:
    """The data directory, and the SQLite catalog's directory when it lies elsewhere."""
    dirs = [settings.data_dir]
    url = settings.resolved_catalog_url
    if url.startswith("sqlite:///") and ":memory:" not in url:
        dirs.append(Path(url.removeprefix("sqlite:///").split("?", 1)[0]).parent)
    return dirs


def _existing(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def lowest_free(settings: Settings) -> tuple[int, Path] | None:
    """The least free space (bytes available to this user) over the watched directories."""
    lowest: tuple[int, Path] | None = None
    for directory in watched_dirs(settings):
        try:
            stats = os.statvfs(_existing(directory))
        except OSError:
            continue
        free = stats.f_bavail * stats.f_frsize
        if lowest is None or free < lowest[0]:
            lowest = (free, directory)
    return lowest


class StorageMonitor:
    """Remembers the last write that failed for lack of space (settings are passed in, so
    a changed configuration applies at once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._full_at: float | None = None
        self._free_at_full: int | None = None

    def note_full(self, settings: Settings) -> None:
        """A write failed for lack of space (called by the error mapping)."""
        found = lowest_free(settings)
        with self._lock:
            self._full_at = time.monotonic()
            self._free_at_full = found[0] if found else None

    def problem(self, settings: Settings) -> str | None:
        """Why storage makes the server not ready, or None."""
        floor = int(settings.api.min_free_mb * MIB)
        found = lowest_free(settings)
        if found is not None and found[0] < floor:
            return (
                f"{found[0] / MIB:.1f} MiB free under {found[1]}, less than "
                f"api.min_free_mb = {settings.api.min_free_mb:g}"
            )
        with self._lock:
            if self._full_at is None:
                return None
            age = time.monotonic() - self._full_at
            recovered = (
                found is not None
                and self._free_at_full is not None
                and found[0] >= self._free_at_full + max(floor, MIB)
            )
            if recovered or age >= settings.api.storage_full_hold_s:
                self._full_at = self._free_at_full = None
                return None
        return f"a write failed for lack of space {age:.0f} s ago"


def monitor_of(app: Any) -> StorageMonitor:
    """The app's monitor (one per app; created on first use, on the event loop)."""
    state = app.state
    monitor = getattr(state, "storage_monitor", None)
    if monitor is None:
        monitor = StorageMonitor()
        state.storage_monitor = monitor
    return monitor
