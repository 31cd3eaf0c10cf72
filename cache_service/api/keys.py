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


SETTINGS = web.AppKey("settings", Settings)
SERVICES = web.AppKey("services", Services)
METRICS = web.AppKey("metrics", Metrics)
OPENAPI = web.AppKey("openapi", bytes)  # the generated document, serialised once
CALLER = web.RequestKey("caller", Caller)  # set by the auth middleware


def caller(request: web.Request) -> Caller:
    return request[CALLER]


def services(request: web.Request) -> Services:
    return request.app[SERVICES]
