"""This node's Ed25519 identity: `pre.NodeSecrets` bytes (its tagged 32-byte seed).

Kept as `node.key` in the data directory, created on first start; or read-only from a file
given with `--node-key` (a mounted secret), made by `statecache node keygen`. The file
format is the same in both places, so a data dir's `node.key` can become a secret.

A new key file is never written in place: a temp file with a unique name is written and
fsynced, `link(2)`ed to the final name (which fails if the name exists), and the directory
fsynced. Several processes creating the key at once all end up reading the one that was
linked first, and no reader ever sees a partly written key.

A key file is opened without blocking (a FIFO or device never hangs the node) and must be a
regular file. The data dir's `node.key` is never read through a symlink and must belong to
the node's user; `--node-key` may be a symlink (mounted secrets often are).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import stat
from pathlib import Path

import pre

from .failures import NodeFailure, one_line

__all__ = [
    "FILE_NAME",
    "create_key_file",
    "load_key_file",
    "load_or_create_identity",
    "warn_if_others_can_read",
]

FILE_NAME = "node.key"
_MAX_SIZE = 4096  # a key file is a few dozen bytes; never read an arbitrary file whole

log = logging.getLogger("statecache.node")


def load_or_create_identity(data_dir: Path) -> pre.NodeSecrets:
    """The data dir's node key, created if there is none yet."""
    path = Path(data_dir) / FILE_NAME
    try:
        return _read(path, follow=False)[0]
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise NodeFailure(f"cannot read node key {path}: {_reason(exc)}") from None
    try:
        create_key_file(path, pre.NodeSecrets.generate())
    except FileExistsError:
        pass  # another process linked its key first: that one is the node's key
    except OSError as exc:
        raise NodeFailure(f"cannot create node key {path}: {one_line(exc)}") from None
    try:
        return _read(path, follow=False)[0]
    except OSError as exc:
        raise NodeFailure(f"cannot read node key {path}: {_reason(exc)}") from None


def load_key_file(path: Path) -> pre.NodeSecrets:
    """A node key from elsewhere (`--node-key`), read only; warns if others can read it."""
    path = Path(path)
    try:
        secrets_, info = _read(path, follow=True)
    except OSError as exc:
        raise NodeFailure(f"cannot read node key {path}: {one_line(exc)}") from None
    warn_if_others_can_read(path, info.st_mode, "node key file", owner=(info.st_uid, info.st_gid))
    return secrets_


def warn_if_others_can_read(
    path: Path, mode: int, what: str, *, owner: tuple[int, int] | None = None
) -> None:
    """A secret file (`mode` and `owner`, uid and gid, from its stat) open to the group or
    others: a warning. Not for the group when the node reads the file only through it: a
    file of another user (root) whose group is one of the node's own, as Kubernetes mounts
    a Secret (root, the pod's fsGroup, 0440) or a host shares a key with a service's group
    (root:statecache 0640). A file of the node's own user needs no group."""
    loose = stat.S_IRWXG | stat.S_IRWXO
    if owner is not None and owner[0] != os.geteuid() and owner[1] in _own_groups():
        loose = stat.S_IRWXO
    if mode & loose:
        log.warning(
            f"{what} is readable by others: make it 0600 or 0400",
            extra={"path": str(path), "mode": oct(stat.S_IMODE(mode))},
        )


def create_key_file(path: Path, node: pre.NodeSecrets) -> None:
    """Write `node` to `path` (0600) through a fsynced temp file and `link(2)`.

    Raises FileExistsError, leaving the existing file alone, if `path` exists."""
    path = Path(path)
    directory = path.parent
    tmp = directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(node.to_bytes())
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _own_groups() -> set[int]:
    return {os.getegid(), *os.getgroups()}


def _read(path: Path, *, follow: bool) -> tuple[pre.NodeSecrets, os.stat_result]:
    """The key in `path` and the file's stat. Without `follow`, the file must not be a
    symlink and must belong to the node's user."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NodeFailure(f"cannot read node key {path}: not a regular file")
        if not follow and info.st_uid != os.geteuid():
            raise NodeFailure(
                f"cannot read node key {path}: it belongs to uid {info.st_uid}, not to this "
                f"user (uid {os.geteuid()})"
            )
        data = b""
        while len(data) <= _MAX_SIZE and (chunk := os.read(fd, _MAX_SIZE + 1 - len(data))):
            data += chunk
    finally:
        os.close(fd)
    try:
        if len(data) > _MAX_SIZE:
            raise pre.PreError("too large")
        return pre.NodeSecrets.from_bytes(data), info
    except pre.PreError:
        raise NodeFailure(f"{path} is not a statecache node key") from None


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symlink, not a regular file"
    return one_line(exc)
