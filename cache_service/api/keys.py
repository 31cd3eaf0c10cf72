"""Typed application keys shared by the app factory, middlewares and handlers."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

import pre

from ..metrics import Metrics
from ..service import (
    AccountService,
    Authenticator,
    Caller,
    DelegationService,
    DeletionService,
    ManifestService,
    ReencryptionService,
    SnapshotService,
)
from ..settings import Settings
from ..storage import Storage


@dataclass
class Services:
    storage: Storage
    node: pre.NodeSecrets
    authenticator: Authenticator
    accounts: AccountService
    delegation: DelegationService
    snapshots: SnapshotService
    reencryption: ReencryptionService
    manifests: ManifestService
    deletions: DeletionService


class BodyBudget:
    """Bytes of request bodies the node holds at once, across all connections: bounds
    the memory that many concurrent large bodies can take. One event loop: no lock."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def try_claim(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def release(self, size: int) -> None:
        self.held -= size


SETTINGS = web.AppKey("settings", Settings)
BODY_BUDGET = web.AppKey("body_budget", BodyBudget)
SERVICES = web.AppKey("services", Services)
METRICS = web.AppKey("metrics", Metrics)
OPENAPI = web.AppKey("openapi", bytes)  # the generated document, serialised once
CALLER = web.RequestKey("caller", Caller)  # set by the auth middleware


def caller(request: web.Request) -> Caller:
    return request[CALLER]


def services(request: web.Request) -> Services:
    return request.app[SERVICES]
