"""Publishing sealed snapshots (MLS epochs only move forward) and paging through them.

Every snapshot this node stores gets its signed receipt (`pre.SnapshotReceipt`: held since
its own clock's `stored_at`), answered to the publisher and served with the snapshot; the
publisher hands each node the other nodes' receipts (`confirm`), so a reader finds M of
them on any one honest node that holds the snapshot."""

from __future__ import annotations

from collections.abc import Callable

import pre

from ..errors import Code, ServiceError
from ..protocol import models as m
from ..protocol.codes import Quota
from ..storage import SnapshotWrite, Storage, StoredSnapshot, WriteOutcome
from .auth import Caller
from .delegation import DelegationService
from .records import Clock, decode, verifying

# A group's tree at an epoch is rebuilt from the newest base at or below it and the patches
# after that base. Nodes keep a window of bases (`Settings.retain_tree_bases`), so storing a
# new base deletes the group's patches below the oldest base still kept: they rebuild no
# epoch any more.
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
_QUOTAS = {
    WriteOutcome.QUOTA_GROUPS: (Quota.GROUPS, "a new group is beyond", "groups"),
    WriteOutcome.QUOTA_STORED_BYTES: (Quota.STORED_BYTES, "storing it exceeds", "bytes stored"),
}
# A purge reads a group's snapshots page by page to find the author's.
_PURGE_PAGE = 500
_MANIFEST_KEY_CACHE = 1024  # accounts whose manifest node keys are kept decoded


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
        quota_groups: int = 10_000,
        quota_stored_bytes: int = 1 << 30,
    ) -> None:
        self._quota_groups = quota_groups
        self._quota_stored_bytes = quota_stored_bytes
        self._storage = storage
        self._node = node
        self._max_jump = max_epoch_jump
        self._delegation = delegation
        self._retention = retention
        self._clock = clock
        self._skew = skew_seconds
        self._manifest_keys: dict[str, tuple[bytes, frozenset[bytes]]] = {}

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
                        quota=exc.extra.get("quota"),
                        limit=exc.extra.get("limit"),
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
        # A device's own MLS state lives at an address of its own: another device of the
        # account (same KEKs) must not publish there a newer epoch that hides its backups.
        if header.kind == pre.OWN_STATE_KIND and not pre.owns_own_state_address(
            caller.device.device_id, header.group_id
        ):
            raise ServiceError(Code.FORBIDDEN, "an own-state address of another device")
        # Stamped with this node's clock, at which `authenticate` found the author certified
        # and unrevoked: readers judge the author at the receipts' times, not its own claim.
        now = int(self._clock())
        receipt = self._node.sign_snapshot_receipt(
            account_id=caller.account.account_id, digest=snapshot.digest, stored_at=now
        ).to_bytes()
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
                stored_at=now,
                receipt=receipt,
                quota_groups=self._quota_groups,
                quota_stored_bytes=self._quota_stored_bytes,
            ),
        )
        if outcome.status is WriteOutcome.REVOKED:
            raise ServiceError(Code.DEVICE_REVOKED, "this device is revoked")
        if outcome.status in _QUOTAS:
            quota, what, unit = _QUOTAS[outcome.status]
            raise ServiceError(
                Code.QUOTA_EXCEEDED,
                f"{what} the account's quota on this node: {outcome.limit:,} {unit}",
                quota=quota.value,
                limit=outcome.limit,
            )
        if outcome.status in _REJECTIONS:
            code, detail = _REJECTIONS[outcome.status]
            raise ServiceError(code, detail, current_epoch=outcome.current_epoch)
        assert outcome.seq is not None
        if outcome.status is WriteOutcome.STORED:
            return m.PublishResult(status=m.PublishStatus.STORED, seq=outcome.seq, receipt=receipt)
        held = outcome.receipt
        if held is None:  # stored before receipts existed: receipted from now on
            held = await self._storage.set_receipt(caller.account_id, outcome.seq, now, receipt)
        return m.PublishResult(status=m.PublishStatus.DUPLICATE, seq=outcome.seq, receipt=held)

    async def confirm(self, caller: Caller, body: m.ConfirmRequest) -> m.ConfirmResponse:
        """Keep other nodes' receipts for snapshots this node holds, so that a reader who
        reaches only this node still finds M. Each must be a valid signature of a node of
        the account's manifest (any node's, for an account from before manifests) over this
        account and the snapshot's digest; the rest of the item's receipts are refused with
        it. What is kept counts against the account's byte quota."""
        keys = await self._node_keys(caller.account_id)
        results: list[m.ConfirmResult] = []
        for item in body.items:
            try:
                merged = self._checked_receipts(caller, item, keys)
            except ServiceError as exc:
                results.append(
                    m.ConfirmResult(status="rejected", code=exc.code.value, detail=exc.detail)
                )
                continue
            outcome = await self._storage.put_receipts(
                caller.account_id, group_id=item.group_id, kind=item.kind,
                mls_epoch=item.mls_epoch, digest=item.digest, receipts=merged,
            )  # fmt: skip
            results.append(m.ConfirmResult(status=outcome.value))
        return m.ConfirmResponse(results=results)

    def _checked_receipts(
        self, caller: Caller, item: m.ConfirmItem, keys: frozenset[bytes] | None
    ) -> bytes:
        """Every distinct receipt of the item must hold, or the item is refused; the cheap
        checks run on all before any signature (copies of one receipt are checked once)."""
        receipts: dict[bytes, pre.SnapshotReceipt] = {}
        for data in dict.fromkeys(item.receipts):
            receipt = decode(pre.SnapshotReceipt.from_bytes, data, "snapshot receipt")
            if receipt.account_id != caller.account.account_id or receipt.digest != item.digest:
                raise ServiceError(Code.INVALID_RECORD, "a receipt names another snapshot")
            if keys is not None and receipt.node_key not in keys:
                raise ServiceError(Code.INVALID_RECORD, "a receipt of a node not in the manifest")
            receipts[data] = receipt
        by_node: dict[bytes, bytes] = {}
        for data, receipt in receipts.items():
            with verifying("snapshot receipt"):
                receipt.verify(receipt.node_key)
            if receipt.node_key != self._node.public_key:  # its own is kept apart
                by_node.setdefault(receipt.node_key, data)
        return b"".join(by_node[k] for k in sorted(by_node))

    async def _node_keys(self, account_id: str) -> frozenset[bytes] | None:
        stored = await self._storage.get_manifest(account_id)
        if stored is None:
            return None
        cached = self._manifest_keys.get(account_id)
        if cached is not None and cached[0] == stored.digest:
            return cached[1]
        manifest = decode(pre.AccountManifest.from_bytes, stored.data, "stored manifest")
        keys = frozenset(n.node_key for n in manifest.nodes)
        if len(self._manifest_keys) >= _MANIFEST_KEY_CACHE:
            self._manifest_keys.pop(next(iter(self._manifest_keys)))
        self._manifest_keys[account_id] = (stored.digest, keys)
        return keys

    async def _receipts(self, caller: Caller, row: StoredSnapshot) -> list[bytes]:
        own = row.receipt
        if own is None:  # stored before receipts existed: receipted from now on
            now = int(self._clock())
            own = await self._storage.set_receipt(
                caller.account_id,
                row.seq,
                now,
                self._node.sign_snapshot_receipt(
                    account_id=caller.account.account_id, digest=row.digest, stored_at=now
                ).to_bytes(),
            )
        return [own, *pre.split_receipts(row.others)[: m.MAX_RECEIPTS - 1]]

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
                    receipts=await self._receipts(caller, r) if query.receipts else [],
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
