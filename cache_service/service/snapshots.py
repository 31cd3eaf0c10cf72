"""Publishing sealed snapshots (MLS epochs only move forward) and paging through them."""

from __future__ import annotations

from collections.abc import Callable

import pre

from ..errors import Code, ServiceError
from ..protocol import models as m
from ..storage import SnapshotWrite, Storage, WriteOutcome
from .auth import Caller
from .delegation import DelegationService
from .records import Clock, decode, verifying

# A new base of a group's ratchet tree ends the chain of patches before it: readers rebuild
# from the newest base, so storing one deletes the group's patches below its MLS epoch.
PRUNED_BY = {"ratchet_tree": "ratchet_tree_patch"}

_REJECTIONS = {
    WriteOutcome.STALE_EPOCH: (Code.STALE_EPOCH, "MLS epoch is below the newest stored"),
    WriteOutcome.CONFLICT: (Code.CONFLICT, "another snapshot holds this MLS epoch"),
    WriteOutcome.STALE_KEY_EPOCH: (Code.STALE_KEY_EPOCH, "sealed under an old key epoch"),
    WriteOutcome.NO_CAPSULE: (Code.NOT_FOUND, "the label has no key capsule"),
    WriteOutcome.EPOCH_TOO_FAR: (
        Code.EPOCH_TOO_FAR,
        "MLS epoch is more than the allowed jump above the newest stored",
    ),
}
# A purge reads a group's snapshots page by page to find the author's.
_PURGE_PAGE = 500


class SnapshotService:
    def __init__(
        self,
        storage: Storage,
        delegation: DelegationService,
        *,
        retention: Callable[[str], int],
        clock: Clock,
        skew_seconds: int,
        node: pre.NodeSecrets,
        max_epoch_jump: int = 65_536,
    ) -> None:
        self._storage = storage
        self._node = node
        self._max_jump = max_epoch_jump
        self._delegation = delegation
        self._retention = retention
        self._clock = clock
        self._skew = skew_seconds

    async def publish(self, caller: Caller, body: m.PublishRequest) -> m.PublishResponse:
        """Each snapshot gets its own result, so one bad item never sinks the batch."""
        allowed = await self._delegation.granted_labels(caller)
        results = []
        for data in body.snapshots:
            try:
                results.append(await self._publish_one(caller, data, allowed))
            except ServiceError as exc:
                if exc.code is Code.DEVICE_REVOKED:
                    raise
                results.append(
                    m.PublishResult(
                        status=m.PublishStatus.REJECTED,
                        code=exc.code.value,
                        detail=exc.detail,
                        current_epoch=exc.extra.get("current_epoch"),
                    )
                )
        return m.PublishResponse(results=results)

    async def publish_single(
        self, caller: Caller, data: bytes, *, group_id: bytes, kind: str
    ) -> m.PublishResult:
        """One snapshot at its (group, kind) address; a refusal is raised (a 409 stating
        the current epoch, ...)."""
        allowed = await self._delegation.granted_labels(caller)
        return await self._publish_one(caller, data, allowed, address=(group_id, kind))

    async def _publish_one(
        self,
        caller: Caller,
        data: bytes,
        allowed: set[str] | None,
        address: tuple[bytes, str] | None = None,
    ) -> m.PublishResult:
        snapshot = decode(pre.SealedSnapshot.from_bytes, data, "snapshot")
        if address is not None and address != (snapshot.header.group_id, snapshot.header.kind):
            raise ServiceError(Code.INVALID_RECORD, "snapshot is for another group or kind")
        with verifying("snapshot"):
            snapshot.verify(caller.device)  # the caller is the author, of this account
        header = snapshot.header
        # Readers accept a snapshot only if its author was certified (and, give or take
        # twice this window, not yet revoked) at its time: one dated otherwise would be
        # stored here and refused by every reader, so that no device of the account could
        # read. Earlier times stay accepted: a retry resends what was sealed then.
        if header.created_at > int(self._clock()) + self._skew:
            raise ServiceError(Code.INVALID_RECORD, "the snapshot is dated in the future")
        with verifying("snapshot author"):
            caller.device.verify(caller.account, now=header.created_at)
        if allowed is not None and header.label not in allowed:
            raise ServiceError(Code.FORBIDDEN, "no grant for this snapshot's label")
        outcome = await self._storage.publish(
            caller.account_id,
            SnapshotWrite(
                label=header.label,
                key_epoch=header.key_epoch,
                group_id=header.group_id,
                kind=header.kind,
                mls_epoch=header.mls_epoch,
                author=caller.device_id,
                digest=snapshot.digest,
                data=data,
                retain=self._retention(header.kind),
                prunes=PRUNED_BY.get(header.kind),
                max_jump=self._max_jump,
            ),
        )
        if outcome.status is WriteOutcome.REVOKED:
            raise ServiceError(Code.DEVICE_REVOKED, "this device is revoked")
        if outcome.status in _REJECTIONS:
            code, detail = _REJECTIONS[outcome.status]
            raise ServiceError(code, detail, current_epoch=outcome.current_epoch)
        status = (
            m.PublishStatus.STORED
            if outcome.status is WriteOutcome.STORED
            else m.PublishStatus.DUPLICATE
        )
        return m.PublishResult(status=status, seq=outcome.seq)

    async def list(self, caller: Caller, query: m.SnapshotQuery) -> m.SnapshotPage:
        allowed = await self._delegation.granted_labels(caller)
        rows, head, cursor = await self._storage.list_snapshots(
            caller.account_id,
            descending=query.order == "desc",
            start=query.before if query.order == "desc" else query.after,
            limit=query.limit,
            group_id=query.group,
            with_data=query.data,
        )
        items: list[m.SnapshotItem] = []
        size = 0
        for r in rows:
            if allowed is not None and r.label not in allowed:
                continue
            data = r.data if query.data else None
            if items and data is not None and size + len(data) > m.MAX_PAGE_DATA_BYTES:
                # The page is full: the device asks again from the last item it holds.
                cursor = items[-1].seq
                break
            size += 0 if data is None else len(data)
            items.append(
                m.SnapshotItem(
                    seq=r.seq,
                    label=r.label,
                    key_epoch=r.key_epoch,
                    group_id=r.group_id,
                    kind=r.kind,
                    mls_epoch=r.mls_epoch,
                    digest=r.digest,
                    snapshot=data,
                )
            )
        return m.SnapshotPage(items=items, next_cursor=cursor, head=head)

    async def purge(self, caller: Caller, body: m.PurgeBody) -> m.PurgeReceiptBody:
        """Delete a revoked author's snapshots of one group from an MLS epoch on (an admin
        clearing what that author wedged), and answer this node's signed receipt."""
        caller.require_admin()
        purge = decode(pre.Purge.from_bytes, body.purge, "purge")
        with verifying("purge"):
            purge.verify(caller.account)
        devices = await self._storage.list_devices(caller.account_id)
        author = devices.get(purge.author.hex())
        if author is None or author.revocation is None:
            raise ServiceError(Code.CONFLICT, "only a revoked author's snapshots are purged")
        doomed: list[int] = []
        cursor: int | None = None
        while True:
            rows, _, cursor = await self._storage.list_snapshots(
                caller.account_id,
                descending=False,
                start=cursor,
                limit=_PURGE_PAGE,
                group_id=purge.group_id,
            )
            for row in rows:
                if row.mls_epoch < purge.from_epoch:
                    continue
                snapshot = decode(pre.SealedSnapshot.from_bytes, row.data, "stored snapshot")
                if snapshot.header.author == purge.author:
                    doomed.append(row.seq)
            if cursor is None:
                break
        deleted = await self._storage.delete_snapshots(caller.account_id, purge.group_id, doomed)
        receipt = self._node.sign_purge_receipt(
            account_id=purge.account_id, purge=body.purge, deleted=deleted, now=int(self._clock())
        )
        return m.PurgeReceiptBody(receipt=receipt.to_bytes())
