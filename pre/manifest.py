"""The account manifest: the admin's own record of its account, root-signed and versioned.

The admin decides what exists (labels and their current key epochs, devices and their
revocations, grants, purges, the node set and the threshold), so the admin, not any node,
is the authority for it. Each version names the hash of the one before; nodes store it
with a compare-and-set, and a device believes the highest version it has verified.

A manifest holds hashes of the records it names (capsules, certificates), not the records:
those come from any node and must match. Sections are sorted by their key and keys are
unique, so one content has one encoding.

`ManifestUpdate` carries only what changed from the previous version, with the root's
signature over the whole new manifest: a node holding the previous version applies it
(`apply_update`) and checks that signature, so an approval uploads a few hundred bytes
whatever the size of the account.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol, TypeVar

from . import _primitives as prim
from ._codec import Fixed, Nested, Opaque, Record, Seq, Tag, Text, UInt, wire
from .capsules import KeyCapsule
from .certificates import AccountRecord, DeviceCertificate
from .errors import BindingError
from .keys import (
    ACCOUNT_ID_SIZE,
    DEVICE_ID_SIZE,
    ED25519_PUBLIC_SIZE,
    LABEL,
    SIGNATURE_SIZE,
    AccountSecrets,
)
from .snapshots import MAX_GROUP_ID_SIZE

__all__ = [
    "AccountManifest",
    "GrantEntry",
    "GrantKey",
    "LabelEntry",
    "ManifestDevice",
    "ManifestNode",
    "ManifestUpdate",
    "Purge",
    "PurgeEntry",
    "apply_update",
    "capsule_hash",
    "certificate_hash",
    "manifest_update",
    "purge_group",
    "sign_manifest",
]

HASH_SIZE = 32
MAX_NODES = 255
MAX_MANIFEST_LABELS = 100_000
MAX_MANIFEST_DEVICES = 4096
MAX_MANIFEST_GRANTS = 200_000
MAX_MANIFEST_PURGES = 10_000
_U8, _U32, _U64 = UInt(1), UInt(4), UInt(8)
_URL = Text(512, r"https?://[!-~]{1,500}")
_OPERATOR = Text(128, r"[^\x00-\x1f\x7f-\x9f]{0,128}")
_NO_HASH = bytes(HASH_SIZE)


class _Keyed(Protocol):
    @property
    def key(self) -> Any: ...


E = TypeVar("E", bound=_Keyed)


def capsule_hash(capsule: KeyCapsule) -> bytes:
    return prim.digest("manifest-capsule", capsule.to_bytes())


def certificate_hash(certificate: DeviceCertificate) -> bytes:
    return prim.digest("manifest-certificate", certificate.to_bytes())


@dataclass(frozen=True)
class ManifestNode(Record):
    """Node `share_index` of the set: its identity key (what the device pins and signs
    requests for), its URL (advisory: the key is the identity) and who runs it."""

    TAG = Tag.MANIFEST_NODE
    node_key: bytes = wire(Fixed(ED25519_PUBLIC_SIZE))
    share_index: int = wire(_U8)
    url: str = wire(_URL)
    operator: str = wire(_OPERATOR)

    @property
    def key(self) -> int:
        return self.share_index


@dataclass(frozen=True)
class LabelEntry(Record):
    TAG = Tag.MANIFEST_LABEL
    label: str = wire(LABEL)
    key_epoch: int = wire(_U32)  # the current one
    capsule_hash: bytes = wire(Fixed(HASH_SIZE))  # of that epoch's capsule

    @property
    def key(self) -> str:
        return self.label


@dataclass(frozen=True)
class ManifestDevice(Record):
    TAG = Tag.MANIFEST_DEVICE
    device_id: bytes = wire(Fixed(DEVICE_ID_SIZE))
    certificate_hash: bytes = wire(Fixed(HASH_SIZE))  # of its newest certificate
    revoked_at: int = wire(_U64)  # 0: not revoked

    @property
    def key(self) -> bytes:
        return self.device_id


@dataclass(frozen=True)
class GrantKey(Record):
    TAG = Tag.GRANT_KEY
    device_id: bytes = wire(Fixed(DEVICE_ID_SIZE))
    label: str = wire(LABEL)

    @property
    def key(self) -> tuple[bytes, str]:
        return (self.device_id, self.label)


@dataclass(frozen=True)
class GrantEntry(Record):
    """`device_id` holds an M-of-N grant of `label` at `key_epoch` until `expires_at`,
    made in grant generation `generation` (a node replacement starts a new one)."""

    TAG = Tag.MANIFEST_GRANT
    device_id: bytes = wire(Fixed(DEVICE_ID_SIZE))
    label: str = wire(LABEL)
    key_epoch: int = wire(_U32)
    expires_at: int = wire(_U64)
    generation: int = wire(_U32)

    @property
    def key(self) -> tuple[bytes, str]:
        return (self.device_id, self.label)


@dataclass(frozen=True)
class PurgeEntry(Record):
    """Snapshots of `group_id` by `author` at MLS epoch `from_epoch` or above are void."""

    TAG = Tag.MANIFEST_PURGE
    group_id: bytes = wire(Opaque(MAX_GROUP_ID_SIZE, 1))
    author: bytes = wire(Fixed(DEVICE_ID_SIZE))
    from_epoch: int = wire(_U64)

    @property
    def key(self) -> tuple[bytes, bytes]:
        return (self.group_id, self.author)


def _check_sorted(name: str, entries: Sequence[Any]) -> None:
    keys = [e.key for e in entries]
    if any(a >= b for a, b in itertools.pairwise(keys)):
        raise ValueError(f"manifest {name} must be sorted by key, each key once")


@dataclass(frozen=True)
class AccountManifest(Record):
    TAG = Tag.ACCOUNT_MANIFEST
    account_id: bytes = wire(Fixed(ACCOUNT_ID_SIZE))
    version: int = wire(_U64)  # 1, 2, ...
    previous: bytes = wire(Fixed(HASH_SIZE))  # digest of version - 1; zeros for version 1
    issued_at: int = wire(_U64)
    threshold: int = wire(_U8)
    grant_generation: int = wire(_U32)
    nodes: tuple[ManifestNode, ...] = wire(Seq(Nested(ManifestNode, 1024), MAX_NODES))
    labels: tuple[LabelEntry, ...] = wire(Seq(Nested(LabelEntry, 256), MAX_MANIFEST_LABELS))
    devices: tuple[ManifestDevice, ...] = wire(
        Seq(Nested(ManifestDevice, 128), MAX_MANIFEST_DEVICES)
    )
    grants: tuple[GrantEntry, ...] = wire(Seq(Nested(GrantEntry, 256), MAX_MANIFEST_GRANTS))
    purges: tuple[PurgeEntry, ...] = wire(Seq(Nested(PurgeEntry, 256), MAX_MANIFEST_PURGES))
    signature: bytes = wire(Fixed(SIGNATURE_SIZE), signature=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.version < 1 or (self.version == 1) != (self.previous == _NO_HASH):
            raise ValueError("version 1 names no previous manifest; later versions do")
        for name in ("nodes", "labels", "devices", "grants", "purges"):
            _check_sorted(name, getattr(self, name))
        if [n.share_index for n in self.nodes] != list(range(1, len(self.nodes) + 1)):
            raise ValueError("manifest nodes are shares 1..N")
        if not 1 <= self.threshold <= len(self.nodes):
            raise ValueError("need 1 <= threshold <= number of nodes")

    @cached_property
    def digest(self) -> bytes:
        return prim.digest("account-manifest", self.to_bytes())

    def verify(self, account: AccountRecord) -> AccountManifest:
        if self.account_id != account.account_id:
            raise BindingError("manifest is for another account")
        prim.ed25519_verify(account.root_key, "account-manifest", self.tbs(), self.signature)
        return self

    # lookups

    def label_entry(self, label: str) -> LabelEntry | None:
        return _find(self.labels, label)

    def device_entry(self, device_id: bytes) -> ManifestDevice | None:
        return _find(self.devices, device_id)

    def grants_of(self, device_id: bytes) -> list[GrantEntry]:
        return [g for g in self.grants if g.device_id == device_id]

    def node_entry(self, share_index: int) -> ManifestNode | None:
        return _find(self.nodes, share_index)


def _find(entries: Sequence[E], key: object) -> E | None:
    for entry in entries:
        if entry.key == key:
            return entry
    return None


def sign_manifest(account: AccountSecrets, manifest: AccountManifest) -> AccountManifest:
    """`manifest` with the account root's signature (whatever it carried before)."""
    unsigned = manifest.replace(signature=bytes(SIGNATURE_SIZE))
    return unsigned.replace(signature=account._sign_root("account-manifest", unsigned.tbs()))


@dataclass(frozen=True)
class ManifestUpdate(Record):
    """Version `version` as a change to version `version - 1` (whose digest is
    `previous`): upserted and removed entries, and the root's signature over the whole
    resulting manifest. `nodes` empty: the node set is unchanged."""

    TAG = Tag.MANIFEST_UPDATE
    account_id: bytes = wire(Fixed(ACCOUNT_ID_SIZE))
    version: int = wire(_U64)
    previous: bytes = wire(Fixed(HASH_SIZE))
    issued_at: int = wire(_U64)
    threshold: int = wire(_U8)
    grant_generation: int = wire(_U32)
    nodes: tuple[ManifestNode, ...] = wire(Seq(Nested(ManifestNode, 1024), MAX_NODES))
    labels: tuple[LabelEntry, ...] = wire(Seq(Nested(LabelEntry, 256), MAX_MANIFEST_LABELS))
    devices: tuple[ManifestDevice, ...] = wire(
        Seq(Nested(ManifestDevice, 128), MAX_MANIFEST_DEVICES)
    )
    grants: tuple[GrantEntry, ...] = wire(Seq(Nested(GrantEntry, 256), MAX_MANIFEST_GRANTS))
    grants_removed: tuple[GrantKey, ...] = wire(Seq(Nested(GrantKey, 256), MAX_MANIFEST_GRANTS))
    purges: tuple[PurgeEntry, ...] = wire(Seq(Nested(PurgeEntry, 256), MAX_MANIFEST_PURGES))
    signature: bytes = wire(Fixed(SIGNATURE_SIZE), signature=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.version < 2:
            raise ValueError("an update makes version 2 or later")
        for name in ("nodes", "labels", "devices", "grants", "grants_removed", "purges"):
            _check_sorted(name, getattr(self, name))


def _merge(
    base: Iterable[E], upserts: Iterable[E], removed: frozenset[Any] = frozenset()
) -> tuple[E, ...]:
    merged = {e.key: e for e in base if e.key not in removed}
    merged.update((e.key, e) for e in upserts)
    return tuple(merged[k] for k in sorted(merged))


def apply_update(base: AccountManifest, update: ManifestUpdate) -> AccountManifest:
    """The manifest `update` makes of `base`, carrying the update's signature: the caller
    verifies it (`AccountManifest.verify`). Raises BindingError when `update` does not
    follow `base`, ValueError when the result is not a valid manifest."""
    if (update.account_id, update.version, update.previous) != (
        base.account_id,
        base.version + 1,
        base.digest,
    ):
        raise BindingError("this update does not follow that manifest")
    removed = frozenset(k.key for k in update.grants_removed)
    return AccountManifest(
        account_id=base.account_id,
        version=update.version,
        previous=update.previous,
        issued_at=update.issued_at,
        threshold=update.threshold,
        grant_generation=update.grant_generation,
        nodes=update.nodes or base.nodes,
        labels=_merge(base.labels, update.labels),
        devices=_merge(base.devices, update.devices),
        grants=_merge(base.grants, update.grants, removed),
        purges=_merge(base.purges, update.purges),
        signature=update.signature,
    )


def manifest_update(base: AccountManifest, new: AccountManifest) -> ManifestUpdate:
    """The update that turns `base` into `new` (signed), for `apply_update`."""
    if new.version != base.version + 1 or new.previous != base.digest:
        raise ValueError("`new` must be the version after `base`")

    def changed(old: Sequence[E], now: Sequence[E]) -> tuple[E, ...]:
        held = {e.key: e for e in old}
        return tuple(e for e in now if held.get(e.key) != e)

    kept = {g.key for g in new.grants}
    return ManifestUpdate(
        account_id=new.account_id,
        version=new.version,
        previous=new.previous,
        issued_at=new.issued_at,
        threshold=new.threshold,
        grant_generation=new.grant_generation,
        nodes=() if new.nodes == base.nodes else new.nodes,
        labels=changed(base.labels, new.labels),
        devices=changed(base.devices, new.devices),
        grants=changed(base.grants, new.grants),
        grants_removed=tuple(
            GrantKey(device_id=g.device_id, label=g.label) for g in base.grants if g.key not in kept
        ),
        purges=changed(base.purges, new.purges),
        signature=new.signature,
    )


# purges


@dataclass(frozen=True)
class Purge(Record):
    """The admin voids a revoked author's snapshots of one group from `from_epoch` on:
    nodes delete them (and answer a signed receipt), devices that accepted them forget."""

    TAG = Tag.PURGE
    account_id: bytes = wire(Fixed(ACCOUNT_ID_SIZE))
    group_id: bytes = wire(Opaque(MAX_GROUP_ID_SIZE, 1))
    author: bytes = wire(Fixed(DEVICE_ID_SIZE))
    from_epoch: int = wire(_U64)
    issued_at: int = wire(_U64)
    signature: bytes = wire(Fixed(SIGNATURE_SIZE), signature=True)

    def verify(self, account: AccountRecord) -> Purge:
        if self.account_id != account.account_id:
            raise BindingError("purge is for another account")
        prim.ed25519_verify(account.root_key, "purge", self.tbs(), self.signature)
        return self

    @property
    def entry(self) -> PurgeEntry:
        return PurgeEntry(group_id=self.group_id, author=self.author, from_epoch=self.from_epoch)


def purge_group(
    account: AccountSecrets, group_id: bytes, author: bytes, *, from_epoch: int, now: int
) -> Purge:
    unsigned = Purge(
        account_id=account.account_id,
        group_id=group_id,
        author=author,
        from_epoch=from_epoch,
        issued_at=now,
        signature=bytes(SIGNATURE_SIZE),
    )
    return unsigned.replace(signature=account._sign_root("purge", unsigned.tbs()))
