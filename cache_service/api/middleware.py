"""The two middlewares every request passes through.

`errors_and_metrics` (outermost) is the one place errors become HTTP: `ServiceError` →
its status and RFC 9457 problem+json; aiohttp's own refusals (unknown route, wrong method,
body over the limit) → the same shape; storage unreachable or timing out → 503
`unavailable`; anything unexpected → a bare 500 problem with no text from the exception,
logged here. It also counts and times every request, and logs each one: 4xx at info, 5xx
at error.

`request_body` refuses content-coded and oversize bodies unread, holds the body's bytes
against the node-wide `BodyBudget` (refusing it unread, 429, when it does not fit), and
reads it within `Settings.body_timeout_seconds`, so no later step waits on a client that
stalls mid-body and many large bodies at once cannot exhaust memory.

`authenticate` signs in the calling device for every route not marked public, so a new
route is authenticated unless someone decides otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.exceptions
from aiohttp import web
from aiohttp.typedefs import Handler

from ..errors import Code, ServiceError
from ..service.auth import SignedRequest
from .keys import BODY_BUDGET, CALLER, METRICS, SETTINGS, services
from .routes import ROUTES

log = logging.getLogger("statecache.http")

PUBLIC_ROUTES = frozenset(route.name for route in ROUTES if route.public)
PROBLEM_JSON = "application/problem+json"

_AUTH_CODES = frozenset(
    c.value for c in (Code.UNAUTHENTICATED, Code.REPLAYED, Code.CLOCK_SKEW, Code.WRONG_NODE)
)
_HTTP_CODES = {
    404: Code.NOT_FOUND,
    405: Code.METHOD_NOT_ALLOWED,
    413: Code.TOO_LARGE,
    415: Code.UNSUPPORTED_MEDIA_TYPE,
}


# Redis replies that mean "not now" rather than "wrong": its state, not the request.
_UNAVAILABLE_REPLIES = (
    "MISCONF", "READONLY", "OOM", "BUSY", "MASTERDOWN", "LOADING", "NOREPLICAS",
    "TRYAGAIN", "CLUSTERDOWN",
)  # fmt: skip


# redis-py names some of them by class (their prefix taken off the message).
_UNAVAILABLE_ERRORS = (
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.MasterDownError,
)


def _storage_unavailable(exc: redis.exceptions.ResponseError) -> bool:
    if isinstance(exc, _UNAVAILABLE_ERRORS):
        return True
    words = str(exc).split(maxsplit=8)  # a script's error keeps the reply's prefix inside
    return any(w.strip(":") in _UNAVAILABLE_REPLIES for w in words)


def _internal_error(route: str) -> web.Response:
    log.exception("unhandled error", extra={"route": route})
    return web.json_response(
        {"type": "about:blank", "title": "Internal error", "status": 500, "code": "internal"},
        status=500,
        content_type=PROBLEM_JSON,
    )


def problem_response(error: ServiceError) -> web.Response:
    headers = {}
    if "retry_after" in error.extra:
        headers["Retry-After"] = str(error.extra["retry_after"])
    return web.json_response(
        error.problem(), status=error.status, content_type=PROBLEM_JSON, headers=headers
    )


def _route_name(request: web.Request) -> str:
    info = request.match_info
    route = getattr(info, "route", None)
    name = getattr(route, "name", None)
    return name or "unmatched"


@web.middleware
async def errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    route = _route_name(request)
    response: web.StreamResponse
    extra: dict[str, Any] = {}
    try:
        response = await handler(request)
    except ServiceError as exc:
        response = problem_response(exc)
        extra["code"] = exc.code.value
    except web.HTTPException as exc:
        code = _HTTP_CODES.get(exc.status)
        if code is None:
            code = Code.MALFORMED if 400 <= exc.status < 500 else Code.UNAVAILABLE
        response = problem_response(ServiceError(code))
        if "Allow" in exc.headers:  # a 405 must say which methods the resource has
            response.headers["Allow"] = exc.headers["Allow"]
        extra["code"] = code.value
    except web.RequestPayloadError:  # e.g. a Content-Encoding the body does not follow
        response = problem_response(ServiceError(Code.MALFORMED, "the body could not be read"))
        response.force_close()  # the rest of the body is unread: the connection is spent
        extra["code"] = Code.MALFORMED.value
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        response = problem_response(ServiceError(Code.UNAVAILABLE, "try again shortly"))
        extra["code"] = Code.UNAVAILABLE.value
        extra["cause"] = f"storage: {type(exc).__name__}"
    except Exception as exc:
        if isinstance(exc, redis.exceptions.ResponseError) and _storage_unavailable(exc):
            # Redis up but not taking writes (disk full, a replica after a failover, out
            # of memory, loading, busy): the node cannot serve now; it is not broken.
            response = problem_response(ServiceError(Code.UNAVAILABLE, "try again shortly"))
            extra["code"] = Code.UNAVAILABLE.value
            extra["cause"] = f"storage: {str(exc)[:80]}"
        else:
            response = _internal_error(route)
    if _content_coded(request) or extra.get("code") == Code.REQUEST_TIMEOUT.value:
        # aiohttp's parser inflates bodies as they arrive; refused unread, the rest must
        # not be drained through the decoder. A body that did not arrive in time is not
        # waited for either: close the connection instead. (Other refusals that leave a
        # body unread, 413 and 429, let aiohttp read and discard the rest for up to its
        # lingering time, holding no memory, so that the client gets the answer rather
        # than a reset.)
        response.force_close()
    elapsed = time.perf_counter() - started
    metrics = request.app[METRICS]
    metrics.requests.labels(route, request.method, str(response.status)).inc()
    metrics.latency.labels(route).observe(elapsed)
    if extra.get("code") in _AUTH_CODES:
        metrics.auth_rejections.labels(extra["code"]).inc()
    caller = request.get(CALLER)
    # a refusal of the client (4xx) is routine: info; a failure of the node (5xx): error
    log.log(
        logging.ERROR if response.status >= 500 else logging.INFO,
        "request",
        extra={
            "route": route,
            "method": request.method,
            "status": response.status,
            "ms": round(elapsed * 1000, 2),
            "account": request.match_info.get("account_id"),
            "device": getattr(caller, "device_id", None),
            **extra,
        },
    )
    return response


def _content_coded(request: web.Request) -> bool:
    return request.headers.get("Content-Encoding", "identity").strip().lower() != "identity"


@web.middleware
async def request_body(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _content_coded(request):
        # Content-Digest covers the body as sent (RFC 9530); a coded body would be checked
        # after decoding. Bodies are small records: coding them buys nothing.
        raise ServiceError(Code.UNSUPPORTED_MEDIA_TYPE, "request bodies must not be content-coded")
    if not request.body_exists:
        return await handler(request)
    settings = request.app[SETTINGS]
    declared = request.content_length
    if declared is not None and declared > settings.max_body_bytes:
        raise ServiceError(Code.TOO_LARGE, f"bodies are at most {settings.max_body_bytes} bytes")
    size = settings.max_body_bytes if declared is None else declared  # chunked: the most
    budget = request.app[BODY_BUDGET]
    if not budget.try_claim(size):
        raise ServiceError(
            Code.RATE_LIMITED, "too many request bodies in flight; retry shortly", retry_after=1
        )
    try:
        try:
            async with asyncio.timeout(settings.body_timeout_seconds):
                await request.read()  # kept by the request: later reads return it at once
        except TimeoutError as exc:
            raise ServiceError(
                Code.REQUEST_TIMEOUT,
                f"the body must arrive within {settings.body_timeout_seconds:g} s",
            ) from exc
        return await handler(request)
    finally:
        budget.release(size)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _route_name(request) in PUBLIC_ROUTES or _route_name(request) == "unmatched":
        return await handler(request)
    account_id = request.match_info.get("account_id")
    if account_id is None:  # every authenticated route is under /v1/accounts/{account_id}
        raise ServiceError(Code.NOT_FOUND)
    body = await request.read()
    url = request.rel_url
    request[CALLER] = await services(request).authenticator.authenticate(
        account_id,
        SignedRequest(
            method=request.method,
            path=url.raw_path,
            query=url.raw_query_string,
            body=body,
            content_digest=request.headers.get("Content-Digest"),
            signature_input=request.headers.get("Signature-Input"),
            signature=request.headers.get("Signature"),
        ),
    )
    return await handler(request)
