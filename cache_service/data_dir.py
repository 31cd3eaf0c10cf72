"""The node's data directory: checked, created (0700) and locked before anything uses it.

A data dir that exists already must belong to the node's effective user and must not be
writable by group or others (else the node refuses it: someone else could have planted
links in it, e.g. an AOF or log pointing at a file of the node's user, which a later
chmod would not undo); one that others can only read or search is made 0700
(`DataDirLock.was_mode` keeps its mode before, for the node to warn once it serves), so
what the node and its redis-server keep there (node key, AOF, log, socket) is private.
`node.lock` is opened relative to the checked directory, never through a symlink, and must
be a regular file the node's user owns.

One node per data dir. `DataDirLock.acquire` takes an exclusive `flock(2)` on
`DIR/node.lock` and the node holds it for its whole life; the kernel drops it when the
process ends, however it ends, so a crashed node leaves no stale lock. The lock file holds
the pid of the node that has it: a second node on the same directory refuses with "data
dir DIR in use by pid N" before it touches the first one's Redis socket, AOF or key.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from pathlib import Path

from .failures import NodeFailure, one_line

__all__ = ["LOCK_NAME", "DataDirLock"]

LOCK_NAME = "node.lock"
_PID_WAIT = 2.0  # how long to wait for a just-started holder to write its pid


class DataDirLock:
    """An exclusive lock on one data directory, held until `release()` or process exit."""

    def __init__(self, path: Path, fd: int, was_mode: int | None = None) -> None:
        self.path = path
        self._fd: int | None = fd
        self.was_mode = was_mode  # the dir's mode before it was made 0700, if it was

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
        dir_fd, was_mode = _private_dir(path)
        try:
            fd = _open_lock_file(path, dir_fd)
        finally:
            os.close(dir_fd)
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
        return cls(path, fd, was_mode)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Unlock. The file stays: removing it would let two nodes lock different files."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _private_dir(path: Path) -> tuple[int, int | None]:
    """An fd of the data dir, checked to be the node user's own and writable by it alone,
    and made 0700; and its mode before, if that was not private."""
    try:
        dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise NodeFailure(f"data dir {path} is not usable: {one_line(exc)}") from None
    try:
        info = os.fstat(dir_fd)
        if info.st_uid != os.geteuid():
            raise NodeFailure(
                f"data dir {path} belongs to uid {info.st_uid}, not to this user (uid "
                f"{os.geteuid()}): use a directory of the node's own user"
            )
        mode = stat.S_IMODE(info.st_mode)
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise NodeFailure(
                f"data dir {path} is writable by other users (mode {mode:04o}): use a "
                "directory only the node's user can write (0700)"
            )
        if mode & 0o077:
            os.fchmod(dir_fd, 0o700)
    except OSError as exc:
        os.close(dir_fd)
        raise NodeFailure(f"data dir {path} is not usable: {one_line(exc)}") from None
    except BaseException:
        os.close(dir_fd)
        raise
    return dir_fd, (mode if mode & 0o077 else None)


def _open_lock_file(path: Path, dir_fd: int) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(LOCK_NAME, flags, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        reason = "is a symlink" if exc.errno == errno.ELOOP else one_line(exc)
        raise NodeFailure(f"data dir {path} is not usable: {LOCK_NAME} {reason}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(info.st_mode) else "not this user's"
        raise NodeFailure(f"data dir {path} is not usable: {LOCK_NAME} is {what}")
    return fd


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
