"""Cipher suites 1-7: the hash each selects, SignWithLabel interoperating with plain
`cryptography`, and for suites 2-7 (the vector file has only suite 1) a small tree built
and hashed here independently, whose signatures and parent hashes must verify and must
fail after any one byte changes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.mls import (
    CIPHER_SUITES,
    Capabilities,
    CipherSuite,
    Credential,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    ParentNode,
    RatchetTree,
    SigningKey,
    UnsupportedCipherSuite,
    cipher_suite,
    parent_hash_failures,
    signature_failures,
    tree_hash,
    tree_hashes,
)

HASH_NAMES = {
    1: "sha256",
    2: "sha256",
    3: "sha256",
    4: "sha512",
    5: "sha512",
    6: "sha512",
    7: "sha384",
}
SCHEMES = {
    1: "ed25519",
    2: "ecdsa_secp256r1_sha256",
    3: "ed25519",
    4: "ed448",
    5: "ecdsa_secp521r1_sha512",
    6: "ed448",
    7: "ecdsa_secp384r1_sha384",
}
# (public key size, first byte or None) in the RFC 9420 §5.1.1 wire format.
SIGNATURE_KEY_FORMAT = {
    1: (32, None),
    2: (65, 4),
    3: (32, None),
    4: (57, None),
    5: (133, 4),
    6: (57, None),
    7: (97, 4),
}
HPKE_KEY_SIZES = {1: 32, 2: 65, 3: 32, 4: 56, 5: 133, 6: 56, 7: 97}
ALL = list(range(1, 8))
OTHER = list(range(2, 8))


def test_exactly_the_rfc_suites() -> None:
    assert sorted(CIPHER_SUITES) == ALL
    assert cipher_suite(7).name == "MLS_256_DHKEMP384_AES256GCM_SHA384_P384"
    for bad in (0, 8, 0xFFFF, "1"):
        with pytest.raises(UnsupportedCipherSuite):
            cipher_suite(bad)  # type: ignore[arg-type]
    assert issubclass(UnsupportedCipherSuite, ValueError)


@pytest.mark.parametrize("suite_id", ALL)
def test_hash_selection(suite_id: int) -> None:
    suite = cipher_suite(suite_id)
    assert suite.hash_name == HASH_NAMES[suite_id]
    assert suite.hash(b"abc") == hashlib.new(HASH_NAMES[suite_id], b"abc").digest()
    assert suite.hash_size == hashlib.new(HASH_NAMES[suite_id]).digest_size
    assert suite.signature_scheme == SCHEMES[suite_id]


# -- an independent signer: plain `cryptography`, SignContent spelled out by hand ---------


def _vec(data: bytes) -> bytes:
    """A §2.1.2 vector, written here without the package's codec."""
    n = len(data)
    if n < 64:
        return bytes([n]) + data
    if n < 16384:
        return (n | 0x4000).to_bytes(2, "big") + data
    return (n | 0x8000_0000).to_bytes(4, "big") + data


@dataclass
class IndependentSigner:
    public: bytes
    sign: Callable[[bytes], bytes]
    verify: Callable[[bytes, bytes], None]

    def sign_with_label(self, label: str, content: bytes) -> bytes:
        return self.sign(_vec(b"MLS 1.0 " + label.encode()) + _vec(content))


_CURVES = {
    2: (ec.SECP256R1(), hashes.SHA256()),
    5: (ec.SECP521R1(), hashes.SHA512()),
    7: (ec.SECP384R1(), hashes.SHA384()),
}


def independent_signer(suite_id: int) -> IndependentSigner:
    if suite_id in _CURVES:
        curve, digest = _CURVES[suite_id]
        key = ec.generate_private_key(curve)
        public = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return IndependentSigner(
            public,
            lambda m: key.sign(m, ec.ECDSA(digest)),
            lambda s, m: key.public_key().verify(s, m, ec.ECDSA(digest)),
        )
    ed = (
        ed25519.Ed25519PrivateKey.generate()
        if suite_id in (1, 3)
        else ed448.Ed448PrivateKey.generate()
    )
    return IndependentSigner(ed.public_key().public_bytes_raw(), ed.sign, ed.public_key().verify)


@pytest.mark.parametrize("suite_id", ALL)
def test_sign_with_label_interoperates(suite_id: int) -> None:
    suite = cipher_suite(suite_id)
    other = independent_signer(suite_id)
    signature = other.sign_with_label("LeafNodeTBS", b"content")
    assert suite.verify_with_label(other.public, "LeafNodeTBS", b"content", signature)
    assert not suite.verify_with_label(other.public, "KeyPackageTBS", b"content", signature)
    assert not suite.verify_with_label(other.public, "LeafNodeTBS", b"content!", signature)

    key = suite.generate_signing_key()
    size, first = SIGNATURE_KEY_FORMAT[suite_id]
    assert len(key.public) == size and (first is None or key.public[0] == first)
    ours = suite.sign_with_label(key, "LeafNodeTBS", b"content")
    if suite_id in _CURVES:
        assert ours[0] == 0x30  # DER SEQUENCE, §5.1.2
        curve, digest = _CURVES[suite_id]
        ec.EllipticCurvePublicKey.from_encoded_point(curve, key.public).verify(
            ours, _vec(b"MLS 1.0 LeafNodeTBS") + _vec(b"content"), ec.ECDSA(digest)
        )
    assert suite.verify_with_label(key.public, "LeafNodeTBS", b"content", ours)
    assert len(suite.random_hpke_public_key()) == HPKE_KEY_SIZES[suite_id]


@pytest.mark.parametrize("suite_id", [2, 5, 7])
def test_compressed_ecdsa_points_are_refused(suite_id: int) -> None:
    suite = cipher_suite(suite_id)
    curve, _ = _CURVES[suite_id]
    key = ec.generate_private_key(curve)
    compressed = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    signature = key.sign(_vec(b"MLS 1.0 L") + _vec(b"c"), ec.ECDSA(_CURVES[suite_id][1]))
    assert not suite.verify_with_label(compressed, "L", b"c", signature)


def test_keys_of_another_scheme_cannot_sign() -> None:
    with pytest.raises(ValueError):
        cipher_suite(2).sign_with_label(cipher_suite(1).generate_signing_key(), "L", b"")


@settings(max_examples=60, deadline=None)
@given(suite_id=st.sampled_from(ALL), data=st.data())
def test_foreign_keys_and_signatures_are_false_not_errors(
    suite_id: int, data: st.DataObject
) -> None:
    size, first = SIGNATURE_KEY_FORMAT[suite_id]
    key = data.draw(st.binary(min_size=size, max_size=size))
    if first is not None and data.draw(st.booleans()):
        key = bytes([first]) + key[1:]
    signature = data.draw(
        st.one_of(st.binary(max_size=140), st.just(b"\x30\x06\x02\x01\x01\x02\x01\x01"))
    )
    assert cipher_suite(suite_id).verify_with_label(key, "LeafNodeTBS", b"x", signature) is False


# -- a four-leaf tree built by hand for every suite ----------------------------------------
#
#            Y[3]                 Y = node 3, root, leaf 3 unmerged (added after the commit)
#          /      \
#         X        _              X = node 1
#        / \      / \
#       A   B    C   D            A commits (source commit), B and C joined from key
#                                 packages, D added afterwards.

GROUP_ID = b"group for suite tests"


def _th_leaf(h: str, index: int, leaf: LeafNode | None) -> bytes:
    body = b"\x01" + index.to_bytes(4, "big") + (b"\x01" + leaf.to_bytes() if leaf else b"\x00")
    return hashlib.new(h, body).digest()


def _th_parent(h: str, node: ParentNode | None, left: bytes, right: bytes) -> bytes:
    body = b"\x02" + (b"\x01" + node.to_bytes() if node else b"\x00") + _vec(left) + _vec(right)
    return hashlib.new(h, body).digest()


def _ph(h: str, node: ParentNode, sibling_hash: bytes) -> bytes:
    return hashlib.new(
        h, _vec(node.encryption_key) + _vec(node.parent_hash) + _vec(sibling_hash)
    ).digest()


def _leaf(
    suite: CipherSuite,
    signer: IndependentSigner,
    source: LeafNodeSource,
    index: int,
    ph: bytes = b"",
) -> LeafNode:
    unsigned = LeafNode(
        encryption_key=suite.random_hpke_public_key(),
        signature_key=signer.public,
        credential=Credential.basic(b"member %d" % index),
        capabilities=Capabilities(cipher_suites=(suite.suite_id,)),
        leaf_node_source=source,
        lifetime=Lifetime(0, 2**63) if source is LeafNodeSource.KEY_PACKAGE else None,
        parent_hash=ph,
    )
    tbs = unsigned.to_bytes()[:-1]  # LeafNodeTBS = the fields before the (empty) signature ...
    if source is not LeafNodeSource.KEY_PACKAGE:
        tbs += _vec(GROUP_ID) + index.to_bytes(4, "big")  # ... plus group id and leaf index
    return replace(unsigned, signature=signer.sign_with_label("LeafNodeTBS", tbs))


@dataclass
class HandBuilt:
    tree: RatchetTree
    root_hash: bytes


def build_tree(suite_id: int) -> HandBuilt:
    suite = cipher_suite(suite_id)
    h = HASH_NAMES[suite_id]
    signers = [independent_signer(suite_id) for _ in range(4)]
    b = _leaf(suite, signers[1], LeafNodeSource.KEY_PACKAGE, 1)
    c = _leaf(suite, signers[2], LeafNodeSource.KEY_PACKAGE, 2)
    # A's commit: filtered direct path X, Y (C is under Y's right child, B is X's sibling).
    node5_at_commit = _th_parent(h, None, _th_leaf(h, 2, c), _th_leaf(h, 3, None))
    y = ParentNode(suite.random_hpke_public_key(), b"", ())
    x = ParentNode(suite.random_hpke_public_key(), _ph(h, y, node5_at_commit), ())
    a = _leaf(suite, signers[0], LeafNodeSource.COMMIT, 0, _ph(h, x, _th_leaf(h, 1, b)))
    # D joins: unmerged at Y, the only non-blank node above it.
    d = _leaf(suite, signers[3], LeafNodeSource.KEY_PACKAGE, 3)
    y = replace(y, unmerged_leaves=(3,))
    tree = RatchetTree((a, x, b, y, c, None, d))
    left = _th_parent(h, x, _th_leaf(h, 0, a), _th_leaf(h, 1, b))
    right = _th_parent(h, None, _th_leaf(h, 2, c), _th_leaf(h, 3, d))
    return HandBuilt(tree, _th_parent(h, y, left, right))


def _flip(data: bytes, at: int = -1) -> bytes:
    at %= len(data)
    return data[:at] + bytes([data[at] ^ 0x80]) + data[at + 1 :]


def _set(tree: RatchetTree, x: int, node: LeafNode | ParentNode | None) -> RatchetTree:
    nodes = list(tree.nodes)
    nodes[x] = node
    return RatchetTree(tuple(nodes))


@pytest.fixture(scope="module", params=OTHER, ids=[f"suite{s}" for s in OTHER])
def built(request: pytest.FixtureRequest) -> tuple[CipherSuite, HandBuilt]:
    return cipher_suite(request.param), build_tree(request.param)


def test_hand_built_tree_verifies(built: tuple[CipherSuite, HandBuilt]) -> None:
    suite, hb = built
    assert tree_hash(hb.tree, suite) == hb.root_hash
    assert len(tree_hashes(hb.tree, suite)[3]) == suite.hash_size
    assert parent_hash_failures(hb.tree, suite) == []
    assert signature_failures(hb.tree, suite, GROUP_ID) == []
    assert RatchetTree.from_bytes(hb.tree.to_bytes()) == hb.tree


def test_wrong_hash_or_scheme_fails(built: tuple[CipherSuite, HandBuilt]) -> None:
    suite, hb = built
    other_hash = next(s for s in CIPHER_SUITES.values() if s.hash_name != suite.hash_name)
    assert tree_hash(hb.tree, other_hash) != hb.root_hash
    assert parent_hash_failures(hb.tree, other_hash) == [1, 3]
    other_scheme = next(
        s for s in CIPHER_SUITES.values() if s.signature_scheme != suite.signature_scheme
    )
    assert signature_failures(hb.tree, other_scheme, GROUP_ID) == [0, 1, 2, 3]


def test_flipped_signature_byte_fails(built: tuple[CipherSuite, HandBuilt]) -> None:
    suite, hb = built
    for i in range(4):
        leaf = hb.tree.leaf(i)
        assert leaf is not None
        changed = _set(hb.tree, 2 * i, replace(leaf, signature=_flip(leaf.signature, 7)))
        assert signature_failures(changed, suite, GROUP_ID) == [i]
        # B is X's copath child and C sits under Y's; D is unmerged at Y, so left out.
        assert parent_hash_failures(changed, suite) == {0: [], 1: [1], 2: [3], 3: []}[i]
    assert signature_failures(hb.tree, suite, _flip(GROUP_ID)) == [0]  # only A binds the group


def test_flipped_leaf_content_byte_fails(built: tuple[CipherSuite, HandBuilt]) -> None:
    suite, hb = built
    a = hb.tree.leaf(0)
    assert a is not None
    changed = _set(hb.tree, 0, replace(a, parent_hash=_flip(a.parent_hash)))
    assert signature_failures(changed, suite, GROUP_ID) == [0]
    assert parent_hash_failures(changed, suite) == [1]
    c = hb.tree.leaf(2)
    assert c is not None
    changed = _set(hb.tree, 4, replace(c, encryption_key=_flip(c.encryption_key)))
    assert signature_failures(changed, suite, GROUP_ID) == [2]
    assert parent_hash_failures(changed, suite) == [3]  # Y's original sibling hash moved


def test_flipped_parent_byte_fails(built: tuple[CipherSuite, HandBuilt]) -> None:
    suite, hb = built
    x, y = hb.tree.nodes[1], hb.tree.nodes[3]
    assert isinstance(x, ParentNode) and isinstance(y, ParentNode)
    assert parent_hash_failures(
        _set(hb.tree, 3, replace(y, encryption_key=_flip(y.encryption_key))), suite
    ) == [3]
    assert parent_hash_failures(
        _set(hb.tree, 1, replace(x, parent_hash=_flip(x.parent_hash))), suite
    ) == [1, 3]
    assert parent_hash_failures(
        _set(hb.tree, 1, replace(x, encryption_key=_flip(x.encryption_key, 5))), suite
    ) == [1]
    # Y without its unmerged leaf: D now counts in the sibling hash, and Y's link breaks.
    assert parent_hash_failures(_set(hb.tree, 3, replace(y, unmerged_leaves=())), suite) == [3]
    changed = _set(hb.tree, 3, replace(y, encryption_key=_flip(y.encryption_key)))
    assert signature_failures(changed, suite, GROUP_ID) == []


def test_signing_key_type_is_plain_data() -> None:
    key = cipher_suite(1).generate_signing_key()
    assert isinstance(key, SigningKey) and "private" not in repr(key)
