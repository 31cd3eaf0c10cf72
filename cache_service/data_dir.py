"""The node's data directory: checked, created (0700) and locked before anything uses it.

One node per data dir. `DataDirLock.acquire` takes an exclusive `flock(2)` on
`DIR/node.lock` and the node holds it for its whole life; the kernel drops it when the
process ends, however it ends, so a crashed node leaves no stale lock. The lock file holds
the pid of the node that has it: a second node on the same directory refuses with "data
dir DIR in use by pid N" before it touches the first one's Redis socket, AOF or key.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from .failures import NodeFailure, one_line

__all__ = ["LOCK_NAME", "DataDirLock"]

LOCK_NAME = "node.lock"
_PID_WAIT = 2.0  # how long to wait for a just-started holder to write its pid


class DataDirLock:
    """An exclusive lock on one data directory, held until `release()` or process exit."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        path = Path(data_dir)
        if path.exists() and not path.is_dir():
            raise NodeFailure(f"data dir {path} is not a directory")
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise NodeFailure(f"cannot create data dir {path}: {one_line(exc)}") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise NodeFailure(f"data dir {path} is not writable")
        try:
            fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise NodeFailure(f"data dir {path} is not usable: {one_line(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise NodeFailure(f"data dir {path} in use by {who}") from None
        except OSError as exc:  # e.g. a file system without locks
            os.close(fd)
            raise NodeFailure(f"cannot lock data dir {path}: {one_line(exc)}") from None
        record = f"{os.getpid()}\n".encode()
        try:
            # write first, then cut the tail: a reader always sees a whole first line
            os.pwrite(fd, record, 0)
            os.ftruncate(fd, len(record))
        except OSError as exc:
            os.close(fd)
            raise NodeFailure(f"data dir {path} is not writable: {one_line(exc)}") from None
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Unlock. The file stays: removing it would let two nodes lock different files."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _holder(fd: int) -> int | None:
    """The pid in a lock file someone else holds (None if it never says)."""
    deadline = time.monotonic() + _PID_WAIT
    while True:
        try:
            first = os.pread(fd, 32, 0).split(b"\n", 1)[0].strip()
        except OSError:
            return None
        if first.isdigit():
            return int(first)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)
