"""Domain errors of the node. Each carries a stable machine code and an HTTP status; the
one middleware in `middleware.py` turns them into RFC 9457 problem+json. Storage and the
service layer raise these, never HTTP exceptions."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

__all__ = ["Code", "ServiceError"]


class Code(StrEnum):
    # 400
    MALFORMED = "malformed"  # not JSON, wrong shape, bad base64, bad record encoding
    INVALID_RECORD = "invalid_record"  # a record decodes but does not verify or bind
    # 401 / 403
    UNAUTHENTICATED = "unauthenticated"
    REPLAYED = "replayed"
    CLOCK_SKEW = "clock_skew"
    FORBIDDEN = "forbidden"
    DEVICE_REVOKED = "device_revoked"
    # 404 / 405
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    # 408
    REQUEST_TIMEOUT = "request_timeout"
    # 409
    CONFLICT = "conflict"
    STALE_EPOCH = "stale_epoch"
    STALE_KEY_EPOCH = "stale_key_epoch"
    # 413 / 415 / 429
    TOO_LARGE = "too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RATE_LIMITED = "rate_limited"
    # 503
    UNAVAILABLE = "unavailable"


STATUS: dict[Code, int] = {
    Code.MALFORMED: 400,
    Code.INVALID_RECORD: 400,
    Code.UNAUTHENTICATED: 401,
    Code.REPLAYED: 401,
    Code.CLOCK_SKEW: 401,
    Code.FORBIDDEN: 403,
    Code.DEVICE_REVOKED: 403,
    Code.NOT_FOUND: 404,
    Code.METHOD_NOT_ALLOWED: 405,
    Code.REQUEST_TIMEOUT: 408,
    Code.CONFLICT: 409,
    Code.STALE_EPOCH: 409,
    Code.STALE_KEY_EPOCH: 409,
    Code.TOO_LARGE: 413,
    Code.UNSUPPORTED_MEDIA_TYPE: 415,
    Code.RATE_LIMITED: 429,
    Code.UNAVAILABLE: 503,
}

TITLES: dict[Code, str] = {
    Code.MALFORMED: "Malformed request",
    Code.INVALID_RECORD: "Record does not verify",
    Code.UNAUTHENTICATED: "Request signature missing or invalid",
    Code.REPLAYED: "Request nonce already used",
    Code.CLOCK_SKEW: "Request time outside the accepted window",
    Code.FORBIDDEN: "Not allowed for this device",
    Code.DEVICE_REVOKED: "Device revoked",
    Code.NOT_FOUND: "Not found",
    Code.METHOD_NOT_ALLOWED: "Method not allowed",
    Code.REQUEST_TIMEOUT: "Request body not received in time",
    Code.CONFLICT: "Conflicts with stored state",
    Code.STALE_EPOCH: "MLS epoch does not move forward",
    Code.STALE_KEY_EPOCH: "Key epoch is not the label's current one",
    Code.TOO_LARGE: "Request too large",
    Code.UNSUPPORTED_MEDIA_TYPE: "Unsupported media type or content coding",
    Code.RATE_LIMITED: "Too many requests",
    Code.UNAVAILABLE: "Storage unavailable",
}


class ServiceError(Exception):
    """A refusal the caller can act on. `detail` must be safe to show the caller."""

    def __init__(self, code: Code, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or TITLES[code])
        self.code = code
        self.detail = detail
        self.extra = extra

    @property
    def status(self) -> int:
        return STATUS[self.code]

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"urn:statecache:problem:{self.code.value}",
            "title": TITLES[self.code],
            "status": self.status,
            "code": self.code.value,
        }
        if self.detail:
            body["detail"] = self.detail
        body.update(self.extra)
        return body
