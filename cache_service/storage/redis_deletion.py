"""Deleting an account from Redis: a tombstone, then every key the account has.

    sc:{A}:deleted    hash    deletion (the admin's signed order), receipt (this node's)

The tombstone is written and the account record deleted in one script, so from then on no
request of the account authenticates (410) and no write script stores anything for it
(each checks the tombstone in the same atomic step), and the account cannot be
registered again. The sweep then walks the account's own indexes and unlinks what they
name, leaves first (snapshots before the feed, grant shares before their sets, capsules
before `capcur`), so a node that stops midway finds the rest on the next order; the
receipt is stored last. Its cost is the account's size, never the keyspace's. Replay
nonces and rate counters (`nonce:*`, `rl:*`) are not indexed: they expire on their own
within 2 x skew + 2 s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .base import StoredDeletion
from .redis_base import RedisBase, account_key

__all__ = ["ACCOUNT_KEYS", "RedisAccountDeletion"]

BATCH = 500
# The account's keys that are not named by another key (see redis_store's key layout).
ACCOUNT_KEYS = ("seq", "manifest", "usage", "capcur", "dev", "rev", "account")


# KEYS: account, deleted.  ARGV: deletion.
# {what was here, deletion in force, receipt or ''}: 2 the account (its record deleted
# now), 1 its tombstone already, 0 nothing (a tombstone is kept all the same).
_MARK_DELETED = """
local t = redis.call('HMGET', KEYS[2], 'deletion', 'receipt')
if t[1] then return {1, t[1], t[2] or ''} end
redis.call('HSET', KEYS[2], 'deletion', ARGV[1])
return {2 * redis.call('DEL', KEYS[1]), ARGV[1], ''}
"""


class RedisAccountDeletion(RedisBase):
    """The deletion half of `RedisStorage`."""

    def _mark_script(self) -> Any:
        script = getattr(self, "_mark_deleted_script", None)
        if script is None:
            script = self._mark_deleted_script = self._r.register_script(_MARK_DELETED)
        return script

    async def mark_deleted(self, account_id: str, deletion: bytes) -> StoredDeletion:
        found, in_force, receipt = await self._mark_script()(
            keys=[account_key(account_id, "account"), account_key(account_id, "deleted")],
            args=[deletion],
        )
        return StoredDeletion(
            held=found > 0,
            deletion=bytes(in_force),
            receipt=bytes(receipt) or None,
            record_deleted=found == 2,
        )

    async def sweep_account(self, account_id: str) -> int:
        def k(*parts: str) -> str:
            return account_key(account_id, *parts)

        deleted = 0

        async def unlink(keys: list[str]) -> None:
            nonlocal deleted
            for i in range(0, len(keys), BATCH):
                deleted += int(await self._r.unlink(*keys[i : i + BATCH]))

        # snapshots, then the indexes that name them
        indexes: set[str] = set()
        async for seqs in self._chunks(k("feed")):
            async with self._r.pipeline(transaction=False) as p:
                for seq in seqs:
                    p.hmget(k("snap", seq), ["group", "kind"])
                fields = await p.execute()
            for group, kind in fields:
                if group is not None and kind is not None:
                    g, kd = bytes(group).decode(), bytes(kind).decode()
                    indexes.update((k("group", g), k("gk", g, kd)))
            await unlink([k("snap", seq) for seq in seqs])
        await unlink(sorted(indexes))
        await unlink([k("feed")])
        # grant shares, then their sets (devices revoked or not)
        devices = {bytes(d).decode() for d in await self._r.hkeys(k("dev"))}
        devices |= {bytes(d).decode() for d in await self._r.hkeys(k("rev"))}
        for device in sorted(devices):
            refs = [bytes(r).decode() for r in await self._r.smembers(k("grants", device))]
            await unlink([k("grant", device, ref) for ref in refs] + [k("grants", device)])
        # capsules, then what is left
        labels = [bytes(label).decode() for label in await self._r.hkeys(k("capcur"))]
        await unlink([k("cap", label) for label in labels])
        await unlink([k(name) for name in ACCOUNT_KEYS])
        return deleted

    async def _chunks(self, feed: str) -> AsyncIterator[list[str]]:
        """The feed's sequence numbers, a batch at a time (the feed itself goes last)."""
        start = 0
        while True:
            seqs = await self._r.zrange(feed, start, start + BATCH - 1)
            if not seqs:
                return
            yield [bytes(s).decode() for s in seqs]
            start += len(seqs)

    async def finish_deletion(self, account_id: str, receipt: bytes) -> bytes:
        key = account_key(account_id, "deleted")
        await self._r.hsetnx(key, "receipt", receipt)
        return bytes(await self._r.hget(key, "receipt"))
