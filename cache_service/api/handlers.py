"""Thin handlers: parse the request into wire models, call the service, respond."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from ..errors import Code, ServiceError
from ..protocol import models as m
from ..protocol.b64 import decode_b64url
from ..protocol.limits import largest_state
from .client_address import client_address
from .keys import METRICS, OPENAPI, SETTINGS, caller, services

M = TypeVar("M", bound=BaseModel)


def _validation_detail(exc: ValidationError) -> str:
    """Where and what, never the offending value (it may be large or sensitive)."""
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"[:300]


RECORD_MEDIA_TYPE = "application/octet-stream"


def single_record_field(model: type[BaseModel]) -> str | None:
    """The field of a body model that is one `pre` record, if that is all it holds: such a
    body may also be sent as the raw record (no JSON, no base64: a quarter smaller)."""
    fields = model.model_fields
    if len(fields) == 1:
        ((name, info),) = fields.items()
        if info.annotation is bytes:
            return name
    return None


async def parse_body(request: web.Request, model: type[M]) -> M:
    raw = await request.read()
    try:
        if request.content_type == "application/json":
            return model.model_validate_json(raw)
        field = single_record_field(model)
        if request.content_type == RECORD_MEDIA_TYPE and field is not None:
            return model.model_validate({field: raw})
    except ValidationError as exc:
        raise ServiceError(Code.MALFORMED, _validation_detail(exc)) from exc
    raise ServiceError(Code.UNSUPPORTED_MEDIA_TYPE)


def parse_query(request: web.Request, model: type[M]) -> M:
    if any(len(v) > 1 for v in (request.query.getall(k) for k in request.query)):
        raise ServiceError(Code.MALFORMED, "a query parameter is repeated")
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise ServiceError(Code.MALFORMED, _validation_detail(exc)) from exc


def respond(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        body=model.model_dump_json().encode(), status=status, content_type="application/json"
    )


def _key_epoch(request: web.Request) -> int:
    return int(request.match_info["key_epoch"])  # the route pattern admits digits only


# accounts and devices


async def register_account(request: web.Request) -> web.Response:
    body = await parse_body(request, m.RegisterAccountRequest)
    # Counted once the body has the right shape, before its records are verified: an
    # attempt that fails verification counts as much as one that succeeds.
    await services(request).accounts.count_registration(
        client_address(request), per_hour=request.app[SETTINGS].register_per_hour
    )
    info, created = await services(request).accounts.register(body)
    return respond(info, 201 if created else 200)


async def get_account(request: web.Request) -> web.Response:
    return respond(services(request).accounts.account_info(caller(request)))


async def list_devices(request: web.Request) -> web.Response:
    return respond(await services(request).accounts.list_devices(caller(request)))


async def put_device(request: web.Request) -> web.Response:
    body = await parse_body(request, m.DeviceCertificateBody)
    device_id = request.match_info["device_id"]
    created = await services(request).accounts.put_device(caller(request), device_id, body)
    entry = m.DeviceEntry(device_id=device_id, certificate=body.certificate)
    return respond(entry, 201 if created else 200)


async def revoke_device(request: web.Request) -> web.Response:
    body = await parse_body(request, m.RevocationBody)
    receipt = await services(request).accounts.revoke(
        caller(request), request.match_info["device_id"], body
    )
    return respond(receipt)


async def delete_account(request: web.Request) -> web.Response:
    body = await parse_body(request, m.AccountDeletionBody)
    # Unsigned, and it may leave a tombstone: counted with registrations per address.
    await services(request).accounts.count_registration(
        client_address(request), per_hour=request.app[SETTINGS].register_per_hour
    )
    return respond(await services(request).deletions.delete(request.match_info["account_id"], body))


# the account manifest and purges


async def get_manifest(request: web.Request) -> web.Response:
    return respond(await services(request).manifests.get(caller(request)))


async def put_manifest(request: web.Request) -> web.Response:
    body = await parse_body(request, m.ManifestBody)
    info, created = await services(request).manifests.put(caller(request), body)
    return respond(info, 201 if created else 200)


async def confirm_snapshots(request: web.Request) -> web.Response:
    body = await parse_body(request, m.ConfirmRequest)
    return respond(await services(request).snapshots.confirm(caller(request), body))


async def purge_snapshots(request: web.Request) -> web.Response:
    body = await parse_body(request, m.PurgeBody)
    return respond(await services(request).snapshots.purge(caller(request), body))


# key capsules and grants


async def list_capsules(request: web.Request) -> web.Response:
    return respond(await services(request).delegation.list_capsules(caller(request)))


async def put_capsule(request: web.Request) -> web.Response:
    body = await parse_body(request, m.KeyCapsuleBody)
    label, epoch = request.match_info["label"], _key_epoch(request)
    entry, created = await services(request).delegation.put_capsule(
        caller(request), label, epoch, body
    )
    return respond(entry, 201 if created else 200)


async def list_device_grants(request: web.Request) -> web.Response:
    return respond(
        await services(request).delegation.device_grants(
            caller(request), request.match_info["device_id"]
        )
    )


async def put_grant(request: web.Request) -> web.Response:
    body = await parse_body(request, m.GrantShareBody)
    await services(request).delegation.put_grant(
        caller(request),
        request.match_info["device_id"],
        request.match_info["label"],
        _key_epoch(request),
        body,
    )
    return web.Response(status=204)


# snapshots


async def publish_snapshots(request: web.Request) -> web.Response:
    body = await parse_body(request, m.PublishRequest)
    settings = request.app[SETTINGS]
    if len(body.snapshots) > settings.max_batch:
        raise ServiceError(Code.TOO_LARGE, f"at most {settings.max_batch} snapshots per request")
    result = await services(request).snapshots.publish(caller(request), body)
    counter = request.app[METRICS].snapshots
    for item in result.results:
        counter.labels(item.code or item.status.value).inc()
    return respond(result)


async def put_snapshot(request: web.Request) -> web.Response:
    body = await parse_body(request, m.SnapshotBody)
    try:
        group = decode_b64url(request.match_info["group_id"], max_bytes=m.MAX_GROUP_ID_SIZE)
    except ValueError as exc:  # the route admits the alphabet; the rest is a bad id too
        raise ServiceError(Code.NOT_FOUND, "group id is not canonical base64url") from exc
    result = await services(request).snapshots.publish_single(
        caller(request), body.snapshot, group_id=group, kind=request.match_info["kind"]
    )
    request.app[METRICS].snapshots.labels(result.status.value).inc()
    return respond(result, 201 if result.status is m.PublishStatus.STORED else 200)


async def list_snapshots(request: web.Request) -> web.Response:
    query = parse_query(request, m.SnapshotQuery)
    return respond(await services(request).snapshots.list(caller(request), query))


# re-encryption


async def reencrypt(request: web.Request) -> web.Response:
    body = await parse_body(request, m.ReencryptRequest)
    settings = request.app[SETTINGS]
    if body.items is not None and len(body.items) > settings.max_batch:
        raise ServiceError(Code.TOO_LARGE, f"at most {settings.max_batch} items per request")
    result = await services(request).reencryption.reencrypt(caller(request), body)
    counter = request.app[METRICS].reencryptions
    for item in result.results:
        counter.labels("ok" if item.fragment is not None else (item.code or "error")).inc()
    return respond(result)


# node and operations


async def node_info(request: web.Request) -> web.Response:
    node = services(request).node
    settings = request.app[SETTINGS]
    info = m.NodeInfo(
        node_id=node.node_id.hex(),
        public_key=node.public_key,
        share_index=settings.share_index,
        version=VERSION,
        limits=m.NodeLimits(
            max_body_bytes=settings.max_body_bytes,
            largest_state=largest_state(settings.max_body_bytes),
            max_batch=settings.max_batch,
            quota_groups=settings.quota_groups,
            quota_stored_bytes=settings.quota_stored_bytes,
            register_per_hour=settings.register_per_hour,
        ),
    )
    return respond(info)


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


READY_TIMEOUT = 1.0  # seconds: a storage that does not answer a PING this fast is not ready


async def healthz(request: web.Request) -> web.Response:
    """Liveness only: the process and its event loop answer (storage is not asked)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            ready = await services(request).storage.ping()
    except Exception:  # any storage failure, or no answer in time, means "not ready"
        ready = False
    if not ready:
        raise ServiceError(Code.UNAVAILABLE, "storage is not reachable")
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS].render(), content_type="text/plain", charset="utf-8"
    )


VERSION = "0.1.0"
