"""Any bytes into any decoder: a value (whose encoding is exactly those bytes) or an
`MlsDecodeError`, nothing else. Trees that decode are then hashed, resolved and verified
under every suite, which must answer without raising."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client_sdk.mls import (
    CIPHER_SUITES,
    Capabilities,
    Credential,
    Extension,
    KeyPackage,
    LeafNode,
    Lifetime,
    MlsDecodeError,
    ParentNode,
    RatchetTree,
    decode_node,
    decode_proposal,
    encode_node,
    encode_proposal,
    parent_hash_failures,
    signature_failures,
    tree_hashes,
    tree_stats,
)
from client_sdk.mls.cli import tree_info
from tests.mls import strategies
from tests.mls.vectors import load

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DECODERS: dict[str, tuple[Callable[[bytes], Any], Callable[[Any], bytes]]] = {
    "ratchet_tree": (RatchetTree.from_bytes, RatchetTree.to_bytes),
    "node": (decode_node, encode_node),
    "leaf_node": (LeafNode.from_bytes, LeafNode.to_bytes),
    "parent_node": (ParentNode.from_bytes, ParentNode.to_bytes),
    "credential": (Credential.from_bytes, Credential.to_bytes),
    "capabilities": (Capabilities.from_bytes, Capabilities.to_bytes),
    "lifetime": (Lifetime.from_bytes, Lifetime.to_bytes),
    "extension": (Extension.from_bytes, Extension.to_bytes),
    "key_package": (KeyPackage.from_bytes, KeyPackage.to_bytes),
    "proposal": (decode_proposal, encode_proposal),
}

# Valid encodings to mutate: every tree and proposal in the vector files.
SEEDS: list[bytes] = [bytes.fromhex(c["tree"]) for c in load("tree-validation-suite1.json")] + [
    bytes.fromhex(c[k])
    for c in load("tree-operations.json")
    for k in ("tree_before", "tree_after", "proposal")
]


def decode_or_error(name: str, data: bytes) -> Any:
    decode, encode = DECODERS[name]
    try:
        value = decode(data)
    except MlsDecodeError:
        return None
    assert encode(value) == data
    return value


def analyse(tree: RatchetTree, suite_id: int) -> None:
    suite = CIPHER_SUITES[suite_id]
    assert len(tree_hashes(tree, suite)) == len(tree.nodes)
    parent_hash_failures(tree, suite)
    signature_failures(tree, suite, b"group")
    tree_stats(tree)
    tree_info(tree, suite, b"group")


@pytest.mark.parametrize("name", DECODERS)
@FUZZ
@given(data=st.binary(max_size=400))
def test_any_bytes(name: str, data: bytes) -> None:
    decode_or_error(name, data)


@pytest.mark.parametrize("name", DECODERS)
@FUZZ
@given(data=st.data())
def test_structured_prefixes(name: str, data: st.DataObject) -> None:
    # Small integers and type codes make parsing reach deep fields more often.
    chunks = data.draw(
        st.lists(
            st.one_of(
                st.binary(max_size=8),
                st.sampled_from([b"\x00", b"\x01", b"\x02", b"\x03", b"\x00\x01", b"\x00\x02"]),
                st.integers(0, 63).map(lambda n: bytes([n])),
            ),
            max_size=40,
        )
    )
    decode_or_error(name, b"".join(chunks))


_EDITS = st.lists(
    st.tuples(
        st.sampled_from(["set", "insert", "delete", "cut"]), st.integers(0), st.integers(0, 255)
    ),
    min_size=1,
    max_size=3,
)


def _edit(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, position, value in edits:
        at = position % (len(out) + 1)
        if kind == "set" and at < len(out):
            out[at] = value
        elif kind == "insert":
            out.insert(at, value)
        elif kind == "delete" and at < len(out):
            del out[at]
        elif kind == "cut":
            del out[at:]
    return bytes(out)


@settings(FUZZ, max_examples=800)
@given(seed=st.sampled_from(SEEDS), edits=_EDITS, suite_id=st.integers(1, 7))
def test_edited_vector_encodings(
    seed: bytes, edits: list[tuple[str, int, int]], suite_id: int
) -> None:
    data = _edit(seed, edits)
    decode_or_error("proposal", data)
    tree = decode_or_error("ratchet_tree", data)
    if tree is not None:
        analyse(tree, suite_id)


@settings(max_examples=60, deadline=None)
@given(tree=strategies.ratchet_trees(), suite_id=st.integers(1, 7))
def test_arbitrary_well_shaped_trees_are_analysed_without_raising(
    tree: RatchetTree, suite_id: int
) -> None:
    analyse(tree, suite_id)
