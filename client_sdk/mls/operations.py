"""Changing a ratchet tree: extend, truncate, and the Add / Update / Remove proposals
(RFC 9420 §7.7, §12.1.1-§12.1.3, §12.3).

Every function returns a new `RatchetTree`. A proposal that names a leaf the tree cannot
serve (a blank or absent sender, removing a blank leaf) raises `MlsTreeError`. Only the
tree changes are made here; checking the carried leaf nodes is `validation`'s job.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from . import tree_math
from .errors import MlsTreeError
from .proposals import Add, Proposal, Remove, Update
from .structs import LeafNode, Node, ParentNode
from .tree import RatchetTree

__all__ = [
    "add_leaf",
    "apply_proposal",
    "apply_proposals",
    "extend",
    "remove_leaf",
    "truncate",
    "update_leaf",
]


def extend(tree: RatchetTree) -> RatchetTree:
    """Double the width: a blank root over the old tree and an all-blank right subtree."""
    return RatchetTree((*tree.nodes, *([None] * (len(tree.nodes) + 1))))


def truncate(tree: RatchetTree) -> RatchetTree:
    """Drop right halves that hold no non-blank leaf (§7.7), down to one leaf at least."""
    nodes = tree.nodes
    while len(nodes) > 1:
        half = (len(nodes) - 1) // 2
        if any(nodes[x] is not None for x in range(half + 1, len(nodes), 2)):
            break
        nodes = nodes[:half]
    return tree if nodes is tree.nodes else RatchetTree(nodes)


def _blank_direct_path(nodes: list[Node | None], leaf_index: int, n_leaves: int) -> None:
    for p in tree_math.direct_path(2 * leaf_index, n_leaves):
        nodes[p] = None


def _occupied_leaf(tree: RatchetTree, leaf_index: int, role: str) -> None:
    if not 0 <= leaf_index < tree.n_leaves or tree.nodes[2 * leaf_index] is None:
        raise MlsTreeError(f"{role} {leaf_index} is not a member of the tree")


def add_leaf(tree: RatchetTree, leaf: LeafNode) -> tuple[RatchetTree, int]:
    """Place `leaf` in the leftmost blank leaf, extending if there is none (§12.1.1), and
    list it as unmerged at every non-blank node above it. Returns the tree and leaf index."""
    free = next((x for x in range(0, len(tree.nodes), 2) if tree.nodes[x] is None), None)
    if free is None:
        free = len(tree.nodes) + 1
        tree = extend(tree)
    leaf_index = free // 2
    nodes = list(tree.nodes)
    for p in tree_math.direct_path(free, tree.n_leaves):
        node = nodes[p]
        if isinstance(node, ParentNode):
            unmerged = tuple(sorted((*node.unmerged_leaves, leaf_index)))
            nodes[p] = replace(node, unmerged_leaves=unmerged)
    nodes[free] = leaf
    return RatchetTree(tuple(nodes)), leaf_index


def update_leaf(tree: RatchetTree, leaf_index: int, leaf: LeafNode) -> RatchetTree:
    """Replace the sender's leaf and blank its direct path (§12.1.2)."""
    _occupied_leaf(tree, leaf_index, "update sender")
    nodes = list(tree.nodes)
    nodes[2 * leaf_index] = leaf
    _blank_direct_path(nodes, leaf_index, tree.n_leaves)
    return RatchetTree(tuple(nodes))


def remove_leaf(tree: RatchetTree, leaf_index: int) -> RatchetTree:
    """Blank the leaf and its direct path, then truncate (§12.1.3)."""
    _occupied_leaf(tree, leaf_index, "removed leaf")
    nodes = list(tree.nodes)
    nodes[2 * leaf_index] = None
    _blank_direct_path(nodes, leaf_index, tree.n_leaves)
    return truncate(RatchetTree(tuple(nodes)))


def _apply(tree: RatchetTree, proposal: Proposal, sender: int) -> RatchetTree:
    if isinstance(proposal, Add):
        return add_leaf(tree, proposal.key_package.leaf_node)[0]
    if isinstance(proposal, Update):
        return update_leaf(tree, sender, proposal.leaf_node)
    if isinstance(proposal, Remove):
        return remove_leaf(tree, proposal.removed)
    raise TypeError(f"not a proposal: {type(proposal).__name__}")


def apply_proposal(tree: RatchetTree, proposal: Proposal, sender: int) -> RatchetTree:
    """Apply one proposal sent by the member at leaf `sender`."""
    _occupied_leaf(tree, sender, "proposal sender")
    return _apply(tree, proposal, sender)


def apply_proposals(tree: RatchetTree, proposals: Iterable[tuple[Proposal, int]]) -> RatchetTree:
    """Apply `(proposal, sender)` pairs in §12.3's order: updates, removes, then adds in
    list order. Senders must be members of the tree the proposals were made for."""
    items = list(proposals)
    for _, sender in items:
        _occupied_leaf(tree, sender, "proposal sender")
    for kind in (Update, Remove, Add):
        for proposal, sender in items:
            if isinstance(proposal, kind):
                tree = _apply(tree, proposal, sender)
    return tree
