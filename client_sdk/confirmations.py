"""Which snapshots are confirmed: backed by M valid receipts from distinct pinned nodes.

A node signs a receipt (`pre.SnapshotReceipt`) for each snapshot it stores, stamped with its
own clock; the publisher hands every node the others' receipts. With at most M - 1 lying
nodes, M receipts include an honest node's, and an honest node stores only what an
authenticated, certified, unrevoked author sent it. So a revoked or expired author, helped
by M - 1 nodes, cannot get a snapshot confirmed, whatever time it writes in its header: the
author's certificate is judged at each receipt's time, not at the author's claim.

Receipts are pooled from every answer of a read (the item itself, every node's metadata
listing), so a node that withholds receipts or a snapshot hides nothing another node holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pre

from .errors import VerificationFailed

__all__ = ["CLOCK_SKEW", "RECEIPT_REVOCATION_GRACE", "ReceiptPool"]

# How far ahead of this device's clock a node's receipt or an author's snapshot may be
# dated (the nodes' default request window).
CLOCK_SKEW = 300
# How long after a revocation (the admin's clock) a receipt (a node's clock) still counts
# for the revoked author: the two clocks' skew. A node that missed the revocation stores
# what the revoked device sends, so this is the window a revoked device and M - 1 such or
# lying nodes have; longer than the clocks' real skew only makes that window longer.
RECEIPT_REVOCATION_GRACE = 30


@dataclass
class ReceiptPool:
    """Every receipt a read saw that could count, by snapshot digest: it decodes, names
    this account and that digest, and comes from a pinned node. Signatures are checked
    only when a snapshot asks to be confirmed, and only until M verify (each once)."""

    account_id: bytes
    node_keys: frozenset[bytes]
    now: int
    _held: dict[bytes, dict[bytes, pre.SnapshotReceipt]] = field(default_factory=dict)
    _verdict: dict[bytes, bool] = field(default_factory=dict)

    def add(self, digest: bytes, receipts: Iterable[bytes]) -> None:
        held = self._held.setdefault(digest, {})
        for data in receipts:
            if data in held:
                continue
            try:
                receipt = pre.SnapshotReceipt.from_bytes(data)
            except pre.PreError:
                continue
            if (
                receipt.node_key in self.node_keys
                and receipt.account_id == self.account_id
                and receipt.digest == digest
                and receipt.stored_at <= self.now + CLOCK_SKEW
            ):
                held[data] = receipt

    def confirmations(
        self,
        header: pre.SnapshotHeader,
        digest: bytes,
        author_valid_at: Callable[[bytes, int], object],
        needed: int,
    ) -> set[bytes]:
        """The distinct nodes (keys) whose receipts confirm this snapshot, up to `needed`:
        receipts that verify, at whose time its author was certified and unrevoked
        (`author_valid_at` raises `VerificationFailed` otherwise), and which do not
        precede the snapshot's own time by more than the skew (a node refuses a snapshot
        dated ahead of its clock)."""
        nodes: set[bytes] = set()
        for data, receipt in sorted(self._held.get(digest, {}).items(), key=_earliest):
            if len(nodes) >= needed:
                break
            if receipt.node_key in nodes or header.created_at > receipt.stored_at + CLOCK_SKEW:
                continue
            try:
                author_valid_at(header.author, receipt.stored_at)
            except VerificationFailed:
                continue
            if not self._verifies(data, receipt):
                continue
            nodes.add(receipt.node_key)
        return nodes

    def _verifies(self, data: bytes, receipt: pre.SnapshotReceipt) -> bool:
        verdict = self._verdict.get(data)
        if verdict is None:
            try:
                receipt.verify(receipt.node_key)
                verdict = True
            except pre.PreError:
                verdict = False
            self._verdict[data] = verdict
        return verdict


def _earliest(entry: tuple[bytes, pre.SnapshotReceipt]) -> int:
    return entry[1].stored_at
