"""The multi-device flow with mls-rs: one leaf per device; Welcomes travel without the tree.

    # the committer (a device already in the group), once per group it adds a device to:
    out = group.add_members([key_package])
    group.process_incoming_message(out.commit_message)   # mls-rs applies its own commit
    group.write_to_storage()
    await sc.publish([commit_tree(store, group, group_id)])  # only the committer does this
    deliver(out.welcome_message, group_id, epoch)         # the Welcome, without the tree

    # the new device, told (group id, epoch) by whatever delivered the Welcome:
    joined = await join_all(sc, client, [Welcome(group_id, epoch, welcome_bytes), ...])

mls-rs's Python bindings cannot read a Welcome's group id or epoch, so the delivery names
them; a wrong pair costs nothing: the tree served for it does not match the Welcome's
GroupContext and mls-rs refuses it (`JoinFailed`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import mls_rs_uniffi as mls

from client_sdk.device import Statecache
from client_sdk.errors import StatecacheError, TreeUnavailable
from client_sdk.mls.tree import RatchetTree
from client_sdk.trees import TreeInput

from .store import StatecacheStore

__all__ = ["CIPHER_SUITE", "JoinFailed", "JoinReport", "Welcome", "commit_tree", "join_all"]

# The only cipher suite the bindings offer: MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519.
CIPHER_SUITE = 1


class JoinFailed(StatecacheError):
    """mls-rs refused a Welcome with the tree statecache served for (group, epoch): the
    Welcome is for another group or epoch than its delivery said, or it is damaged. The
    tree itself was verified (author-signed, M-confirmed, its hash as signed)."""

    def __init__(self, group_id: bytes, mls_epoch: int, reason: str) -> None:
        self.group_id = group_id
        self.mls_epoch = mls_epoch
        super().__init__(
            f"mls-rs refused the Welcome for group {group_id.hex()} at epoch {mls_epoch} "
            f"with the cached tree ({reason}): check the group id and epoch it was sent with"
        )


@dataclass(frozen=True)
class Welcome:
    """A Welcome message as delivered: its bytes, and the group and epoch it is for."""

    group_id: bytes
    mls_epoch: int
    message: bytes


@dataclass
class JoinReport:
    """What `join_all` did: the groups joined; those whose tree no node serves at the
    Welcome's epoch (`unavailable`: group -> epoch; not published yet, or older than the
    nodes keep: `unavailable_reason` says which for the first, retry later); those whose
    Welcome mls-rs refused with the verified tree (`refused`); and the seconds spent in
    statecache (fetching and verifying trees) and in mls-rs (joining)."""

    groups: dict[bytes, mls.Group] = field(default_factory=dict)
    unavailable: dict[bytes, int] = field(default_factory=dict)
    unavailable_reason: str = ""
    refused: dict[bytes, JoinFailed] = field(default_factory=dict)
    tree_seconds: float = 0.0
    join_seconds: float = 0.0
    tree_bytes: int = 0

    @property
    def complete(self) -> bool:
        return not self.unavailable and not self.refused


def commit_tree(store: StatecacheStore, group: mls.Group, group_id: bytes) -> TreeInput:
    """The group's tree at its current epoch, to publish: call it after the commit was
    applied and written (`process_incoming_message` of the device's own commit, then
    `write_to_storage`). Only the committer publishes an epoch's tree: two devices
    publishing one epoch would be two snapshots at one epoch, a fork readers refuse."""
    epoch = store.epoch_of(group_id)
    if epoch is None:
        raise ValueError(f"group {group_id.hex()} was never written to this store")
    tree = RatchetTree.from_bytes(group.export_tree().bytes)
    return TreeInput(group_id, epoch, tree, CIPHER_SUITE)


async def join_all(sc: Statecache, client: mls.Client, welcomes: Sequence[Welcome]) -> JoinReport:
    """Join every group a Welcome is for, with trees fetched from statecache in one read
    (`Statecache.trees_at`), then written to the client's store. A group that cannot be
    joined now does not hold up the others: it is in `unavailable` or `refused`."""
    report = JoinReport()
    started = time.perf_counter()
    try:
        trees = await sc.trees_at({w.group_id: w.mls_epoch for w in welcomes})
    except TreeUnavailable as exc:
        trees = exc.available
        report.unavailable = dict(exc.missing)
        report.unavailable_reason = str(exc)
    report.tree_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for w in welcomes:
        tree = trees.get(w.group_id)
        if tree is None:
            continue
        report.tree_bytes += len(tree)
        try:
            info = client.join_group(mls.RatchetTree(bytes=tree), mls.Message.from_bytes(w.message))
        except mls.Error as exc:
            report.refused[w.group_id] = JoinFailed(w.group_id, w.mls_epoch, _reason(exc))
            continue
        info.group.write_to_storage()
        report.groups[w.group_id] = info.group
    report.join_seconds = time.perf_counter() - started
    return report


def _reason(exc: BaseException) -> str:
    text = str(exc).removeprefix("A mls-rs error occurred: ")
    return " ".join(text.split())[:200] or type(exc).__name__
