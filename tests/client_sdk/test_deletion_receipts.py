"""What the SDK takes as a node's proof that it deleted the account: that node's pinned
key's signature, this account, a valid order of this account, and a time it can have
seen. Real signatures throughout; each refusal is a `BadAnswer` naming the node."""

from __future__ import annotations

import pytest

import pre
from client_sdk.errors import BadAnswer
from client_sdk.leaving import check_receipt
from client_sdk.output import timestamp

NOW = 1_800_000_000
URL = "http://127.0.0.1:1"


def _order(account: pre.AccountSecrets, at: int = NOW) -> pre.AccountDeletion:
    return pre.delete_account(account, pre.register_account(account, now=at), now=at)


def _receipt(
    node: pre.NodeSecrets, order: pre.AccountDeletion, *, at: int = NOW + 1
) -> pre.DeletionReceipt:
    return node.sign_deletion_receipt(
        account_id=order.account_id, deletion=order.to_bytes(), deleted=3, now=at
    )


def test_an_honest_receipt_is_taken() -> None:
    account, node = pre.AccountSecrets.generate(), pre.NodeSecrets.generate()
    order = _order(account)
    receipt = _receipt(node, order)
    assert check_receipt(URL, node.public_key, account.account_id, receipt, order, NOW) == receipt


@pytest.mark.parametrize(
    "lie", ["another node's key", "another account", "another order", "dated ahead", "dated 2^40"]
)
def test_a_lying_receipt_is_refused(lie: str) -> None:
    account, node = pre.AccountSecrets.generate(), pre.NodeSecrets.generate()
    order = _order(account)
    receipt, in_force, key = _receipt(node, order), order, node.public_key
    if lie == "another node's key":
        key = pre.NodeSecrets.generate().public_key
    elif lie == "another account":
        in_force = _order(pre.AccountSecrets.generate())
        receipt = _receipt(node, in_force)
    elif lie == "another order":
        receipt = _receipt(node, _order(account, NOW - 60))
    elif lie == "dated ahead":
        receipt = _receipt(node, order, at=NOW + 3600)
    else:
        receipt = _receipt(node, order, at=2**40)
    with pytest.raises(BadAnswer) as info:
        check_receipt(URL, key, account.account_id, receipt, in_force, NOW)
    assert info.value.node == URL


@pytest.mark.parametrize("seconds", [2**40, 2**62, 2**64 - 1, -(2**62)])
def test_a_time_past_any_calendar_is_shown_not_raised(seconds: int) -> None:
    """Receipt and certificate times come from nodes: a revocation or purge receipt its
    node signed with such a time must not break the command's report."""
    assert timestamp(seconds) == f"@{seconds}"
    assert timestamp(1_800_000_000) == "2027-01-15T08:00:00Z"
