"""Storage behind a small interface (`base.Storage`), with its Redis implementation."""

from .base import (
    AuthState,
    DeviceRecord,
    PublishOutcome,
    PublishStatus,
    SnapshotWrite,
    Storage,
    StoredCapsule,
    StoredGrant,
    StoredSnapshot,
)
from .redis_store import RedisStorage

__all__ = [
    "AuthState",
    "DeviceRecord",
    "PublishOutcome",
    "PublishStatus",
    "RedisStorage",
    "SnapshotWrite",
    "Storage",
    "StoredCapsule",
    "StoredGrant",
    "StoredSnapshot",
]
