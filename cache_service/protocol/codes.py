"""The error vocabulary of the `/v1` API, defined once for node and SDK.

`Code` is the stable machine code a node puts in an RFC 9457 problem (`code`) and in
per-item results; `STATUS` its HTTP status. The SDK maps a problem's code to `Code` and
treats an unknown one as `Code.UNKNOWN` (a newer node's code, or a lie).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["STATUS", "TITLES", "Code", "PublishStatus", "Quota", "parse_code"]


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
    QUOTA_EXCEEDED = "quota_exceeded"  # an account quota (`quota`, `limit` in the problem)
    # 404 / 405
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    # 408
    REQUEST_TIMEOUT = "request_timeout"
    # 409
    CONFLICT = "conflict"
    STALE_EPOCH = "stale_epoch"
    STALE_KEY_EPOCH = "stale_key_epoch"
    EPOCH_TOO_FAR = "epoch_too_far"  # an MLS epoch that jumps too far above the stored one
    # 410
    ACCOUNT_DELETED = "account_deleted"  # the admin deleted the account from this node
    # 413 / 415 / 421 / 429
    TOO_LARGE = "too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    WRONG_NODE = "wrong_node"  # the request is signed for another node
    RATE_LIMITED = "rate_limited"
    # 503
    UNAVAILABLE = "unavailable"
    # per-item re-encryption results
    NO_GRANT = "no_grant"
    GRANT_NOT_APPLICABLE = "grant_not_applicable"
    GRANT_INVALID = "grant_invalid"
    # never sent by a node: what the SDK reads a code it does not know as
    UNKNOWN = "unknown"


STATUS: dict[Code, int] = {
    Code.MALFORMED: 400,
    Code.INVALID_RECORD: 400,
    Code.UNAUTHENTICATED: 401,
    Code.REPLAYED: 401,
    Code.CLOCK_SKEW: 401,
    Code.FORBIDDEN: 403,
    Code.DEVICE_REVOKED: 403,
    Code.QUOTA_EXCEEDED: 403,
    Code.NOT_FOUND: 404,
    Code.METHOD_NOT_ALLOWED: 405,
    Code.REQUEST_TIMEOUT: 408,
    Code.CONFLICT: 409,
    Code.STALE_EPOCH: 409,
    Code.STALE_KEY_EPOCH: 409,
    Code.EPOCH_TOO_FAR: 409,
    Code.ACCOUNT_DELETED: 410,
    Code.TOO_LARGE: 413,
    Code.UNSUPPORTED_MEDIA_TYPE: 415,
    Code.WRONG_NODE: 421,
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
    Code.QUOTA_EXCEEDED: "Account quota exceeded",
    Code.NOT_FOUND: "Not found",
    Code.METHOD_NOT_ALLOWED: "Method not allowed",
    Code.REQUEST_TIMEOUT: "Request body not received in time",
    Code.CONFLICT: "Conflicts with stored state",
    Code.STALE_EPOCH: "MLS epoch does not move forward",
    Code.STALE_KEY_EPOCH: "Key epoch is not the label's current one",
    Code.EPOCH_TOO_FAR: "MLS epoch jumps too far above the stored one",
    Code.ACCOUNT_DELETED: "Account deleted",
    Code.TOO_LARGE: "Request too large",
    Code.UNSUPPORTED_MEDIA_TYPE: "Unsupported media type or content coding",
    Code.WRONG_NODE: "Request signed for another node",
    Code.RATE_LIMITED: "Too many requests",
    Code.UNAVAILABLE: "Storage unavailable",
}


class PublishStatus(StrEnum):
    """One snapshot's fate in a publish: the storage layer's answer is the wire's."""

    STORED = "stored"
    DUPLICATE = "duplicate"  # an identical retry: nothing changed
    REJECTED = "rejected"


class Quota(StrEnum):
    """Which account quota a `quota_exceeded` problem names (its `quota` member)."""

    GROUPS = "groups"  # groups with stored snapshots
    STORED_BYTES = "stored_bytes"  # sealed bytes, kept receipts and overhead, per snapshot


def parse_code(value: object) -> Code:
    """A code from a node's answer; anything unknown is `Code.UNKNOWN`."""
    try:
        return Code(value) if isinstance(value, str) else Code.UNKNOWN
    except ValueError:
        return Code.UNKNOWN
