"""The snapshot half of `RedisStorage`: publishing (retention, pruning and quotas in one
script), receipts, purges and listings."""

from __future__ import annotations

import base64

from ..errors import Code, ServiceError
from .base import PublishOutcome, ReceiptOutcome, SnapshotWrite, StoredSnapshot, WriteOutcome
from .redis_base import RedisBase

__all__ = ["MAX_MLS_EPOCH", "RedisSnapshots", "b64"]

# MLS epochs are sorted-set scores and Lua numbers here, both IEEE doubles: exact up to
# 2^53 - 1. Above that, neighbouring epochs would compare equal; refuse them instead.
MAX_MLS_EPOCH = 2**53 - 1


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class RedisSnapshots(RedisBase):
    # snapshots

    async def publish(self, account_id: str, item: SnapshotWrite) -> PublishOutcome:
        if item.mls_epoch > MAX_MLS_EPOCH:
            raise ServiceError(
                Code.INVALID_RECORD, f"MLS epochs above {MAX_MLS_EPOCH} are not supported"
            )
        k = self._k
        g = b64(item.group_id)
        snap = k(account_id, "snap") + ":"
        pruned = item.prunes if item.prunes not in (None, item.kind) else None
        keys = [
            k(account_id, "capcur"),
            k(account_id, "gk", g, item.kind),
            k(account_id, "feed"),
            k(account_id, "seq"),
            k(account_id, "rev"),
            k(account_id, "group", g),
            k(account_id, "gk", g, pruned or item.kind),
            k(account_id, "usage"),
        ]
        args = [
            item.label,
            item.key_epoch,
            item.mls_epoch,
            item.digest,
            item.data,
            item.retain,
            snap,
            item.author,
            g,
            item.kind,
            "1" if pruned else "0",
            item.max_jump,
            item.stored_at,
            item.receipt,
            item.quota_groups,
            item.quota_stored_bytes,
        ]
        with self._forecast.publishing(account_id) as flight:
            forecast = self._forecast.keys(flight, g, item.kind)
            status, value, *rest = await self._write(
                self._publish,
                account_id,
                keys=keys,
                more=[snap + str(seq) for seq in forecast],
                args=args,
                reach=flight.reach,
            )
            outcome = WriteOutcome(status.decode())
            if outcome is WriteOutcome.STORED:
                ahead = tuple(int(seq) for seq in rest[0])
                self._forecast.stored(
                    flight, g, item.kind, seq=int(value), mls_epoch=item.mls_epoch, ahead=ahead
                )
                return PublishOutcome(outcome, seq=int(value), receipt=item.receipt)
        if outcome is WriteOutcome.DUPLICATE:
            held = rest[0] if rest else None
            self._forecast.found(account_id, g, item.kind, seq=int(value), mls_epoch=item.mls_epoch)
            return PublishOutcome(outcome, seq=int(value), receipt=bytes(held) if held else None)
        if outcome in (WriteOutcome.QUOTA_GROUPS, WriteOutcome.QUOTA_STORED_BYTES):
            return PublishOutcome(outcome, limit=int(value))
        return PublishOutcome(outcome, current_epoch=int(value))

    async def usage(self, account_id: str) -> tuple[int, int] | None:
        stored, groups, counted = await self._r.hmget(
            self._k(account_id, "usage"), ["bytes", "groups", "v"]
        )
        return None if counted is None else (int(stored), int(groups))

    async def set_receipt(self, account_id: str, seq: int, stored_at: int, receipt: bytes) -> bytes:
        """Give a snapshot stored before receipts existed this node's receipt (unless one
        is there already); returns the receipt in force."""
        held = await self._write(
            self._set_receipt,
            account_id,
            keys=[self._k(account_id, "snap", str(seq))],
            args=[stored_at, receipt],
        )  # a snapshot deleted since it was read keeps no stray hash of its receipt
        return bytes(held) if held else receipt

    async def put_receipts(
        self, account_id: str, *, group_id: bytes, kind: str, mls_epoch: int, digest: bytes,
        receipts: bytes,
    ) -> ReceiptOutcome:  # fmt: skip
        k, g = self._k, b64(group_id)
        seq = self._forecast.at_epoch(account_id, g, kind, mls_epoch)  # most often just stored
        status = await self._write(
            self._put_receipts,
            account_id,
            keys=[k(account_id, "gk", g, kind), k(account_id, "usage")],
            more=[] if seq is None else [k(account_id, "snap", str(seq))],
            args=[mls_epoch, digest, k(account_id, "snap") + ":", receipts],
        )
        return ReceiptOutcome(status.decode())

    async def delete_snapshots(self, account_id: str, group_id: bytes, seqs: list[int]) -> int:
        if not seqs:
            return 0
        k, g = self._k, b64(group_id)
        deleted = await self._write(
            self._delete_snapshots,
            account_id,
            keys=[
                k(account_id, "feed"),
                k(account_id, "usage"),
                k(account_id, "group", g),
                *(k(account_id, "snap", str(seq)) for seq in seqs),
            ],
            args=[k(account_id, "snap") + ":", k(account_id, "gk", g) + ":", *seqs],
        )
        return int(deleted)

    async def list_snapshots(
        self,
        account_id: str,
        *,
        descending: bool,
        start: int | None,
        limit: int,
        group_id: bytes | None,
        with_data: bool = True,
    ) -> tuple[list[StoredSnapshot], int, int | None]:
        k = self._k
        index = k(account_id, "feed") if group_id is None else k(account_id, "group", b64(group_id))
        async with self._r.pipeline(transaction=False) as p:
            if descending:
                top = "+inf" if start is None else f"({start}"
                p.zrevrangebyscore(index, top, "-inf", start=0, num=limit)
            else:
                p.zrangebyscore(index, f"({start or 0}", "+inf", start=0, num=limit)
            p.get(k(account_id, "seq"))
            seqs, head = await p.execute()
        cursor = int(seqs[-1]) if len(seqs) == limit else None
        if not seqs:
            return [], int(head or 0), None
        fields: tuple[str, ...] = (
            "digest", "label", "key_epoch", "group", "kind", "mls_epoch", "rc", "cert"
        )  # fmt: skip
        if with_data:
            fields += ("data",)
        async with self._r.pipeline(transaction=False) as p:
            for seq in seqs:
                p.hmget(k(account_id, "snap", seq.decode()), fields)
            rows = await p.execute()
        out = []
        for seq, row in zip(seqs, rows, strict=True):
            if row[0] is None:  # trimmed by retention between the two round trips
                continue
            digest, label, key_epoch, group, kind, mls_epoch, rc, cert = row[:8]
            out.append(
                StoredSnapshot(
                    seq=int(seq),
                    label=label.decode(),
                    key_epoch=int(key_epoch),
                    group_id=base64.urlsafe_b64decode(group + b"=" * (-len(group) % 4)),
                    kind=kind.decode(),
                    mls_epoch=int(mls_epoch),
                    digest=bytes(digest),
                    data=bytes(row[8]) if with_data else b"",
                    receipt=None if rc is None else bytes(rc),
                    others=b"" if cert is None else bytes(cert),
                )
            )
        return out, int(head or 0), cursor
