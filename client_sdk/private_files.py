"""Writing a device's files: whole or not at all, readable by its owner only."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["fsync_dir", "write_private", "write_private_bytes"]


def write_private(path: Path, text: str) -> None:
    """`text` as `path`, mode 0600, atomically and on disk before it replaces the old one
    (a crash leaves the old file or the new one, never an empty or torn one)."""
    write_private_bytes(path, text.encode())


def write_private_bytes(path: Path, data: bytes) -> None:
    """`write_private` for bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # A fresh file, never one left behind (its mode, or a symlink, would be kept).
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fsync_dir(directory: Path) -> None:
    """Make the directory's entries (a rename, an unlink) durable too."""
    with contextlib.suppress(OSError):  # not every platform opens directories
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
