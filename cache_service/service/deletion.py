"""Deleting an account: the admin's root-signed order, a sweep of every key, a receipt.

The order authenticates itself (it carries the account record; the root key signs it), so
its route needs no device signature, and a repeat after the devices and certificates are
gone is still answered. A node that never held the account answers a receipt deleting
nothing and keeps no state (no tombstone a stranger could make it store)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pre

from ..errors import Code, ServiceError
from ..protocol import models as m
from ..storage import Storage
from .records import Clock, decode, verifying

__all__ = ["DeletionService"]

log = logging.getLogger("statecache.node")

# A request that authenticated just before the tombstone may still write (a grant, a
# capsule): sweep again after these delays.
STRAGGLER_SWEEPS = (2.0, 30.0)


class DeletionService:
    def __init__(
        self,
        storage: Storage,
        node: pre.NodeSecrets,
        *,
        clock: Clock,
        straggler_sweeps: tuple[float, ...] = STRAGGLER_SWEEPS,
    ) -> None:
        self._storage = storage
        self._node = node
        self._clock = clock
        self._delays = straggler_sweeps
        self._later: set[asyncio.Task[None]] = set()

    async def delete(self, account_id: str, body: m.AccountDeletionBody) -> m.DeletionReceiptBody:
        deletion = decode(pre.AccountDeletion.from_bytes, body.deletion, "account deletion")
        with verifying("account deletion"):
            deletion.verify()
        if deletion.account_id.hex() != account_id:
            raise ServiceError(Code.INVALID_RECORD, "account deletion is for another account")
        stored = await self._storage.mark_deleted(account_id, body.deletion)
        if not stored.held:
            receipt = self._sign(account_id, body.deletion, 0)
            return m.DeletionReceiptBody(receipt=receipt, deletion=body.deletion)
        if stored.receipt is not None:
            return m.DeletionReceiptBody(receipt=stored.receipt, deletion=stored.deletion)
        # + 1: the account record, deleted with the tombstone's making
        deleted = 1 + await self._storage.sweep_account(account_id)
        receipt = await self._storage.finish_deletion(
            account_id, self._sign(account_id, stored.deletion, deleted)
        )
        self._sweep_later(account_id)
        log.info("account deleted", extra={"account": account_id, "keys": deleted})
        return m.DeletionReceiptBody(receipt=receipt, deletion=stored.deletion)

    def _sign(self, account_id: str, deletion: bytes, deleted: int) -> bytes:
        return self._node.sign_deletion_receipt(
            account_id=bytes.fromhex(account_id),
            deletion=deletion,
            deleted=deleted,
            now=int(self._clock()),
        ).to_bytes()

    def _sweep_later(self, account_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._stragglers(account_id))
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    async def _stragglers(self, account_id: str) -> None:
        for delay in self._delays:
            await asyncio.sleep(delay)
            try:
                if found := await self._storage.sweep_account(account_id):
                    log.info("late keys swept", extra={"account": account_id, "keys": found})
            except Exception:  # storage down: the next deletion request sweeps again
                log.warning("late sweep failed", extra={"account": account_id}, exc_info=True)
                return

    async def close(self) -> None:
        for task in list(self._later):
            task.cancel()
        for task in list(self._later):
            with contextlib.suppress(asyncio.CancelledError):
                await task
