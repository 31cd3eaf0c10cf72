"""Deleting an account: the admin's root-signed order, a sweep of every key, a receipt.

The order authenticates itself (it carries the account record; the root key signs it), so
its route needs no device signature, and a repeat after the devices and certificates are
gone is still answered. A node that never held the account keeps a tombstone all the
same (a replayed registration must not bring the account there later) and answers a
receipt deleting nothing. One deletion of an account runs at a time: a concurrent order
waits for it and gets its receipt."""

from __future__ import annotations

import asyncio
import logging

import pre

from ..errors import Code, ServiceError
from ..protocol import models as m
from ..storage import Storage
from .records import Clock, decode, verifying

__all__ = ["DeletionService"]

log = logging.getLogger("statecache.node")


class DeletionService:
    def __init__(self, storage: Storage, node: pre.NodeSecrets, *, clock: Clock) -> None:
        self._storage = storage
        self._node = node
        self._clock = clock
        self._running: dict[str, asyncio.Future[m.DeletionReceiptBody]] = {}

    async def delete(self, account_id: str, body: m.AccountDeletionBody) -> m.DeletionReceiptBody:
        deletion = decode(pre.AccountDeletion.from_bytes, body.deletion, "account deletion")
        # The path first: two signature checks are not spent on an order for elsewhere.
        if deletion.account_id.hex() != account_id:
            raise ServiceError(Code.INVALID_RECORD, "account deletion is for another account")
        with verifying("account deletion"):
            deletion.verify()
        running = self._running.get(account_id)
        if running is None:
            running = asyncio.ensure_future(self._delete(account_id, body.deletion))
            self._running[account_id] = running
            running.add_done_callback(lambda _: self._running.pop(account_id, None))
        return await asyncio.shield(running)

    async def _delete(self, account_id: str, order: bytes) -> m.DeletionReceiptBody:
        stored = await self._storage.mark_deleted(account_id, order)
        if stored.receipt is not None:
            return m.DeletionReceiptBody(receipt=stored.receipt, deletion=stored.deletion)
        deleted = await self._storage.sweep_account(account_id) + stored.record_deleted
        receipt = await self._storage.finish_deletion(
            account_id, self._sign(account_id, stored.deletion, deleted)
        )
        if stored.held:
            log.info("account deleted", extra={"account": account_id, "keys": deleted})
        return m.DeletionReceiptBody(receipt=receipt, deletion=stored.deletion)

    def _sign(self, account_id: str, deletion: bytes, deleted: int) -> bytes:
        return self._node.sign_deletion_receipt(
            account_id=bytes.fromhex(account_id),
            deletion=deletion,
            deleted=deleted,
            now=int(self._clock()),
        ).to_bytes()
