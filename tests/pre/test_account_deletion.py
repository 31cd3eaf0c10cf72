"""The admin's account deletion and a node's deletion receipt: self-certifying, bound to
one account and one node, every changed byte refused."""

from __future__ import annotations

import pytest

from pre import (
    AccountDeletion,
    AccountRecord,
    AccountSecrets,
    BindingError,
    DeletionReceipt,
    NodeSecrets,
    PreError,
    delete_account,
    deletion_digest,
    register_account,
)
from tests.pre.conftest import NOW
from tests.pre.test_tamper import assert_every_flip_rejected


@pytest.fixture(scope="module")
def deletion(account: AccountSecrets, account_record: AccountRecord) -> AccountDeletion:
    return delete_account(account, account_record, now=NOW)


def test_deletion_verifies_on_its_own_and_names_its_account(
    deletion: AccountDeletion, account_record: AccountRecord
) -> None:
    verified = AccountDeletion.from_bytes(deletion.to_bytes()).verify()
    assert verified.account_id == account_record.account_id
    assert verified.deleted_at == NOW


def test_only_the_accounts_root_can_order_it(
    account: AccountSecrets, other_account: AccountSecrets, other_account_record: AccountRecord
) -> None:
    with pytest.raises(BindingError):
        delete_account(account, other_account_record, now=NOW)
    # another root's signature over this account's record: refused
    forged = delete_account(other_account, other_account_record, now=NOW)
    swapped = AccountDeletion(
        account=AccountRecord.from_bytes(
            delete_account(account, _record(account), now=NOW).account.to_bytes()
        ),
        deleted_at=NOW,
        signature=forged.signature,
    )
    with pytest.raises(PreError):
        swapped.verify()


def _record(account: AccountSecrets) -> AccountRecord:
    return register_account(account, now=NOW - 1)


def test_every_flipped_byte_is_refused(deletion: AccountDeletion) -> None:
    assert_every_flip_rejected(
        deletion.to_bytes(), lambda b: AccountDeletion.from_bytes(b).verify()
    )


def test_receipt_binds_node_account_and_deletion(
    deletion: AccountDeletion, node: NodeSecrets
) -> None:
    raw = deletion.to_bytes()
    receipt = node.sign_deletion_receipt(
        account_id=deletion.account_id, deletion=raw, deleted=17, now=NOW + 1
    )
    assert receipt.verify(node.public_key) is receipt
    assert receipt.deletion_digest == deletion_digest(raw)
    assert (receipt.account_id, receipt.deleted) == (deletion.account_id, 17)
    other = NodeSecrets.generate()
    with pytest.raises(PreError):
        receipt.verify(other.public_key)
    assert_every_flip_rejected(
        receipt.to_bytes(), lambda b: DeletionReceipt.from_bytes(b).verify(node.public_key)
    )
