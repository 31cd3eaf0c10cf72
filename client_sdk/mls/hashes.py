"""Tree hashes (RFC 9420 §7.8) and parent hashes (§7.9), with the suite's `Hash`."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

from . import tree_math
from .codec import Writer
from .structs import LeafNode, NodeType, ParentNode
from .suites import CipherSuite
from .tree import RatchetTree

__all__ = [
    "leaf_tree_hash",
    "original_sibling_tree_hash",
    "parent_hash",
    "parent_tree_hash",
    "tree_hash",
    "tree_hashes",
]


def leaf_tree_hash(suite: CipherSuite, leaf_index: int, leaf: LeafNode | None) -> bytes:
    """Hash of `TreeHashInput` carrying a `LeafNodeHashInput`."""
    w = Writer()
    w.u8(NodeType.LEAF)
    w.u32(leaf_index)
    w.optional(leaf, lambda iw, n: n._write(iw))
    return suite.hash(w.getvalue())


def parent_tree_hash(
    suite: CipherSuite, node: ParentNode | None, left_hash: bytes, right_hash: bytes
) -> bytes:
    """Hash of `TreeHashInput` carrying a `ParentNodeHashInput`."""
    w = Writer()
    w.u8(NodeType.PARENT)
    w.optional(node, lambda iw, n: n._write(iw))
    w.opaque(left_hash)
    w.opaque(right_hash)
    return suite.hash(w.getvalue())


def tree_hashes(tree: RatchetTree, suite: CipherSuite) -> list[bytes]:
    """The tree hash of every node, leaves to root, each subtree hashed once."""
    nodes = tree.nodes
    out = [b""] * len(nodes)
    for x in range(0, len(nodes), 2):
        leaf = nodes[x]
        assert leaf is None or isinstance(leaf, LeafNode)
        out[x] = leaf_tree_hash(suite, x // 2, leaf)
    for k in range(1, tree_math.level(tree.root) + 1):
        half = 1 << (k - 1)
        for x in range((1 << k) - 1, len(nodes), 1 << (k + 1)):
            node = nodes[x]
            assert node is None or isinstance(node, ParentNode)
            out[x] = parent_tree_hash(suite, node, out[x - half], out[x + half])
    return out


def tree_hash(tree: RatchetTree, suite: CipherSuite) -> bytes:
    """The root's tree hash, as carried in the GroupContext."""
    return tree_hashes(tree, suite)[tree.root]


def original_sibling_tree_hash(
    tree: RatchetTree,
    suite: CipherSuite,
    sibling: int,
    unmerged_leaves: Collection[int],
    hashes: list[bytes] | None = None,
) -> bytes:
    """Tree hash of `sibling` with `unmerged_leaves` blanked and dropped from every
    `unmerged_leaves` below it (§7.9). `hashes` (from `tree_hashes`) are reused for
    subtrees that hold none of those leaves."""
    if hashes is None:
        hashes = tree_hashes(tree, suite)
    removed = frozenset(unmerged_leaves)

    def walk(x: int) -> bytes:
        under = tree_math.subtree_leaves(x)
        if not any(leaf in under for leaf in removed):
            return hashes[x]
        if x % 2 == 0:
            return leaf_tree_hash(suite, x // 2, None)
        node = tree.nodes[x]
        if node is not None:
            assert isinstance(node, ParentNode)
            kept = tuple(leaf for leaf in node.unmerged_leaves if leaf not in removed)
            node = replace(node, unmerged_leaves=kept)
        return parent_tree_hash(suite, node, walk(tree_math.left(x)), walk(tree_math.right(x)))

    return walk(sibling)


def parent_hash(suite: CipherSuite, parent: ParentNode, original_sibling_hash: bytes) -> bytes:
    """Hash of `ParentHashInput` (§7.9): what a child of `parent` carries as `parent_hash`."""
    w = Writer()
    w.opaque(parent.encryption_key)
    w.opaque(parent.parent_hash)
    w.opaque(original_sibling_hash)
    return suite.hash(w.getvalue())
