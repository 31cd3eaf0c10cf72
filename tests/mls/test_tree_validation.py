"""Every case of tree-validation-suite1.json: encoding, resolutions, tree hashes, parent
hashes and leaf signatures; then the same trees with one byte changed must fail."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from client_sdk.mls import (
    LeafNode,
    LeafNodeSource,
    ParentNode,
    RatchetTree,
    cipher_suite,
    parent_hash_failures,
    signature_failures,
    tree_hash,
    tree_hashes,
    verify_leaf_signatures,
    verify_parent_hashes,
)
from tests.mls.helpers import tree_from_spec
from tests.mls.vectors import load

CASES = load("tree-validation-suite1.json")
IDS = [f"case{i}-{len(c['resolutions'])}nodes" for i, c in enumerate(CASES)]


def _tree(case: dict[str, Any]) -> RatchetTree:
    return RatchetTree.from_bytes(bytes.fromhex(case["tree"]))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_encoding_round_trips(case: dict[str, Any]) -> None:
    tree = _tree(case)
    assert tree.to_bytes().hex() == case["tree"]
    assert len(tree.nodes) == len(case["resolutions"])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_resolutions(case: dict[str, Any]) -> None:
    tree = _tree(case)
    assert tree.resolutions() == case["resolutions"]
    assert [tree.resolution(x) for x in range(len(tree.nodes))] == case["resolutions"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_tree_hashes(case: dict[str, Any]) -> None:
    tree = _tree(case)
    suite = cipher_suite(case["cipher_suite"])
    assert [h.hex() for h in tree_hashes(tree, suite)] == case["tree_hashes"]
    assert tree_hash(tree, suite).hex() == case["tree_hashes"][tree.root]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_parent_hashes_verify(case: dict[str, Any]) -> None:
    tree = _tree(case)
    assert parent_hash_failures(tree, cipher_suite(case["cipher_suite"])) == []


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_leaf_signatures_verify(case: dict[str, Any]) -> None:
    tree = _tree(case)
    suite = cipher_suite(case["cipher_suite"])
    assert signature_failures(tree, suite, bytes.fromhex(case["group_id"])) == []


def test_vector_file_covers_the_described_trees() -> None:
    assert len(CASES) == 14
    assert {c["cipher_suite"] for c in CASES} == {1}
    unmerged = [
        c
        for c in CASES
        if any(isinstance(n, ParentNode) and n.unmerged_leaves for n in _tree(c).nodes)
    ]
    assert unmerged, "the unmerged-leaves trees are part of the file"


def _flip(data: bytes, at: int = 0) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def _with_node(tree: RatchetTree, x: int, node: LeafNode | ParentNode | None) -> RatchetTree:
    nodes = list(tree.nodes)
    nodes[x] = node
    return RatchetTree(tuple(nodes))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_one_flipped_byte_fails(case: dict[str, Any]) -> None:
    tree = _tree(case)
    suite = cipher_suite(case["cipher_suite"])
    group_id = bytes.fromhex(case["group_id"])
    members = list(tree.members())
    i, leaf = members[-1]
    bad_signature = _with_node(tree, 2 * i, replace(leaf, signature=_flip(leaf.signature, 5)))
    assert signature_failures(bad_signature, suite, group_id) == [i]
    for x, node in enumerate(tree.nodes):
        if isinstance(node, ParentNode):
            bad_key = _with_node(tree, x, replace(node, encryption_key=_flip(node.encryption_key)))
            assert x in parent_hash_failures(bad_key, suite)
            assert verify_leaf_signatures(bad_key, suite, group_id)


def test_group_id_is_signed_context() -> None:
    # Commit-sourced leaves bind the group id: a tree with a committed path must notice.
    case = CASES[-1]
    tree = _tree(case)
    suite = cipher_suite(1)
    assert any(leaf.leaf_node_source is LeafNodeSource.COMMIT for _, leaf in tree.members())
    assert not verify_leaf_signatures(tree, suite, _flip(bytes.fromhex(case["group_id"])))


def test_dropping_an_unmerged_leaf_breaks_the_parent_hash() -> None:
    suite = cipher_suite(1)
    for case in CASES:
        tree = _tree(case)
        for x, node in enumerate(tree.nodes):
            if isinstance(node, ParentNode) and node.unmerged_leaves:
                changed = _with_node(tree, x, replace(node, unmerged_leaves=()))
                assert not verify_parent_hashes(changed, suite)
                return
    pytest.fail("no vector tree has unmerged leaves")


def test_rfc_resolution_example() -> None:
    # §4.1.1 figure: X[B] over A B _ D, Y over E F, H; X=node 3, Y=node 9.
    tree = tree_from_spec("A_BX[1]_" + "_D_E" + "Y" + "F__" + "_H")
    assert tree.resolution(3) == [3, 2]
    assert tree.resolution(4) == []
    assert tree.resolution(12) == []
    assert tree.resolution(7) == [3, 2, 9, 14]


def test_rfc_filtered_direct_paths() -> None:
    # §4.1.2 table: leaves A B _ _ E F G _, parents T=1, X=9, Y=11, W=7 non-blank.
    tree = tree_from_spec("ATB___" + "_W" + "EXFYG__")
    assert tree.filtered_direct_path(0) == [1, 7]
    assert tree.filtered_direct_path(1) == [1, 7]
    assert tree.filtered_direct_path(4) == [9, 11, 7]
    assert tree.filtered_direct_path(5) == [9, 11, 7]
    assert tree.filtered_direct_path(6) == [11, 7]
