"""Checking a ratchet tree as a joiner must (RFC 9420 §7.3, §7.9.2, §12.4.3.1).

Failures are answers, not exceptions: `*_failures` list what does not verify,
`verify_*` say whether everything does.
"""

from __future__ import annotations

from . import tree_math
from .hashes import original_sibling_tree_hash, parent_hash, tree_hashes
from .structs import LeafNode, ParentNode
from .suites import CipherSuite
from .tree import RatchetTree

__all__ = [
    "LEAF_NODE_LABEL",
    "parent_hash_failures",
    "signature_failures",
    "verify_leaf_signature",
    "verify_leaf_signatures",
    "verify_parent_hashes",
]

LEAF_NODE_LABEL = "LeafNodeTBS"


def verify_leaf_signature(
    suite: CipherSuite, leaf: LeafNode, group_id: bytes, leaf_index: int
) -> bool:
    """`VerifyWithLabel(signature_key, "LeafNodeTBS", LeafNodeTBS, signature)` (§7.2)."""
    return suite.verify_with_label(
        leaf.signature_key, LEAF_NODE_LABEL, leaf.tbs(group_id, leaf_index), leaf.signature
    )


def signature_failures(tree: RatchetTree, suite: CipherSuite, group_id: bytes) -> list[int]:
    """Leaf indices of the non-blank leaves whose signature does not verify."""
    return [i for i, leaf in tree.members() if not verify_leaf_signature(suite, leaf, group_id, i)]


def verify_leaf_signatures(tree: RatchetTree, suite: CipherSuite, group_id: bytes) -> bool:
    return not signature_failures(tree, suite, group_id)


def parent_hash_failures(tree: RatchetTree, suite: CipherSuite) -> list[int]:
    """Node indices of the non-blank parents that are not parent-hash valid (§7.9.2).

    Top down: a parent P with children C and S is linked from a node D when D is in C's
    resolution, D's `parent_hash` is P's parent hash with copath child S, and P's unmerged
    leaves under C are exactly C's resolution without D. Each non-blank parent needs
    exactly one such D; as every parent is checked, each chains down to a leaf.
    """
    hashes = tree_hashes(tree, suite)
    resolutions = tree.resolutions()
    failures = []
    for x, node in enumerate(tree.nodes):
        if not isinstance(node, ParentNode):
            continue
        links = 0
        lo, hi = tree_math.left(x), tree_math.right(x)
        for child, other in ((lo, hi), (hi, lo)):
            original = original_sibling_tree_hash(tree, suite, other, node.unmerged_leaves, hashes)
            expected = parent_hash(suite, node, original)
            under = tree_math.subtree_leaves(child)
            unmerged_here = {2 * leaf for leaf in node.unmerged_leaves if leaf in under}
            covering = set(resolutions[child])
            for d in resolutions[child]:
                below = tree.nodes[d]
                assert below is not None
                if below.parent_hash == expected and unmerged_here == covering - {d}:
                    links += 1
        if links != 1:
            failures.append(x)
    return failures


def verify_parent_hashes(tree: RatchetTree, suite: CipherSuite) -> bool:
    return not parent_hash_failures(tree, suite)
