"""Sealed snapshots: one piece of MLS group state, sealed under a KEK, signed by its author.

- header: account, label, key epoch, opaque group id, kind, MLS epoch, hash of the previous
  snapshot, author device, time, optional MLS commitments (tree hash, a hash of the epoch
  authenticator) and a random salt;
- ciphertext: AES-256-GCM under DEK = HKDF(KEK, salt, H(header)) with the header as
  associated data. Each DEK encrypts exactly one message, so the nonce is fixed;
- signature: the author's Ed25519 over H(header) and H(ciphertext), so a node checks
  authorship without reading anything.
"""

from __future__ import annotations

import enum
import hmac
import os
from dataclasses import dataclass
from functools import cached_property

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import _primitives as prim
from ._codec import Fixed, Maybe, Nested, Opaque, Record, Tag, Text, UInt, wire
from .capsules import Kek
from .certificates import DeviceCertificate
from .errors import BindingError, DecryptionError, translate
from .keys import (
    ACCOUNT_ID_SIZE,
    DEVICE_ID_SIZE,
    LABEL,
    SIGNATURE_SIZE,
    DeviceSecrets,
    label_for_group,
)

__all__ = [
    "MAX_GROUP_ID_SIZE",
    "MAX_SNAPSHOT_PLAINTEXT",
    "UNCHECKED",
    "SealedSnapshot",
    "SnapshotHeader",
    "content_hash",
    "epoch_authenticator_hash",
    "open_snapshot",
    "seal_snapshot",
]

MAX_GROUP_ID_SIZE = 128
MAX_SNAPSHOT_PLAINTEXT = 32 * 1024 * 1024
HASH_SIZE = 32
SALT_SIZE = 16
_TAG_SIZE = 16
_NONCE = bytes(12)


class _Unchecked(enum.Enum):
    UNCHECKED = 0


UNCHECKED = _Unchecked.UNCHECKED


@dataclass(frozen=True)
class SnapshotHeader(Record):
    TAG = Tag.SNAPSHOT_HEADER
    account_id: bytes = wire(Fixed(ACCOUNT_ID_SIZE))
    label: str = wire(LABEL)
    key_epoch: int = wire(UInt(4))
    group_id: bytes = wire(Opaque(MAX_GROUP_ID_SIZE, 1))
    kind: str = wire(Text(32, r"[a-z][a-z0-9_]{0,31}"))
    mls_epoch: int = wire(UInt(8))
    prev_hash: bytes | None = wire(Maybe(Fixed(HASH_SIZE)))
    author: bytes = wire(Fixed(DEVICE_ID_SIZE))
    created_at: int = wire(UInt(8))
    tree_hash: bytes | None = wire(Maybe(Opaque(64, 1)))
    epoch_authenticator_hash: bytes | None = wire(Maybe(Fixed(HASH_SIZE)))
    salt: bytes = wire(Fixed(SALT_SIZE))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.label != "account" and self.label != label_for_group(self.group_id):
            raise ValueError("a group label must name the snapshot's own group")


@dataclass(frozen=True)
class SealedSnapshot(Record):
    TAG = Tag.SEALED_SNAPSHOT
    header: SnapshotHeader = wire(Nested(SnapshotHeader, 1024))
    ciphertext: bytes = wire(Opaque(MAX_SNAPSHOT_PLAINTEXT + _TAG_SIZE, _TAG_SIZE))
    signature: bytes = wire(Fixed(SIGNATURE_SIZE), signature=True)

    @cached_property
    def digest(self) -> bytes:
        """The hash the next snapshot of the same (group, kind) names as `prev_hash`."""
        return prim.digest("snapshot", self.to_bytes())

    def _signed_message(self) -> bytes:
        return prim.digest("snapshot-signed", self.header.to_bytes(), self.ciphertext)

    def verify(self, author: DeviceCertificate) -> SealedSnapshot:
        """Check authorship: `author` (already verified by the caller) signed this snapshot
        for its own account. Needs no key: nodes call it on every publish."""
        if self.header.author != author.device_id or self.header.account_id != author.account_id:
            raise BindingError("snapshot author is not the certified device")
        author.verify_signature("snapshot", self._signed_message(), self.signature)
        return self


def content_hash(
    label: str, plaintext: bytes, tree_hash: bytes | None, epoch_authenticator_hash: bytes | None
) -> bytes:
    """What a snapshot says, apart from how it was sealed (salt, time, key epoch): two
    seals of one content at one epoch are one publication retried, not two."""
    return prim.digest(
        "snapshot-content",
        label.encode(),
        plaintext,
        tree_hash or b"",
        epoch_authenticator_hash or b"",
    )


def epoch_authenticator_hash(epoch_authenticator: bytes) -> bytes:
    """What a header records of the MLS epoch authenticator (RFC 9420 §8.7): a hash, so the
    node does not learn a value the group uses to authenticate the epoch."""
    return prim.digest("epoch-authenticator", epoch_authenticator)


def _dek(kek: Kek, header_bytes: bytes, salt: bytes) -> bytes:
    return prim.hkdf(
        kek.secret,
        salt=salt,
        info="snapshot-dek",
        extra=prim.digest("snapshot-header", header_bytes),
    )


def seal_snapshot(
    kek: Kek,
    author: DeviceSecrets,
    *,
    group_id: bytes,
    kind: str,
    mls_epoch: int,
    plaintext: bytes,
    now: int,
    prev: SealedSnapshot | None = None,
    prev_hash: bytes | None = None,
    tree_hash: bytes | None = None,
    epoch_authenticator: bytes | None = None,
    salt: bytes | None = None,
) -> SealedSnapshot:
    """Seal `plaintext` as the snapshot of (group, kind) at `mls_epoch`, chained to `prev`
    (or to the digest `prev_hash` of a snapshot the caller no longer holds).

    Leave `salt` unset outside known-answer tests: the DEK is unique only because the salt
    is random, and two plaintexts sealed under one header and salt would share a keystream.
    """
    if len(plaintext) > MAX_SNAPSHOT_PLAINTEXT:
        raise ValueError("snapshot plaintext too large")
    if prev is not None:
        if prev_hash is not None:
            raise ValueError("give prev or prev_hash, not both")
        prev_hash = prev.digest
    header = SnapshotHeader(
        account_id=kek.account_id,
        label=kek.label,
        key_epoch=kek.key_epoch,
        group_id=group_id,
        kind=kind,
        mls_epoch=mls_epoch,
        prev_hash=prev_hash,
        author=author.device_id,
        created_at=now,
        tree_hash=tree_hash,
        epoch_authenticator_hash=(
            None if epoch_authenticator is None else epoch_authenticator_hash(epoch_authenticator)
        ),
        salt=os.urandom(SALT_SIZE) if salt is None else salt,
    )
    header_bytes = header.to_bytes()
    ciphertext = AESGCM(_dek(kek, header_bytes, header.salt)).encrypt(
        _NONCE, plaintext, header_bytes
    )
    unsigned = SealedSnapshot(header=header, ciphertext=ciphertext, signature=bytes(64))
    return unsigned.replace(signature=author.sign("snapshot", unsigned._signed_message()))


def open_snapshot(
    snapshot: SealedSnapshot,
    kek: Kek,
    author: DeviceCertificate,
    *,
    expect_prev_hash: bytes | _Unchecked | None = UNCHECKED,
    group_id: bytes | None = None,
    kind: str | None = None,
    tree_hash: bytes | None = None,
    epoch_authenticator: bytes | None = None,
) -> bytes:
    """Verify and decrypt. `author` must already be verified against the account root.

    `expect_prev_hash` checks the chain (None: this must be the first snapshot);
    `group_id` / `kind`, when given, must be the snapshot's (under the `account` label one
    KEK opens every group, so a node could otherwise serve one group's state as another's);
    `tree_hash` / `epoch_authenticator`, when given (from the delivery service's view of the
    group), must match what the author recorded.
    """
    snapshot.verify(author)
    header = snapshot.header
    if (header.account_id, header.label, header.key_epoch) != (
        kek.account_id,
        kek.label,
        kek.key_epoch,
    ):
        raise BindingError("snapshot is sealed under another label or key epoch")
    if (group_id is not None and header.group_id != group_id) or (
        kind is not None and header.kind != kind
    ):
        raise BindingError("snapshot is for another group or kind")
    if expect_prev_hash is not UNCHECKED and header.prev_hash != expect_prev_hash:
        raise BindingError("snapshot does not chain to the expected previous snapshot")
    if tree_hash is not None and (
        header.tree_hash is None or not hmac.compare_digest(header.tree_hash, tree_hash)
    ):
        raise BindingError("snapshot tree hash differs from the group's")
    if epoch_authenticator is not None and header.epoch_authenticator_hash != (
        epoch_authenticator_hash(epoch_authenticator)
    ):
        raise BindingError("snapshot epoch authenticator differs from the group's")
    header_bytes = header.to_bytes()
    with translate(DecryptionError, "snapshot does not decrypt"):
        return AESGCM(_dek(kek, header_bytes, header.salt)).decrypt(
            _NONCE, snapshot.ciphertext, header_bytes
        )
