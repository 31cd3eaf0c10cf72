"""Tree statistics: a hand-worked RFC 9420 figure and a brute-force cross-check."""

from __future__ import annotations

import pytest

from client_sdk.mls import RatchetTree, TreeStats, tree_math, tree_stats
from tests.mls.helpers import tree_from_spec
from tests.mls.vectors import load


def test_rfc_five_member_tree() -> None:
    # §4.1.2 figure: A B _ _ E F G _, with T, X, Y, W non-blank and U, V, Z blank.
    # Copath resolution sizes: A, B -> 1 + 0 + 1; E, F -> 1 + 1 + 1; G -> 0 + 1 + 1.
    stats = tree_stats(tree_from_spec("ATB___" + "_W" + "EXFYG__"))
    assert stats == TreeStats(
        n_leaves=8,
        n_members=5,
        blank_leaf_ratio=3 / 8,
        blank_parent_ratio=3 / 7,
        mean_copath_resolution=12 / 5,
    )


def test_unmerged_leaves_cost_an_encryption_each() -> None:
    # A commit from A encrypts to B, then to Y and its unmerged C: three encryptions.
    stats = tree_stats(tree_from_spec("AXBY[2]C_D"))
    assert stats.mean_copath_resolution == (3 + 3 + 2 + 2) / 4


def test_single_leaf_and_empty_edges() -> None:
    assert tree_stats(tree_from_spec("A")) == TreeStats(1, 1, 0.0, 0.0, 0.0)
    assert tree_stats(RatchetTree((None,))) == TreeStats(1, 0, 1.0, 0.0, 0.0)


@pytest.mark.parametrize("case", load("tree-validation-suite1.json"))
def test_agrees_with_brute_force(case: dict[str, object]) -> None:
    tree = RatchetTree.from_bytes(bytes.fromhex(str(case["tree"])))
    members = [i for i, _ in tree.members()]
    n = tree.n_leaves
    expected = sum(
        len(tree.resolution(s)) for i in members for s in tree_math.copath(2 * i, n)
    ) / len(members)
    stats = tree_stats(tree)
    assert stats.n_leaves == n and stats.n_members == len(members)
    assert stats.mean_copath_resolution == pytest.approx(expected)
    assert stats.blank_leaf_ratio == (n - len(members)) / n
    parents = [tree.nodes[x] for x in range(1, len(tree.nodes), 2)]
    assert stats.blank_parent_ratio == sum(p is None for p in parents) / max(1, len(parents))
