"""Storage behind a small interface (`base.Storage`), with its Redis implementation."""

from .base import (
    AuthState,
    DeviceRecord,
    PublishOutcome,
    SnapshotWrite,
    Storage,
    StoredCapsule,
    StoredGrant,
    StoredSnapshot,
    WriteOutcome,
)
from .redis_store import RedisStorage

__all__ = [
    "AuthState",
    "DeviceRecord",
    "PublishOutcome",
    "RedisStorage",
    "SnapshotWrite",
    "Storage",
    "StoredCapsule",
    "StoredGrant",
    "StoredSnapshot",
    "WriteOutcome",
]
