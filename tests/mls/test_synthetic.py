"""Synthetic trees verify like real ones, reproduce from a seed, and survive proposals."""

from __future__ import annotations

import random
import time
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.mls import (
    LEAF_NODE_LABEL,
    SYNTHETIC_GROUP_ID,
    LeafNodeSource,
    Lifetime,
    MlsTreeError,
    ParentNode,
    RatchetTree,
    SyntheticGroup,
    add_leaf,
    cipher_suite,
    parent_hash_failures,
    remove_leaf,
    signature_failures,
    synthetic_tree,
    tree_stats,
    update_leaf,
)


def assert_valid(
    tree: RatchetTree, suite_id: int = 1, group_id: bytes = SYNTHETIC_GROUP_ID
) -> None:
    suite = cipher_suite(suite_id)
    assert parent_hash_failures(tree, suite) == []
    assert signature_failures(tree, suite, group_id) == []
    assert RatchetTree.from_bytes(tree.to_bytes()) == tree


@pytest.mark.parametrize(
    ("n_members", "blank_ratio"), [(1, 0.0), (2, 0.0), (3, 0.5), (17, 0.1), (64, 0.0), (200, 0.3)]
)
def test_synthetic_trees_verify(n_members: int, blank_ratio: float) -> None:
    tree = synthetic_tree(n_members, blank_ratio=blank_ratio, rng=random.Random(n_members))
    assert_valid(tree)
    assert sum(1 for _ in tree.members()) == n_members
    assert tree.to_bytes()  # and it truncates to a non-blank last node


@pytest.mark.parametrize("suite_id", range(1, 8))
def test_synthetic_trees_in_every_suite(suite_id: int) -> None:
    tree = synthetic_tree(
        10, blank_ratio=0.2, rng=random.Random(suite_id), suite=suite_id, group_id=b"g"
    )
    assert_valid(tree, suite_id, b"g")


def test_realistic_shape() -> None:
    tree = synthetic_tree(300, blank_ratio=0.25, rng=random.Random(7))
    sources = {leaf.leaf_node_source for _, leaf in tree.members()}
    assert sources == {LeafNodeSource.KEY_PACKAGE, LeafNodeSource.COMMIT}
    assert any(isinstance(n, ParentNode) and n.unmerged_leaves for n in tree.nodes)
    stats = tree_stats(tree)
    assert 0.0 < stats.blank_parent_ratio < 1.0
    blanks_before_last = sum(
        1 for i in range(max(i for i, _ in tree.members())) if tree.leaf(i) is None
    )
    assert blanks_before_last == 100  # 300 members, a quarter of the slots blank
    keys = [leaf.encryption_key for _, leaf in tree.members()]
    keys += [n.encryption_key for n in tree.nodes if isinstance(n, ParentNode)]
    assert len(set(keys)) == len(keys)


def test_seed_reproduces_the_tree() -> None:
    a = synthetic_tree(40, blank_ratio=0.1, rng=random.Random(3))
    b = synthetic_tree(40, blank_ratio=0.1, rng=random.Random(3))
    c = synthetic_tree(40, blank_ratio=0.1, rng=random.Random(4))
    assert a.to_bytes() == b.to_bytes() != c.to_bytes()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        synthetic_tree(0, rng=random.Random(0))
    with pytest.raises(ValueError):
        synthetic_tree(5, blank_ratio=1.0, rng=random.Random(0))


@pytest.mark.slow
def test_thousand_members_is_fast() -> None:
    start = time.perf_counter()
    tree = synthetic_tree(1000, blank_ratio=0.1, rng=random.Random(1000))
    elapsed = time.perf_counter() - start
    assert sum(1 for _ in tree.members()) == 1000
    assert_valid(tree)
    assert elapsed < 2.0, f"1,000-member tree took {elapsed:.2f}s"


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    ops=st.lists(st.sampled_from(["add", "update", "remove"]), max_size=6),
)
def test_proposals_keep_a_valid_tree_valid(seed: int, ops: list[str]) -> None:
    """Add (unmerged), Update (path blanked) and Remove (path blanked, truncated) never
    leave a parent node without its parent-hash chain (§7.9.2)."""
    rng = random.Random(seed)
    suite = cipher_suite(1)
    tree = synthetic_tree(rng.randint(1, 12), blank_ratio=0.2, rng=rng)
    for op in ops:
        members = [i for i, _ in tree.members()]
        i = rng.choice(members)
        leaf = tree.leaf(i)
        assert leaf is not None
        key = suite.generate_signing_key(rng)
        if op == "add":
            joiner = replace(
                leaf,
                leaf_node_source=LeafNodeSource.KEY_PACKAGE,
                lifetime=Lifetime(0, 2**40),
                parent_hash=b"",
                signature_key=key.public,
                encryption_key=suite.random_hpke_public_key(rng),
            )
            tbs = joiner.tbs(b"", 0)  # key-package leaves sign without group context
            tree, _ = add_leaf(
                tree, replace(joiner, signature=suite.sign_with_label(key, LEAF_NODE_LABEL, tbs))
            )
        elif op == "update":
            new = replace(
                leaf,
                leaf_node_source=LeafNodeSource.UPDATE,
                lifetime=None,
                parent_hash=b"",
                signature_key=key.public,
                encryption_key=suite.random_hpke_public_key(rng),
            )
            tbs = new.tbs(SYNTHETIC_GROUP_ID, i)
            tree = update_leaf(
                tree, i, replace(new, signature=suite.sign_with_label(key, LEAF_NODE_LABEL, tbs))
            )
        elif len(members) > 1:
            tree = remove_leaf(tree, i)
            with pytest.raises(MlsTreeError):
                remove_leaf(tree, i)
        assert_valid(tree)


def test_a_synthetic_group_stays_valid_epoch_after_epoch() -> None:
    """Commits with a path, adds without one (extending a full tree), removes with the
    committer's path (truncating): the tree verifies after every step."""
    rng = random.Random(11)
    group = SyntheticGroup.create(6, blank_ratio=0.0, rng=rng, group_id=b"evolving")
    assert group.tree == synthetic_tree(
        6, blank_ratio=0.0, rng=random.Random(11), group_id=b"evolving"
    )
    widths = {group.tree.n_leaves}
    for step in range(40):
        if step < 12:
            group.add()  # grows past 8 and 16 leaves
        elif step % 3 == 0 and len(group.members()) > 1:
            group.remove()
        else:
            group.commit()
        tree = group.tree
        assert_valid(tree, group_id=b"evolving")
        assert [i for i, _ in tree.members()] == group.members()
        widths.add(tree.n_leaves)
    assert {8, 32} <= widths  # extended, and truncated back after the removes
    assert len(group.members()) < 18


def test_removing_down_to_one_member_truncates_the_tree() -> None:
    group = SyntheticGroup.create(5, rng=random.Random(2))
    while len(group.members()) > 1:
        group.remove(max(group.members()))
        assert_valid(group.tree)
    assert group.tree.n_leaves == 1
    with pytest.raises(ValueError):
        group.remove()
    with pytest.raises(ValueError):
        group.commit(7)


def test_a_copy_evolves_on_its_own() -> None:
    group = SyntheticGroup.create(10, rng=random.Random(3))
    before = group.tree
    other = group.copy(random.Random(4))
    other.commit()
    other.add()
    assert group.tree == before != other.tree
    assert_valid(other.tree)
