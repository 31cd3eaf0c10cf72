"""Snapshots a read delivers, as files: `DIR/<group hex>/<kind>.<epoch>.bin`.

Each file is a snapshot's plaintext (a tree snapshot as its RFC 9420 `ratchet_tree`
encoding): the group's MLS state in the clear, as secret as the keystore. So files are
written 0600, whole or not at all, in directories made 0700; and a group's older epochs
of a kind are deleted when a newer one is written (`keep_epochs` keeps them), so an old
state does not linger beside the new one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
from pathlib import Path

__all__ = ["move_inbox", "snapshot_path", "write_snapshot"]

_DIGITS = re.compile(r"[0-9]+")
_PRIVATE_DIR = 0o700
_PRIVATE_FILE = 0o600


def _group_dir(out: Path, group_hex: str) -> Path:
    """`out/<group hex>`, 0700. `out` itself is made 0700 if missing (an existing one keeps
    its mode: the group directories inside are what guard the files)."""
    out.mkdir(mode=_PRIVATE_DIR, parents=True, exist_ok=True)
    directory = out / group_hex
    directory.mkdir(mode=_PRIVATE_DIR, exist_ok=True)
    if not stat.S_ISDIR(os.lstat(directory).st_mode):
        # A link would make the writes, the chmod and the pruning of older epochs land
        # wherever it points.
        raise OSError(errno.ELOOP, "not a plain directory (a symbolic link?): refused", directory)
    os.chmod(directory, _PRIVATE_DIR)  # also one made earlier, or under a loose umask
    return directory


def snapshot_path(out: Path, group_id: bytes, kind: str, mls_epoch: int) -> Path:
    return out / group_id.hex() / f"{kind}.{mls_epoch}.bin"


def write_snapshot(
    out: Path, group_id: bytes, kind: str, mls_epoch: int, data: bytes, *, keep_epochs: bool
) -> Path:
    """Write one snapshot (0600, atomically); unless `keep_epochs`, delete the older
    epochs of that (group, kind) in `out`."""
    directory = _group_dir(out, group_id.hex())
    path = directory / f"{kind}.{mls_epoch}.bin"
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # a fresh file: never keep a left-over one's mode or link
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _PRIVATE_FILE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    if not keep_epochs:
        _prune(directory, kind)
    return path


def _epochs(directory: Path, kind: str) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for path in directory.glob(f"{kind}.*.bin"):
        epoch = path.name[len(kind) + 1 : -len(".bin")]
        if _DIGITS.fullmatch(epoch):  # ASCII digits only ("²".isdigit() is True)
            found[int(epoch)] = path
    return found


def _prune(directory: Path, kind: str) -> None:
    """Keep only the newest epoch of `kind` in a group directory."""
    epochs = _epochs(directory, kind)
    newest = max(epochs, default=None)
    for epoch, path in epochs.items():
        if epoch != newest:
            path.unlink(missing_ok=True)


def move_inbox(inbox: Path, out: Path, *, keep_epochs: bool) -> list[Path]:
    """What earlier reads kept in the home's inbox, moved under `out` (same layout, same
    pruning: an inbox file older than one in `out` is dropped unless `keep_epochs`)."""
    moved: list[Path] = []
    if not inbox.is_dir():
        return moved
    for path in sorted(inbox.glob("*/*.bin")):
        directory = _group_dir(out, path.parent.name)
        target = directory / path.name
        shutil.move(path, target)
        os.chmod(target, _PRIVATE_FILE)
        moved.append(target)
        if not keep_epochs:
            kind = path.name.rsplit(".", 2)[0]
            _prune(directory, kind)
    for directory in inbox.glob("*"):
        with contextlib.suppress(OSError):
            directory.rmdir()
    return [path for path in moved if path.exists()]
