"""Array-based tree arithmetic (RFC 9420 Appendix C).

Nodes are numbered by a left-to-right in-order walk: leaf `i` is node `2*i`, parent nodes
are odd. RFC 9420 trees are always complete (§4.1), so `n_leaves` must be a power of two.
A question with no answer (the parent of the root, the children of a leaf) and an index
outside the tree are caller mistakes: `ValueError`.
"""

from __future__ import annotations

__all__ = [
    "copath",
    "direct_path",
    "is_leaf",
    "leaf_node_index",
    "left",
    "level",
    "node_leaf_index",
    "node_width",
    "parent",
    "right",
    "root",
    "sibling",
    "subtree_leaves",
]


def _check_width(n_leaves: int) -> None:
    if n_leaves < 1 or n_leaves & (n_leaves - 1):
        raise ValueError(f"n_leaves must be a power of two, got {n_leaves}")


def _check_node(x: int, n_leaves: int) -> None:
    _check_width(n_leaves)
    if not 0 <= x < 2 * n_leaves - 1:
        raise ValueError(f"node {x} is outside a tree of {n_leaves} leaves")


def node_width(n_leaves: int) -> int:
    """The number of nodes in a tree of `n_leaves` leaves."""
    _check_width(n_leaves)
    return 2 * n_leaves - 1


def root(n_leaves: int) -> int:
    """The root's node index."""
    _check_width(n_leaves)
    return n_leaves - 1


def level(x: int) -> int:
    """Leaves are level 0; a parent is one above its children."""
    if x < 0:
        raise ValueError(f"node index {x} is negative")
    k = 0
    while (x >> k) & 1:
        k += 1
    return k


def is_leaf(x: int) -> bool:
    return x % 2 == 0


def leaf_node_index(leaf_index: int) -> int:
    """Leaf `i` is node `2*i`."""
    if leaf_index < 0:
        raise ValueError(f"leaf index {leaf_index} is negative")
    return 2 * leaf_index


def node_leaf_index(x: int) -> int:
    """The leaf index of a leaf node."""
    if x < 0 or x % 2:
        raise ValueError(f"node {x} is not a leaf")
    return x // 2


def left(x: int) -> int:
    k = level(x)
    if k == 0:
        raise ValueError(f"leaf node {x} has no children")
    return x ^ (1 << (k - 1))


def right(x: int) -> int:
    k = level(x)
    if k == 0:
        raise ValueError(f"leaf node {x} has no children")
    return x ^ (3 << (k - 1))


def parent(x: int, n_leaves: int) -> int:
    _check_node(x, n_leaves)
    if x == n_leaves - 1:
        raise ValueError("the root has no parent")
    k = level(x)
    b = (x >> (k + 1)) & 1
    return (x | (1 << k)) ^ (b << (k + 1))


def sibling(x: int, n_leaves: int) -> int:
    """The other child of `x`'s parent."""
    p = parent(x, n_leaves)
    return right(p) if x < p else left(p)


def direct_path(x: int, n_leaves: int) -> list[int]:
    """`x`'s ancestors from its parent up to the root (§4.1.2)."""
    _check_node(x, n_leaves)
    top = n_leaves - 1
    path: list[int] = []
    while x != top:
        x = parent(x, n_leaves)
        path.append(x)
    return path


def copath(x: int, n_leaves: int) -> list[int]:
    """The siblings of `x` and of each node of its direct path but the root (§4.1.2)."""
    path = direct_path(x, n_leaves)
    if not path:
        return []
    return [sibling(y, n_leaves) for y in [x, *path[:-1]]]


def subtree_leaves(x: int) -> range:
    """The leaf indices under node `x` (itself, for a leaf)."""
    span = (1 << level(x)) - 1
    return range((x - span) // 2, (x + span) // 2 + 1)
