"""The largest state a node takes, worked out once for node and SDK.

A device publishes a state as `POST .../snapshots` with the body
`{"snapshots":["<sealed snapshot, unpadded base64url>"]}`; the node refuses a body over
its `max_body_bytes`. So the largest plaintext state is what is left of that body once the
JSON envelope, base64 (4 characters per 3 bytes) and the sealing overhead are taken off:
with the default 16 MiB body, 12,582,249 bytes (a little under 12 MiB), not 16 MiB.

`SEAL_OVERHEAD` is the most a sealed snapshot adds to its plaintext: the header at its
largest (a 128-byte group id, its group label, a previous hash, a tree hash and an epoch
authenticator hash), the record tag, length prefixes, the AES-GCM tag and the signature.
A test seals such a snapshot and pins it.
"""

from __future__ import annotations

import math

from pre import MAX_SNAPSHOT_PLAINTEXT

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "PUBLISH_ENVELOPE",
    "SEAL_OVERHEAD",
    "SNAPSHOT_OVERHEAD",
    "b64_length",
    "format_mib",
    "largest_sealed",
    "largest_state",
    "publish_body_bytes",
]

MiB = 1024 * 1024
DEFAULT_MAX_BODY_BYTES = 16 * MiB  # a node's default `max_body_bytes`
SEAL_OVERHEAD = 649
# What a stored snapshot takes in Redis besides its sealed bytes and the receipts kept with
# it (its hash's other fields and encoding, its entries in three sorted sets), measured
# with MEMORY USAGE on small snapshots: charged to the account's byte quota for each.
SNAPSHOT_OVERHEAD = 1536
# `{"snapshots":[` and `]}` around the items; each item is `"<base64>"`, comma-separated.
PUBLISH_ENVELOPE = len('{"snapshots":[]}') - 1
_PER_ITEM = len('"",')


def b64_length(size: int) -> int:
    """Characters of `size` bytes in unpadded base64url."""
    return (4 * size + 2) // 3


def publish_body_bytes(sealed_sizes: list[int]) -> int:
    """The JSON body of one `POST .../snapshots` carrying sealed snapshots of these sizes."""
    return PUBLISH_ENVELOPE + sum(b64_length(n) + _PER_ITEM for n in sealed_sizes)


def largest_sealed(max_body_bytes: int) -> int:
    """The largest sealed snapshot a publish body of at most `max_body_bytes` carries."""
    room = max_body_bytes - publish_body_bytes([0])
    return max(0, (3 * room) // 4)


def largest_state(max_body_bytes: int) -> int:
    """The largest plaintext state a node with this body limit takes in a publish."""
    return max(0, min(MAX_SNAPSHOT_PLAINTEXT, largest_sealed(max_body_bytes) - SEAL_OVERHEAD))


def format_mib(size: int, *, up: bool = False) -> str:
    """`size` in MiB with one decimal, rounded down (a limit is never overstated) or up (a
    size over a limit never reads as within it)."""
    tenths = size * 10 / MiB
    value = (math.ceil(tenths) if up else math.floor(tenths)) / 10
    return f"{value:,.1f} MiB"
