"""Every case of tree-operations.json, and the rules of RFC 9420 §7.7 / §12.1.1-§12.1.3."""

from __future__ import annotations

from typing import Any

import pytest

from client_sdk.mls import (
    Add,
    KeyPackage,
    LeafNodeSource,
    MlsTreeError,
    RatchetTree,
    Remove,
    Update,
    add_leaf,
    apply_proposal,
    apply_proposals,
    cipher_suite,
    decode_proposal,
    encode_proposal,
    extend,
    remove_leaf,
    tree_hash,
    truncate,
    update_leaf,
)
from tests.mls.helpers import dummy_leaf, tree_from_spec
from tests.mls.vectors import load

CASES = load("tree-operations.json")
IDS = [
    f"case{i}-{type(decode_proposal(bytes.fromhex(c['proposal']))).__name__}"
    for i, c in enumerate(CASES)
]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_tree_operation_vector(case: dict[str, Any]) -> None:
    suite = cipher_suite(case["cipher_suite"])
    before = RatchetTree.from_bytes(bytes.fromhex(case["tree_before"]))
    assert before.to_bytes().hex() == case["tree_before"]
    assert tree_hash(before, suite).hex() == case["tree_hash_before"]
    proposal_bytes = bytes.fromhex(case["proposal"])
    proposal = decode_proposal(proposal_bytes)
    assert encode_proposal(proposal) == proposal_bytes
    after = apply_proposal(before, proposal, case["proposal_sender"])
    assert after.to_bytes().hex() == case["tree_after"]
    assert tree_hash(after, suite).hex() == case["tree_hash_after"]


def test_vector_file_covers_all_three_proposals() -> None:
    kinds = {type(decode_proposal(bytes.fromhex(c["proposal"]))) for c in CASES}
    assert kinds == {Add, Update, Remove}


def _key_package(tag: int) -> KeyPackage:
    return KeyPackage(1, 1, bytes([tag]) * 32, dummy_leaf(tag))


def test_add_takes_the_leftmost_blank_leaf_and_marks_it_unmerged() -> None:
    tree = tree_from_spec("AXB" + "Y" + "_PC")  # leaf 2 blank; P over leaves 2 and 3
    tree, index = add_leaf(tree, dummy_leaf(ord("D")))
    assert index == 2
    assert tree.nodes[3].unmerged_leaves == (2,)  # type: ignore[union-attr]
    assert tree.nodes[5].unmerged_leaves == (2,)  # type: ignore[union-attr]
    assert tree.nodes[1].unmerged_leaves == ()  # type: ignore[union-attr]


def test_add_keeps_unmerged_leaves_sorted() -> None:
    tree = tree_from_spec("_XBY[1,3]C_D")  # leaf 0 blank; Y lists leaves 1 and 3
    tree, index = add_leaf(tree, dummy_leaf(1))
    assert index == 0
    assert tree.nodes[3].unmerged_leaves == (0, 1, 3)  # type: ignore[union-attr]
    assert tree.nodes[1].unmerged_leaves == (0,)  # type: ignore[union-attr]


def test_add_extends_a_full_tree() -> None:
    tree = tree_from_spec("AXB")
    tree, index = add_leaf(tree, dummy_leaf(3))
    assert (index, tree.n_leaves) == (2, 4)
    assert tree.nodes[3] is None
    assert tree.nodes[1].unmerged_leaves == ()  # type: ignore[union-attr]
    assert extend(tree).n_leaves == 8


def test_update_replaces_the_leaf_and_blanks_its_path() -> None:
    tree = tree_from_spec("AXBYC_D")
    new = dummy_leaf(9, LeafNodeSource.UPDATE)
    after = update_leaf(tree, 1, new)
    assert after.leaf(1) == new
    assert after.nodes[1] is None and after.nodes[3] is None
    assert after.leaf(0) == tree.leaf(0)


def test_remove_blanks_and_truncates() -> None:
    tree = tree_from_spec("AXBYC_D")
    after = remove_leaf(tree, 3)
    assert after.n_leaves == 4 and after.nodes[3] is None and after.nodes[1] is not None
    after = remove_leaf(after, 2)
    assert after.n_leaves == 2
    assert after.to_bytes() == RatchetTree.from_bytes(after.to_bytes()).to_bytes()
    assert remove_leaf(tree_from_spec("AXB"), 1).n_leaves == 1


def test_truncate_keeps_a_right_half_with_a_member() -> None:
    tree = tree_from_spec("A______" + "_" + "______C")
    assert truncate(tree) is tree
    assert truncate(tree_from_spec("A_B" + "_" + "___")).n_leaves == 2


@pytest.mark.parametrize(
    ("proposal", "sender"),
    [
        (Remove(2), 0),  # blank leaf
        (Remove(9), 0),  # outside the tree
        (Update(dummy_leaf(5, LeafNodeSource.UPDATE)), 2),  # blank sender
        (Remove(1), 7),  # absent sender
    ],
)
def test_impossible_proposals_are_tree_errors(proposal: Add | Update | Remove, sender: int) -> None:
    tree = tree_from_spec("AXB" + "Y" + "__C")
    with pytest.raises(MlsTreeError):
        apply_proposal(tree, proposal, sender)


def test_apply_proposals_orders_updates_removes_adds() -> None:
    tree = tree_from_spec("AXBYC_D")
    # The add comes first in the list, but runs after the remove frees leaf 1.
    result = apply_proposals(tree, [(Add(_key_package(7)), 3), (Remove(1), 3)])
    assert result.leaf(1) == dummy_leaf(7)
    # A member removed in the same commit may still have proposed an add.
    result = apply_proposals(tree, [(Add(_key_package(8)), 2), (Remove(2), 0)])
    assert result.leaf(2) == dummy_leaf(8)
