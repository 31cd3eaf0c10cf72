"""Realistic, fully valid synthetic ratchet trees for benchmarks and tests.

`synthetic_tree` replays a plausible group history on a mutable array: members join from
key packages, a share of them commit (blanking their direct path, putting fresh keys of
the suite's KEM on the filtered direct path and chaining parent hashes down to a
re-signed `commit` leaf, RFC 9420 §7.5, §7.9), removed members leave blank leaves, and
late joiners end up unmerged at the non-blank nodes above them (§12.1.1). Keys are real
and drawn from `rng`, so a seed reproduces the tree byte for byte; every signature and
parent hash verifies. Tree hashes are cached per node and invalidated along changed paths,
so a 1,000-member tree takes a fraction of a second.

`SyntheticGroup` keeps the history going one epoch at a time: a commit with an UpdatePath
from a member, an Add committed without a path (the joiner lands in the leftmost blank leaf,
unmerged above, §12.1.1, extending the tree when full), or a Remove committed with the
committer's path (the removed leaf's direct path blanked and the tree truncated, §12.1.3,
§7.7). Its `tree` is valid after every step, so a benchmark can watch how a real group's
tree changes from epoch to epoch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

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

__all__ = ["SYNTHETIC_GROUP_ID", "SyntheticGroup", "synthetic_tree"]

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

    def extend(self) -> None:
        """Double the width: the old tree becomes the left subtree of a blank root (§7.7).
        The left subtree keeps its node indices, so its cached hashes stay valid."""
        width = len(self.nodes)
        self.nodes += [None] * (width + 1)
        self.hashes += [None] * (width + 1)
        self.members_under += [0] * (width + 1)
        self.members_under[width] = self.members_under[tree_math.root(self.n_leaves // 2)]

    def remove(self, leaf_index: int) -> None:
        """Blank the leaf and its direct path, then truncate (§12.1.3, §7.7)."""
        x = 2 * leaf_index
        self.nodes[x] = None
        self.members_under[x] = 0
        del self.keys[leaf_index]
        for p in tree_math.direct_path(x, self.n_leaves):
            self.nodes[p] = None
            self.members_under[p] -= 1
        self._touch(x)
        while self.n_leaves > 1:
            root = tree_math.root(self.n_leaves)
            if self.members_under[tree_math.right(root)]:
                break
            # An empty right half holds no parent node either: removals blanked them.
            del self.nodes[root:], self.hashes[root:], self.members_under[root:]

    def copy(self, rng: random.Random) -> _Builder:
        return _Builder(
            self.suite,
            self.group_id,
            rng,
            list(self.nodes),
            list(self.hashes),
            list(self.members_under),
            dict(self.keys),
        )


@dataclass
class SyntheticGroup:
    """A synthetic group whose tree moves on one epoch at a time; `tree` is valid (parent
    hashes and leaf signatures verify, with `group_id` as context) after every step."""

    _builder: _Builder = field(repr=False)

    @classmethod
    def create(
        cls,
        n_members: int,
        *,
        blank_ratio: float = 0.0,
        rng: random.Random,
        suite: CipherSuite | int = 1,
        group_id: bytes = SYNTHETIC_GROUP_ID,
        commit_ratio: float = 0.25,
        late_join_ratio: float = 0.05,
    ) -> SyntheticGroup:
        """The group `synthetic_tree` describes (same arguments, same tree for a seed)."""
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
        return cls(builder)

    @property
    def tree(self) -> RatchetTree:
        return RatchetTree(tuple(self._builder.nodes))

    @property
    def suite(self) -> CipherSuite:
        return self._builder.suite

    @property
    def group_id(self) -> bytes:
        return self._builder.group_id

    def members(self) -> list[int]:
        """Leaf indices of the members, ascending."""
        return sorted(self._builder.keys)

    def _member(self, leaf_index: int | None) -> int:
        if leaf_index is None:
            return self._builder.rng.choice(self.members())
        if leaf_index not in self._builder.keys:
            raise ValueError(f"leaf {leaf_index} is not a member")
        return leaf_index

    def commit(self, leaf_index: int | None = None) -> int:
        """An epoch whose commit carries an UpdatePath from `leaf_index` (a random member
        when None): new keys on its filtered direct path, a new signed leaf. Returns it."""
        committer = self._member(leaf_index)
        self._builder.commit(committer)
        return committer

    def add(self) -> int:
        """An epoch that adds one member (a commit without a path): the leftmost blank
        leaf, the tree extended first if it has none. Returns the new leaf index."""
        b = self._builder
        free = next((x // 2 for x in range(0, len(b.nodes), 2) if b.nodes[x] is None), None)
        if free is None:
            free = b.n_leaves
            b.extend()
        b.join(free)
        return free

    def remove(self, leaf_index: int | None = None, *, committer: int | None = None) -> int:
        """An epoch that removes `leaf_index` (random when None), committed with an
        UpdatePath from `committer` (another random member when None). Returns the
        removed leaf index."""
        members = self.members()
        if len(members) < 2:
            raise ValueError("the last member cannot be removed")
        removed = self._member(leaf_index)
        if committer is None:
            committer = self._builder.rng.choice([m for m in members if m != removed])
        elif committer == removed or committer not in self._builder.keys:
            raise ValueError("the committer must be another member")
        self._builder.remove(removed)
        self._builder.commit(committer)
        return removed

    def copy(self, rng: random.Random) -> SyntheticGroup:
        """An independent group with this one's tree and keys, drawing from `rng`."""
        return SyntheticGroup(self._builder.copy(rng))


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
    return SyntheticGroup.create(
        n_members,
        blank_ratio=blank_ratio,
        rng=rng,
        suite=suite,
        group_id=group_id,
        commit_ratio=commit_ratio,
        late_join_ratio=late_join_ratio,
    ).tree
