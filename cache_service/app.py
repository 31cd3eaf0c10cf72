"""`create_app(settings)`: one cache node as an aiohttp application.

The cleanup context opens what the node needs (`startup.node_resources`: the data dir
lock, the node key, storage, the re-encryption pool) and closes it in reverse. A failure
there is a `NodeFailure`, which `serve` prints as one line. `app[STOP]` ends a served node:
the Redis supervisor requests it when the embedded redis-server keeps dying.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

import pre

from .api.keys import BODY_BUDGET, METRICS, OPENAPI, SERVICES, SETTINGS, BodyBudget, Services
from .api.middleware import authenticate, errors_and_metrics, request_body
from .api.openapi import openapi_document
from .api.routes import add_routes
from .embedded_redis import EmbeddedRedis
from .metrics import Metrics
from .service import (
    AccountService,
    Authenticator,
    DelegationService,
    DeletionService,
    ManifestService,
    ReencryptionService,
    SnapshotService,
)
from .settings import Settings
from .startup import NodeResources, Stop, node_resources
from .storage import Storage

__all__ = ["EMBEDDED_REDIS", "STOP", "create_app"]

EMBEDDED_REDIS = web.AppKey("embedded_redis", EmbeddedRedis)
STOP = web.AppKey("stop", Stop)


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    storage: Storage | None = None,
    node: pre.NodeSecrets | None = None,
) -> web.Application:
    """`clock` is injectable so tests move time instead of sleeping; `storage` lets a test
    share one Redis between apps; `node` is the key a worker process got from its parent."""
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
    app[STOP] = Stop()
    app[OPENAPI] = json.dumps(openapi_document()).encode()
    add_routes(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with node_resources(settings, app[STOP], storage, node) as opened:
            if opened.embedded is not None:
                app[EMBEDDED_REDIS] = opened.embedded
            app[SERVICES] = _services(settings, opened, clock)
            yield

    app.cleanup_ctx.append(lifecycle)
    return app


def _services(settings: Settings, opened: NodeResources, clock: Callable[[], float]) -> Services:
    store, node = opened.storage, opened.node
    delegation = DelegationService(
        store,
        node,
        clock=clock,
        share_index=settings.share_index,
        max_labels=settings.max_labels,
        max_grant_seconds=settings.max_grant_seconds,
    )
    return Services(
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
        deletions=DeletionService(store, node, clock=clock),
        reencryption=ReencryptionService(
            store,
            opened.pool,
            clock=clock,
            share_index=settings.share_index,
            node_id=node.node_id.hex(),
        ),
    )
