"""`create_app(settings)`: one cache node as an aiohttp application.

The cleanup context opens storage (the embedded redis-server, or an external Redis),
loads the node identity and starts the re-encryption pool, and closes them in reverse.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from .api.keys import BODY_BUDGET, METRICS, OPENAPI, SERVICES, SETTINGS, BodyBudget, Services
from .api.middleware import authenticate, errors_and_metrics, request_body
from .api.openapi import openapi_document
from .api.routes import add_routes
from .crypto_pool import ReencryptPool
from .embedded_redis import EmbeddedRedis
from .metrics import Metrics
from .node_identity import load_or_create_identity
from .service import (
    AccountService,
    Authenticator,
    DelegationService,
    ManifestService,
    ReencryptionService,
    SnapshotService,
)
from .settings import Settings
from .storage import RedisStorage, Storage

__all__ = ["EMBEDDED_REDIS", "create_app"]

EMBEDDED_REDIS = web.AppKey("embedded_redis", EmbeddedRedis)


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    storage: Storage | None = None,
) -> web.Application:
    """`clock` is injectable so tests move time instead of sleeping; `storage` lets a test
    share one Redis between apps."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[errors_and_metrics, request_body, authenticate],
        # aiohttp closes a connection still waiting for a complete request head this long
        # after it opened or after its last response: idle and slow-loris clients alike.
        handler_args={"keepalive_timeout": settings.idle_timeout_seconds},
    )
    app[SETTINGS] = settings
    app[BODY_BUDGET] = BodyBudget(settings.max_inflight_body_bytes)
    app[METRICS] = Metrics()
    app[OPENAPI] = json.dumps(openapi_document()).encode()
    add_routes(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        store = storage
        embedded = None
        if store is None:
            if settings.redis_url:
                store = RedisStorage.connect(settings.redis_url, cluster=settings.redis_cluster)
            else:
                embedded = EmbeddedRedis(settings.data_dir, appendfsync=settings.appendfsync)
                await embedded.start()
                app[EMBEDDED_REDIS] = embedded
                store = RedisStorage.connect(unix_socket=embedded.socket)
        node = load_or_create_identity(settings.data_dir)
        pool = ReencryptPool(node, settings.workers)
        await pool.warm_up()
        delegation = DelegationService(
            store,
            node,
            clock=clock,
            share_index=settings.share_index,
            max_labels=settings.max_labels,
            max_grant_seconds=settings.max_grant_seconds,
        )
        app[SERVICES] = Services(
            storage=store,
            node=node,
            authenticator=Authenticator(
                store,
                clock=clock,
                skew_seconds=settings.skew_seconds,
                rate_per_minute=settings.rate_limit_per_minute,
                node_id=node.node_id.hex(),
            ),
            accounts=AccountService(store, node, clock=clock, max_devices=settings.max_devices),
            delegation=delegation,
            snapshots=SnapshotService(
                store,
                delegation,
                retention=settings.retention,
                clock=clock,
                skew_seconds=settings.skew_seconds,
                node=node,
                max_epoch_jump=settings.max_epoch_jump,
                quota_groups=settings.quota_groups,
                quota_stored_bytes=settings.quota_stored_bytes,
            ),
            manifests=ManifestService(store),
            reencryption=ReencryptionService(
                store,
                pool,
                clock=clock,
                share_index=settings.share_index,
                node_id=node.node_id.hex(),
            ),
        )
        try:
            yield
        finally:
            pool.close()
            if storage is None:
                await store.close()
            if embedded is not None:
                await embedded.stop()

    app.cleanup_ctx.append(lifecycle)
    return app
