"""Deleting an account from Redis: a tombstone, then every key under the account's hash tag.

    sc:{A}:deleted    hash    deletion (the admin's signed order), receipt (this node's)

The tombstone is written and the account record deleted in one script, so from then on no
request of the account authenticates (they hear 410) and the account cannot be registered
again from a replayed registration. The sweep then unlinks every other key matching
`sc:{A}:*` (SCAN: every key the account ever had, whatever its type, including kinds of
keys added after this code), and the receipt is stored last: a node that stopped midway
finishes the sweep on the next deletion request.
"""

from __future__ import annotations

from typing import Any

from .base import StoredDeletion

__all__ = ["RedisAccountDeletion", "account_key"]

SCAN_COUNT = 1000
UNLINK_BATCH = 500


def account_key(account_id: str, *parts: str) -> str:
    return ":".join(("sc", "{" + account_id + "}", *parts))


# KEYS: account, deleted.  ARGV: deletion.
# {1, deletion in force, receipt or ''}; {0, '', ''} when the account is unknown here.
_MARK_DELETED = """
local t = redis.call('HMGET', KEYS[2], 'deletion', 'receipt')
if t[1] then return {1, t[1], t[2] or ''} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, '', ''} end
redis.call('HSET', KEYS[2], 'deletion', ARGV[1])
redis.call('DEL', KEYS[1])
return {1, ARGV[1], ''}
"""


class RedisAccountDeletion:
    """The deletion half of `RedisStorage` (which supplies `_r`, a redis.asyncio client)."""

    _r: Any

    def _mark_script(self) -> Any:
        script = getattr(self, "_mark_deleted_script", None)
        if script is None:
            script = self._mark_deleted_script = self._r.register_script(_MARK_DELETED)
        return script

    async def mark_deleted(self, account_id: str, deletion: bytes) -> StoredDeletion:
        held, in_force, receipt = await self._mark_script()(
            keys=[account_key(account_id, "account"), account_key(account_id, "deleted")],
            args=[deletion],
        )
        return StoredDeletion(bool(held), bytes(in_force), bytes(receipt) or None)

    async def is_deleted(self, account_id: str) -> bool:
        return bool(await self._r.exists(account_key(account_id, "deleted")))

    async def sweep_account(self, account_id: str) -> int:
        keep = account_key(account_id, "deleted").encode()
        deleted = 0
        batch: list[bytes] = []
        async for key in self._r.scan_iter(match=account_key(account_id, "*"), count=SCAN_COUNT):
            if bytes(key) == keep:
                continue
            batch.append(key)
            if len(batch) >= UNLINK_BATCH:
                deleted += int(await self._r.unlink(*batch))
                batch = []
        if batch:
            deleted += int(await self._r.unlink(*batch))
        return deleted

    async def finish_deletion(self, account_id: str, receipt: bytes) -> bytes:
        key = account_key(account_id, "deleted")
        await self._r.hsetnx(key, "receipt", receipt)
        return bytes(await self._r.hget(key, "receipt"))
