"""The publish outbox: sealed snapshots kept in the device's home until M nodes confirmed
them, so a retry, after a crash too, resends the very bytes sealed before (sealing again
would make a second snapshot at one epoch: a fork for every reader).

One file per snapshot, `<home>/outbox/<key>.snap` (mode 0600): the content hash, then the
sealed snapshot. Written and fsynced before the first node sees the bytes; deleted once
confirmed, or when a newer epoch of the same (group, kind) supersedes it (an older state
must not linger on disk). Without a home, the outbox lives in memory."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pre

from .private_files import fsync_dir, write_private_bytes

__all__ = ["Outbox", "OutboxEntry"]

Key = tuple[bytes, str, int]  # (group, kind, MLS epoch)
_HASH = 32


@dataclass(frozen=True)
class OutboxEntry:
    content: bytes  # `pre.content_hash` of what was sealed
    snapshot: pre.SealedSnapshot

    @property
    def key(self) -> Key:
        h = self.snapshot.header
        return (h.group_id, h.kind, h.mls_epoch)


class Outbox:
    def __init__(self, directory: Path | None) -> None:
        self._dir = directory
        self._entries: dict[Key, OutboxEntry] = {}
        if directory is not None and directory.is_dir():
            for tmp in directory.glob("*.tmp"):  # a crash mid-write: never sent
                tmp.unlink(missing_ok=True)
            for path in sorted(directory.glob("*.snap")):
                entry = _load(path)
                if entry is None:  # written whole before any send: damaged since. Kept
                    # aside, not deleted, and the content is sealed again if published
                    # again (readers take two seals of one content as one publication).
                    path.replace(path.with_suffix(".corrupt"))
                elif path.name == _name(entry.key):
                    self._entries[entry.key] = entry

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> OutboxEntry | None:
        return self._entries.get(key)

    def entries(self) -> list[OutboxEntry]:
        return list(self._entries.values())

    def put(self, entries: Iterable[OutboxEntry]) -> None:
        """Keep these (durably, with a home) before any node is sent them."""
        new = [e for e in entries if self._entries.get(e.key) is not e]
        if not new:
            return
        if self._dir is not None:
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            for entry in new:
                write_private_bytes(
                    self._dir / _name(entry.key), entry.content + entry.snapshot.to_bytes()
                )
            fsync_dir(self._dir)
        for entry in new:
            self._entries[entry.key] = entry

    def remove(self, key: Key) -> None:
        if self._entries.pop(key, None) is not None and self._dir is not None:
            (self._dir / _name(key)).unlink(missing_ok=True)

    def supersede(self, group_id: bytes, kind: str, mls_epoch: int) -> None:
        """Drop what a newer epoch of (group, kind) replaces."""
        for key in [k for k in self._entries if k[:2] == (group_id, kind) and k[2] < mls_epoch]:
            self.remove(key)


def _name(key: Key) -> str:
    group_id, kind, epoch = key
    name = hashlib.sha256(b"\0".join((group_id, kind.encode(), str(epoch).encode())))
    return name.hexdigest()[:40] + ".snap"


def _load(path: Path) -> OutboxEntry | None:
    try:
        data = path.read_bytes()
        return OutboxEntry(data[:_HASH], pre.SealedSnapshot.from_bytes(data[_HASH:]))
    except (OSError, pre.PreError, ValueError):
        return None
