"""Shape statistics of a ratchet tree, for sizing commits and cache entries."""

from __future__ import annotations

from dataclasses import dataclass

from . import tree_math
from .tree import RatchetTree

__all__ = ["TreeStats", "tree_stats"]


@dataclass(frozen=True, slots=True)
class TreeStats:
    """`n_leaves` counts leaf slots of the complete tree (blank ones too); `n_members` the
    non-blank leaves. `mean_copath_resolution` is the mean, over members, of the summed
    resolution sizes of the member's copath: the number of HPKE encryptions of path
    secrets a full commit from that leaf needs (RFC 9420 §7.5, §7.6)."""

    n_leaves: int
    n_members: int
    blank_leaf_ratio: float
    blank_parent_ratio: float
    mean_copath_resolution: float


def tree_stats(tree: RatchetTree) -> TreeStats:
    n_leaves = tree.n_leaves
    nodes = tree.nodes
    sizes = [len(r) for r in tree.resolutions()]
    members = [x for x in range(0, len(nodes), 2) if nodes[x] is not None]
    blank_parents = sum(1 for x in range(1, len(nodes), 2) if nodes[x] is None)
    copath_total = sum(sizes[s] for x in members for s in tree_math.copath(x, n_leaves))
    return TreeStats(
        n_leaves=n_leaves,
        n_members=len(members),
        blank_leaf_ratio=(n_leaves - len(members)) / n_leaves,
        blank_parent_ratio=blank_parents / (n_leaves - 1) if n_leaves > 1 else 0.0,
        mean_copath_resolution=copath_total / len(members) if members else 0.0,
    )
