"""What a node opens before it serves, in order, and closes in reverse.

1. the data dir, locked (`data_dir.py`), unless the node does not use it at all (an
   external Redis and `--node-key`);
2. the node key: `--node-key FILE` (read only) or the data dir's `node.key` (a worker of
   `--processes N` skips 1 and 2: its parent holds the lock and hands it the key);
3. storage: the embedded redis-server (started, then supervised) or an external Redis,
   waited for with backoff up to `--redis-wait` seconds;
4. the re-encryption worker pool.

Every failure on the way is a `NodeFailure` with one line to print, after whatever was
already opened has been closed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import redis.exceptions

import pre

from .crypto_pool import ReencryptPool
from .data_dir import DataDirLock
from .embedded_redis import EmbeddedRedis
from .failures import NodeFailure, one_line
from .node_identity import load_key_file, load_or_create_identity
from .settings import Settings
from .storage import RedisStorage, Storage

__all__ = [
    "NodeResources",
    "Stop",
    "node_identity",
    "node_resources",
    "redact_url",
    "wait_for_redis",
    "warn_if_data_dir_was_open",
]

log = logging.getLogger("statecache.node")

_WAIT_FIRST = 0.1  # seconds between the first attempts to reach Redis; doubles to _WAIT_CAP
_WAIT_CAP = 2.0


class Stop:
    """Ends a running node: a signal (clean exit) or a failure (exit 1, one line)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.failure: NodeFailure | None = None

    def request(self, failure: NodeFailure | None = None) -> None:
        if failure is not None and self.failure is None:
            self.failure = failure
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()


@dataclass
class NodeResources:
    node: pre.NodeSecrets
    storage: Storage
    pool: ReencryptPool
    embedded: EmbeddedRedis | None


def node_identity(
    settings: Settings, stack: contextlib.ExitStack | contextlib.AsyncExitStack, *, storage: bool
) -> tuple[DataDirLock | None, pre.NodeSecrets]:
    """Lock the data dir if the node uses it (released by `stack`), then read or create the
    node key. `storage`: the caller brings its own (a test), so no embedded Redis."""
    uses_data_dir = settings.node_key is None or (not storage and not settings.redis_url)
    lock = None
    if uses_data_dir:
        lock = DataDirLock.acquire(settings.data_dir)  # before anything touches the dir
        stack.callback(lock.release)
    if settings.node_key is not None:
        return lock, load_key_file(settings.node_key)
    return lock, load_or_create_identity(settings.data_dir)


def warn_if_data_dir_was_open(lock: DataDirLock | None, settings: Settings) -> None:
    """Said once the node has started, so that a failure to start stays one line."""
    if lock is not None and lock.was_mode is not None:
        log.warning(
            "data dir was open to other users: made it 0700",
            extra={"data_dir": str(settings.data_dir), "mode": oct(lock.was_mode)},
        )


@contextlib.asynccontextmanager
async def node_resources(
    settings: Settings,
    stop: Stop,
    storage: Storage | None = None,
    node: pre.NodeSecrets | None = None,
) -> AsyncIterator[NodeResources]:
    """Open everything (a test may pass its own `storage`; a worker process gets `node`
    from its parent, which holds the data dir lock); close it all on the way out."""
    async with contextlib.AsyncExitStack() as stack:
        lock = None
        if node is None:
            lock, node = node_identity(settings, stack, storage=storage is not None)

        embedded = None
        if storage is None:
            if settings.redis_url:
                external = RedisStorage.connect(
                    settings.redis_url,
                    cluster=settings.redis_cluster,
                    timeout=settings.redis_timeout,
                )
                stack.push_async_callback(external.close)
                await wait_for_redis(external, settings.redis_url, settings.redis_wait)
                storage = external
            else:
                embedded = EmbeddedRedis(settings.data_dir, appendfsync=settings.appendfsync)
                stack.push_async_callback(embedded.stop)  # start() itself kills on failure
                await embedded.start()
                local = RedisStorage.connect(
                    unix_socket=embedded.socket, timeout=settings.redis_timeout
                )
                stack.push_async_callback(local.close)
                await _supervise(stack, embedded, local, stop)
                storage = local

        pool = ReencryptPool(node, settings.workers)
        stack.callback(pool.close)
        try:
            await pool.warm_up()
        except Exception as exc:  # OSError, BrokenProcessPool: one line either way
            raise NodeFailure(f"cannot start re-encryption workers: {one_line(exc)}") from None
        warn_if_data_dir_was_open(lock, settings)
        yield NodeResources(node=node, storage=storage, pool=pool, embedded=embedded)


async def _supervise(
    stack: contextlib.AsyncExitStack, embedded: EmbeddedRedis, storage: RedisStorage, stop: Stop
) -> None:
    """Run `embedded.supervise()` until the node stops (cancelled first on the way out)."""

    async def watch() -> None:
        try:
            failure = await embedded.supervise(on_restart=storage.reconnect)
        except Exception as exc:  # a supervisor that cannot go on must not fail silently
            log.error("redis supervisor failed", extra={"error": repr(exc)})
            log.debug("redis supervisor failed", exc_info=True)
            failure = NodeFailure(f"the embedded Redis supervisor failed: {one_line(exc)}")
        stop.request(failure)

    task = asyncio.create_task(watch(), name="redis-supervisor")

    async def cancel() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(cancel)


async def wait_for_redis(storage: Storage, url: str, wait: float) -> None:
    """Ping until Redis answers, with backoff, for up to `wait` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay = _WAIT_FIRST
    while True:
        try:
            if await storage.ping():
                return
            reason = "no answer to PING"
        except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError) as exc:
            raise NodeFailure(f"Redis at {redact_url(url)} refused the node: {exc}") from None
        except (
            redis.exceptions.RedisError,
            redis.exceptions.RedisClusterException,
            OSError,
        ) as exc:
            reason = one_line(exc)
        left = deadline - loop.time()
        if left <= 0:
            raise NodeFailure(
                f"Redis at {redact_url(url)} unreachable (waited {wait:g} s, --redis-wait): "
                f"{reason}"
            )
        log.debug("waiting for Redis", extra={"reason": reason, "seconds_left": round(left, 1)})
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, _WAIT_CAP)


def redact_url(url: str) -> str:
    """`url` without its user name and password; a URL too malformed to parse has anything
    between `//` and the last `@` masked all the same (it may be a password)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//.*@", "//***@", url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))
