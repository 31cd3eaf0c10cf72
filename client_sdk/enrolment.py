"""Enrolment: a new device's secrets and the short `sc1.` text an admin approves."""

from __future__ import annotations

import pre
from cache_service.protocol.b64 import decode_b64url, encode_b64url

__all__ = ["enrollment_request", "parse_enrollment"]


def enrollment_request(name: str = "") -> tuple[pre.DeviceSecrets, str]:
    """A new device's secrets and the short text an admin approves (its public keys)."""
    device = pre.DeviceSecrets.generate()
    blob = "sc1." + encode_b64url(device.public_keys.to_bytes())
    if name:
        blob += "." + encode_b64url(name.encode())
    return device, blob


def parse_enrollment(blob: str) -> tuple[pre.DeviceKeys, str]:
    parts = blob.strip().split(".")
    if len(parts) not in (2, 3) or parts[0] != "sc1":
        raise ValueError("not a statecache enrolment request")
    try:
        keys = pre.DeviceKeys.from_bytes(decode_b64url(parts[1], max_bytes=128))
        name = decode_b64url(parts[2], max_bytes=64).decode() if len(parts) == 3 else ""
    except (pre.PreError, UnicodeDecodeError) as exc:
        raise ValueError("damaged enrolment request") from exc
    return keys, name
