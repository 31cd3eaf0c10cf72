"""A node's identity and its signed revocation receipts."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pre import (
    BindingError,
    DeviceSecrets,
    NodeSecrets,
    RevocationReceipt,
    ShareRef,
    SignatureError,
    node_id_for,
)
from pre._primitives import ed25519_sign
from pre.nodes import MAX_RECEIPT_SHARES


@pytest.fixture(scope="module")
def other_node(make_device: Callable[[str], DeviceSecrets]) -> NodeSecrets:
    return NodeSecrets(make_device("node 2").signing_seed)


def test_node_identity(node: NodeSecrets, other_node: NodeSecrets) -> None:
    assert len(node.public_key) == 32
    assert node.node_id == node_id_for(node.public_key)
    assert len(node.node_id) == 16
    assert NodeSecrets(node.seed).public_key == node.public_key
    assert other_node.node_id != node.node_id


def test_receipt_verifies_under_the_pinned_node_key(
    receipt: RevocationReceipt, node: NodeSecrets, other_node: NodeSecrets, now: int
) -> None:
    assert receipt.verify(node.public_key) is receipt
    assert receipt.node_key == node.public_key
    assert receipt.node_id == node.node_id
    assert receipt.processed_at == now + 5
    assert [r.label for r in receipt.deleted] == ["account", "group:bWxzIGdyb3VwIAABAg"]
    with pytest.raises(SignatureError):
        receipt.verify(other_node.public_key)


def test_altered_receipt_fails_its_signature(
    receipt: RevocationReceipt, node: NodeSecrets, other_node: NodeSecrets
) -> None:
    for changed in (
        receipt.replace(deleted=receipt.deleted[:1]),
        receipt.replace(deleted=(*receipt.deleted, ShareRef("account", 1))),
        receipt.replace(revoked_at=receipt.revoked_at + 1),
        receipt.replace(node_key=other_node.public_key),
    ):
        with pytest.raises(SignatureError):
            changed.verify(node.public_key)


def test_receipt_naming_another_node_is_refused(
    receipt: RevocationReceipt, node: NodeSecrets, other_node: NodeSecrets
) -> None:
    """Signed by the pinned node, but claiming to be another node's receipt."""
    claimed = receipt.replace(node_key=other_node.public_key)
    claimed = claimed.replace(
        signature=ed25519_sign(node._key, "revocation-receipt", claimed.tbs())
    )
    with pytest.raises(BindingError):
        claimed.verify(node.public_key)


def test_receipt_share_count_is_bounded(receipt: RevocationReceipt) -> None:
    refs = (ShareRef("account", 0),) * MAX_RECEIPT_SHARES
    assert len(receipt.replace(deleted=refs).deleted) == MAX_RECEIPT_SHARES
    with pytest.raises(ValueError):
        receipt.replace(deleted=(*refs, ShareRef("account", 1)))
    with pytest.raises(TypeError):
        receipt.replace(deleted=list(refs))


def test_snapshot_receipt_binds_node_account_digest_and_time(
    node: NodeSecrets, other_node: NodeSecrets, now: int
) -> None:
    from pre import SNAPSHOT_RECEIPT_SIZE, SnapshotReceipt, split_receipts

    receipt = node.sign_snapshot_receipt(
        account_id=bytes(32), digest=bytes(range(32)), stored_at=now
    )
    data = receipt.to_bytes()
    assert len(data) == SNAPSHOT_RECEIPT_SIZE
    assert SnapshotReceipt.from_bytes(data).verify(node.public_key) == receipt
    with pytest.raises(BindingError):
        receipt.verify(other_node.public_key)
    for changed in (
        receipt.replace(digest=bytes(32)),
        receipt.replace(stored_at=now - 1),
        receipt.replace(account_id=b"\x01" * 32),
    ):
        with pytest.raises(SignatureError):
            changed.verify(node.public_key)
    # stored back to back, split again; a torn tail is dropped
    assert split_receipts(data + data + data[:10]) == [data, data]
