"""The public ratchet tree: its `ratchet_tree` encoding, resolutions and filtered paths.

`RatchetTree` holds the complete array (RFC 9420 §4.1, Appendix C) of `2^(d+1) - 1`
nodes, blanks as `None`. On the wire (§12.4.3.3) trailing blank nodes are dropped; the
decoder checks that the last node is non-blank and pads back to the next complete width.
Both the decoder (`MlsDecodeError`) and the constructor (`ValueError`) insist on the shape
every later computation relies on: leaves at even and parents at odd indices, and
unmerged leaves that are non-blank leaves under their parent.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from . import tree_math
from .codec import Reader, Writer, decode
from .errors import MlsDecodeError
from .structs import LeafNode, Node, ParentNode, read_node, write_node

__all__ = ["RatchetTree"]


def _shape_problem(nodes: Sequence[Node | None]) -> str | None:
    width = len(nodes)
    if width < 1 or (width + 1) & width:
        return f"{width} nodes is not a complete tree"
    for x, node in enumerate(nodes):
        if node is None:
            continue
        if x % 2 == 0 and not isinstance(node, LeafNode):
            return f"node {x} is a leaf position holding a parent node"
        if x % 2 == 1 and not isinstance(node, ParentNode):
            return f"node {x} is a parent position holding a leaf node"
        if isinstance(node, ParentNode):
            under = tree_math.subtree_leaves(x)
            for leaf in node.unmerged_leaves:
                if leaf not in under:
                    return f"unmerged leaf {leaf} is not under node {x}"
                if nodes[2 * leaf] is None:
                    return f"unmerged leaf {leaf} of node {x} is blank"
    return None


def _write_optional_node(w: Writer, node: Node | None) -> None:
    """`optional<Node>` (spelled out: mypy joins the union to its base class)."""
    if node is None:
        w.u8(0)
    else:
        w.u8(1)
        write_node(w, node)


def _pad(nodes: list[Node | None]) -> list[Node | None]:
    width = 1
    while width < len(nodes):
        width = 2 * width + 1
    return nodes + [None] * (width - len(nodes))


@dataclass(frozen=True, slots=True)
class RatchetTree:
    """A complete ratchet tree in array form; node `2*i` is leaf `i`."""

    nodes: tuple[Node | None, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        problem = _shape_problem(self.nodes)
        if problem is not None:
            raise ValueError(problem)

    @classmethod
    def from_nodes(cls, nodes: Sequence[Node | None]) -> RatchetTree:
        """A tree from a possibly truncated node list, padded with blanks to full width."""
        return cls(tuple(_pad(list(nodes))))

    @property
    def n_leaves(self) -> int:
        return (len(self.nodes) + 1) // 2

    @property
    def root(self) -> int:
        return tree_math.root(self.n_leaves)

    def leaf(self, leaf_index: int) -> LeafNode | None:
        node = self.nodes[tree_math.leaf_node_index(leaf_index)]
        assert node is None or isinstance(node, LeafNode)
        return node

    def members(self) -> Iterator[tuple[int, LeafNode]]:
        """`(leaf_index, leaf)` for every non-blank leaf, left to right."""
        for x in range(0, len(self.nodes), 2):
            node = self.nodes[x]
            if isinstance(node, LeafNode):
                yield x // 2, node

    # -- the ratchet_tree extension (§12.4.3.3) ---------------------------------------

    def to_bytes(self) -> bytes:
        """`optional<Node> ratchet_tree<V>` without trailing blank nodes."""
        last = max((x for x, n in enumerate(self.nodes) if n is not None), default=None)
        if last is None:
            raise ValueError("an all-blank tree has no ratchet_tree encoding")
        w = Writer()
        w.vector(self.nodes[: last + 1], _write_optional_node)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> RatchetTree:
        """Decode a `ratchet_tree` value strictly and pad it to a complete tree."""

        def read(r: Reader) -> list[Node | None]:
            return r.vector(lambda ir: ir.optional(read_node))

        nodes = decode(data, read)
        if not nodes or nodes[-1] is None:
            raise MlsDecodeError("the last node of a ratchet_tree must be non-blank")
        padded = _pad(nodes)
        problem = _shape_problem(padded)
        if problem is not None:
            raise MlsDecodeError(problem)
        return cls(tuple(padded))

    # -- resolutions and paths (§4.1.1, §4.1.2) ----------------------------------------

    def resolution(self, x: int) -> list[int]:
        """The nearest non-blank nodes covering `x`'s subtree, unmerged leaves included."""
        node = self.nodes[x]
        if isinstance(node, ParentNode):
            return [x, *(2 * leaf for leaf in node.unmerged_leaves)]
        if node is not None:
            return [x]
        if x % 2 == 0:
            return []
        return self.resolution(tree_math.left(x)) + self.resolution(tree_math.right(x))

    def resolutions(self) -> list[list[int]]:
        """The resolution of every node, computed bottom-up once."""
        out: list[list[int]] = [[] for _ in self.nodes]
        for k in range(tree_math.level(self.root) + 1):
            for x in range((1 << k) - 1, len(self.nodes), 1 << (k + 1)):
                node = self.nodes[x]
                if isinstance(node, ParentNode):
                    out[x] = [x, *(2 * leaf for leaf in node.unmerged_leaves)]
                elif node is not None:
                    out[x] = [x]
                elif k > 0:
                    out[x] = out[tree_math.left(x)] + out[tree_math.right(x)]
        return out

    def filtered_direct_path(self, leaf_index: int) -> list[int]:
        """The direct path minus nodes whose copath child has an empty resolution."""
        x = tree_math.leaf_node_index(leaf_index)
        path = tree_math.direct_path(x, self.n_leaves)
        return [
            p
            for p, s in zip(path, tree_math.copath(x, self.n_leaves), strict=True)
            if self.resolution(s)
        ]
