"""The storage interface the service layer depends on. Values are opaque `pre` encodings
plus the few clear fields needed to index them; the storage never decodes records."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

__all__ = [
    "AuthState",
    "DeviceRecord",
    "ManifestOutcome",
    "PublishOutcome",
    "ReceiptOutcome",
    "SnapshotWrite",
    "Storage",
    "StoredCapsule",
    "StoredDeletion",
    "StoredGrant",
    "StoredManifest",
    "StoredSnapshot",
    "WriteOutcome",
]


@dataclass(frozen=True)
class DeviceRecord:
    certificate: bytes
    revocation: bytes | None


@dataclass(frozen=True)
class AuthState:
    account: bytes | None
    device: DeviceRecord | None
    deleted: bytes | None = None  # the deletion order, when the account's tombstone is here


@dataclass(frozen=True)
class StoredDeletion:
    held: bool  # the node held the account (or a tombstone of it) when asked
    deletion: bytes  # the deletion in force (the first one received)
    receipt: bytes | None  # this node's receipt, once the sweep finished
    record_deleted: bool = False  # this call deleted the account record


@dataclass(frozen=True)
class StoredCapsule:
    label: str
    key_epoch: int
    capsule: bytes
    current: bool


@dataclass(frozen=True)
class StoredGrant:
    label: str
    key_epoch: int
    share: bytes


@dataclass(frozen=True)
class SnapshotWrite:
    label: str
    key_epoch: int
    group_id: bytes
    kind: str
    mls_epoch: int
    author: str
    digest: bytes
    data: bytes
    retain: int
    # When set: storing this snapshot deletes its group's snapshots of this kind below the
    # MLS epoch of the oldest snapshot of its own kind still kept, this one included (the
    # tree patches below the oldest retained tree base rebuild no epoch any more).
    prunes: str | None = None
    # How far above the stored top of its (group, kind) an MLS epoch may be.
    max_jump: int = 65_536
    # This node's clock at storing, and its signed receipt saying so (`pre.SnapshotReceipt`).
    stored_at: int = 0
    receipt: bytes = b""
    # The account's quotas (`Settings.quota_*`), checked atomically with the store.
    quota_groups: int = 10_000
    quota_stored_bytes: int = 1 << 30


class WriteOutcome(StrEnum):
    """What storing one snapshot did (the service maps it to the wire's `PublishStatus`)."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    STALE_EPOCH = "stale_epoch"  # below the newest stored MLS epoch
    CONFLICT = "conflict"  # same MLS epoch, different snapshot
    STALE_KEY_EPOCH = "stale_key_epoch"  # not the label's current key epoch
    NO_CAPSULE = "no_capsule"  # the label has no key capsule yet
    REVOKED = "revoked"  # the author was revoked meanwhile
    EPOCH_TOO_FAR = "epoch_too_far"  # above the stored top by more than `max_jump`
    QUOTA_GROUPS = "quota_groups"  # a new group beyond the account's quota of groups
    QUOTA_STORED_BYTES = "quota_stored_bytes"  # beyond the account's quota of bytes


@dataclass(frozen=True)
class StoredManifest:
    data: bytes
    version: int
    digest: bytes


class ManifestOutcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # the stored version, identical
    CONFLICT = "conflict"  # not the stored version + 1 naming the stored digest


@dataclass(frozen=True)
class PublishOutcome:
    status: WriteOutcome
    seq: int | None = None
    current_epoch: int | None = None
    receipt: bytes | None = None  # stored or duplicate: this node's receipt (None: stored
    # before receipts existed)
    limit: int | None = None  # a quota refusal: the quota's value


class ReceiptOutcome(StrEnum):
    STORED = "stored"
    KEPT = "kept"  # as many receipts or more were stored already
    NOT_FOUND = "not_found"  # no snapshot with that digest at that (group, kind, epoch)


@dataclass(frozen=True)
class StoredSnapshot:
    seq: int
    label: str
    key_epoch: int
    group_id: bytes
    kind: str
    mls_epoch: int
    digest: bytes
    data: bytes
    receipt: bytes | None = None  # this node's (None: stored before receipts existed)
    others: bytes = b""  # other nodes' receipts, concatenated


class Storage(Protocol):
    """Everything is scoped by account id; implementations keep one account's updates
    atomic (in Redis: one hash slot, Lua scripts)."""

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...

    # accounts and devices
    async def create_account(
        self, account_id: str, record: bytes, device_id: str, certificate: bytes
    ) -> bool:
        """Store a new account with its first admin device. False if the identical record
        and certificate are stored already (a retry); raises ServiceError(CONFLICT) if the
        account exists otherwise (add further devices with `put_device`)."""
        ...

    async def auth_state(self, account_id: str, device_id: str) -> AuthState: ...

    async def claim_nonce(self, account_id: str, device_id: str, nonce: str, ttl: int) -> bool:
        """True the first time a nonce is seen within `ttl` seconds (survives restarts)."""
        ...

    async def count_request(
        self, account_id: str, device_id: str, *, window: int, now: int
    ) -> int: ...

    async def count_registration(self, address: str, *, window: int) -> tuple[int, int]:
        """Count one registration attempt from a client address in a window of `window`
        seconds opened by its first attempt (shared by every node process on this
        storage); returns the count so far and the seconds until the window closes."""
        ...

    async def put_device(
        self, account_id: str, device_id: str, certificate: bytes, max_devices: int
    ) -> bool:
        """Store a certificate (True if it was new). Refuses a revoked device."""
        ...

    async def list_devices(self, account_id: str) -> dict[str, DeviceRecord]: ...

    async def revoke_device(
        self, account_id: str, device_id: str, revocation: bytes
    ) -> tuple[bytes, list[tuple[str, int]]]:
        """Atomically record the revocation (unless one is already in force) and delete
        every grant share of the device; returns the revocation in force and the
        (label, key epoch) of the shares deleted."""
        ...

    # deleting an account (redis_deletion)
    async def mark_deleted(self, account_id: str, deletion: bytes) -> StoredDeletion:
        """Atomically keep a tombstone with `deletion` and delete the account record, unless
        a tombstone is here already (then it is returned, with the receipt if the sweep
        finished). `held`: the account (or its tombstone) was here."""
        ...

    async def deletion_order(self, account_id: str) -> bytes | None:
        """The deletion order the account's tombstone keeps, if it has one."""
        ...

    async def sweep_account(self, account_id: str) -> int:
        """Delete every key of the account but its tombstone (and replay nonces and rate
        counters, which expire on their own); how many."""
        ...

    async def finish_deletion(self, account_id: str, receipt: bytes) -> bytes:
        """Keep this node's receipt in the tombstone (the first one stays); returns it."""
        ...

    # key capsules and grants
    async def put_capsule(
        self, account_id: str, label: str, key_epoch: int, capsule: bytes, max_labels: int
    ) -> tuple[bool, int]:
        """Epoch 0 starts a label; epoch e+1 rotates it. Whether it was stored (False for an
        identical retry) and the label's current key epoch after the call;
        ServiceError(STALE_KEY_EPOCH / CONFLICT) otherwise."""
        ...

    async def get_capsule(self, account_id: str, label: str, key_epoch: int) -> bytes | None: ...

    async def get_capsules(
        self, account_id: str, keys: list[tuple[str, int]]
    ) -> dict[tuple[str, int], bytes | None]: ...

    async def list_capsules(self, account_id: str) -> list[StoredCapsule]: ...

    async def put_grant(
        self,
        account_id: str,
        device_id: str,
        label: str,
        key_epoch: int,
        *,
        share: bytes,
        ttl: int,
    ) -> None:
        """Store this node's share, expiring after `ttl` seconds. Refuses a revoked device."""
        ...

    async def list_grants(self, account_id: str, device_id: str) -> list[StoredGrant]: ...

    # the account manifest
    async def get_manifest(self, account_id: str) -> StoredManifest | None: ...

    async def put_manifest(
        self, account_id: str, manifest: StoredManifest, previous: bytes
    ) -> tuple[ManifestOutcome, int]:
        """Compare-and-set: stored when nothing is stored yet, or when `manifest` is the
        stored version + 1 and `previous` is the stored digest. Returns what happened and
        the version stored after the call."""
        ...

    # snapshots
    async def delete_snapshots(self, account_id: str, group_id: bytes, seqs: list[int]) -> int:
        """Delete these snapshots of one group (a purge), off the quota counters too; how
        many were still there."""
        ...

    async def publish(self, account_id: str, item: SnapshotWrite) -> PublishOutcome:
        """Store a snapshot unless refused (`WriteOutcome`); retention and pruning delete
        older ones in the same atomic step, and the quotas are checked with them off."""
        ...

    async def usage(self, account_id: str) -> tuple[int, int] | None:
        """The account's quota counters (stored bytes, groups); None until counted."""
        ...

    async def set_receipt(self, account_id: str, seq: int, stored_at: int, receipt: bytes) -> bytes:
        """Give a snapshot stored before receipts existed this node's receipt, unless it
        has one; returns the one in force."""
        ...

    async def put_receipts(
        self, account_id: str, *, group_id: bytes, kind: str, mls_epoch: int, digest: bytes,
        receipts: bytes,
    ) -> ReceiptOutcome:  # fmt: skip
        """Store other nodes' receipts (concatenated) for the snapshot of (group, kind) at
        that MLS epoch, if it has that digest and they outnumber the stored ones."""
        ...

    async def list_snapshots(
        self,
        account_id: str,
        *,
        descending: bool,
        start: int | None,
        limit: int,
        group_id: bytes | None,
        with_data: bool = True,
    ) -> tuple[list[StoredSnapshot], int, int | None]:
        """A page in sequence order, strictly after `start` (ascending) or strictly before
        it (descending; None: from the newest), the account's newest sequence number, and
        the cursor for the next page (None when this page reached the end). Without data,
        `StoredSnapshot.data` is empty."""
        ...
