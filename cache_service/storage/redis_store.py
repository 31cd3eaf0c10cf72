"""Redis implementation of `Storage`.

Key layout (every key carries the account's hash tag, so an account lives in one Redis
Cluster slot and its Lua scripts stay atomic there):

    sc:{A}:account                  string  AccountRecord
    sc:{A}:dev / sc:{A}:rev         hash    device id -> certificate / revocation
    sc:{A}:capcur                   hash    label -> current key epoch
    sc:{A}:cap:<label>              hash    key epoch -> KeyCapsule
    sc:{A}:grant:<dev>:<label>#<e>  string  GrantShare, TTL = its expiry
    sc:{A}:grants:<dev>             set     "<label>#<e>" refs (pruned when read)
    sc:{A}:seq                      string  last sequence number given to a snapshot
    sc:{A}:feed                     zset    seq -> seq, every stored snapshot
    sc:{A}:group:<g>                zset    seq -> seq, one group's snapshots
    sc:{A}:gk:<g>:<kind>            zset    MLS epoch -> seq, newest K per (group, kind)
    sc:{A}:snap:<seq>               hash    the snapshot, its clear index fields, when this
                                            node stored it (`at`), this node's receipt
                                            (`rc`) and other nodes' (`cert`)
    sc:{A}:manifest                 hash    data, version, digest: the account manifest
    sc:{A}:nonce:<dev>:<nonce>      string  replay cache, TTL: until its request leaves the window
    sc:{A}:rl:<dev>:<minute>        string  request counter for rate limiting
    sc:{A}:deleted                  hash    tombstone of a deleted account (redis_deletion)
    sc:{A}:usage                    hash    quota counters: `bytes` (sealed snapshots
                                            stored), `groups` (groups holding one), `v`
                                            (set once counted: accounts stored before
                                            quotas are counted at their next publish)
    sc:reg:{<address>}              string  registrations from one client address, TTL:
                                            until its window closes

<g> is the group id in base64url. Scripts touch keys derived from their declared KEYS
under the same hash tag, which Redis Cluster serves from the one slot.
"""

from __future__ import annotations

import base64
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from ..errors import Code, ServiceError, deleted_error
from . import redis_scripts as lua
from .base import (
    AuthState,
    DeviceRecord,
    ManifestOutcome,
    PublishOutcome,
    ReceiptOutcome,
    SnapshotWrite,
    StoredCapsule,
    StoredGrant,
    StoredManifest,
    StoredSnapshot,
    WriteOutcome,
)
from .redis_deletion import RedisAccountDeletion, account_key

__all__ = ["RedisStorage"]


# MLS epochs are sorted-set scores and Lua numbers here, both IEEE doubles: exact up to
# 2^53 - 1. Above that, neighbouring epochs would compare equal; refuse them instead.
MAX_MLS_EPOCH = 2**53 - 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class RedisStorage(RedisAccountDeletion):
    """`Storage` over one Redis (or Redis Cluster) connection pool."""

    def __init__(self, client: Any) -> None:
        self._r = client
        self._create_account = self._guarded(client, lua.CREATE_ACCOUNT)
        self._put_device = self._guarded(client, lua.PUT_DEVICE)
        self._count_registration = client.register_script(lua.COUNT_REGISTRATION)
        self._revoke = self._guarded(client, lua.REVOKE)
        self._put_capsule = self._guarded(client, lua.PUT_CAPSULE)
        self._put_grant = self._guarded(client, lua.PUT_GRANT)
        self._publish = self._guarded(client, lua.PUBLISH)
        self._get_capsules = client.register_script(lua.GET_CAPSULES)
        self._put_manifest = self._guarded(client, lua.PUT_MANIFEST)
        self._delete_snapshots = self._guarded(client, lua.DELETE_SNAPSHOTS)
        self._put_receipts = self._guarded(client, lua.PUT_RECEIPTS)
        self._set_receipt = self._guarded(client, lua.SET_RECEIPT)

    @classmethod
    def connect(
        cls,
        url: str | None = None,
        *,
        unix_socket: str | None = None,
        cluster: bool = False,
        timeout: float = 3.0,
    ) -> RedisStorage:
        """`timeout` bounds each connect and each command: a hung Redis costs a request
        that long, then a 503. A command whose connection broke (Redis restarted) is
        retried once on a fresh connection; a timed-out one is not retried."""
        bounds: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        if cluster:
            if url is None:
                raise ValueError("Redis Cluster needs a URL")
            return cls(aioredis.RedisCluster.from_url(url, **bounds))
        bounds["retry"] = Retry(
            ExponentialWithJitterBackoff(base=0.01, cap=0.2),
            retries=1,
            supported_errors=(redis.exceptions.ConnectionError,),
        )
        if unix_socket is not None:
            return cls(
                aioredis.Redis(unix_socket_path=unix_socket, health_check_interval=30, **bounds)
            )
        if url is None:
            raise ValueError("need a Redis URL or a unix socket")
        return cls(aioredis.Redis.from_url(url, health_check_interval=30, **bounds))

    async def reconnect(self) -> None:
        """Drop every pooled connection (Redis was restarted): the next commands open new
        ones instead of finding the old ones broken."""
        if isinstance(self._r, aioredis.Redis):
            await self._r.connection_pool.disconnect()

    _k = staticmethod(account_key)

    @staticmethod
    def _guarded(client: Any, script: str) -> Any:
        """A write script that first refuses a deleted account: the caller appends the
        account's tombstone key as the last KEYS entry (`_write`), so the check and the
        write are one atomic step and nothing is stored for a deleted account, even by a
        request that authenticated just before the deletion."""
        return client.register_script(lua.DELETED_GUARD + script)

    async def _write(
        self, script: Any, account_id: str, *, keys: list[str], args: list[Any]
    ) -> Any:
        try:
            return await script(keys=[*keys, self._k(account_id, "deleted")], args=args)
        except redis.exceptions.ResponseError as exc:
            if str(exc) != lua.DELETED:
                raise
        raise deleted_error(await self.deletion_order(account_id) or b"")

    async def ping(self) -> bool:
        return bool(await self._r.ping())

    async def close(self) -> None:
        await self._r.aclose()

    # accounts and devices

    async def create_account(
        self, account_id: str, record: bytes, device_id: str, certificate: bytes
    ) -> bool:
        k = self._k
        result = await self._write(
            self._create_account,
            account_id,
            keys=[k(account_id, "account"), k(account_id, "dev")],
            args=[record, device_id, certificate],
        )
        if result == -1:
            raise ServiceError(
                Code.CONFLICT, "account is registered with another record or first device"
            )
        return bool(result == 1)

    async def auth_state(self, account_id: str, device_id: str) -> AuthState:
        k = self._k
        async with self._r.pipeline(transaction=False) as p:
            p.get(k(account_id, "account"))
            p.hget(k(account_id, "dev"), device_id)
            p.hget(k(account_id, "rev"), device_id)
            p.hget(k(account_id, "deleted"), "deletion")
            account, cert, rev, deleted = await p.execute()
        device = None if cert is None else DeviceRecord(cert, rev)
        return AuthState(account, device, deleted=None if deleted is None else bytes(deleted))

    async def claim_nonce(self, account_id: str, device_id: str, nonce: str, ttl: int) -> bool:
        key = self._k(account_id, "nonce", device_id, nonce)
        return bool(await self._r.set(key, b"1", nx=True, ex=ttl))

    async def count_request(self, account_id: str, device_id: str, *, window: int, now: int) -> int:
        key = self._k(account_id, "rl", device_id, str(now // window))
        async with self._r.pipeline(transaction=False) as p:
            p.incr(key)
            p.expire(key, 2 * window)
            count, _ = await p.execute()
        return int(count)

    async def count_registration(self, address: str, *, window: int) -> tuple[int, int]:
        count, ttl = await self._count_registration(
            keys=["sc:reg:{" + address + "}"], args=[window]
        )
        return int(count), max(1, int(ttl))

    async def put_device(
        self, account_id: str, device_id: str, certificate: bytes, max_devices: int
    ) -> bool:
        k = self._k
        result = await self._write(
            self._put_device,
            account_id,
            keys=[k(account_id, "dev"), k(account_id, "rev")],
            args=[device_id, certificate, max_devices],
        )
        if result == -1:
            raise ServiceError(Code.DEVICE_REVOKED, "the device is revoked")
        if result == -2:
            raise ServiceError(Code.CONFLICT, "the account has its maximum number of devices")
        return bool(result == 1)

    async def list_devices(self, account_id: str) -> dict[str, DeviceRecord]:
        k = self._k
        async with self._r.pipeline(transaction=False) as p:
            p.hgetall(k(account_id, "dev"))
            p.hgetall(k(account_id, "rev"))
            certs, revs = await p.execute()
        return {
            did.decode(): DeviceRecord(cert, revs.get(did)) for did, cert in sorted(certs.items())
        }

    async def revoke_device(
        self, account_id: str, device_id: str, revocation: bytes
    ) -> tuple[bytes, list[tuple[str, int]]]:
        k = self._k
        in_force, *refs = await self._write(
            self._revoke,
            account_id,
            keys=[k(account_id, "rev"), k(account_id, "grants", device_id)],
            args=[device_id, revocation, k(account_id, "grant", device_id) + ":"],
        )
        return bytes(in_force), sorted(_parse_ref(r) for r in refs)

    # key capsules and grants

    async def put_capsule(
        self, account_id: str, label: str, key_epoch: int, capsule: bytes, max_labels: int
    ) -> tuple[bool, int]:
        k = self._k
        status, current = await self._write(
            self._put_capsule,
            account_id,
            keys=[k(account_id, "capcur"), k(account_id, "cap", label)],
            args=[label, key_epoch, capsule, max_labels],
        )
        if status == -1:
            raise ServiceError(
                Code.STALE_KEY_EPOCH,
                "a label starts at key epoch 0 and rotates one epoch at a time",
                current_epoch=None if current < 0 else int(current),
            )
        if status == -2:
            raise ServiceError(Code.CONFLICT, "another capsule holds this key epoch")
        if status == -3:
            raise ServiceError(Code.CONFLICT, "the account has its maximum number of labels")
        return bool(status == 1), int(current)

    async def get_capsule(self, account_id: str, label: str, key_epoch: int) -> bytes | None:
        value = await self._r.hget(self._k(account_id, "cap", label), str(key_epoch))
        return None if value is None else bytes(value)

    async def get_capsules(
        self, account_id: str, keys: list[tuple[str, int]]
    ) -> dict[tuple[str, int], bytes | None]:
        if not keys:
            return {}
        args: list[str | int] = [self._k(account_id, "cap") + ":"]
        for label, epoch in keys:
            args += [label, epoch]
        values = await self._get_capsules(keys=[self._k(account_id, "capcur")], args=args)
        return {key: bytes(v) if v else None for key, v in zip(keys, values, strict=True)}

    async def list_capsules(self, account_id: str) -> list[StoredCapsule]:
        k = self._k
        current = await self._r.hgetall(k(account_id, "capcur"))
        labels = sorted(label.decode() for label in current)
        async with self._r.pipeline(transaction=False) as p:
            for label in labels:
                p.hgetall(k(account_id, "cap", label))
            per_label = await p.execute()
        out = []
        for label, epochs in zip(labels, per_label, strict=True):
            cur = int(current[label.encode()])
            for epoch, capsule in sorted(epochs.items(), key=lambda kv: int(kv[0])):
                out.append(StoredCapsule(label, int(epoch), capsule, int(epoch) == cur))
        return out

    async def put_grant(
        self,
        account_id: str,
        device_id: str,
        label: str,
        key_epoch: int,
        *,
        share: bytes,
        ttl: int,
    ) -> None:
        k = self._k
        ref = f"{label}#{key_epoch}"
        result = await self._write(
            self._put_grant,
            account_id,
            keys=[
                k(account_id, "rev"),
                k(account_id, "grant", device_id, ref),
                k(account_id, "grants", device_id),
            ],
            args=[device_id, share, ttl, ref],
        )
        if result == -1:
            raise ServiceError(Code.DEVICE_REVOKED, "the device is revoked")

    async def list_grants(self, account_id: str, device_id: str) -> list[StoredGrant]:
        k = self._k
        index = k(account_id, "grants", device_id)
        refs = sorted(r.decode() for r in await self._r.smembers(index))
        if not refs:
            return []
        shares = await self._r.mget([k(account_id, "grant", device_id, r) for r in refs])
        expired = [r for r, s in zip(refs, shares, strict=True) if s is None]
        if expired:
            await self._r.srem(index, *expired)
        return [
            StoredGrant(*_parse_ref(r), bytes(s))
            for r, s in zip(refs, shares, strict=True)
            if s is not None
        ]

    # snapshots

    async def publish(self, account_id: str, item: SnapshotWrite) -> PublishOutcome:
        if item.mls_epoch > MAX_MLS_EPOCH:
            raise ServiceError(
                Code.INVALID_RECORD, f"MLS epochs above {MAX_MLS_EPOCH} are not supported"
            )
        k = self._k
        g = _b64(item.group_id)
        pruned = item.prunes if item.prunes not in (None, item.kind) else None
        answer = await self._write(
            self._publish,
            account_id,
            keys=[
                k(account_id, "capcur"),
                k(account_id, "gk", g, item.kind),
                k(account_id, "feed"),
                k(account_id, "seq"),
                k(account_id, "rev"),
                k(account_id, "group", g),
                k(account_id, "gk", g, pruned or item.kind),
                k(account_id, "usage"),
            ],
            args=[
                item.label,
                item.key_epoch,
                item.mls_epoch,
                item.digest,
                item.data,
                item.retain,
                k(account_id, "snap") + ":",
                item.author,
                g,
                item.kind,
                "1" if pruned else "0",
                item.max_jump,
                item.stored_at,
                item.receipt,
                item.quota_groups,
                item.quota_stored_bytes,
            ],
        )
        status, value, *rest = answer
        outcome = WriteOutcome(status.decode())
        if outcome is WriteOutcome.STORED:
            return PublishOutcome(outcome, seq=int(value), receipt=item.receipt)
        if outcome is WriteOutcome.DUPLICATE:
            held = rest[0] if rest else None
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
        status = await self._write(
            self._put_receipts,
            account_id,
            keys=[self._k(account_id, "gk", _b64(group_id), kind)],
            args=[mls_epoch, digest, self._k(account_id, "snap") + ":", receipts],
        )
        return ReceiptOutcome(status.decode())

    async def delete_snapshots(self, account_id: str, group_id: bytes, seqs: list[int]) -> int:
        if not seqs:
            return 0
        k, g = self._k, _b64(group_id)
        deleted = await self._write(
            self._delete_snapshots,
            account_id,
            keys=[k(account_id, "feed"), k(account_id, "usage")],
            args=[
                k(account_id, "snap") + ":",
                k(account_id, "group", g),
                k(account_id, "gk", g) + ":",
                *seqs,
            ],
        )
        return int(deleted)

    # the account manifest

    async def get_manifest(self, account_id: str) -> StoredManifest | None:
        data, version, digest = await self._r.hmget(
            self._k(account_id, "manifest"), ["data", "version", "digest"]
        )
        if data is None:
            return None
        return StoredManifest(bytes(data), int(version), bytes(digest))

    async def put_manifest(
        self, account_id: str, manifest: StoredManifest, previous: bytes
    ) -> tuple[ManifestOutcome, int]:
        status, version = await self._write(
            self._put_manifest,
            account_id,
            keys=[self._k(account_id, "manifest")],
            args=[manifest.data, manifest.version, manifest.digest, previous],
        )
        return ManifestOutcome(status.decode()), int(version)

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
        index = (
            k(account_id, "feed") if group_id is None else k(account_id, "group", _b64(group_id))
        )
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


def _parse_ref(ref: bytes | str) -> tuple[str, int]:
    text = ref.decode() if isinstance(ref, bytes) else ref
    label, _, epoch = text.rpartition("#")
    return label, int(epoch)
