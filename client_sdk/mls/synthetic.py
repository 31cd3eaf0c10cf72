"""Realistic, fully valid synthetic ratchet trees for benchmarks and tests.

`synthetic_tree` replays a plausible group history on a mutable array: members join from
key packages, a share of them commit (blanking their direct path, putting fresh keys of
the suite's KEM on the filtered direct path and chaining parent hashes down to a
re-signed `commit` leaf, RFC 9420 §7.5, §7.9), removed members leave blank leaves, and
late joiners end up unmerged at the non-blank nodes above them (§12.1.1). Keys are real
and drawn from `rng`, so a seed reproduces the tree byte for byte; every signature and
parent hash verifies. Tree hashes are cached per node and invalidated along changed paths,
so a 1,000-member tree takes a fraction of a second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from . import tree_math
from .hashes import leaf_tree_hash, parent_hash, parent_tree_hash
from .structs import (
    Capabilities,
    Credential,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    Node,
    ParentNode,
)
from .suites import CipherSuite, SigningKey, cipher_suite
from .tree import RatchetTree
from .validation import LEAF_NODE_LABEL

__all__ = ["SYNTHETIC_GROUP_ID", "synthetic_tree"]

SYNTHETIC_GROUP_ID = b"statecache synthetic group"
_NOT_BEFORE = 1_700_000_000
_LIFETIME = 90 * 24 * 3600


@dataclass
class _Builder:
    """A mutable complete tree with per-node tree-hash cache and member counts."""

    suite: CipherSuite
    group_id: bytes
    rng: random.Random
    nodes: list[Node | None]
    hashes: list[bytes | None]
    members_under: list[int]
    keys: dict[int, SigningKey]

    @classmethod
    def empty(
        cls, suite: CipherSuite, group_id: bytes, rng: random.Random, n_leaves: int
    ) -> _Builder:
        width = tree_math.node_width(n_leaves)
        return cls(suite, group_id, rng, [None] * width, [None] * width, [0] * width, {})

    @property
    def n_leaves(self) -> int:
        return (len(self.nodes) + 1) // 2

    def _touch(self, x: int) -> None:
        self.hashes[x] = None
        for p in tree_math.direct_path(x, self.n_leaves):
            self.hashes[p] = None

    def tree_hash(self, x: int) -> bytes:
        cached = self.hashes[x]
        if cached is not None:
            return cached
        node = self.nodes[x]
        if isinstance(node, ParentNode) or (node is None and x % 2):
            left = self.tree_hash(tree_math.left(x))
            digest = parent_tree_hash(self.suite, node, left, self.tree_hash(tree_math.right(x)))
        else:
            assert node is None or isinstance(node, LeafNode)
            digest = leaf_tree_hash(self.suite, x // 2, node)
        self.hashes[x] = digest
        return digest

    def _leaf(self, leaf_index: int, source: LeafNodeSource, parent_hash: bytes = b"") -> LeafNode:
        key = self.keys[leaf_index]
        unsigned = LeafNode(
            encryption_key=self.suite.random_hpke_public_key(self.rng),
            signature_key=key.public,
            credential=Credential.basic(b"member-%d@synthetic.example" % leaf_index),
            capabilities=Capabilities(cipher_suites=(self.suite.suite_id,)),
            leaf_node_source=source,
            lifetime=(
                Lifetime(_NOT_BEFORE, _NOT_BEFORE + _LIFETIME)
                if source is LeafNodeSource.KEY_PACKAGE
                else None
            ),
            parent_hash=parent_hash,
        )
        tbs = unsigned.tbs(self.group_id, leaf_index)
        return replace(unsigned, signature=self.suite.sign_with_label(key, LEAF_NODE_LABEL, tbs))

    def join(self, leaf_index: int) -> None:
        """Add a member from a key package (§12.1.1), unmerged wherever a key sits above."""
        self.keys[leaf_index] = self.suite.generate_signing_key(self.rng)
        x = 2 * leaf_index
        self.nodes[x] = self._leaf(leaf_index, LeafNodeSource.KEY_PACKAGE)
        for p in tree_math.direct_path(x, self.n_leaves):
            node = self.nodes[p]
            if isinstance(node, ParentNode):
                unmerged = tuple(sorted((*node.unmerged_leaves, leaf_index)))
                self.nodes[p] = replace(node, unmerged_leaves=unmerged)
            self.members_under[p] += 1
        self.members_under[x] = 1
        self._touch(x)

    def commit(self, leaf_index: int) -> None:
        """Apply a full UpdatePath from `leaf_index` (§7.5, §7.9)."""
        x = 2 * leaf_index
        path = tree_math.direct_path(x, self.n_leaves)
        copath = tree_math.copath(x, self.n_leaves)
        for p in path:
            self.nodes[p] = None
        self._touch(x)
        chain = b""
        for p, s in reversed(
            [(p, s) for p, s in zip(path, copath, strict=True) if self.members_under[s]]
        ):
            node = ParentNode(self.suite.random_hpke_public_key(self.rng), chain, ())
            self.nodes[p] = node
            # Fresh nodes have no unmerged leaves: the original sibling hash is the current one.
            chain = parent_hash(self.suite, node, self.tree_hash(s))
        self.nodes[x] = self._leaf(leaf_index, LeafNodeSource.COMMIT, chain)
        self._touch(x)


def synthetic_tree(
    n_members: int,
    *,
    blank_ratio: float = 0.0,
    rng: random.Random,
    suite: CipherSuite | int = 1,
    group_id: bytes = SYNTHETIC_GROUP_ID,
    commit_ratio: float = 0.25,
    late_join_ratio: float = 0.05,
) -> RatchetTree:
    """A valid tree of `n_members` members whose leaf slots, up to the last member, are
    blank in about `blank_ratio` of cases (removed members). About `commit_ratio` x
    `n_members` commits from random members fill parent nodes, then `late_join_ratio` of
    the members join and stay unmerged. Leaves sign with `group_id` as context."""
    if n_members < 1:
        raise ValueError("a tree needs at least one member")
    if not 0.0 <= blank_ratio < 1.0:
        raise ValueError("blank_ratio must be in [0, 1)")
    suite = suite if isinstance(suite, CipherSuite) else cipher_suite(suite)
    blanks = round(n_members * blank_ratio / (1.0 - blank_ratio))
    slots = n_members + blanks
    n_leaves = 1
    while n_leaves < slots:
        n_leaves *= 2
    occupied = [*sorted(rng.sample(range(slots - 1), n_members - 1)), slots - 1]
    late = set(rng.sample(occupied, round(n_members * late_join_ratio)))
    early = [leaf for leaf in occupied if leaf not in late]
    builder = _Builder.empty(suite, group_id, rng, n_leaves)
    for leaf in early:
        builder.join(leaf)
    if early and n_members > 1:
        for _ in range(max(1, round(n_members * commit_ratio))):
            builder.commit(rng.choice(early))
    for leaf in sorted(late):
        builder.join(leaf)
    return RatchetTree(tuple(builder.nodes))
