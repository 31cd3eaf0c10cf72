"""Shape statistics of a ratchet tree, for sizing commits and cache entries."""

from __future__ import annotations

from dataclasses import dataclass

from . import tree_math
from .structs import ParentNode
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
    """One bottom-up pass, O(nodes). Node `s` lies on the copath of every member under its
    sibling, so the copath resolutions summed over members are the sum, over non-root
    nodes, of |resolution(s)| x (members under the sibling of s)."""
    n_leaves = tree.n_leaves
    nodes = tree.nodes
    resolution = [0] * len(nodes)  # sizes only (§4.1.1)
    members_under = [0] * len(nodes)
    for x in range(0, len(nodes), 2):
        if nodes[x] is not None:
            resolution[x] = members_under[x] = 1
    for k in range(1, tree_math.level(tree.root) + 1):
        half = 1 << (k - 1)
        for x in range((1 << k) - 1, len(nodes), 1 << (k + 1)):
            node = nodes[x]
            members_under[x] = members_under[x - half] + members_under[x + half]
            if isinstance(node, ParentNode):
                resolution[x] = 1 + len(node.unmerged_leaves)
            else:
                resolution[x] = resolution[x - half] + resolution[x + half]
    copath_total = 0
    for x in range(len(nodes)):
        if x != tree.root:
            sibling = x ^ (1 << (tree_math.level(x) + 1))
            copath_total += resolution[x] * members_under[sibling]
    n_members = members_under[tree.root]
    blank_parents = sum(1 for x in range(1, len(nodes), 2) if nodes[x] is None)
    return TreeStats(
        n_leaves=n_leaves,
        n_members=n_members,
        blank_leaf_ratio=(n_leaves - n_members) / n_leaves,
        blank_parent_ratio=blank_parents / (n_leaves - 1) if n_leaves > 1 else 0.0,
        mean_copath_resolution=copath_total / n_members if n_members else 0.0,
    )
