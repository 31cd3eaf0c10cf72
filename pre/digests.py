"""Content digests for HTTP bodies (RFC 9530)."""

from __future__ import annotations

import base64
import hashlib

__all__ = ["content_digest"]


def content_digest(body: bytes) -> str:
    """The `Content-Digest` field value for `body`: `sha-256=:<base64>:`."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
