"""Ratchet trees as a base and a chain of patches (pure functions, no I/O).

A group's tree is published either as a *base* (kind `ratchet_tree`: the RFC 9420
`ratchet_tree` extension value itself, §12.4.3.3) or as a *patch* (kind
`ratchet_tree_patch`): the nodes that changed since the tree it applies to, which it names
by that tree's tree hash (§7.8). Every snapshot header carries the tree hash of the tree
its snapshot makes, signed by the author, so a reader rebuilds a group's tree from the
newest base and the patches after it, in epoch order, following the hash chain, and checks
every step against a hash the author signed:

    struct {
        uint32 node_index;
        optional<Node> node;          /* absent: the node is blank now */
    } NodeChange;

    struct {
        uint8 version = 1;
        opaque previous<V>;           /* tree hash of the tree this patch applies to */
        uint32 n_nodes;               /* the patched tree's width, 2^(d+1) - 1 */
        NodeChange changes<V>;        /* node_index strictly increasing, < n_nodes */
    } TreePatch;

A publisher starts a new base once the patches since the last one would add up to more
than `TreePolicy.rebase_ratio` of the tree's own encoding (or number more than
`max_patches`), so rebuilding a tree never costs much more than one tree's bytes.

A tree hash depends on the cipher suite only through its hash function, which the hash's
length names: 32 bytes SHA-256 (suites 1-3), 48 SHA-384 (suite 7), 64 SHA-512 (suites 4-6).
A reader therefore needs no suite: the signed header's tree hash says how to hash.

Errors: a patch or base that does not decode, applies to another tree or makes a tree
other than the one its header names is a `TreeMismatch`. Caller mistakes (a tree that is
not truncated, a negative epoch) stay `ValueError`.
"""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import TreeMismatch
from .mls import tree_math
from .mls.codec import Reader, Writer, decode
from .mls.errors import MlsDecodeError
from .mls.hashes import leaf_tree_hash, parent_tree_hash, tree_hashes
from .mls.structs import LeafNode, Node, ParentNode, encode_node, read_node, write_node
from .mls.suites import CipherSuite, cipher_suite
from .mls.tree import RatchetTree

__all__ = [
    "BASE_KIND",
    "MAX_TREE_NODES",
    "PATCH_KIND",
    "TREE_KINDS",
    "HashedTree",
    "TreePatch",
    "TreePiece",
    "TreePolicy",
    "TreeVersion",
    "apply",
    "diff",
    "hashing_suite",
    "is_tree_snapshot",
    "plan",
    "rebuild",
]

BASE_KIND = "ratchet_tree"
PATCH_KIND = "ratchet_tree_patch"
TREE_KINDS = frozenset({BASE_KIND, PATCH_KIND})
MAX_TREE_NODES = (1 << 21) - 1
"""The widest tree a patch may make (a million leaves): a bound on what one patch allocates."""

_FORMAT_VERSION = 1
# One suite per hash function: all a tree hash needs of a suite (§7.8).
_SUITE_BY_HASH_SIZE = {32: 1, 48: 7, 64: 4}


def is_tree_snapshot(kind: str, tree_hash: bytes | None) -> bool:
    """Whether a snapshot is a piece of a tree chain: a tree kind with a signed tree hash.
    A `ratchet_tree` published without a tree hash stays an opaque snapshot."""
    return kind in TREE_KINDS and tree_hash is not None


def hashing_suite(tree_hash_size: int) -> CipherSuite:
    """A cipher suite whose hash makes tree hashes of this length."""
    suite_id = _SUITE_BY_HASH_SIZE.get(tree_hash_size)
    if suite_id is None:
        raise TreeMismatch(f"no MLS cipher suite makes {tree_hash_size}-byte tree hashes")
    return cipher_suite(suite_id)


def _complete_width(n_nodes: int) -> bool:
    return 1 <= n_nodes <= MAX_TREE_NODES and (n_nodes + 1) & n_nodes == 0


def _canonical(nodes: Sequence[Node | None]) -> bool:
    """The width a `ratchet_tree` encoding gives back: a non-blank node in the root's right
    half (a one-node tree: that node). RFC 9420 trees are always truncated so (§7.7)."""
    if len(nodes) == 1:
        return nodes[0] is not None
    right = nodes[len(nodes) // 2 + 1 :]
    return right.count(None) < len(right)


def _check_canonical(tree: RatchetTree) -> None:
    if not _canonical(tree.nodes):
        raise ValueError("the tree is not truncated (RFC 9420 §7.7): its right half is blank")


def _node_size(node: Node | None) -> int:
    """Bytes of `optional<Node>` in a `ratchet_tree` encoding."""
    return 1 if node is None else 1 + len(encode_node(node))


def _varint_size(value: int) -> int:
    return 1 if value < 1 << 6 else 2 if value < 1 << 14 else 4


@dataclass(frozen=True)
class TreePatch:
    """The nodes that differ between two trees, and the tree hash of the first."""

    previous: bytes
    n_nodes: int
    changes: tuple[tuple[int, Node | None], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "changes", tuple(self.changes))
        if not 1 <= len(self.previous) <= 64:
            raise ValueError("previous must be a tree hash of 1-64 bytes")
        if not _complete_width(self.n_nodes):
            raise ValueError(f"{self.n_nodes} nodes is not a complete tree this side can hold")
        last = -1
        for index, _ in self.changes:
            if not last < index < self.n_nodes:
                raise ValueError("node indices must increase strictly and stay in the tree")
            last = index

    def to_bytes(self) -> bytes:
        w = Writer()
        w.u8(_FORMAT_VERSION)
        w.opaque(self.previous)
        w.u32(self.n_nodes)
        w.vector(self.changes, _write_change)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TreePatch:
        """Strict: `MlsDecodeError` for anything but one canonical encoding."""
        return decode(data, _read_patch)


def _write_change(w: Writer, change: tuple[int, Node | None]) -> None:
    index, node = change
    w.u32(index)
    if node is None:
        w.u8(0)
    else:
        w.u8(1)
        write_node(w, node)


def _read_change(r: Reader) -> tuple[int, Node | None]:
    return r.u32(), r.optional(read_node)


def _read_patch(r: Reader) -> TreePatch:
    if r.u8() != _FORMAT_VERSION:
        raise MlsDecodeError("unknown tree patch version")
    previous = r.opaque()
    n_nodes = r.u32()
    changes = r.vector(_read_change)
    try:
        return TreePatch(previous, n_nodes, tuple(changes))
    except ValueError as exc:
        raise MlsDecodeError(f"malformed tree patch: {exc}") from None


class HashedTree:
    """A ratchet tree with the tree hash of every node, so that applying a patch rehashes
    only the changed nodes and their ancestors (O(changes x depth), not O(tree))."""

    __slots__ = ("_hashes", "_sizes", "suite", "tree")

    def __init__(
        self,
        tree: RatchetTree,
        suite: CipherSuite,
        hashes: list[bytes],
        sizes: list[int] | None = None,
    ) -> None:
        self.tree = tree
        self.suite = suite
        self._hashes = hashes
        self._sizes = sizes

    @classmethod
    def of(cls, tree: RatchetTree, suite: CipherSuite | int) -> HashedTree:
        suite = suite if isinstance(suite, CipherSuite) else cipher_suite(suite)
        return cls(tree, suite, tree_hashes(tree, suite))

    @property
    def tree_hash(self) -> bytes:
        """The root's tree hash (RFC 9420 §7.8), as the GroupContext carries it."""
        return self._hashes[self.tree.root]

    def encoded_size(self) -> int:
        """`len(self.tree.to_bytes())`, kept up to date patch by patch once computed."""
        if self._sizes is None:
            self._sizes = [_node_size(n) for n in self.tree.nodes]
        nodes = self.tree.nodes
        last = len(nodes) - 1
        while nodes[last] is None:
            last -= 1
        inner = sum(self._sizes[: last + 1])
        return _varint_size(inner) + inner

    def _rehash(self, nodes: tuple[Node | None, ...], hashes: list[bytes], dirty: set[int]) -> None:
        n_leaves = (len(nodes) + 1) // 2
        marked = set(dirty)
        for x in dirty:
            marked.update(tree_math.direct_path(x, n_leaves))
        for x in sorted(marked, key=tree_math.level):
            node = nodes[x]
            if x % 2 == 0:
                assert node is None or isinstance(node, LeafNode)
                hashes[x] = leaf_tree_hash(self.suite, x // 2, node)
            else:
                assert node is None or isinstance(node, ParentNode)
                k = tree_math.level(x)
                left, right = hashes[x ^ (1 << (k - 1))], hashes[x ^ (3 << (k - 1))]
                hashes[x] = parent_tree_hash(self.suite, node, left, right)


def diff(old: HashedTree, new: RatchetTree) -> TreePatch:
    """The patch that turns `old` into `new`: every node of `new` that differs."""
    _check_canonical(new)
    before, after = old.tree.nodes, new.nodes
    changes = []
    for x, node in enumerate(after):
        was = before[x] if x < len(before) else None
        if was is not node and was != node:
            changes.append((x, node))
    return TreePatch(old.tree_hash, len(after), tuple(changes))


def apply(old: HashedTree, patch: TreePatch) -> HashedTree:
    """The tree `patch` makes of `old`. `TreeMismatch` if the patch names another tree or
    makes something that is not a truncated, well-formed ratchet tree."""
    if not hmac.compare_digest(patch.previous, old.tree_hash):
        raise TreeMismatch("the patch applies to another tree")
    width, old_width = patch.n_nodes, len(old.tree.nodes)
    nodes = list(old.tree.nodes[:width])
    nodes.extend([None] * (width - len(nodes)))
    for x, node in patch.changes:
        nodes[x] = node
    try:
        tree = RatchetTree(tuple(nodes))
    except ValueError as exc:
        raise TreeMismatch(f"the patched tree is malformed: {exc}") from None
    if not _canonical(tree.nodes):
        raise TreeMismatch("the patched tree is not truncated")
    hashes = old._hashes[:width] + [b""] * (width - min(width, old_width))
    dirty = {x for x, _ in patch.changes} | set(range(old_width, width))
    sizes = None
    if old._sizes is not None:
        sizes = old._sizes[:width] + [1] * (width - min(width, old_width))
        for x, node in patch.changes:
            sizes[x] = _node_size(node)
    new = HashedTree(tree, old.suite, hashes, sizes)
    new._rehash(tree.nodes, hashes, dirty)
    return new


MAX_PATCHES = 500  # a chain nodes keep whole, 8 bases deep (`STATECACHE_RETAIN_TREE_PATCHES`)


@dataclass(frozen=True)
class TreePolicy:
    """When a publisher starts a new base instead of another patch."""

    rebase_ratio: float = 0.5  # the patches since the base may add up to this much of a tree
    max_patches: int = 500  # and number at most this (nodes keep 8 bases x 500 by default)

    def __post_init__(self) -> None:
        if not self.rebase_ratio >= 0.0:  # NaN too
            raise ValueError("rebase_ratio must not be negative")
        if not 0 <= self.max_patches <= MAX_PATCHES:
            # Nodes keep 4,000 patches per group by default: a longer chain loses its start.
            raise ValueError(f"max_patches must be 0 to {MAX_PATCHES}")


@dataclass(frozen=True)
class TreeVersion:
    """A verified tree at an MLS epoch, and the chain that made it: the base's epoch, the
    patches applied on it (how many, how many bytes), and the kind of the last piece."""

    mls_epoch: int
    tree: HashedTree
    kind: str
    base_epoch: int
    chain_length: int = 0
    chain_bytes: int = 0


@dataclass(frozen=True)
class TreePiece:
    """One opened tree snapshot: what the reader rebuilds from."""

    mls_epoch: int
    kind: str
    tree_hash: bytes  # from the signed header
    plaintext: bytes


def plan(
    current: TreeVersion | None,
    mls_epoch: int,
    tree: RatchetTree,
    suite: CipherSuite | int,
    policy: TreePolicy,
) -> tuple[str, bytes, TreeVersion]:
    """What to publish for `tree` at `mls_epoch`, given the tree this device last holds for
    the group: (kind, plaintext, the version it makes). A patch when there is an older tree
    of the same hash function and the chain stays within `policy`; a base otherwise."""
    if mls_epoch < 0:
        raise ValueError("an MLS epoch is not negative")
    _check_canonical(tree)
    suite = suite if isinstance(suite, CipherSuite) else cipher_suite(suite)
    hashed: HashedTree | None = None
    if (
        current is not None
        and current.mls_epoch < mls_epoch
        and current.tree.suite.hash_name == suite.hash_name
    ):
        patch = diff(current.tree, tree)
        data = patch.to_bytes()
        hashed = apply(current.tree, patch)
        chain_bytes = current.chain_bytes + len(data)
        if (
            current.chain_length < policy.max_patches
            and chain_bytes <= policy.rebase_ratio * hashed.encoded_size()
        ):
            version = TreeVersion(
                mls_epoch,
                hashed,
                PATCH_KIND,
                current.base_epoch,
                current.chain_length + 1,
                chain_bytes,
            )
            return PATCH_KIND, data, version
    if hashed is None:
        hashed = HashedTree.of(tree, suite)
    return BASE_KIND, tree.to_bytes(), TreeVersion(mls_epoch, hashed, BASE_KIND, mls_epoch)


def _open_base(piece: TreePiece) -> TreeVersion:
    try:
        tree = RatchetTree.from_bytes(piece.plaintext)
    except MlsDecodeError as exc:
        raise TreeMismatch(f"the tree of epoch {piece.mls_epoch} does not decode") from exc
    hashed = HashedTree.of(tree, hashing_suite(len(piece.tree_hash)))
    if not hmac.compare_digest(hashed.tree_hash, piece.tree_hash):
        raise TreeMismatch(f"the tree of epoch {piece.mls_epoch} differs from its tree hash")
    return TreeVersion(piece.mls_epoch, hashed, BASE_KIND, piece.mls_epoch)


def rebuild(pieces: Iterable[TreePiece], start: TreeVersion | None = None) -> TreeVersion:
    """The newest tree the pieces make: from the newest base above `start`'s epoch (else
    from `start`), each later patch in epoch order applied to the tree whose hash it names.

    Pieces at or below the starting epoch are ignored. `TreeMismatch` when there is
    nothing to start from, a piece does not decode, a patch names a tree not reached, or a
    tree differs from the hash its header names."""
    floor = -1 if start is None else start.mls_epoch
    newer = [p for p in pieces if p.mls_epoch > floor]
    bases = [p for p in newer if p.kind == BASE_KIND]
    if bases:
        start = _open_base(max(bases, key=lambda p: p.mls_epoch))
    if start is None:
        raise TreeMismatch("no tree to start from: the base is missing")
    patches = []
    for piece in sorted(newer, key=lambda p: p.mls_epoch):
        if piece.kind != PATCH_KIND or piece.mls_epoch <= start.mls_epoch:
            continue
        try:
            patches.append((piece, TreePatch.from_bytes(piece.plaintext)))
        except MlsDecodeError as exc:
            raise TreeMismatch(f"the patch of epoch {piece.mls_epoch} does not decode") from exc
    # Keep only the trees a later patch still names: in a plain chain, just the last one.
    wanted = Counter(patch.previous for _, patch in patches)
    reached = {start.tree.tree_hash: start} if wanted[start.tree.tree_hash] else {}
    current = start
    for piece, patch in patches:
        source = reached.get(patch.previous)
        if source is None:
            raise TreeMismatch(f"the patch of epoch {piece.mls_epoch} applies to a tree not held")
        wanted[patch.previous] -= 1
        if not wanted[patch.previous]:
            del reached[patch.previous]
        hashed = apply(source.tree, patch)
        if not hmac.compare_digest(hashed.tree_hash, piece.tree_hash):
            raise TreeMismatch(f"the tree of epoch {piece.mls_epoch} differs from its tree hash")
        current = TreeVersion(
            piece.mls_epoch,
            hashed,
            PATCH_KIND,
            source.base_epoch,
            source.chain_length + 1,
            source.chain_bytes + len(piece.plaintext),
        )
        if wanted[hashed.tree_hash]:
            reached[hashed.tree_hash] = current
    return current
