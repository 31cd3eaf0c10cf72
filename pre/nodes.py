"""A cache node's own identity and the signed receipts it gives: for revocations, purges,
stored snapshots and account deletions."""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from functools import cached_property

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import _primitives as prim
from ._codec import Fixed, Nested, Record, Seq, Tag, UInt, hidden_repr, wire
from .errors import BindingError
from .keys import (
    ACCOUNT_ID_SIZE,
    DEVICE_ID_SIZE,
    ED25519_PUBLIC_SIZE,
    LABEL,
    SEED_SIZE,
    SIGNATURE_SIZE,
)

__all__ = [
    "MAX_RECEIPT_SHARES",
    "SNAPSHOT_RECEIPT_SIZE",
    "DeletionReceipt",
    "NodeSecrets",
    "PurgeReceipt",
    "RevocationReceipt",
    "ShareRef",
    "SnapshotReceipt",
    "deletion_digest",
    "node_id_for",
    "purge_digest",
    "split_receipts",
]

MAX_RECEIPT_SHARES = 4096
NODE_ID_SIZE = 16


def node_id_for(public_key: bytes) -> bytes:
    return prim.digest("node-id", public_key)[:NODE_ID_SIZE]


@dataclass(frozen=True)
class ShareRef(Record):
    """Names one grant share: (label, key epoch) of one device."""

    TAG = Tag.SHARE_REF
    label: str = wire(LABEL)
    key_epoch: int = wire(UInt(4))


@dataclass(frozen=True)
class RevocationReceipt(Record):
    """A node's signed statement: it refuses `device_id` and deleted these shares."""

    TAG = Tag.REVOCATION_RECEIPT
    node_key: bytes = wire(Fixed(ED25519_PUBLIC_SIZE))
    account_id: bytes = wire(Fixed(ACCOUNT_ID_SIZE))
    device_id: bytes = wire(Fixed(DEVICE_ID_SIZE))
    revoked_at: int = wire(UInt(8))
    processed_at: int = wire(UInt(8))
    deleted: tuple[ShareRef, ...] = wire(Seq(Nested(ShareRef, 256), MAX_RECEIPT_SHARES))
    signature: bytes = wire(Fixed(SIGNATURE_SIZE), signature=True)

    @property
    def node_id(self) -> bytes:
        return node_id_for(self.node_key)

    def verify(self, node_key: bytes) -> RevocationReceipt:
        """Check the receipt was signed by the node whose public key the caller pinned."""
        prim.ed25519_verify(node_key, "revocation-receipt", self.tbs(), self.signature)
        if node_key != self.node_key:
            raise BindingError("receipt names another node")
        return self


@dataclass(frozen=True)
class PurgeReceipt(Record):
    """A node's signed statement: it applied the purge whose digest it names and deleted
    `deleted` snapshots."""

    TAG = Tag.PURGE_RECEIPT
    node_key: bytes = wire(Fixed(ED25519_PUBLIC_SIZE))
    account_id: bytes = wire(Fixed(ACCOUNT_ID_SIZE))
    purge_digest: bytes = wire(Fixed(32))
    deleted: int = wire(UInt(4))
    processed_at: int = wire(UInt(8))
    signature: bytes = wire(Fixed(SIGNATURE_SIZE), signature=True)

    def verify(self, node_key: bytes) -> PurgeReceipt:
        prim.ed25519_verify(node_key, "purge-receipt", self.tbs(), self.signature)
        if node_key != self.node_key:
            raise BindingError("receipt names another node")
        return self


@dataclass(frozen=True)
class DeletionReceipt(Record):
    """A node's signed statement: it deleted the account that the deletion whose digest it
    names orders deleted, `deleted` stored keys with it, and refuses the account from
    `processed_at` on."""

    TAG = Tag.DELETION_RECEIPT
    node_key: bytes = wire(Fixed(ED25519_PUBLIC_SIZE))
    account_id: bytes = wire(Fixed(ACCOUNT_ID_SIZE))
    deletion_digest: bytes = wire(Fixed(32))
    deleted: int = wire(UInt(4))
    processed_at: int = wire(UInt(8))
    signature: bytes = wire(Fixed(SIGNATURE_SIZE), signature=True)

    def verify(self, node_key: bytes) -> DeletionReceipt:
        prim.ed25519_verify(node_key, "deletion-receipt", self.tbs(), self.signature)
        if node_key != self.node_key:
            raise BindingError("receipt names another node")
        return self


@dataclass(frozen=True)
class SnapshotReceipt(Record):
    """A node's signed statement: it has held the snapshot with this digest since
    `stored_at` (its own clock), so it checked the author's certificate and revocation
    then. M of them from distinct nodes confirm a snapshot: at least one comes from an
    honest node when at most M - 1 lie."""

    TAG = Tag.SNAPSHOT_RECEIPT
    node_key: bytes = wire(Fixed(ED25519_PUBLIC_SIZE))
    account_id: bytes = wire(Fixed(ACCOUNT_ID_SIZE))
    digest: bytes = wire(Fixed(32))
    stored_at: int = wire(UInt(8))
    signature: bytes = wire(Fixed(SIGNATURE_SIZE), signature=True)

    @property
    def node_id(self) -> bytes:
        return node_id_for(self.node_key)

    def verify(self, node_key: bytes) -> SnapshotReceipt:
        if node_key != self.node_key:
            raise BindingError("receipt names another node")
        prim.ed25519_verify(node_key, "snapshot-receipt", self.tbs(), self.signature)
        return self


# Every field has a fixed width, so receipts are stored and sent back to back.
SNAPSHOT_RECEIPT_SIZE = len(
    SnapshotReceipt(bytes(32), bytes(ACCOUNT_ID_SIZE), bytes(32), 0, bytes(SIGNATURE_SIZE))
    .to_bytes()
)  # fmt: skip


def split_receipts(data: bytes) -> list[bytes]:
    """Receipts stored back to back, one by one (a trailing partial one is dropped)."""
    n = SNAPSHOT_RECEIPT_SIZE
    return [data[i : i + n] for i in range(0, len(data) - n + 1, n)]


def deletion_digest(deletion_bytes: bytes) -> bytes:
    """What a deletion receipt names: the digest of the account deletion as sent."""
    return prim.digest("account-deletion", deletion_bytes)


def purge_digest(purge_bytes: bytes) -> bytes:
    """What a purge receipt names: the digest of the purge record as sent."""
    return prim.digest("purge", purge_bytes)


@dataclass(frozen=True, repr=False, eq=False)
class NodeSecrets(Record):
    """A node's Ed25519 seed, kept in its data directory."""

    TAG = Tag.NODE_SECRETS
    seed: bytes = wire(Fixed(SEED_SIZE))

    @classmethod
    def generate(cls) -> NodeSecrets:
        return cls(os.urandom(SEED_SIZE))

    def __repr__(self) -> str:
        return hidden_repr("NodeSecrets", ("node_id", self.node_id.hex()))

    @cached_property
    def _key(self) -> Ed25519PrivateKey:
        return prim.ed25519_from_seed(self.seed)

    @cached_property
    def public_key(self) -> bytes:
        return prim.ed25519_public_bytes(self._key)

    @property
    def node_id(self) -> bytes:
        return node_id_for(self.public_key)

    def _mac(self, context: str, message: bytes) -> bytes:
        return hmac.new(
            self._mac_key, prim.DOMAIN + context.encode() + b"\x00" + message, "sha256"
        ).digest()

    @cached_property
    def _mac_key(self) -> bytes:
        return prim.hkdf(self.seed, salt=None, info="node-attestation")

    def sign_receipt(
        self,
        *,
        account_id: bytes,
        device_id: bytes,
        revoked_at: int,
        deleted: tuple[ShareRef, ...],
        now: int,
    ) -> RevocationReceipt:
        unsigned = RevocationReceipt(
            node_key=self.public_key,
            account_id=account_id,
            device_id=device_id,
            revoked_at=revoked_at,
            processed_at=now,
            deleted=deleted,
            signature=bytes(SIGNATURE_SIZE),
        )
        return unsigned.replace(
            signature=prim.ed25519_sign(self._key, "revocation-receipt", unsigned.tbs())
        )

    def sign_snapshot_receipt(
        self, *, account_id: bytes, digest: bytes, stored_at: int
    ) -> SnapshotReceipt:
        unsigned = SnapshotReceipt(
            node_key=self.public_key,
            account_id=account_id,
            digest=digest,
            stored_at=stored_at,
            signature=bytes(SIGNATURE_SIZE),
        )
        return unsigned.replace(
            signature=prim.ed25519_sign(self._key, "snapshot-receipt", unsigned.tbs())
        )

    def sign_purge_receipt(
        self, *, account_id: bytes, purge: bytes, deleted: int, now: int
    ) -> PurgeReceipt:
        unsigned = PurgeReceipt(
            node_key=self.public_key,
            account_id=account_id,
            purge_digest=purge_digest(purge),
            deleted=deleted,
            processed_at=now,
            signature=bytes(SIGNATURE_SIZE),
        )
        return unsigned.replace(
            signature=prim.ed25519_sign(self._key, "purge-receipt", unsigned.tbs())
        )

    def sign_deletion_receipt(
        self, *, account_id: bytes, deletion: bytes, deleted: int, now: int
    ) -> DeletionReceipt:
        unsigned = DeletionReceipt(
            node_key=self.public_key,
            account_id=account_id,
            deletion_digest=deletion_digest(deletion),
            deleted=min(deleted, 2**32 - 1),
            processed_at=now,
            signature=bytes(SIGNATURE_SIZE),
        )
        return unsigned.replace(
            signature=prim.ed25519_sign(self._key, "deletion-receipt", unsigned.tbs())
        )
