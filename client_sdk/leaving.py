"""Leaving: the admin deletes the account from every node.

The admin signs one `pre.AccountDeletion` with the account root and sends it to every node
of the account; each deletes everything it holds for the account and answers a signed
`pre.DeletionReceipt`. A receipt counts only if the node's pinned key signed it, for this
account, naming a valid deletion of this account (the first one the node received: a
repeat from a lost run is answered with that one). Deleting again is safe: nodes answer
their stored receipt, and a node that was down deletes now."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

import pre

from .confirmations import CLOCK_SKEW
from .errors import BadAnswer
from .node_client import NodeClient
from .outcomes import NodeOutcome
from .session import Session

__all__ = ["DeletionReport", "check_receipt", "delete_account"]


@dataclass(frozen=True)
class DeletionReport:
    deletion: pre.AccountDeletion
    receipts: dict[str, pre.DeletionReceipt]  # node URL -> its verified receipt
    nodes: dict[str, NodeOutcome]

    @property
    def complete(self) -> bool:
        """Every node of the account answered a valid receipt."""
        return set(self.receipts) == set(self.nodes) and bool(self.receipts)


async def delete_account(session: Session, account: pre.AccountSecrets) -> DeletionReport:
    now = session.now()
    record = pre.register_account(account, now=now)  # any record of the root will do
    deletion = pre.delete_account(account, record, now=now)

    async def delete_on(node: NodeClient) -> pre.DeletionReceipt:
        key = await node.identity()  # pinned: the receipt must be this node's
        receipt, in_force = await node.delete_account(deletion)
        return check_receipt(node.base_url, key, account.account_id, receipt, in_force, now)

    answers = await session.fan.call(delete_on)
    return DeletionReport(deletion, answers.results, session.outcomes.snapshot())


def check_receipt(  # noqa: PLR0917 - what a receipt is checked against
    url: str,
    node_key: bytes,
    account_id: bytes,
    receipt: pre.DeletionReceipt,
    in_force: pre.AccountDeletion,
    now: int,
) -> pre.DeletionReceipt:
    """The receipt of the node at `url`, if its pinned key signed it for this account,
    naming a valid order of this account, at a time that node can have seen."""
    try:
        receipt.verify(node_key)
        in_force.verify()
    except pre.PreError as exc:
        raise BadAnswer(f"its deletion receipt does not verify ({exc})", url) from exc
    if not (
        hmac.compare_digest(receipt.account_id, account_id)
        and hmac.compare_digest(in_force.account_id, account_id)
    ):
        raise BadAnswer("its deletion receipt names another account", url)
    if not hmac.compare_digest(receipt.deletion_digest, pre.deletion_digest(in_force.to_bytes())):
        raise BadAnswer("its deletion receipt names another deletion", url)
    # Its time is the node's own clock; one it cannot have seen yet is a lie (and one past
    # any calendar would break the report).
    if not in_force.deleted_at - CLOCK_SKEW <= receipt.processed_at <= now + CLOCK_SKEW:
        raise BadAnswer("its deletion receipt is dated outside the deletion", url)
    return receipt
