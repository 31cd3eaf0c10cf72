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

<g> is the group id in base64url. A script touches only the keys it declares in KEYS
(Redis Cluster serves a script no other): those named by stored data (a snapshot's
`<seq>`, a grant's ref, a snapshot's kind) it asks for before writing anything, and is
run again with them (`redis_scripts`, `RedisBase._write`); a publish declares up front
those this process forecasts (`redis_forecast`).
"""

from __future__ import annotations

from ..errors import Code, ServiceError
from .base import (
    AuthState,
    DeviceRecord,
    ManifestOutcome,
    StoredCapsule,
    StoredGrant,
    StoredManifest,
)
from .redis_deletion import RedisAccountDeletion
from .redis_snapshots import RedisSnapshots

__all__ = ["RedisStorage"]


class RedisStorage(RedisSnapshots, RedisAccountDeletion):
    """`Storage` over one Redis (or Redis Cluster) connection pool."""

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
        _, in_force, *refs = await self._write(
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
        values = await self._get_capsules(
            keys=[self._k(account_id, "cap", label) for label, _ in keys],
            args=[epoch for _, epoch in keys],
        )
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


def _parse_ref(ref: bytes | str) -> tuple[str, int]:
    text = ref.decode() if isinstance(ref, bytes) else ref
    label, _, epoch = text.rpartition("#")
    return label, int(epoch)
