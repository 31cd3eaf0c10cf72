"""The presentation-language codec (RFC 9420 §2.1) and struct round trips."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.mls import (
    Capabilities,
    Credential,
    CredentialType,
    Extension,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    MlsDecodeError,
    Node,
    ParentNode,
    Proposal,
    RatchetTree,
    decode_node,
    decode_proposal,
    encode_node,
    encode_proposal,
)
from client_sdk.mls.codec import MAX_VECTOR_LENGTH, Reader, Writer, decode
from tests.mls import strategies

ROUND_TRIP = settings(max_examples=150, deadline=None)


@pytest.mark.parametrize(
    ("encoded", "value"),
    [
        ("9d7f3e7d", 494878333),
        ("7bbd", 15293),
        ("25", 37),
        ("00", 0),
        ("3f", 63),
        ("4040", 64),
        ("7fff", 16383),
        ("80004000", 16384),
        ("bfffffff", MAX_VECTOR_LENGTH),
    ],
)
def test_varint_examples(encoded: str, value: int) -> None:
    assert decode(bytes.fromhex(encoded), Reader.varint) == value
    w = Writer()
    w.varint(value)
    assert w.getvalue().hex() == encoded


@pytest.mark.parametrize(
    "encoded", ["4000", "403f", "80000000", "80003fff", "c0", "ff00000000000000"]
)
def test_non_minimal_and_reserved_varints_are_rejected(encoded: str) -> None:
    with pytest.raises(MlsDecodeError):
        decode(bytes.fromhex(encoded), Reader.varint)


@given(st.integers(0, MAX_VECTOR_LENGTH))
def test_varint_round_trip(value: int) -> None:
    w = Writer()
    w.varint(value)
    assert decode(w.getvalue(), Reader.varint) == value


def test_writer_rejects_values_that_do_not_fit() -> None:
    calls: list[Callable[[Writer], None]] = [
        lambda w: w.u8(256),
        lambda w: w.u16(-1),
        lambda w: w.u32(1 << 32),
        lambda w: w.u64(1 << 64),
        lambda w: w.varint(MAX_VECTOR_LENGTH + 1),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call(Writer())


@pytest.mark.parametrize(
    ("data", "reader"),
    [
        (b"\x02", lambda r: r.optional(Reader.u8)),  # presence octet neither 0 nor 1
        (b"\x05abcd", Reader.opaque),  # length past the end
        (b"\x03\x00\x01\x00", lambda r: r.vector(Reader.u16)),  # item overruns the vector
        (b"\x01\x00\x00", lambda r: r.optional(Reader.u8)),  # trailing byte
        (b"", Reader.u32),
        (b"\x03\x00\x01\x00", lambda r: r.uints(2)),  # the same through the fast path
        (b"\x40\x01\x00", lambda r: r.uints(1)),  # a non-minimal length
    ],
)
def test_strict_decoding(data: bytes, reader: object) -> None:
    with pytest.raises(MlsDecodeError):
        decode(data, reader)  # type: ignore[arg-type]


def test_optional_and_vectors() -> None:
    w = Writer()
    w.optional(None, Writer.u8)
    w.optional(7, Writer.u8)
    w.vector([1, 2], Writer.u32)
    assert w.getvalue().hex() == "00" + "0107" + "08" + "00000001" + "00000002"


def test_decode_wants_bytes() -> None:
    with pytest.raises(TypeError):
        decode("00", Reader.u8)  # type: ignore[arg-type]


@ROUND_TRIP
@given(strategies.leaf_nodes())
def test_leaf_node_round_trip(leaf: LeafNode) -> None:
    assert LeafNode.from_bytes(leaf.to_bytes()) == leaf
    assert decode_node(encode_node(leaf)) == leaf


@ROUND_TRIP
@given(strategies.parent_nodes())
def test_parent_node_round_trip(node: ParentNode) -> None:
    assert ParentNode.from_bytes(node.to_bytes()) == node
    assert decode_node(encode_node(node)) == node


@ROUND_TRIP
@given(strategies.leaf_nodes(), strategies.parent_nodes())
def test_cached_encodings_follow_the_value(leaf: LeafNode, node: ParentNode) -> None:
    """Nodes keep their encoding once made (or read), and a changed copy never reuses it."""
    decoded = LeafNode.from_bytes(leaf.to_bytes())
    assert decoded.to_bytes() == leaf.to_bytes()
    resigned = replace(decoded, signature=decoded.signature + b"\x01")
    assert resigned.to_bytes() != decoded.to_bytes()
    assert LeafNode.from_bytes(resigned.to_bytes()) == resigned
    other = ParentNode.from_bytes(node.to_bytes())
    moved = replace(other, parent_hash=other.parent_hash + b"\x01")
    assert ParentNode.from_bytes(moved.to_bytes()) == moved


def test_identical_capabilities_are_decoded_once() -> None:
    caps = Capabilities(cipher_suites=(1, 2), extensions=(7,))
    first, second = (Capabilities.from_bytes(caps.to_bytes()) for _ in range(2))
    assert first == second == caps and first is second


@ROUND_TRIP
@given(strategies.key_packages)
def test_key_package_round_trip(key_package: KeyPackage) -> None:
    assert KeyPackage.from_bytes(key_package.to_bytes()) == key_package


@ROUND_TRIP
@given(strategies.proposals)
def test_proposal_round_trip(proposal: Proposal) -> None:
    assert decode_proposal(encode_proposal(proposal)) == proposal


@ROUND_TRIP
@given(strategies.ratchet_trees())
def test_ratchet_tree_round_trip(tree: RatchetTree) -> None:
    data = tree.to_bytes()
    again = RatchetTree.from_bytes(data)
    assert again.to_bytes() == data
    # Only trailing blanks can differ: the decoder pads to the smallest complete width.
    assert again.nodes == tree.nodes[: len(again.nodes)]
    assert all(n is None for n in tree.nodes[len(again.nodes) :])


def test_known_layouts() -> None:
    basic = Credential.basic(b"alice")
    assert basic.to_bytes().hex() == "0001" + "05" + b"alice".hex()
    x509 = Credential.x509((b"\x30\x00", b"\x30"))
    assert x509.to_bytes().hex() == "0002" + "05" + "023000" + "0130"
    assert (
        Capabilities((1,), (1, 2), (), (), (1,)).to_bytes().hex()
        == "020001" + "0400010002" + "00" + "00" + "020001"
    )
    assert Lifetime(1, 2).to_bytes().hex() == "0000000000000001" + "0000000000000002"
    assert Extension(0x000A, b"\xff").to_bytes().hex() == "000a01ff"
    assert (
        ParentNode(b"\xaa", b"", (1, 3)).to_bytes().hex()
        == "01aa" + "00" + "08" + "00000001" + "00000003"
    )


def test_constructors_reject_unencodable_fields() -> None:
    with pytest.raises(ValueError):
        ParentNode(b"k", b"", (3, 1))
    with pytest.raises(ValueError):
        Capabilities(versions=(1 << 16,))
    with pytest.raises(ValueError):
        Credential(CredentialType.BASIC, certificates=(b"x",))
    base = dict(
        encryption_key=b"e",
        signature_key=b"s",
        credential=Credential.basic(b"a"),
        capabilities=Capabilities(),
    )
    with pytest.raises(ValueError):
        LeafNode(**base, leaf_node_source=LeafNodeSource.UPDATE, lifetime=Lifetime(0, 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LeafNode(**base, leaf_node_source=LeafNodeSource.KEY_PACKAGE)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LeafNode(**base, leaf_node_source=LeafNodeSource.UPDATE, parent_hash=b"p")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RatchetTree((None, None))


def test_ratchet_tree_shape_is_checked_on_decode() -> None:
    leaf = LeafNode(b"e", b"s", Credential.basic(b"a"), Capabilities(), LeafNodeSource.UPDATE)

    def encode(nodes: list[Node | None]) -> bytes:
        body = b"".join(b"\x00" if n is None else b"\x01" + encode_node(n) for n in nodes)
        w = Writer()
        w.opaque(body)
        return w.getvalue()

    cases: list[tuple[list[Node | None], str]] = [
        ([ParentNode(b"k")], "parent node"),  # a parent at leaf position 0
        ([leaf, leaf], "leaf node"),  # a leaf at parent position 1
        ([leaf, None], "must be non-blank"),  # trailing blank
        ([], "must be non-blank"),
        ([leaf, ParentNode(b"k", b"", (1,)), None, None, leaf], "leaf 1 of node 1 is blank"),
        ([leaf, ParentNode(b"k", b"", (2,)), leaf], "not under"),
    ]
    for nodes, message in cases:
        with pytest.raises(MlsDecodeError, match=message):
            RatchetTree.from_bytes(encode(nodes))
