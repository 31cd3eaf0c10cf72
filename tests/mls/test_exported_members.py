"""The public surface of `client_sdk.mls`: exactly these names, one error family."""

from __future__ import annotations

import client_sdk.mls as mls

EXPECTED = [
    "Add",
    "CIPHER_SUITES",
    "Capabilities",
    "CipherSuite",
    "Credential",
    "CredentialType",
    "Extension",
    "HPKEPublicKey",
    "KeyPackage",
    "LEAF_NODE_LABEL",
    "LeafNode",
    "LeafNodeSource",
    "Lifetime",
    "MlsDecodeError",
    "MlsError",
    "MlsTreeError",
    "Node",
    "NodeType",
    "ParentNode",
    "Proposal",
    "ProposalType",
    "RatchetTree",
    "Remove",
    "SYNTHETIC_GROUP_ID",
    "SignaturePublicKey",
    "SigningKey",
    "SyntheticGroup",
    "TreeStats",
    "UnsupportedCipherSuite",
    "Update",
    "add_leaf",
    "apply_proposal",
    "apply_proposals",
    "cipher_suite",
    "decode_node",
    "decode_proposal",
    "encode_node",
    "encode_proposal",
    "extend",
    "original_sibling_tree_hash",
    "parent_hash",
    "parent_hash_failures",
    "remove_leaf",
    "signature_failures",
    "synthetic_tree",
    "tree_hash",
    "tree_hashes",
    "tree_math",
    "tree_stats",
    "truncate",
    "update_leaf",
    "verify_leaf_signature",
    "verify_leaf_signatures",
    "verify_parent_hashes",
]


def test_all_is_pinned() -> None:
    assert sorted(mls.__all__) == sorted(EXPECTED)
    assert len(set(mls.__all__)) == len(mls.__all__)
    for name in mls.__all__:
        assert getattr(mls, name) is not None, name


def test_errors_form_one_family() -> None:
    assert mls.MlsError.__bases__ == (Exception,)
    assert mls.MlsDecodeError.__bases__ == (mls.MlsError,)
    assert mls.MlsTreeError.__bases__ == (mls.MlsError,)
    assert mls.UnsupportedCipherSuite.__bases__ == (mls.MlsError, ValueError)
    exported = {obj for name in mls.__all__ if isinstance(obj := getattr(mls, name), type)}
    assert {c for c in exported if issubclass(c, BaseException)} == {
        mls.MlsError,
        mls.MlsDecodeError,
        mls.MlsTreeError,
        mls.UnsupportedCipherSuite,
    }


def test_no_cryptography_types_in_the_api() -> None:
    import inspect

    for name in mls.__all__:
        obj = getattr(mls, name)
        if callable(obj) and not isinstance(obj, type):
            try:
                signature = str(inspect.signature(obj))
            except (TypeError, ValueError):
                continue
            assert "cryptography" not in signature and "hazmat" not in signature, name
