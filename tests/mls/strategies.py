"""Hypothesis strategies for the MLS wire structures (valid shapes, arbitrary contents)."""

from __future__ import annotations

from hypothesis import strategies as st

from client_sdk.mls import (
    Add,
    Capabilities,
    Credential,
    Extension,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    Node,
    ParentNode,
    Proposal,
    RatchetTree,
    Remove,
    Update,
    tree_math,
)

small_bytes = st.binary(max_size=40)
u16s = st.lists(st.integers(0, 0xFFFF), max_size=4).map(tuple)

credentials = st.one_of(
    small_bytes.map(Credential.basic),
    st.lists(small_bytes, max_size=3).map(lambda certs: Credential.x509(tuple(certs))),
)
capabilities = st.builds(Capabilities, u16s, u16s, u16s, u16s, u16s)
lifetimes = st.builds(Lifetime, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
extensions = st.lists(st.builds(Extension, st.integers(0, 0xFFFF), small_bytes), max_size=3).map(
    tuple
)


@st.composite
def leaf_nodes(draw: st.DrawFn) -> LeafNode:
    source = draw(st.sampled_from(LeafNodeSource))
    return LeafNode(
        encryption_key=draw(small_bytes),
        signature_key=draw(small_bytes),
        credential=draw(credentials),
        capabilities=draw(capabilities),
        leaf_node_source=source,
        lifetime=draw(lifetimes) if source is LeafNodeSource.KEY_PACKAGE else None,
        parent_hash=draw(small_bytes) if source is LeafNodeSource.COMMIT else b"",
        extensions=draw(extensions),
        signature=draw(st.binary(max_size=80)),
    )


def parent_nodes(
    unmerged: st.SearchStrategy[tuple[int, ...]] | None = None,
) -> st.SearchStrategy[ParentNode]:
    leaves = (
        unmerged
        if unmerged is not None
        else st.sets(st.integers(0, 2**32 - 1), max_size=4).map(lambda s: tuple(sorted(s)))
    )
    return st.builds(ParentNode, small_bytes, small_bytes, leaves)


key_packages = st.builds(
    KeyPackage,
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    small_bytes,
    leaf_nodes(),
    extensions,
    st.binary(max_size=80),
)
proposals: st.SearchStrategy[Proposal] = st.one_of(
    st.builds(Add, key_packages),
    st.builds(Update, leaf_nodes()),
    st.builds(Remove, st.integers(0, 2**32 - 1)),
)
nodes: st.SearchStrategy[Node] = st.one_of(leaf_nodes(), parent_nodes())


@st.composite
def ratchet_trees(draw: st.DrawFn, max_depth: int = 3) -> RatchetTree:
    """Trees of the right shape: typed positions, unmerged leaves non-blank and below."""
    n_leaves = 1 << draw(st.integers(0, max_depth))
    leaves = [draw(st.one_of(st.none(), leaf_nodes())) for _ in range(n_leaves)]
    if all(leaf is None for leaf in leaves):
        leaves[draw(st.integers(0, n_leaves - 1))] = draw(leaf_nodes())
    array: list[Node | None] = []
    for x in range(2 * n_leaves - 1):
        if x % 2 == 0:
            array.append(leaves[x // 2])
            continue
        present = [i for i in tree_math.subtree_leaves(x) if leaves[i] is not None]
        unmerged = (
            st.sets(st.sampled_from(present)).map(lambda s: tuple(sorted(s)))
            if present
            else st.just(())
        )
        array.append(draw(st.one_of(st.none(), parent_nodes(unmerged))))
    return RatchetTree(tuple(array))
