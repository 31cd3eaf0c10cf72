"""The route table: one entry per operation, with the models it reads and answers.

aiohttp routes and the OpenAPI document are both made from this table. Path parameters
are constrained by pattern, so a malformed id never reaches a handler (it is a 404)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import BaseModel

from ..protocol import models as m
from . import handlers as h

ACCOUNT = "{account_id:[0-9a-f]{64}}"
DEVICE = "{device_id:[0-9a-f]{32}}"
LABEL = "{label:(?:account|group:[A-Za-z0-9_-]{1,171})}"
KEY_EPOCH = "{key_epoch:[0-9]{1,10}}"
GROUP = "{group_id:[A-Za-z0-9_-]{2,171}}"
KIND = "{kind:[a-z][a-z0-9_]{0,31}}"

PARAM_SCHEMAS: dict[str, dict[str, object]] = {
    "account_id": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    "device_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
    "label": {"type": "string", "pattern": "^(account|group:[A-Za-z0-9_-]{1,171})$"},
    "key_epoch": {"type": "integer", "minimum": 0, "maximum": 4294967295},
    "group_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{2,171}$"},
    "kind": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,31}$"},
}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    responses: dict[int, type[BaseModel] | None] = field(default_factory=dict)
    public: bool = False

    @property
    def name(self) -> str:
        return self.handler.__name__


V1 = "/v1/accounts/" + ACCOUNT

ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/accounts", h.register_account,
          "Register an account with its first admin device (self-certifying); limited per"
          " client address (429 rate_limited with Retry-After beyond).",
          body=m.RegisterAccountRequest, responses={201: m.AccountInfo, 200: m.AccountInfo},
          public=True),
    Route("GET", V1, h.get_account, "The account record.", responses={200: m.AccountInfo}),
    Route("GET", V1 + "/devices", h.list_devices, "Device certificates and revocations.",
          responses={200: m.DeviceList}),
    Route("PUT", V1 + "/devices/" + DEVICE, h.put_device, "Publish a device certificate (admin).",
          body=m.DeviceCertificateBody, responses={201: m.DeviceEntry, 200: m.DeviceEntry}),
    Route("POST", V1 + "/devices/" + DEVICE + "/revocation", h.revoke_device,
          "Revoke a device: refused at once, its shares deleted; answers a signed receipt.",
          body=m.RevocationBody, responses={200: m.RevocationReceiptBody}),
    Route("GET", V1 + "/devices/" + DEVICE + "/grants", h.list_device_grants,
          "This node's unexpired grant shares for a device (admin).",
          responses={200: m.GrantList}),
    # Public: the admin's root-signed deletion in the body is the authority (the account's
    # devices are gone once a node has deleted it, and a repeat must still be answered).
    Route("POST", V1 + "/deletion", h.delete_account,
          "Delete the account and everything stored for it (the admin's root-signed order);"
          " answers a signed receipt. Every later request of the account is 410.",
          body=m.AccountDeletionBody, responses={200: m.DeletionReceiptBody}, public=True),
    Route("GET", V1 + "/manifest", h.get_manifest,
          "The account manifest this node holds (the admin's signed record of the account).",
          responses={200: m.ManifestInfo}),
    Route("PUT", V1 + "/manifest", h.put_manifest,
          "Store the next manifest version, whole or as an update of the stored one (admin);"
          " 409 with current_version otherwise.",
          body=m.ManifestBody, responses={201: m.ManifestInfo, 200: m.ManifestInfo}),
    Route("POST", V1 + "/purges", h.purge_snapshots,
          "Delete a revoked author's snapshots of a group from an MLS epoch on (admin);"
          " answers a signed receipt.",
          body=m.PurgeBody, responses={200: m.PurgeReceiptBody}),
    Route("GET", V1 + "/capsules", h.list_capsules, "Key capsules the caller may open.",
          responses={200: m.CapsuleList}),
    Route("PUT", V1 + "/capsules/" + LABEL + "/" + KEY_EPOCH, h.put_capsule,
          "Create (epoch 0) or rotate (epoch e+1) a label's key capsule (admin).",
          body=m.KeyCapsuleBody, responses={201: m.CapsuleEntry, 200: m.CapsuleEntry}),
    Route("PUT", V1 + "/grants/" + DEVICE + "/" + LABEL + "/" + KEY_EPOCH, h.put_grant,
          "Store this node's grant share for a device (admin); verified on receipt.",
          body=m.GrantShareBody, responses={204: None}),
    Route("POST", V1 + "/snapshots", h.publish_snapshots,
          "Publish a batch of sealed snapshots; one result per item (quota_exceeded names"
          " the account quota a refused item would exceed).",
          body=m.PublishRequest, responses={200: m.PublishResponse}),
    Route("PUT", V1 + "/groups/" + GROUP + "/" + KIND, h.put_snapshot,
          "Publish one sealed snapshot; 409 states the current epoch, 403 quota_exceeded"
          " the account quota it would exceed.",
          body=m.SnapshotBody, responses={201: m.PublishResult, 200: m.PublishResult}),
    Route("POST", V1 + "/confirmations", h.confirm_snapshots,
          "Keep other nodes' receipts for snapshots this node holds; one result per item.",
          body=m.ConfirmRequest, responses={200: m.ConfirmResponse}),
    Route("GET", V1 + "/snapshots", h.list_snapshots,
          "Page through snapshots: ascending after a cursor, or newest first.",
          query=m.SnapshotQuery, responses={200: m.SnapshotPage}),
    Route("POST", V1 + "/reencrypt", h.reencrypt,
          "Re-encrypt the key capsules the caller holds grants for; one result per item.",
          body=m.ReencryptRequest, responses={200: m.ReencryptResponse}),
    Route("GET", "/v1/node", h.node_info, "This node's identity, share index and limits.",
          responses={200: m.NodeInfo}, public=True),
    Route("GET", "/v1/openapi.json", h.openapi, "This document.", public=True),
    Route("GET", "/healthz", h.healthz, "Liveness.", public=True),
    Route("GET", "/readyz", h.readyz, "Readiness: storage reachable.", public=True),
    Route("GET", "/metrics", h.metrics, "Prometheus metrics.", public=True),
)  # fmt: skip


def add_routes(app: web.Application) -> None:
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler, name=route.name)
