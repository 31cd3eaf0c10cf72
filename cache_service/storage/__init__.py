"""Storage behind a small interface (`base.Storage`), with its Redis implementation."""

from .base import (
    AuthState,
    DeviceRecord,
    ManifestOutcome,
    PublishOutcome,
    ReceiptOutcome,
    SnapshotWrite,
    Storage,
    StoredCapsule,
    StoredDeletion,
    StoredGrant,
    StoredManifest,
    StoredSnapshot,
    WriteOutcome,
)
from .redis_store import RedisStorage

__all__ = [
    "AuthState",
    "DeviceRecord",
    "ManifestOutcome",
    "PublishOutcome",
    "ReceiptOutcome",
    "RedisStorage",
    "SnapshotWrite",
    "Storage",
    "StoredCapsule",
    "StoredDeletion",
    "StoredGrant",
    "StoredManifest",
    "StoredSnapshot",
    "WriteOutcome",
]
