"""What every part of `RedisStorage` stands on: the client, the registered scripts, key
names, and `_write`, which runs a write script behind the deleted-account guard."""

from __future__ import annotations

from typing import Any, Self

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from ..errors import Code, ServiceError, deleted_error
from . import redis_scripts as lua
from . import redis_snapshot_scripts as snap_lua
from .redis_forecast import KeyForecast

__all__ = ["ATTEMPTS", "REACH_GROWTH", "REACH_MAX", "RedisBase", "account_key"]

# Runs of a write script asking for more keys (`_write`) before a 503: each asks only when
# a concurrent write changed what it touches since the last run.
ATTEMPTS = 4
# A publish's reach grows this much with each run, up to REACH_MAX sequence numbers.
REACH_GROWTH, REACH_MAX = 4, 1024
_ASK_KEYS = lua.ASK_KEYS.encode()


def account_key(account_id: str, *parts: str) -> str:
    return ":".join(("sc", "{" + account_id + "}", *parts))


class RedisBase:
    """One Redis (or Redis Cluster) connection pool and the scripts registered on it."""

    def __init__(self, client: Any) -> None:
        self._r = client
        self._forecast = KeyForecast()
        self._create_account = self._guarded(client, lua.CREATE_ACCOUNT)
        self._put_device = self._guarded(client, lua.PUT_DEVICE)
        self._count_registration = client.register_script(lua.COUNT_REGISTRATION)
        self._revoke = self._guarded(client, lua.REVOKE)
        self._put_capsule = self._guarded(client, lua.PUT_CAPSULE)
        self._put_grant = self._guarded(client, lua.PUT_GRANT)
        self._publish = self._guarded(client, snap_lua.PUBLISH)
        self._get_capsules = client.register_script(lua.GET_CAPSULES)
        self._put_manifest = self._guarded(client, lua.PUT_MANIFEST)
        self._delete_snapshots = self._guarded(client, snap_lua.DELETE_SNAPSHOTS)
        self._put_receipts = self._guarded(client, snap_lua.PUT_RECEIPTS)
        self._set_receipt = self._guarded(client, snap_lua.SET_RECEIPT)

    @classmethod
    def connect(
        cls,
        url: str | None = None,
        *,
        unix_socket: str | None = None,
        cluster: bool = False,
        timeout: float = 3.0,
    ) -> Self:
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
        self,
        script: Any,
        account_id: str,
        *,
        keys: list[str],
        args: list[Any],
        more: list[str] | None = None,
        reach: int | None = None,
    ) -> Any:
        """Run a guarded write script with `keys`, then `more` (keys it will likely touch
        too), then the tombstone. A script that finds it needs keys it was not given
        answers them before writing anything (`redis_scripts`); it runs again with them,
        up to ATTEMPTS times: writes in between may move them again. A publish's `reach`
        (how many sequence numbers from the new one its answer names, for the publishes
        that store in between) is its last ARGV, wider at each run."""
        declared: list[str | bytes] = [*keys, *(more or ())]
        tombstone = self._k(account_id, "deleted")
        for _ in range(ATTEMPTS):
            if reach is not None:
                reach = min(reach * REACH_GROWTH, REACH_MAX)
            try:
                answer = await script(
                    keys=[*declared, tombstone], args=args if reach is None else [*args, reach]
                )
            except redis.exceptions.ResponseError as exc:
                if str(exc) != lua.DELETED:
                    raise
                raise deleted_error(await self.deletion_order(account_id) or b"") from None
            if not (isinstance(answer, list) and answer and answer[0] == _ASK_KEYS):
                return answer
            declared += answer[1:]
        raise ServiceError(
            Code.UNAVAILABLE, "the account's data kept changing under this write", retry_after=1
        )

    async def ping(self) -> bool:
        """Reachable and taking writes: it answers, it is a primary, and its last AOF write
        and RDB save succeeded (Redis refuses every write with MISCONF otherwise)."""
        if not await self._r.ping():
            return False
        if not isinstance(self._r, aioredis.Redis):
            return True  # a cluster: each command finds its primary
        info = await self._r.info("persistence")
        failed = {info.get("aof_last_write_status"), info.get("rdb_last_bgsave_status")}
        if "err" in failed:
            return False
        return (await self._r.info("replication")).get("role") in (None, "master")

    async def close(self) -> None:
        await self._r.aclose()

    async def deletion_order(self, account_id: str) -> bytes | None:
        """The deletion order the account's tombstone keeps, if it has one."""
        order = await self._r.hget(account_key(account_id, "deleted"), "deletion")
        return None if order is None else bytes(order)
