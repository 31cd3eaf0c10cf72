"""The cost figures `make demo` prints and `make bench` tabulates, each defined once here
so the two always mean the same thing.

authoriser upload    the request bodies the authorising (admin) device sends all nodes to
                     certify and authorise a new device: its certificate, one grant share
                     per node and each node's manifest update (`Approval.upload_bytes`).
                     Constant in the number of groups.
re-upload            the request bodies a device sends all nodes to publish every group's
                     state once, confirmations included (`uploaded`, around a publish of
                     everything): what the old device would send if it re-sealed and
                     uploaded everything for the new one instead of authorising it (the
                     benchmark's "naive re-upload" design).

Both count bytes of request bodies as sent (records, or JSON with base64url), summed over
the nodes; not HTTP headers, TCP or TLS.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .admin import Approval
    from .device import Statecache

__all__ = ["Uploaded", "authoriser_upload", "uploaded"]


def authoriser_upload(approval: Approval) -> int:
    """What authorising one device cost the authoriser, in bytes sent."""
    return approval.upload_bytes


@dataclass
class Uploaded:
    bytes: int = 0


@contextmanager
def uploaded(sc: Statecache) -> Iterator[Uploaded]:
    """The request bodies `sc` sends all nodes within the block (a re-upload's cost, when
    the block publishes everything)."""
    sent = Uploaded()
    before = sc.bytes_sent
    try:
        yield sent
    finally:
        sent.bytes = sc.bytes_sent - before
