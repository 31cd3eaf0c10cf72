"""Retained snapshots are history. A node set to keep R > 1 snapshots per (group, kind)
(`STATECACHE_RETAIN`) lists the older ones beside the newest; one read must not take
them for a rollback, deliver them, or blame the node that keeps them.

The rule is per node: a snapshot below the newest one the same node lists for that
(group, kind) in this read (in its metadata listing, or served so far) is history. A node
that lists only an older one than the device holds is judged as before (behind, and a
rollback if no node serves what the device holds): history needs the newer one beside it.

A tree is one chain of two kinds (`tree_sync.TREE_KINDS`) rebuilt from its newest base and
the patches after it, so for both kinds the newest base the node lists is the line: nodes
keep a window of older bases and their patches (for Welcomes of older epochs), and a read
fetches none of them. A patch above that base is never history, whatever its order.
"""

from __future__ import annotations

from collections.abc import Iterable

from cache_service.protocol import models as m

from .tree_sync import BASE_KIND, TREE_KINDS

__all__ = ["History"]


class History:
    """The newest MLS epoch each node listed per (group, kind) in one read."""

    def __init__(self) -> None:
        self._newest: dict[tuple[str, bytes, str], int] = {}

    def note(self, node: str, items: Iterable[m.SnapshotItem]) -> None:
        for item in items:
            key = (node, item.group_id, item.kind)
            if item.mls_epoch > self._newest.get(key, -1):
                self._newest[key] = item.mls_epoch

    def older(self, node: str, item: m.SnapshotItem) -> bool:
        """Whether `node` lists a newer snapshot of the item's (group, kind) in this read
        (for a tree piece: a newer base of its group)."""
        kind = BASE_KIND if item.kind in TREE_KINDS else item.kind
        return item.mls_epoch < self._newest.get((node, item.group_id, kind), -1)
