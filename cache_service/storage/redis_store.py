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


# Every write script below starts with this guard; its last KEYS entry is the account's
# tombstone (`_write` appends it).
_DELETED = "ACCOUNT_DELETED"
_DELETED_GUARD = f"""
if redis.call('EXISTS', KEYS[#KEYS]) == 1 then return redis.error_reply('{_DELETED}') end
"""

# KEYS: account, dev.  ARGV: record, device id, certificate.
# 1 created, 0 identical retry (same record and first certificate), -1 anything else.
_CREATE_ACCOUNT = """
local existing = redis.call('GET', KEYS[1])
if existing then
  if existing == ARGV[1] and redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[3] then
    return 0
  end
  return -1
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""

# KEYS: the address's counter.  ARGV: window seconds. A fixed window opened by the first
# attempt; returns {count, seconds until it closes}.
_COUNT_REGISTRATION = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('TTL', KEYS[1])
if n == 1 or ttl < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""

# KEYS: dev, rev.  ARGV: device id, certificate, max devices.
_PUT_DEVICE = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return -1 end
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing == ARGV[2] then return 0 end
if not existing and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return -2 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: rev, grants set of the device.  ARGV: device id, revocation, grant key prefix.
# Returns the revocation in force (the first one recorded), then the refs of the shares
# that were deleted.
_REVOKE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local deleted = {redis.call('HGET', KEYS[1], ARGV[1])}
for _, ref in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('DEL', ARGV[3] .. ref) == 1 then table.insert(deleted, ref) end
end
redis.call('DEL', KEYS[2])
return deleted
"""

# KEYS: capcur, cap:<label>.  ARGV: label, key epoch, capsule, max labels.
# Returns {status, current}: 1 stored, 0 identical retry, -1 stale/gap, -2 conflict, -3 full.
_PUT_CAPSULE = """
local epoch = tonumber(ARGV[2])
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then
  if epoch ~= 0 then return {-1, -1} end
  if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return {-3, -1} end
else
  cur = tonumber(cur)
  if epoch <= cur then
    if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[3] then return {0, cur} end
    if epoch == cur then return {-2, cur} end
    return {-1, cur}
  end
  if epoch ~= cur + 1 then return {-1, cur} end
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {1, epoch}
"""

# KEYS: capcur (names the account's slot for Redis Cluster; the capsule hashes are derived
# from ARGV[1] under the same hash tag). ARGV: "sc:{A}:cap:" prefix, then label, key epoch
# pairs. Returns the capsules in order (false where missing): one round trip for a
# re-encryption batch of any size.
_GET_CAPSULES = """
local out = {}
for i = 2, #ARGV, 2 do
  out[#out + 1] = redis.call('HGET', ARGV[1] .. ARGV[i], ARGV[i + 1])
end
return out
"""

# KEYS: rev, grant key, grants set.  ARGV: device id, share, ttl seconds, ref.
_PUT_GRANT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return -1 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', tonumber(ARGV[3]))
redis.call('SADD', KEYS[3], ARGV[4])
return 1
"""

# The account's quota counters, counted from what is stored the first time a script needs
# them (accounts stored before quotas existed). KEYS[1] of the caller is the feed.
_USAGE = """
local function usage_init(usage, feed, snap_prefix)
  if redis.call('HEXISTS', usage, 'v') == 1 then return end
  local bytes, groups, seen = 0, 0, {}
  for _, seq in ipairs(redis.call('ZRANGE', feed, 0, -1)) do
    bytes = bytes + redis.call('HSTRLEN', snap_prefix .. seq, 'data')
    local g = redis.call('HGET', snap_prefix .. seq, 'group')
    if g and not seen[g] then
      seen[g] = true
      groups = groups + 1
    end
  end
  redis.call('HSET', usage, 'bytes', bytes, 'groups', groups, 'v', 1)
end
"""

# KEYS: capcur, gk:<g>:<kind>, feed, seq, rev, group:<g>, gk:<g>:<pruned kind> (KEYS[2]
#       again when nothing is pruned), usage.
# ARGV: label, key epoch, mls epoch, digest, data, retain, snap key prefix, author,
#       group id, kind, prune ('1': once stored, delete the group's snapshots of the
#       pruned kind below this MLS epoch, as a new tree base does to older patches),
#       max jump (how far above the stored top an MLS epoch may go), stored at, receipt,
#       quota of groups, quota of stored bytes.
# Returns {status, seq or current epoch (the quota's limit for a quota refusal), the
# stored receipt (duplicates; false if none)}. The quotas are checked with what this
# store deletes (retention, pruned patches) already taken off.
_PUBLISH = (
    _USAGE
    + """
if redis.call('HEXISTS', KEYS[5], ARGV[8]) == 1 then return {'revoked', 0} end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return {'no_capsule', 0} end
if tonumber(cur) ~= tonumber(ARGV[2]) then return {'stale_key_epoch', tonumber(cur)} end
local epoch = tonumber(ARGV[3])
local top = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if top[1] then
  local top_epoch = tonumber(top[2])
  if epoch < top_epoch then return {'stale_epoch', top_epoch} end
  if epoch > top_epoch + tonumber(ARGV[12]) then return {'epoch_too_far', top_epoch} end
  if epoch == top_epoch then
    local held = redis.call('HMGET', ARGV[7] .. top[1], 'digest', 'rc')
    if held[1] == ARGV[4] then
      return {'duplicate', tonumber(top[1]), held[2]}
    end
    return {'conflict', top_epoch}
  end
end
local doomed = {}
local extra = redis.call('ZCARD', KEYS[2]) + 1 - tonumber(ARGV[6])
if extra > 0 then doomed = redis.call('ZRANGE', KEYS[2], 0, extra - 1) end
local below = '(' .. ARGV[3]
local pruned = {}
if ARGV[11] == '1' then pruned = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', below) end
local freed = 0
for _, old in ipairs(doomed) do freed = freed + redis.call('HSTRLEN', ARGV[7] .. old, 'data') end
for _, old in ipairs(pruned) do freed = freed + redis.call('HSTRLEN', ARGV[7] .. old, 'data') end
usage_init(KEYS[8], KEYS[3], ARGV[7])
local used = redis.call('HMGET', KEYS[8], 'bytes', 'groups')
local new_group = redis.call('EXISTS', KEYS[6]) == 0
if new_group and tonumber(used[2]) >= tonumber(ARGV[15]) then
  return {'quota_groups', tonumber(ARGV[15])}
end
if tonumber(used[1]) - freed + #ARGV[5] > tonumber(ARGV[16]) then
  return {'quota_stored_bytes', tonumber(ARGV[16])}
end
local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', ARGV[7] .. seq, 'data', ARGV[5], 'digest', ARGV[4], 'label', ARGV[1],
  'key_epoch', ARGV[2], 'group', ARGV[9], 'kind', ARGV[10], 'mls_epoch', ARGV[3],
  'at', ARGV[13], 'rc', ARGV[14])
redis.call('ZADD', KEYS[2], epoch, seq)
redis.call('ZADD', KEYS[3], seq, seq)
redis.call('ZADD', KEYS[6], seq, seq)
for _, old in ipairs(doomed) do
  redis.call('DEL', ARGV[7] .. old)
  redis.call('ZREM', KEYS[3], old)
  redis.call('ZREM', KEYS[6], old)
  redis.call('ZREM', KEYS[2], old)
end
for _, old in ipairs(pruned) do
  redis.call('DEL', ARGV[7] .. old)
  redis.call('ZREM', KEYS[3], old)
  redis.call('ZREM', KEYS[6], old)
  redis.call('ZREM', KEYS[7], old)
end
redis.call('HINCRBY', KEYS[8], 'bytes', #ARGV[5] - freed)
if new_group then redis.call('HINCRBY', KEYS[8], 'groups', 1) end
return {'stored', seq}
"""
)


# KEYS: manifest.  ARGV: data, version, digest, previous digest.
# Returns {status, version stored after}: 'stored', 'duplicate' or 'conflict'.
_PUT_MANIFEST = """
local cur = redis.call('HMGET', KEYS[1], 'version', 'digest')
if cur[1] then
  local version = tonumber(cur[1])
  local new = tonumber(ARGV[2])
  if new == version and cur[2] == ARGV[3] then return {'duplicate', version} end
  if new ~= version + 1 or cur[2] ~= ARGV[4] then return {'conflict', version} end
end
redis.call('HSET', KEYS[1], 'data', ARGV[1], 'version', ARGV[2], 'digest', ARGV[3])
return {'stored', tonumber(ARGV[2])}
"""

# KEYS: gk:<g>:<kind>.  ARGV: MLS epoch, digest, snap key prefix, receipts.
# Stores other nodes' receipts for the snapshot at that epoch if it has that digest and
# they are more than the stored ones (a longer set replaces a shorter one: every set
# comes whole from a publisher, each receipt checked). Returns 'stored',
# 'kept' (as many or more already) or 'not_found'.
_PUT_RECEIPTS = """
local seqs = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1])
if not seqs[1] then return 'not_found' end
local key = ARGV[3] .. seqs[1]
if redis.call('HGET', key, 'digest') ~= ARGV[2] then return 'not_found' end
if #ARGV[4] == 0 then return 'kept' end
local held = redis.call('HGET', key, 'cert')
if held and #held >= #ARGV[4] then return 'kept' end
redis.call('HSET', key, 'cert', ARGV[4])
return 'stored'
"""

# KEYS: snap:<seq>.  ARGV: stored at, receipt.
# Gives a snapshot stored before receipts existed this node's receipt unless it has one;
# returns the receipt in force (false if the snapshot is gone: no stray hash is created).
_SET_RECEIPT = """
if redis.call('HEXISTS', KEYS[1], 'digest') == 0 then return false end
redis.call('HSETNX', KEYS[1], 'at', ARGV[1])
redis.call('HSETNX', KEYS[1], 'rc', ARGV[2])
return redis.call('HGET', KEYS[1], 'rc')
"""

# KEYS: feed, usage.  ARGV: snap key prefix, group:<g> key, gk:<g>: key prefix, then
# sequence numbers. Deletes each snapshot still there from the feed, its group and its
# (group, kind) index, and takes it off the quota counters; returns how many.
_DELETE_SNAPSHOTS = (
    _USAGE
    + """
usage_init(KEYS[2], KEYS[1], ARGV[1])
local deleted, freed = 0, 0
for i = 4, #ARGV do
  local seq = ARGV[i]
  local kind = redis.call('HGET', ARGV[1] .. seq, 'kind')
  if kind then
    freed = freed + redis.call('HSTRLEN', ARGV[1] .. seq, 'data')
    redis.call('DEL', ARGV[1] .. seq)
    redis.call('ZREM', KEYS[1], seq)
    redis.call('ZREM', ARGV[2], seq)
    redis.call('ZREM', ARGV[3] .. kind, seq)
    deleted = deleted + 1
  end
end
redis.call('HINCRBY', KEYS[2], 'bytes', -freed)
if deleted > 0 and redis.call('EXISTS', ARGV[2]) == 0 then
  redis.call('HINCRBY', KEYS[2], 'groups', -1)
end
return deleted
"""
)


class RedisStorage(RedisAccountDeletion):
    """`Storage` over one Redis (or Redis Cluster) connection pool."""

    def __init__(self, client: Any) -> None:
        self._r = client
        self._create_account = self._guarded(client, _CREATE_ACCOUNT)
        self._put_device = self._guarded(client, _PUT_DEVICE)
        self._count_registration = client.register_script(_COUNT_REGISTRATION)
        self._revoke = self._guarded(client, _REVOKE)
        self._put_capsule = self._guarded(client, _PUT_CAPSULE)
        self._put_grant = self._guarded(client, _PUT_GRANT)
        self._publish = self._guarded(client, _PUBLISH)
        self._get_capsules = client.register_script(_GET_CAPSULES)
        self._put_manifest = self._guarded(client, _PUT_MANIFEST)
        self._delete_snapshots = self._guarded(client, _DELETE_SNAPSHOTS)
        self._put_receipts = self._guarded(client, _PUT_RECEIPTS)
        self._set_receipt = self._guarded(client, _SET_RECEIPT)

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
        return client.register_script(_DELETED_GUARD + script)

    async def _write(
        self, script: Any, account_id: str, *, keys: list[str], args: list[Any]
    ) -> Any:
        try:
            return await script(keys=[*keys, self._k(account_id, "deleted")], args=args)
        except redis.exceptions.ResponseError as exc:
            if str(exc) != _DELETED:
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
