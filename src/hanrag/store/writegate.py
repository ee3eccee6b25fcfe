"""The data directory's write gate: the consistent point of an online backup.

A document's ingestion writes three places one after another — its catalog row, its
chunks in the local index, its catalog row again (indexed, with its hash), and for an
upload its kept original. Each write is atomic on its own; the gate makes the group
atomic for a backup: every such group runs under a *shared* lock of ``.write-gate`` in the
data directory, and :func:`hanrag.ops.backup.backup` takes the lock *exclusively* just
long enough to open read snapshots of the catalog and the index and to link the kept
originals (milliseconds), so that it sees every document either whole or not at all.

The lock is ``flock(2)`` on a file of the data directory: it holds across the threads and
processes of one host (several ``hanrag serve --workers``, a ``hanrag backup`` beside
them), each holder with its own open file. Shared holders never wait for each other, and
parsing and embedding happen outside the gate, so a backup waits for at most one group's
writes. Where ``fcntl`` does not exist, the gate is a no-op (no consistent online backup).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hanrag.errors import BackendError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux or macOS
    fcntl = None  # type: ignore[assignment]

GATE_FILE = ".write-gate"


class WriteGate:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / GATE_FILE

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """A group of writes that a backup must see whole or not at all (shared)."""
        if fcntl is None:
            yield
            return
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock

    @contextmanager
    def exclusive(self, timeout_s: float = 60.0) -> Iterator[None]:
        """No group of writes in progress, none starting, until the block ends. Polled
        (a pending exclusive lock does not hold new shared ones back): each try succeeds
        as soon as no write group is in progress."""
        if fcntl is None:
            yield
            return
        fd = self._open()
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise BackendError(
                            f"writes kept the data directory busy for {timeout_s:g} s; try again",
                            code="data_dir_busy",
                        ) from None
                    time.sleep(0.002)
            yield
        finally:
            os.close(fd)


def write_gate(data_dir: Path) -> WriteGate:
    return WriteGate(data_dir)
