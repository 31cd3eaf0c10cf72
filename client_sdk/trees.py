"""The ratchet tree a device holds per group: the newest one it published or rebuilt.

Publishing: `TreeStore.prepare` turns a `TreeInput` into a base or a patch against the tree
the device holds for the group (`tree_sync.plan`); once M nodes stored it, `commit` makes
it the group's tree. A device that holds no tree for a group (first publication, or a new
process: trees live in memory only) publishes a base.

Reading: `collect` keeps the verified tree snapshots a read opens instead of yielding
them; after the read, the reader rebuilds every group whose chain moved (`target`,
`reach`: checked against the signed tree hashes by `tree_sync.rebuild` and the device's
memory of epochs) and `accept`s it against the caller's GroupContext. When the pieces the
read brought do not reach the newest epoch (no tree held for the group yet, a resumed
onboarding, a node that left a patch out), the reader fetches the group's chain from the
nodes and `add_pieces` until they do. A tree at one given epoch (for a Welcome sent
without it) is rebuilt by `at` from such chains, cut at that epoch. Nothing here talks to
a node.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import pre

from .errors import ForkError, RollbackError, TreeMismatch, VerificationFailed
from .mls.stats import TreeStats, tree_stats
from .mls.suites import CipherSuite
from .mls.tree import RatchetTree
from .state import SyncState
from .tree_sync import (
    BASE_KIND,
    TREE_KINDS,
    TreePiece,
    TreePolicy,
    TreeVersion,
    is_tree_snapshot,
    plan,
    rebuild,
)
from .verify import Commitments, OpenedSnapshot

__all__ = ["OpenedTree", "Pieces", "TreeInput", "TreeStore", "add_pieces"]

ACCOUNT_LABEL = "account"

Pieces = dict[tuple[str, int], OpenedSnapshot]


@dataclass(frozen=True)
class TreeInput:
    """A group's ratchet tree at an MLS epoch, to publish as a base or a patch. The
    header's tree hash is the tree's (RFC 9420 §7.8, with `cipher_suite`'s hash)."""

    group_id: bytes
    mls_epoch: int
    tree: RatchetTree
    cipher_suite: CipherSuite | int
    label: str = ACCOUNT_LABEL
    epoch_authenticator: bytes | None = None


@dataclass(frozen=True)
class OpenedTree:
    """A group's ratchet tree, rebuilt from its newest base and the `patches` after it
    and verified against the tree hash the author signed (and the caller's, if given)."""

    group_id: bytes
    mls_epoch: int
    label: str
    tree: RatchetTree
    tree_hash: bytes
    base_epoch: int
    patches: int
    header: pre.SnapshotHeader  # of the newest snapshot in the chain

    @property
    def kind(self) -> str:
        return BASE_KIND

    @cached_property
    def stats(self) -> TreeStats:
        return tree_stats(self.tree)


@dataclass
class TreeStore:
    policy: TreePolicy = field(default_factory=TreePolicy)
    _versions: dict[bytes, TreeVersion] = field(default_factory=dict)
    _pending: dict[bytes, Pieces] = field(default_factory=dict)

    def get(self, group_id: bytes) -> TreeVersion | None:
        return self._versions.get(group_id)

    def trees(self) -> dict[bytes, RatchetTree]:
        return {g: v.tree.tree for g, v in self._versions.items()}

    # publishing

    def prepare(
        self, item: TreeInput, provisional: dict[bytes, TreeVersion]
    ) -> tuple[str, bytes, TreeVersion] | None:
        """(kind, plaintext, version) to publish, or None if the device already holds this
        very tree at this epoch. `provisional` holds the versions this batch made so far."""
        current = provisional.get(item.group_id) or self._versions.get(item.group_id)
        if current is not None and (current.mls_epoch, current.tree.tree) == (
            item.mls_epoch,
            item.tree,
        ):
            return None
        kind, data, version = plan(
            current, item.mls_epoch, item.tree, item.cipher_suite, self.policy
        )
        provisional[item.group_id] = version
        return kind, data, version

    def commit(self, group_id: bytes, version: TreeVersion) -> None:
        """`version` is stored on M nodes: it is the group's tree from now on."""
        current = self._versions.get(group_id)
        if current is None or version.mls_epoch >= current.mls_epoch:
            self._versions[group_id] = version

    # reading

    def collect(self, snap: OpenedSnapshot) -> bool:
        """Keep `snap` for `settle` if it is a piece of a tree chain."""
        if not is_tree_snapshot(snap.kind, snap.header.tree_hash):
            return False
        _add(self._pending.setdefault(snap.group_id, {}), snap)
        return True

    def take_pending(self) -> dict[bytes, Pieces]:
        """The pieces the last read collected, by group; the store forgets them."""
        pending, self._pending = self._pending, {}
        return pending

    def keep_pending(self, group_id: bytes, pieces: Pieces) -> None:
        """A group that did not settle: its pieces wait for the next read."""
        self._pending[group_id] = pieces

    def target(self, group_id: bytes, pieces: Pieces, state: SyncState) -> int | None:
        """The epoch a rebuilt tree must reach, or None when the held tree is as new."""
        current = self._versions.get(group_id)
        known = [state.known[(group_id, k)].mls_epoch for k in TREE_KINDS
                 if (group_id, k) in state.known]  # fmt: skip
        target = max([epoch for _, epoch in pieces] + known)
        return None if current is not None and current.mls_epoch >= target else target

    def reach(self, group_id: bytes, pieces: Pieces, target: int) -> TreeVersion:
        """The tree `pieces` rebuild, from the held tree or else from their newest base
        alone; `RollbackError` when they do not reach `target`."""
        current = self._versions.get(group_id)
        version = _first_reach(pieces, current, target)
        if version is None:
            return _reach(pieces, current, target)  # raises, naming how far it got
        return version

    def at(self, group_id: bytes, pieces: Pieces, mls_epoch: int) -> TreeVersion:
        """The tree at exactly `mls_epoch` (a Welcome's): the pieces up to that epoch
        rebuilt from the held tree when it is older, else from their newest base at or
        below it; its hash is the one the author signed for that epoch. `RollbackError`
        when they fall short of it, `TreeMismatch` when they do not chain."""
        upto = {key: snap for key, snap in pieces.items() if key[1] <= mls_epoch}
        current = self._versions.get(group_id)
        held = current if current is not None and current.mls_epoch <= mls_epoch else None
        version = _first_reach(upto, held, mls_epoch) or _reach(upto, None, mls_epoch)
        signed = upto.get((version.kind, mls_epoch))
        if (
            version.mls_epoch != mls_epoch
            or signed is None
            or not hmac.compare_digest(signed.header.tree_hash or b"", version.tree.tree_hash)
        ):  # rebuild checks this already; this is the promise tree_at makes
            raise TreeMismatch(f"the tree of epoch {mls_epoch} differs from its signed hash")
        return version

    def accept(
        self,
        group_id: bytes,
        version: TreeVersion,
        pieces: Pieces,
        commitments: Mapping[bytes, Commitments] | None,
    ) -> OpenedTree:
        """`version` is the group's tree once it matches the delivery service's tree hash
        (when that names this epoch)."""
        expected = (commitments or {}).get(group_id)
        if (
            expected is not None
            and expected.tree_hash is not None
            and version.mls_epoch == expected.min_epoch
            and not hmac.compare_digest(version.tree.tree_hash, expected.tree_hash)
        ):
            raise TreeMismatch(
                f"the tree of epoch {version.mls_epoch} differs from the group's tree hash"
            )
        self._versions[group_id] = version
        newest = pieces[(version.kind, version.mls_epoch)]
        return OpenedTree(
            group_id=group_id,
            mls_epoch=version.mls_epoch,
            label=newest.label,
            tree=version.tree.tree,
            tree_hash=version.tree.tree_hash,
            base_epoch=version.base_epoch,
            patches=version.chain_length,
            header=newest.header,
        )


def add_pieces(pieces: Pieces, more: list[OpenedSnapshot]) -> None:
    """Another node's verified chain joins `pieces`; two snapshots at one epoch: fork."""
    for snap in more:
        _add(pieces, snap)


def _add(pieces: Pieces, snap: OpenedSnapshot) -> None:
    key = (snap.kind, snap.mls_epoch)
    held = pieces.get(key)
    if held is not None and held.digest != snap.digest:
        if (held.label, held.plaintext, held.header.tree_hash) == (
            snap.label, snap.plaintext, snap.header.tree_hash,
        ):  # fmt: skip
            return  # one piece sealed twice (a retry, a rotation): not a fork
        raise ForkError(f"two snapshots claim MLS epoch {snap.mls_epoch} of a {snap.kind}")
    # A base and a patch at one epoch must make the same tree (a device that restarted
    # publishes a base where another published a patch); two trees at one epoch: a fork.
    for kind in TREE_KINDS:
        other = pieces.get((kind, snap.mls_epoch))
        if (
            kind != snap.kind
            and other is not None
            and other.header.tree_hash != snap.header.tree_hash
        ):
            raise ForkError(f"a base and a patch at MLS epoch {snap.mls_epoch} make two trees")
    pieces[key] = snap


def _reach(pieces: Pieces, start: TreeVersion | None, target: int) -> TreeVersion:
    version = rebuild(
        (
            TreePiece(s.mls_epoch, s.kind, s.header.tree_hash or b"", s.plaintext)
            for s in pieces.values()
        ),
        start,
    )
    if version.mls_epoch < target:
        raise RollbackError(
            f"the tree chain reaches epoch {version.mls_epoch}, below the known {target}"
        )
    return version


def _first_reach(pieces: Pieces, current: TreeVersion | None, target: int) -> TreeVersion | None:
    """From the held tree, else from the newest base alone."""
    for start in (current, None) if current is not None else (None,):
        try:
            return _reach(pieces, start, target)
        except VerificationFailed:
            continue
    return None
