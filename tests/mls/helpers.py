"""Small hand-made trees for the MLS tests (contents are placeholders, not signed)."""

from __future__ import annotations

from client_sdk.mls import (
    Capabilities,
    Credential,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    ParentNode,
    RatchetTree,
)


def dummy_leaf(tag: int, source: LeafNodeSource = LeafNodeSource.KEY_PACKAGE) -> LeafNode:
    return LeafNode(
        encryption_key=bytes([tag]) * 32,
        signature_key=bytes([tag ^ 0xFF]) * 32,
        credential=Credential.basic(b"member %d" % tag),
        capabilities=Capabilities(cipher_suites=(1,)),
        leaf_node_source=source,
        lifetime=Lifetime(0, 2**64 - 1) if source is LeafNodeSource.KEY_PACKAGE else None,
        parent_hash=b"\x01" * 32 if source is LeafNodeSource.COMMIT else b"",
        signature=b"\x00" * 64,
    )


def dummy_parent(tag: int, unmerged: tuple[int, ...] = ()) -> ParentNode:
    return ParentNode(bytes([tag]) * 32, b"", unmerged)


def tree_from_spec(spec: str) -> RatchetTree:
    """A tree from a compact spec: one char per node in array order, `_` blank, a letter
    a leaf or parent by position; `X[1,3]` gives a parent unmerged leaves 1 and 3."""
    nodes: list[LeafNode | ParentNode | None] = []
    i = 0
    while i < len(spec):
        ch = spec[i]
        i += 1
        unmerged: tuple[int, ...] = ()
        if i < len(spec) and spec[i] == "[":
            end = spec.index("]", i)
            unmerged = tuple(int(v) for v in spec[i + 1 : end].split(",") if v)
            i = end + 1
        x = len(nodes)
        if ch == "_":
            nodes.append(None)
        elif x % 2 == 0:
            nodes.append(dummy_leaf(ord(ch)))
        else:
            nodes.append(dummy_parent(ord(ch), unmerged))
    return RatchetTree.from_nodes(nodes)
