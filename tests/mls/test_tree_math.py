"""Array tree arithmetic against every case of tree-math.json, and RFC 9420 §4.1.2's table."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from client_sdk.mls import tree_math
from tests.mls.vectors import load

CASES = load("tree-math.json")


def _or_none(f: Callable[[], int]) -> int | None:
    try:
        return f()
    except ValueError:
        return None


@pytest.mark.parametrize("case", CASES, ids=[f"n_leaves={c['n_leaves']}" for c in CASES])
def test_tree_math_vector(case: dict[str, Any]) -> None:
    n = case["n_leaves"]
    assert tree_math.node_width(n) == case["n_nodes"]
    assert tree_math.root(n) == case["root"]
    xs = range(case["n_nodes"])
    assert [_or_none(partial(tree_math.left, x)) for x in xs] == case["left"]
    assert [_or_none(partial(tree_math.right, x)) for x in xs] == case["right"]
    assert [_or_none(partial(tree_math.parent, x, n)) for x in xs] == case["parent"]
    assert [_or_none(partial(tree_math.sibling, x, n)) for x in xs] == case["sibling"]


def test_every_vector_file_case_ran() -> None:
    assert [c["n_leaves"] for c in CASES] == [1 << k for k in range(10)]


@pytest.mark.parametrize("n", [1, 2, 4, 8, 64, 512])
def test_paths_agree_with_parent_and_sibling(n: int) -> None:
    for x in range(tree_math.node_width(n)):
        path = tree_math.direct_path(x, n)
        assert path == (
            []
            if x == n - 1
            else [tree_math.parent(x, n), *tree_math.direct_path(tree_math.parent(x, n), n)]
        )
        assert tree_math.copath(x, n) == [tree_math.sibling(y, n) for y in [x, *path][:-1]]
        assert [tree_math.level(p) for p in path] == list(
            range(tree_math.level(x) + 1, tree_math.level(x) + 1 + len(path))
        )
        leaves = tree_math.subtree_leaves(x)
        assert len(leaves) == 1 << tree_math.level(x)
        assert all(x in [2 * leaf, *tree_math.direct_path(2 * leaf, n)] for leaf in leaves)


def test_rfc_figure_direct_paths_and_copaths() -> None:
    # §4.1.2, eight leaves: A=0 ... G=12; T=1, U=3, W=7, X=9, Y=11, Z=13, V=5.
    assert tree_math.direct_path(0, 8) == [1, 3, 7]
    assert tree_math.copath(0, 8) == [2, 5, 11]
    assert tree_math.direct_path(8, 8) == [9, 11, 7]
    assert tree_math.copath(8, 8) == [10, 13, 3]
    assert tree_math.copath(12, 8) == [14, 9, 3]


@pytest.mark.parametrize(
    "call",
    [
        lambda: tree_math.left(4),
        lambda: tree_math.right(0),
        lambda: tree_math.parent(3, 4),
        lambda: tree_math.parent(7, 4),
        lambda: tree_math.parent(0, 3),
        lambda: tree_math.root(0),
        lambda: tree_math.direct_path(-1, 4),
        lambda: tree_math.node_leaf_index(3),
        lambda: tree_math.leaf_node_index(-1),
    ],
)
def test_questions_without_answers_are_value_errors(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        call()
