"""What a device remembers between runs, to refuse rollbacks and to resume: the newest
(MLS epoch, snapshot digest) it accepted per (group, kind), its sync cursor, and how far an
interrupted onboarding got. Not secret; kept as JSON beside the keystore."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pre
from cache_service.protocol.b64 import decode_b64url, encode_b64url

from .private_files import write_private

__all__ = ["Known", "SyncState"]


@dataclass(frozen=True)
class Known:
    mls_epoch: int
    digest: bytes
    author: bytes | None = None  # None: remembered by a version that did not keep it
    content: bytes | None = None  # `pre.content_hash` (None: a version that did not keep it)


@dataclass
class SyncState:
    """Sequence numbers are per node (each node numbers what it stores), so cursors are too.
    `cursors[node]`: everything up to it has been seen; `onboarding[node]`: where an
    interrupted newest-first onboarding from that node resumes, and `onboarding_head[node]`
    the head it started from (where the sync after it begins). `labels`: those the last
    complete read covered; a new one sends the next read back over everything."""

    cursors: dict[str, int] = field(default_factory=dict)
    onboarding: dict[str, int] = field(default_factory=dict)
    onboarding_head: dict[str, int] = field(default_factory=dict)  # where it started
    onboarded: bool = False
    known: dict[tuple[bytes, str], Known] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    # the newest account manifest this device verified: never accept an older one
    manifest_version: int = 0
    manifest_digest: bytes = b""
    # (group, kind) -> MLS epoch of a newer snapshot a read saw but could not deliver (not
    # confirmed, or no key): the cursors passed it, so the next read looks for it again
    pending: dict[tuple[bytes, str], int] = field(default_factory=dict)

    def remember(
        self,
        group_id: bytes,
        kind: str,
        mls_epoch: int,
        digest: bytes,
        *,
        author: bytes | None = None,
        content: bytes | None = None,
    ) -> None:
        current = self.known.get((group_id, kind))
        if current is None or mls_epoch >= current.mls_epoch:
            self.known[(group_id, kind)] = Known(mls_epoch, digest, author, content)

    def forget_purged(self, purges: tuple[pre.PurgeEntry, ...]) -> int:
        """Drop what the device remembers of snapshots a purge voided (an author's, of a
        group, from an epoch on; kept without an author: any at or above that epoch), so
        the honest state below them is accepted again. How many were dropped."""
        dropped = 0
        for purge in purges:
            for key, known in list(self.known.items()):
                if key[0] != purge.group_id or known.mls_epoch < purge.from_epoch:
                    continue
                if known.author is None or known.author == purge.author:
                    del self.known[key]
                    dropped += 1
        return dropped

    def to_json(self) -> str:
        return json.dumps(
            {
                "cursors": self.cursors,
                "onboarding": self.onboarding,
                "onboarding_head": self.onboarding_head,
                "onboarded": self.onboarded,
                "known": [
                    [encode_b64url(g), kind, k.mls_epoch, k.digest.hex()]
                    + ([] if k.author is None else [k.author.hex()])
                    + ([] if k.author is None or k.content is None else [k.content.hex()])
                    for (g, kind), k in sorted(self.known.items())
                ],
                "labels": self.labels,
                "manifest": [self.manifest_version, self.manifest_digest.hex()],
                "pending": [
                    [encode_b64url(g), kind, epoch]
                    for (g, kind), epoch in sorted(self.pending.items())
                ],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> SyncState:
        doc = json.loads(text)
        return cls(
            cursors={str(k): int(v) for k, v in doc["cursors"].items()},
            onboarding={str(k): int(v) for k, v in doc["onboarding"].items()},
            onboarding_head={str(k): int(v) for k, v in doc.get("onboarding_head", {}).items()},
            onboarded=bool(doc.get("onboarded", False)),
            known={
                (decode_b64url(g, max_bytes=128), kind): Known(
                    int(e),
                    bytes.fromhex(d),
                    bytes.fromhex(rest[0]) if rest else None,
                    bytes.fromhex(rest[1]) if len(rest) > 1 else None,
                )
                for g, kind, e, d, *rest in doc["known"]
            },
            labels=[str(label) for label in doc.get("labels", [])],
            manifest_version=int(doc.get("manifest", [0, ""])[0]),
            manifest_digest=bytes.fromhex(doc.get("manifest", [0, ""])[1]),
            pending={
                (decode_b64url(g, max_bytes=128), str(kind)): int(epoch)
                for g, kind, epoch in doc.get("pending", [])
            },
        )

    def save(self, path: Path) -> None:
        """0600, atomically, on disk: it holds what protects the device from rollbacks."""
        write_private(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> SyncState:
        return cls.from_json(path.read_text()) if path.exists() else cls()
