"""Trust nothing a node returns: every record is checked against the account root the
device pinned (the account id is the hash of the root key), and every snapshot against its
author's certificate, its KEK, the device's own memory of epochs and, when given, the
delivery service's view of the group."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pre
from cache_service.protocol import models as m

from .confirmations import CLOCK_SKEW
from .directory import REVOCATION_GRACE, Directory, check_account
from .errors import ForkError, NoKey, Purged, RollbackError, Unconfirmed, VerificationFailed
from .state import Known, SyncState
from .tree_sync import BASE_KIND, TREE_KINDS, is_tree_snapshot

__all__ = [
    "REVOCATION_GRACE",
    "Commitments",
    "Directory",
    "OpenedSnapshot",
    "check_account",
    "check_commitments",
    "content_of",
    "open_item",
    "open_tree_piece",
]

Confirm = Callable[[pre.SnapshotHeader, bytes], bool]
"""Whether M valid receipts from distinct pinned nodes back the snapshot with this header
and digest (`confirmations.ReceiptPool`)."""


@dataclass(frozen=True)
class Commitments:
    """What the delivery service says of a group's current epoch (RFC 9420 GroupContext):
    snapshots below `min_epoch` are rollbacks; at that epoch they must match."""

    min_epoch: int = 0
    tree_hash: bytes | None = None
    epoch_authenticator: bytes | None = None


@dataclass(frozen=True)
class OpenedSnapshot:
    seq: int
    group_id: bytes
    kind: str
    mls_epoch: int
    label: str
    plaintext: bytes
    header: pre.SnapshotHeader
    digest: bytes


def _decoded(item: m.SnapshotItem, node: str, directory: Directory) -> pre.SealedSnapshot:
    """The listed snapshot, decoded, of this account and matching its listing (its
    signature is checked by `_check_signature`)."""
    if item.snapshot is None:
        raise VerificationFailed("listing carries no snapshot", node)
    try:
        snapshot = pre.SealedSnapshot.from_bytes(item.snapshot)
    except pre.PreError as exc:
        raise VerificationFailed("snapshot does not decode", node) from exc
    h = snapshot.header
    if (h.label, h.key_epoch, h.group_id, h.kind, h.mls_epoch) != (
        item.label,
        item.key_epoch,
        item.group_id,
        item.kind,
        item.mls_epoch,
    ):
        raise VerificationFailed("listing metadata differs from the signed header", node)
    if h.account_id != directory.account.account_id:
        raise VerificationFailed("snapshot of another account", node)
    return snapshot


def _check_signature(
    snapshot: pre.SealedSnapshot, directory: Directory, node: str, now: int
) -> pre.DeviceCertificate:
    """The author's certificate, once the author's signature verifies. Its time is the
    author's claim: what the author's certificate is judged by is the receipts' times
    (`Confirm`); a time ahead of this device's clock is a lie no honest node stores."""
    h = snapshot.header
    if h.created_at > now + CLOCK_SKEW:
        raise VerificationFailed("snapshot is dated in the future", node)
    author = directory.certificate_at(h.author, h.created_at)
    try:
        snapshot.verify(author)
    except pre.PreError as exc:
        raise VerificationFailed("snapshot signature does not verify", node) from exc
    return author


def _decrypt(
    item: m.SnapshotItem,
    snapshot: pre.SealedSnapshot,
    author: pre.DeviceCertificate,
    node: str,
    keks: Mapping[tuple[str, int], pre.Kek],
    *,
    tree_hash: bytes | None = None,
    epoch_authenticator: bytes | None = None,
) -> OpenedSnapshot:
    h = snapshot.header
    kek = keks.get((h.label, h.key_epoch))
    if kek is None:
        raise NoKey(f"no key for {h.label} epoch {h.key_epoch}", node)
    try:
        plaintext = pre.open_snapshot(
            snapshot,
            kek,
            author,
            group_id=h.group_id,
            kind=h.kind,
            tree_hash=tree_hash,
            epoch_authenticator=epoch_authenticator,
        )
    except pre.PreError as exc:
        raise VerificationFailed(f"snapshot does not open: {exc}", node) from exc
    return OpenedSnapshot(
        seq=item.seq,
        group_id=h.group_id,
        kind=h.kind,
        mls_epoch=h.mls_epoch,
        label=h.label,
        plaintext=plaintext,
        header=h,
        digest=snapshot.digest,
    )


def check_not_purged(h: pre.SnapshotHeader, purges: Sequence[pre.PurgeEntry], node: str) -> None:
    for purge in purges:
        if (purge.group_id, purge.author) == (h.group_id, h.author) and (
            h.mls_epoch >= purge.from_epoch
        ):
            raise Purged(f"serves a snapshot the admin purged (epoch {h.mls_epoch})", node)


def open_item(
    item: m.SnapshotItem,
    *,
    node: str,
    directory: Directory,
    keks: Mapping[tuple[str, int], pre.Kek],
    state: SyncState,
    confirm: Confirm,
    now: int,
    commitments: Mapping[bytes, Commitments] | None = None,
    purges: Sequence[pre.PurgeEntry] = (),
) -> OpenedSnapshot | None:
    """Verify and open one listed snapshot. None: it is the snapshot the device already
    holds for that (group, kind). Raises Unconfirmed (fewer than M receipts back it),
    RollbackError / ForkError (two confirmed snapshots at one epoch: the author signed
    both) / NoKey / VerificationFailed.

    A piece of a tree chain (`tree_sync.is_tree_snapshot`) is history, not the group's
    latest state: an older one is opened, not refused as a rollback, and it is compared
    with the delivery service's epoch and tree hash only once the tree is rebuilt
    (`trees.TreeStore.settle`)."""
    snapshot = _decoded(item, node, directory)
    h = snapshot.header
    check_not_purged(h, purges, node)
    piece = is_tree_snapshot(h.kind, h.tree_hash)
    known = state.known.get((h.group_id, h.kind))
    if not piece and known is not None and snapshot.digest == known.digest:
        return None  # the very bytes the device verified before
    # before any epoch comparison: an unsigned lie is neither a rollback nor a fork
    author = _check_signature(snapshot, directory, node, now)
    if known is not None and h.mls_epoch < known.mls_epoch and not piece:
        raise RollbackError(f"group epoch went back from {known.mls_epoch} to {h.mls_epoch}", node)
    expected = (commitments or {}).get(h.group_id)
    if expected is not None and h.mls_epoch < expected.min_epoch and not piece:
        raise RollbackError(
            f"epoch {h.mls_epoch} is below the delivery service's {expected.min_epoch}", node
        )
    other_copy = _check_confirmed(snapshot, known, confirm, node)
    at_ds_epoch = expected is not None and h.mls_epoch == expected.min_epoch
    opened = _decrypt(
        item,
        snapshot,
        author,
        node,
        keks,
        tree_hash=expected.tree_hash if at_ds_epoch and expected and not piece else None,
        epoch_authenticator=expected.epoch_authenticator if at_ds_epoch and expected else None,
    )
    if other_copy:
        assert known is not None
        if known.content is not None and content_of(opened) == known.content:
            return None  # one publication sealed twice (a retry, a rotation): not a fork
        raise _fork(h, node)
    return opened


def open_tree_piece(
    item: m.SnapshotItem,
    *,
    node: str,
    directory: Directory,
    keks: Mapping[tuple[str, int], pre.Kek],
    state: SyncState,
    confirm: Confirm,
    now: int,
    purges: Sequence[pre.PurgeEntry] = (),
) -> OpenedSnapshot | None:
    """Verify and open one snapshot of a group's tree chain, fetched to rebuild the tree;
    None if it is not a tree piece. Raises Unconfirmed / ForkError / VerificationFailed."""
    snapshot = _decoded(item, node, directory)
    h = snapshot.header
    check_not_purged(h, purges, node)
    if not is_tree_snapshot(h.kind, h.tree_hash):
        return None
    author = _check_signature(snapshot, directory, node, now)
    known = state.known.get((h.group_id, h.kind))
    other_copy = _check_confirmed(snapshot, known, confirm, node)
    opened = _decrypt(item, snapshot, author, node, keks)
    if other_copy:
        assert known is not None
        if known.content is not None and content_of(opened) == known.content:
            return None
        raise _fork(h, node)
    return opened


def _check_confirmed(
    snapshot: pre.SealedSnapshot, known: Known | None, confirm: Confirm, node: str
) -> bool:
    """Raises Unconfirmed unless M receipts back it; True when it is another confirmed
    snapshot at the epoch the device holds (a fork, unless it says the same)."""
    h = snapshot.header
    if not confirm(h, snapshot.digest):
        newer = known is None or h.mls_epoch > known.mls_epoch
        raise Unconfirmed(
            f"{h.kind} at MLS epoch {h.mls_epoch} is not confirmed by enough nodes' receipts",
            node,
            newer=newer,
        )
    return known is not None and h.mls_epoch == known.mls_epoch and snapshot.digest != known.digest


def _fork(h: pre.SnapshotHeader, node: str) -> ForkError:
    return ForkError(
        f"two confirmed snapshots with different content claim MLS epoch {h.mls_epoch} "
        f"(author {h.author.hex()})",
        node,
    )


def content_of(opened: OpenedSnapshot) -> bytes:
    """What the snapshot says (`pre.content_hash`): equal for two seals of one publication."""
    h = opened.header
    return pre.content_hash(h.label, opened.plaintext, h.tree_hash, h.epoch_authenticator_hash)


def check_commitments(state: SyncState, commitments: Mapping[bytes, Commitments] | None) -> None:
    """After a read: every (group, kind) the device holds of a group the delivery service
    named must be at or above its epoch, or the nodes are holding the device back."""
    newest: dict[tuple[bytes, str], int] = {}
    for (group_id, kind), known in state.known.items():
        # A tree's base and patches are one chain: the newer of the two is the tree's epoch.
        key = (group_id, BASE_KIND if kind in TREE_KINDS else kind)
        newest[key] = max(newest.get(key, -1), known.mls_epoch)
    for (group_id, kind), epoch in newest.items():
        expected = (commitments or {}).get(group_id)
        if expected is not None and epoch < expected.min_epoch:
            raise RollbackError(
                f"the nodes hold {kind} of a group only up to epoch {epoch}, "
                f"below the delivery service's {expected.min_epoch}"
            )
